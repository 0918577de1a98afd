"""Plan tokens (train.plan_tokens): every image an answer draws names its digit with <plan DIGIT> after its two
colors, written by the model and dropped when the document is read back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tinychameleon.checkpoint import build_transformer, load_grown
from tinychameleon.config import make_config
from tinychameleon.documents.batches import example_documents, prefix_lengths
from tinychameleon.documents.document import DocumentTokenizer
from tinychameleon.documents.engine import DecodeSettings, decode
from tinychameleon.documents.families import DigitBank, examples
from tinychameleon.documents.grammar import DocumentGrammar
from tinychameleon.tokenizers.palette import PaletteTokenizer
from tinychameleon.tokenizers.vocab import PLAN_AT, PLAN_TOKENS, Vocab
from tinychameleon.training.lm_trainer import plans_start_as_digit_words

from test_documents import codes, recolor  # noqa: F401  (the placeholder digits and their repainting; codes: a fixture)

TRAIN = {"documents": 64, "prompt_end": True, "unconditional_without_eop": True}
PLAIN_CONFIG = make_config("tiny", vq={"kind": "patches", "codebook_size": 64}, train=TRAIN)
PLAN_CONFIG = make_config("tiny", vq={"kind": "patches", "codebook_size": 64}, train={**TRAIN, "plan_tokens": True})
PLAIN, PLAN = Vocab.for_config(PLAIN_CONFIG), Vocab.for_config(PLAN_CONFIG)
L = PLAN.image_length


@pytest.fixture(scope="module")
def chosen():
    rng = np.random.default_rng(0)
    bank = DigitBank(np.arange(200) % 10, rng.integers(0, 31, 200), rng.integers(0, 31, 200))
    return examples(bank, 200, 5)


def test_plan_tokens_are_ten_new_ids_after_every_other():
    assert PLAN.size == PLAIN.size + 10 and PLAN.first_plan == PLAIN.size == PLAN.end_prompt + 1
    assert (PLAN.begin_image, PLAN.end_image, PLAN.end_document, PLAN.text_ids) == \
        (PLAIN.begin_image, PLAIN.end_image, PLAIN.end_document, PLAIN.text_ids)
    assert [PLAN.token_name(token) for token in PLAN.plan_ids] == PLAN_TOKENS and PLAN_TOKENS[2] == "<plan two>"
    assert PLAN.document_length == PLAIN.document_length + PLAN.document_images     # one more token per image
    assert PLAIN.plan_ids == [] and PLAN.to_dict()["first_plan"] == PLAN.first_plan
    with pytest.raises(ValueError, match="plan_tokens names the digit of each image documents' answers draw"):
        make_config("tiny", train={"plan_tokens": True})


def test_each_answer_image_opens_with_its_digits_plan_and_reading_drops_it(chosen, codes):
    """The answer's images are <boi> c1 c2 <plan DIGIT> s1..s49 <eoi>; a prompt's images have no plan, nor have a
    text-dropped row's (guidance's stream reads no plans, as no words); without the plans the ids are the plain
    vocabulary's, and reading a document back gives the same text and the same L-token images either way."""
    planned, plain = DocumentTokenizer(PLAN), DocumentTokenizer(PLAIN)
    dropout = torch.arange(len(chosen)) % 7 == 0
    with_plans = example_documents(chosen, codes, recolor, planned, dropout)
    without = example_documents(chosen, codes, recolor, plain, dropout)
    prefixes = prefix_lengths(chosen, PLAN, dropout)
    assert sum(len(example.answer_images) for example in chosen) > 100
    for row, (example, ids) in enumerate(zip(chosen, with_plans)):
        begins = [i for i, token in enumerate(ids) if token == PLAN.begin_image]
        given = len(example.context_images) + len(example.prompt_images)
        opens = [ids[i + 1 + PLAN_AT] for i in begins[given:]]                         # what follows the colors
        assert len(opens) == len(example.answer_images)
        if dropout[row]:
            assert all(token < PLAN.image_tokens for token in opens)
        else:
            assert [token - PLAN.first_plan for token in opens] == [picture.digit for picture in example.answer_images]
        assert all(ids[i + 1 + PLAN_AT] < PLAN.image_tokens for i in begins[:given])   # a given image: no plan
        assert [token for token in ids if token not in PLAN.plan_ids] == without[row]
        assert prefixes[row] == prefix_lengths([example], PLAIN, dropout[row:row + 1])[0]   # plans sit in answers
        read, read_plain = planned.decode(ids), plain.decode(without[row])
        assert read.text == read_plain.text and read.finished
        assert [image.tolist() for image in read.images] == [image.tolist() for image in read_plain.images]
        assert all(len(image) == L for image in read.images)


def written_images(ids: list[int]) -> list[list[int]]:
    """The tokens between each <boi> and its <eoi>, checking that text never stands inside an image."""
    images, current = [], None
    for token in ids:
        if token == PLAN.begin_image:
            assert current is None
            current = []
        elif token == PLAN.end_image:
            images.append(current)
            current = None
        elif current is not None:
            current.append(token)
        else:
            assert token >= PLAN.image_tokens and token not in PLAN.plan_ids        # text: no image token, no plan
    assert current is None
    return images


def test_the_grammar_has_the_model_write_a_plan_then_a_whole_image():
    torch.manual_seed(0)
    model = build_transformer(PLAN_CONFIG).eval()
    with torch.no_grad():                            # a random model that draws often
        model.norm.bias[0] += 3.0
        model.head.weight[:, 0] = 0.0
        model.head.weight[PLAN.begin_image, 0] = 1.0
    tokenizer = PaletteTokenizer(PLAN_CONFIG.vq)
    grammar = DocumentGrammar(PLAN, tokenizer.position_tokens(), tokenizer.token_follows())
    prompts = [[PLAN.bos] + [PLAN.text_ids[i]] * (1 + i % 4) + [PLAN.end_prompt] for i in range(12)]
    settings = DecodeSettings(temperature=1.0, text_temperature=1.0)
    written = decode(model, grammar, prompts, settings, generator=torch.Generator().manual_seed(0))
    images = [image for ids in written for image in written_images(ids)]
    assert len(images) >= 6
    for image in images:
        assert len(image) == L + 1 and image[PLAN_AT] in PLAN.plan_ids
        assert 64 <= image[0] < 64 + 31 and 64 <= image[1] < 64 + 31                               # colors first
        assert all(token < PLAN.image_tokens for token in image[:PLAN_AT] + image[PLAN_AT + 1:])
    cached, uncached = (decode(model, grammar, prompts[:3], settings, generator=torch.Generator().manual_seed(1),
                               use_cache=use_cache) for use_cache in (True, False))
    assert cached == uncached and sum(ids.count(PLAN.begin_image) for ids in cached) >= 2
    # Guidance: the unconditional stream reads neither words nor plans, in the prompt and as the rows write them.
    prompt = prompts[0] + [PLAN.begin_image, 70, 80, PLAN.first_plan + 3]
    assert grammar.without_words(prompt) == [PLAN.bos, PLAN.begin_image, 70, 80]
    assert grammar.unseen_unconditionally(torch.tensor([PLAN.first_plan, PLAN.text_ids[0], 70, PLAN.begin_image])
                                          ).tolist() == [True, True, False, False]
    guided, guided_uncached = (decode(model, grammar, prompts[:3], replace(settings, guidance=2.0), [[PLAN.bos]] * 3,
                                      torch.Generator().manual_seed(1), use_cache=use_cache) for use_cache in (True, False))
    assert any(PLAN.begin_image in ids for ids in guided) and all(written_images(ids) is not None for ids in guided)
    # The cached streams equal re-reading each stream whole: after a plan, the unconditional stream's prediction is
    # still the one it made after <boi> (it read nothing), not its skipped slot's output.
    assert guided == guided_uncached
    reader = DocumentTokenizer(PLAN)
    drawn = [reader.decode(ids) for ids in written]
    assert sum(len(document.images) for document in drawn) == len(images)
    assert all(len(image) == L for document in drawn for image in document.images)
    # <boi> needs room for the plan too: L + 1 tokens, <eoi> and <eod>.
    state = grammar.start([[PLAN.bos, PLAN.text_ids[0]]] * 2)
    allowed = grammar.allowed(state, torch.tensor([PLAN.text_ids[0]] * 2), torch.tensor([L + 4, L + 3]))
    assert allowed[:, PLAN.begin_image].tolist() == [True, False]


def test_a_fine_tune_that_adds_plans_starts_them_as_the_digit_words():
    torch.manual_seed(0)
    before = build_transformer(PLAIN_CONFIG)
    model = build_transformer(PLAN_CONFIG)
    state = before.state_dict()
    load_grown(model, state)
    plans_start_as_digit_words(model, PLAN, len(state["token_embedding.weight"]))
    digits = slice(PLAN.digit_words, PLAN.digit_words + 10)
    for table in (model.token_embedding.weight, model.head.weight):
        assert torch.equal(table[PLAN.plan_ids], table[digits])
    assert torch.equal(model.token_embedding.weight[:PLAIN.size], before.token_embedding.weight)
    trained = build_transformer(PLAN_CONFIG).state_dict()       # a run that already has plans keeps its own rows
    load_grown(model, trained)
    plans_start_as_digit_words(model, PLAN, len(trained["token_embedding.weight"]))
    assert torch.equal(model.token_embedding.weight, trained["token_embedding.weight"])
