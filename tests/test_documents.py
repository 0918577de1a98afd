"""Documents: text and images in any order, their ids, the per-row grammar and the decoding engine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tinychameleon.checkpoint import build_transformer
from tinychameleon.config import make_config
from tinychameleon.data.colored import COLOR_NAMES, DIGIT_WORDS
from tinychameleon.documents.batches import LossWeights, example_documents, length_batches, padded, picture_codes
from tinychameleon.documents.document import DocumentTokenizer, split_words
from tinychameleon.documents.engine import DecodeSettings, RowCache, decode, left_padded
from tinychameleon.documents.families import FAMILIES, WORD_FAMILIES, DigitBank, examples
from tinychameleon.documents.grammar import DocumentGrammar
from tinychameleon.errors import PromptError
from tinychameleon.tokenizers.palette import PaletteTokenizer
from tinychameleon.tokenizers.vocab import WORDS, Vocab

L = PaletteTokenizer.tokens_per_image
CONFIG = make_config("tiny", vq={"kind": "patches", "codebook_size": 64}, train={"documents": 64})
VOCAB = Vocab.for_config(CONFIG)
TOKENIZER = DocumentTokenizer(VOCAB)


def recolor(ids, foreground, background):
    recolored = ids.clone()
    recolored[:, 0], recolored[:, 1] = foreground + 64, background + 64
    return recolored


@pytest.fixture(scope="module")
def bank():
    rng = np.random.default_rng(0)
    digits = np.arange(200) % 10
    return DigitBank(digits, rng.integers(0, 31, 200), rng.integers(0, 31, 200))


@pytest.fixture(scope="module")
def codes():
    """(200, 51) token grids: two (placeholder) colors, then shape codes that name their example."""
    shapes = (torch.arange(200)[:, None] * 7 + torch.arange(49)[None]) % 64
    return torch.cat([torch.full((200, 2), 64), shapes], dim=1)


def model_and_grammar(seed: int = 0, **model_parts):
    torch.manual_seed(seed)
    model = build_transformer(make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                                          model=model_parts, train={"documents": 64})).eval()
    tokenizer = PaletteTokenizer(CONFIG.vq)
    return model, DocumentGrammar(VOCAB, tokenizer.position_tokens(), tokenizer.token_follows())


def test_vocabulary_keeps_old_ids_and_appends_document_tokens():
    plain = Vocab(VOCAB.image_tokens, image_length=L)
    assert (plain.bos, plain.end_of_text, plain.end_of_image, plain.size) == \
        (VOCAB.bos, VOCAB.end_of_text, VOCAB.end_of_image, VOCAB.document_word_offset)
    assert VOCAB.size == VOCAB.end_document + 1 and len(set(VOCAB.text_ids)) == len(VOCAB.text_words)
    assert [VOCAB.token_name(i) for i in (VOCAB.begin_image, VOCAB.end_image, VOCAB.end_document)] == \
        ["<boi>", "<eoi>", "<eod>"]
    assert VOCAB.token_name(VOCAB.text_ids[-1]) == ":" and VOCAB.sequence_length >= 1 + 11 + 4 * (L + 2) + 1
    with pytest.raises(PromptError, match="without documents"):
        DocumentTokenizer(plain)


@pytest.mark.parametrize("family", [*FAMILIES, *WORD_FAMILIES])
def test_every_family_round_trips(family, bank, codes):
    chosen = examples(bank, 20, [3, 4], families=[family])
    ids = example_documents(chosen, codes, recolor, TOKENIZER)
    for example, document_ids in zip(chosen, ids):
        assert document_ids[0] == VOCAB.bos and document_ids[-1] == VOCAB.end_document
        document = TOKENIZER.decode(document_ids)
        assert document.finished
        assert split_words(document.text) == split_words(f"{example.prompt} {example.answer}")
        assert TOKENIZER.encode(document) == document_ids                        # ids -> document -> ids
        pictures = example.prompt_images + example.answer_images
        assert len(document.images) == len(pictures)
        for image, picture in zip(document.images, pictures):                    # each bound to its placeholder
            assert image[0] == picture.foreground + 64 and image[1] == picture.background + 64
            assert torch.equal(image[2:], codes[picture.shape, 2:])


def test_family_contents_follow_the_wording(bank):
    for example in examples(bank, 300, 1):
        words = split_words(example.prompt + " " + example.answer)
        assert all(word in WORDS or word in VOCAB.text_words or word == "<image>" for word in words)
        if example.family == "addition":
            first, second = example.prompt_images
            assert DIGIT_WORDS.index(words[4]) == first.digit + second.digit <= 9
        if example.family == "digit color":
            (before,), (after,) = example.prompt_images, example.answer_images
            assert after.foreground != before.foreground and after.background == before.background
            assert example.prompt.endswith(f"make the digit {COLOR_NAMES[after.foreground]} .")
        if example.family == "counting":
            digits = [picture.digit for picture in example.answer_images]
            assert 2 <= len(digits) <= 4 and digits == list(range(digits[0], digits[0] + len(digits)))
            assert len({(p.foreground, p.background) for p in example.answer_images}) == 1
        if example.family == "what comes next":
            assert example.answer_images[0].digit == example.prompt_images[0].digit + 1
            assert words[-3] == DIGIT_WORDS[example.answer_images[0].digit]


def test_sums_are_drawn_evenly_so_no_answer_is_a_safe_guess(bank):
    """Drawing the first digit evenly made "nine" 29 % of the sums: a model scored on the prior without reading."""
    for family in ("addition", "addition in words"):
        answers = [split_words(example.answer)[0] for example in examples(bank, 3000, 2, families=[family])]
        shares = np.array([answers.count(word) for word in DIGIT_WORDS]) / len(answers)
        assert shares.max() < 0.13 and shares.min() > 0.07, (family, shares)


def test_stepping_stones_are_words_alone_and_drawn_only_when_asked(bank):
    words_bank = DigitBank(bank.digits, bank.foreground, bank.background, words=True)
    chosen = examples(words_bank, 1000, 3)
    stones = [example for example in chosen if example.family in WORD_FAMILIES]
    assert {example.family for example in stones} == set(WORD_FAMILIES) and not any(e.pictures for e in stones)
    for example in stones:
        words = split_words(example.prompt + " " + example.answer)
        if example.family == "addition in words":          # a plus b is c .
            assert DIGIT_WORDS.index(words[0]) + DIGIT_WORDS.index(words[2]) == DIGIT_WORDS.index(words[4])
        else:                                              # count from a to b : a ... b .
            start, end = DIGIT_WORDS.index(words[2]), DIGIT_WORDS.index(words[4])
            assert 2 <= end - start + 1 <= 4 and words[6:] == DIGIT_WORDS[start:end + 1] + ["."]
    assert not [example for example in examples(bank, 1000, 3) if example.family in WORD_FAMILIES]


def test_family_shares_override_the_registry_and_refuse_unknown_names(bank):
    """counting at 10 against the other eleven's 9.5: about half the documents count; no override draws as before."""
    assert examples(bank, 200, 5, shares={}) == examples(bank, 200, 5)
    counted = [example.family for example in examples(bank, 2000, 5, shares={"counting": 10})].count("counting")
    assert 0.46 < counted / 2000 < 0.58
    assert "counting" not in {example.family for example in examples(bank, 500, 5, shares={"counting": 0})}
    with pytest.raises(ValueError, match="did you mean 'counting'"):
        examples(bank, 10, 5, shares={"countin": 2})
    with pytest.raises(ValueError, match="drawn only with train.word_families"):
        examples(bank, 10, 5, shares={"addition in words": 2})       # a stepping stone's share, but no stones drawn
    with pytest.raises(ValueError, match="share 0"):
        examples(bank, 10, 5, families=None, shares={name: 0 for name in FAMILIES})


def test_examples_are_seeded(bank):
    one, two, other = examples(bank, 50, 7), examples(bank, 50, 7), examples(bank, 50, 8)
    assert one == two and one != other


def test_prompts_bind_images_in_order_and_refuse_bad_input():
    first, second = torch.arange(L), torch.arange(L) + 1
    document = TOKENIZER.bind("<image> plus <image> is", [first, second])
    assert document.text == "<image> plus <image> is" and not document.finished
    assert document.images[0] is first and document.images[1] is second
    assert TOKENIZER.bind("<image> What digit is this?", [first]).text == "<image> what digit is this ?"
    with pytest.raises(PromptError, match=r"'maek'.*make"):
        TOKENIZER.check("<image> maek the digit plain red .", 1)
    with pytest.raises(PromptError, match="2 <image> placeholders but 1 image"):
        TOKENIZER.check("<image> plus <image> is", 1)
    with pytest.raises(PromptError, match="too long"):
        TOKENIZER.check("the " * 40, 0)
    with pytest.raises(PromptError, match="characters is too long"):
        TOKENIZER.check("a" * 1000, 0)
    # Four images and 31 words would leave no room for an answer within the model's 244 positions.
    with pytest.raises(PromptError, match="245 of 244 tokens|244 of 244 tokens"):
        TOKENIZER.check("<image> " * 4 + "the " * 31, 4)
    assert len(TOKENIZER.check("<image> " * 4 + "the " * 30, 4)) == 34


def test_a_color_off_the_palette_is_named_with_the_palettes_colors_of_its_hue():
    """As for pairs and searches: "light yellow" is two known words but no palette color, so the prompt is kept and
    a PaletteWarning says which yellows there are; palette colors and other words pass quietly."""
    import warnings

    from tinychameleon.tokenizers.text import PaletteWarning
    with pytest.warns(PaletteWarning, match="'light yellow' is not a palette color.*plain yellow, bright yellow"):
        assert TOKENIZER.check("count from one to two in plain black on light yellow :", 0)[-2:] == ["yellow", ":"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TOKENIZER.check("count from one to two in plain black on bright yellow :", 0)
        TOKENIZER.check("<image> make the digit light blue .", 1)


def test_batches_pad_on_the_right_with_no_loss(bank, codes):
    ids = example_documents(examples(bank, 64, 2), codes, recolor, TOKENIZER)
    batches = length_batches(ids, 16, torch.Generator().manual_seed(0), pad=VOCAB.end_document)
    assert len(batches) == 4 and sum(len(batch) for batch, _ in batches) == 64
    lengths = sorted(len(row) for row in ids)
    for batch, weights in batches:
        assert weights.shape == (batch.shape[0], batch.shape[1] - 1)
        real = weights.sum(1).long() + 1                                # tokens of each document
        assert all(int(n) in lengths for n in real)
        assert (batch.shape[1] - real).max() <= max(lengths) - min(lengths)
    tokens, weights = padded([[1, 2, 3], [4, 5]], pad=0)
    assert tokens.tolist() == [[1, 2, 3], [4, 5, 0]] and weights.tolist() == [[1, 1], [1, 0]]


def test_digit_labels_sit_on_each_images_end_with_the_digit_it_shows(bank, codes):
    """model.digit_head's targets: every <eoi> of a batch holds the digit of its picture (context, prompt and answer
    images alike, text-dropped rows too), every other position -1; batches keep each document's own labels."""
    from tinychameleon.documents.batches import digit_labels, image_digits
    chosen = examples(bank, 200, 5)
    dropout = torch.arange(len(chosen)) % 10 == 0
    ids = example_documents(chosen, codes, recolor, TOKENIZER, dropout)
    batch, _ = padded(ids, VOCAB.end_document)
    labels = digit_labels(batch, image_digits(chosen), VOCAB.end_image)
    for row, example in enumerate(chosen):
        ends = (batch[row] == VOCAB.end_image).nonzero().flatten()
        assert labels[row, ends].tolist() == [picture.digit for picture in example.pictures]
        assert (labels[row][batch[row] != VOCAB.end_image] == -1).all()
    counting = next(row for row, example in enumerate(chosen) if example.family == "counting" and not dropout[row])
    words = chosen[counting].prompt.split()
    first = DIGIT_WORDS.index(words[2])
    assert labels[counting][labels[counting] >= 0].tolist() == list(range(first, DIGIT_WORDS.index(words[4]) + 1))
    batches = length_batches(ids, 50, torch.Generator().manual_seed(0), VOCAB.end_document,
                             digits=image_digits(chosen), end_image=VOCAB.end_image)
    for tokens, _, batch_labels in batches:
        assert torch.equal(batch_labels >= 0, tokens == VOCAB.end_image)
        assert (batch_labels[tokens == VOCAB.end_image] <= 9).all()
    assert sum(int((batch_labels >= 0).sum()) for _, _, batch_labels in batches) == int((labels >= 0).sum())


def test_the_digit_plan_sits_on_each_answer_images_begin_only(bank, codes):
    """train.digit_plan: the answer's <boi>s hold the digit of the image they begin, as its <eoi> does; a prompt's or
    a text-dropped row's <boi> holds none (its image is given, not planned); length_batches passes the plan on."""
    from tinychameleon.documents.batches import digit_labels, image_digits, prefix_lengths
    chosen = examples(bank, 200, 5)
    dropout = torch.arange(len(chosen)) % 10 == 0
    ids = example_documents(chosen, codes, recolor, TOKENIZER, dropout)
    prefixes = prefix_lengths(chosen, VOCAB, dropout)
    batch, _ = padded(ids, VOCAB.end_document)
    plain = digit_labels(batch, image_digits(chosen), VOCAB.end_image)
    labels = digit_labels(batch, image_digits(chosen), VOCAB.end_image, VOCAB.begin_image,
                          [answer for _, answer in prefixes])
    for row, example in enumerate(chosen):
        begins = (batch[row] == VOCAB.begin_image).nonzero().flatten()
        drawn = [] if dropout[row] else [picture.digit for picture in example.answer_images]
        assert labels[row, begins].tolist() == [-1] * (len(begins) - len(drawn)) + drawn
        ends = batch[row] == VOCAB.end_image
        assert torch.equal(labels[row, ends], plain[row, ends])
        assert (labels[row][~ends & (batch[row] != VOCAB.begin_image)] == -1).all()
    assert any(len(example.answer_images) > 1 for example in chosen)      # counting: a plan per image
    batches = length_batches(ids, 50, torch.Generator().manual_seed(0), VOCAB.end_document, prefixes,
                             digits=image_digits(chosen), end_image=VOCAB.end_image, plan_at=VOCAB.begin_image)
    planned = sum(int(((tokens == VOCAB.begin_image) & (batch_labels >= 0)).sum()) for tokens, _, batch_labels in batches)
    assert planned == int(((batch == VOCAB.begin_image) & (labels >= 0)).sum()) > 0
    with pytest.raises(ValueError, match="digit_plan trains the digit head .* needs model.digit_head"):
        make_config("tiny", vq={"kind": "patches", "codebook_size": 64}, train={"documents": 64, "digit_plan": True})


def test_answers_carry_their_own_loss_weight(bank, codes):
    """train.answer_loss_weight lands on exactly each answer's targets (words or image, <eod> included) of every
    family; a row trained without its text (guidance's unconditional stream) has no answer to weight."""
    from tinychameleon.documents.batches import prefix_lengths
    chosen = examples(bank, 200, 5)
    assert {example.family for example in chosen} == set(FAMILIES)
    dropout = torch.arange(len(chosen)) % 10 == 0
    ids = example_documents(chosen, codes, recolor, TOKENIZER, dropout)
    prefixes = prefix_lengths(chosen, VOCAB, dropout)
    _, weights = padded(ids, VOCAB.end_document, prefixes, LossWeights(answer=2.5))
    for row, (example, document, (_, answer)) in enumerate(zip(chosen, ids, prefixes)):
        if dropout[row]:
            assert answer == 0 and (weights[row, :len(document) - 1] == 1).all()
            continue
        assert TOKENIZER.decode(document[:answer]).text == example.prompt
        assert TOKENIZER.decode(document[answer:]).text == example.answer and document[-1] == VOCAB.end_document
        assert (weights[row, :answer - 1] == 1).all() and (weights[row, answer - 1:len(document) - 1] == 2.5).all()
    # Words only: an answer's image tokens keep weight 1, its words and <boi> <eoi> <eod> get the weight.
    _, words_only = padded(ids, VOCAB.end_document, prefixes,
                           LossWeights(answer=2.5, image_tokens=VOCAB.image_tokens))
    for row, (document, (_, answer)) in enumerate(zip(ids, prefixes)):
        targets = torch.tensor(document[1:])
        expected = torch.where((torch.arange(len(targets)) >= answer - 1) & (targets >= VOCAB.image_tokens) &
                               (answer > 0), 2.5, 1.0)
        assert torch.equal(words_only[row, :len(targets)], expected)
    drawn = [row for row, example in enumerate(chosen) if example.answer_images and not dropout[row]]
    assert drawn and all((words_only[row] == 1).sum() > (weights[row] == 1).sum() for row in drawn)


def test_the_decision_after_each_answer_image_carries_its_own_weight(bank, codes):
    """train.decision_loss_weight lands on exactly the targets that follow an <eoi> of the answer (counting's
    <boi> to draw on or <eod> to stop, the <eod> after an edit); the prompt's images and all else keep theirs."""
    from tinychameleon.documents.batches import prefix_lengths
    chosen = examples(bank, 40, 5, families=["counting", "what comes next", "addition"])
    ids = example_documents(chosen, codes, recolor, TOKENIZER)
    prefixes = prefix_lengths(chosen, VOCAB)
    plain = LossWeights(answer=3.0, image_tokens=VOCAB.image_tokens)
    _, before = padded(ids, VOCAB.end_document, prefixes, plain)
    _, after = padded(ids, VOCAB.end_document, prefixes, replace(plain, decision=7.0, end_image=VOCAB.end_image))
    for row, (example, document, (_, answer)) in enumerate(zip(chosen, ids, prefixes)):
        changed = (after[row] != before[row]).nonzero().flatten().tolist()
        decisions = [j for j in range(answer - 1, len(document) - 1) if document[j] == VOCAB.end_image]
        assert changed == decisions and (after[row, decisions] == 7.0).all()
        assert len(decisions) == len(example.answer_images)            # one per image the answer draws
        if example.family == "counting":
            assert [document[j + 1] for j in decisions] == [VOCAB.begin_image] * (len(decisions) - 1) + [VOCAB.end_document]


def well_formed(ids: list[int], grammar: DocumentGrammar) -> bool:
    """Every <boi> is followed by exactly L image tokens that obey the tokenizer's rules, then <eoi>; no
    image token stands outside an image and no word inside one."""
    position = None
    for token in ids:
        if position is None:
            if token < VOCAB.image_tokens or token == VOCAB.end_image:
                return False
            position = 0 if token == VOCAB.begin_image else None
        elif position < L:
            if not bool(grammar.image[position, token]):
                return False
            position += 1
        else:
            if token != VOCAB.end_image:
                return False
            position = None
    return position is None


def test_the_grammar_never_cuts_an_image_or_mixes_modalities():
    model, grammar = model_and_grammar()
    # A random model: it draws whenever it happens to pick <boi>; make that likely so images are drawn.
    favour(model, VOCAB.begin_image, 3.0)
    prompts = [[VOCAB.bos] + [VOCAB.text_ids[i]] * (1 + i % 5) for i in range(24)]
    settings = DecodeSettings(temperature=1.0, text_temperature=1.0)
    written = decode(model, grammar, prompts, settings, generator=torch.Generator().manual_seed(0))
    images = 0
    for prompt, ids in zip(prompts, written):
        assert well_formed(ids, grammar) and len(prompt) + len(ids) <= model.config.block_size
        images += ids.count(VOCAB.begin_image)
        colors = [ids[i + 1] - 64 for i, token in enumerate(ids) if token == VOCAB.begin_image]
        assert all(0 <= color < 31 for color in colors)          # a palette color opens every image
    assert images >= 10
    # A prompt that stops inside an image continues it: the rest of that image comes first.
    inside = [VOCAB.bos, VOCAB.begin_image, 70, 80] + [5] * 10
    ids = decode(model, grammar, [inside], settings, generator=torch.Generator().manual_seed(1))[0]
    assert all(token < 64 for token in ids[:L - 12]) and ids[L - 12] == VOCAB.end_image


def test_room_for_an_image_is_checked_before_it_starts():
    model, grammar = model_and_grammar()
    state = grammar.start([[VOCAB.bos, VOCAB.text_ids[0]]] * 3)
    allowed = grammar.allowed(state, torch.tensor([VOCAB.text_ids[0]] * 3), torch.tensor([L + 3, L + 2, 1]))
    assert allowed[:, VOCAB.begin_image].tolist() == [True, False, False]
    assert allowed[2].nonzero().squeeze(1).tolist() == [VOCAB.end_document]


def test_an_answer_asked_to_be_text_begins_with_words():
    model, grammar = model_and_grammar(4)
    favour(model, VOCAB.end_document, 30.0)               # left alone, the model ends at once
    prompts = [[VOCAB.bos, VOCAB.text_ids[2]], [VOCAB.bos, VOCAB.begin_image, 64, 70]]
    assert decode(model, grammar, prompts[:1], DecodeSettings(temperature=0.0))[0] == [VOCAB.end_document]
    written = decode(model, grammar, prompts, DecodeSettings(temperature=0.0, min_words=3))
    assert all(token in VOCAB.text_ids for token in written[0][:3]) and written[0][3:] == [VOCAB.end_document]
    # A row inside an image finishes it first: its image tokens are not words, and it may end after them.
    assert len(written[1]) == L - 2 + 2 and written[1][L - 2:] == [VOCAB.end_image, VOCAB.end_document]


def test_padding_never_changes_a_row():
    model, grammar = model_and_grammar(1)
    prompts = [[VOCAB.bos, VOCAB.begin_image] + list(range(64, 66)) + [3] * 49 + [VOCAB.end_image, VOCAB.text_ids[3]],
               [VOCAB.bos, VOCAB.text_ids[5]], [VOCAB.bos] + VOCAB.text_ids[:9]]
    # Logits: a left-padded batch through the row cache equals each row alone through the plain model.
    ids, valid = left_padded(prompts, "cpu")
    cache = RowCache(model, len(prompts), 200, "cpu")
    cache.writing = valid
    with torch.no_grad():
        batched = model(ids, kv_cache=cache)[:, -1]
        alone = torch.cat([model(torch.tensor([prompt]))[:, -1] for prompt in prompts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    # Whole continuations (greedy): the batch writes what each row writes alone.
    settings = DecodeSettings(temperature=0.0, max_new_tokens=80)
    together = decode(model, grammar, prompts, settings)
    assert together == [decode(model, grammar, [prompt], settings)[0] for prompt in prompts]


def favour(model, token: int, amount: float, channel: int = 0) -> None:
    """Raise a random model's logit of `token` by about `amount` everywhere: a bias on one channel of the final
    LayerNorm that only that token's output row reads."""
    with torch.no_grad():
        model.norm.bias[channel] += amount
        model.head.weight[:, channel] = 0.0
        model.head.weight[token, channel] = 1.0


def forced_drawing(model):
    """Make a random model open an image whenever it writes text: a mixed document to compare paths on."""
    favour(model, VOCAB.begin_image, 20.0)


@pytest.mark.parametrize("parts", [{}, {"image_slots": True}, {"copy_head": True},
                                   {"copy_head": True, "pointer_slots": True}])
def test_the_cached_decoder_equals_the_uncached_one_on_a_mixed_document(parts):
    model, grammar = model_and_grammar(2, **parts)
    if "copy_head" in parts:
        torch.nn.init.constant_(model.copy.gate.bias, 0.0)                # copies as likely as generations
    if "pointer_slots" in parts:
        with torch.no_grad():
            model.copy.slot_bias.normal_(0.0, 0.3)                       # scaled 10x: it moves the pointer
    forced_drawing(model)
    prompts = [[VOCAB.bos, VOCAB.begin_image, 64, 70] + [7] * 49 + [VOCAB.end_image] + VOCAB.text_ids[40:44],
               [VOCAB.bos] + VOCAB.text_ids[:3]]
    unconditional = [[token for token in prompt if token not in VOCAB.text_ids] for prompt in prompts]
    for guidance, extra in ((1.0, None), (2.5, unconditional)):
        settings = DecodeSettings(temperature=0.0, guidance=guidance, max_new_tokens=2 * L + 8)
        cached = decode(model, grammar, prompts, settings, extra)
        uncached = decode(model, grammar, prompts, settings, extra, use_cache=False)
        static = decode(model, grammar, prompts, settings, extra, static=True)
        assert cached == uncached == static
        assert all(row.count(VOCAB.begin_image) >= 1 for row in cached)


def test_guidance_one_equals_plain_sampling_and_guidance_changes_images():
    model, grammar = model_and_grammar(3)
    forced_drawing(model)
    prompts = [[VOCAB.bos] + VOCAB.text_ids[i:i + 3] for i in range(6)]
    unconditional = [[VOCAB.bos]] * len(prompts)

    def run(guidance, extra):
        settings = DecodeSettings(temperature=1.0, guidance=guidance, max_new_tokens=L + 4)
        return decode(model, grammar, prompts, settings, extra, generator=torch.Generator().manual_seed(9))

    assert run(1.0, unconditional) == run(1.0, None)           # the mixing formula at scale 1 is the identity
    assert run(3.0, unconditional) != run(1.0, None)


def test_greedy_above_zero_is_greedy_without_guidance_in_documents():
    """Every image token the conditional stream is surer of than greedy_above is its argmax: at 0 that is every one,
    so the draw under guidance and temperature equals the greedy unguided one; at 1 (off) it does not."""
    model, grammar = model_and_grammar(3)
    forced_drawing(model)
    prompts = [[VOCAB.bos] + VOCAB.text_ids[i:i + 3] for i in range(6)]
    unconditional = [[VOCAB.bos]] * len(prompts)

    def run(**settings):
        return decode(model, grammar, prompts, DecodeSettings(max_new_tokens=L + 4, **settings), unconditional,
                      generator=torch.Generator().manual_seed(9))

    greedy = run(temperature=0.0)
    assert run(temperature=1.0, guidance=3.0, greedy_above=0.0) == greedy
    assert run(temperature=1.0, guidance=3.0, greedy_above=1.0) != greedy
    assert all(VOCAB.begin_image in row for row in greedy)                      # images were drawn


def test_finished_rows_leave_the_batch():
    model, grammar = model_and_grammar(4)
    favour(model, VOCAB.end_document, 30.0)                   # row 0 ends at once, row 1 must finish its image
    prompts = [[VOCAB.bos, VOCAB.text_ids[0]], [VOCAB.bos, VOCAB.begin_image, 64, 70]]
    written = decode(model, grammar, prompts, DecodeSettings(temperature=0.0, max_new_tokens=60))
    assert written[0] == [VOCAB.end_document]
    assert written[1][L - 2] == VOCAB.end_image and written[1][-1] == VOCAB.end_document


def test_the_static_reader_writes_what_the_row_cache_writes_as_rows_finish():
    """StaticReader (the CUDA path) keeps finished rows stepping into slots nobody reads: the same documents as the
    RowCache's, sampled, with guidance's text-free rows, while rows end at different steps."""
    model, grammar = model_and_grammar(4)
    favour(model, VOCAB.end_document, 1.0)                    # with words sampled too, rows end at random steps
    prompts = [[VOCAB.bos] + VOCAB.text_ids[i:i + 1 + i % 3] for i in range(6)]
    settings = DecodeSettings(temperature=1.0, guidance=2.0, max_new_tokens=L + 4, text_temperature=1.0)
    runs = [decode(model, grammar, prompts, settings, [[VOCAB.bos]] * 6, generator=torch.Generator().manual_seed(4),
                   static=static) for static in (False, True)]
    assert runs[0] == runs[1]
    assert len({len(row) for row in runs[0]}) > 2                      # rows did finish at different steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_replayed_document_steps_write_what_the_row_cache_writes():
    """On CUDA the engine replays a recorded step (StaticReader + CapturedStep) by default: the same documents as the
    RowCache's eager steps, twice (the second decode replays what the first recorded)."""
    from tinychameleon import decode_graph

    model, grammar = model_and_grammar(4)
    favour(model, VOCAB.end_document, 1.0)
    model, grammar = model.cuda(), grammar.to("cuda")
    prompts = [[VOCAB.bos] + VOCAB.text_ids[i:i + 1 + i % 3] for i in range(6)]
    settings = DecodeSettings(temperature=1.0, guidance=2.0, max_new_tokens=L + 4, text_temperature=1.0)
    for _ in range(2):
        runs = [decode(model, grammar, prompts, settings, [[VOCAB.bos]] * 6,
                       generator=torch.Generator("cuda").manual_seed(4), static=static) for static in (False, None)]
        assert runs[0] == runs[1]
    assert len({len(row) for row in runs[0]}) > 2
    assert any(key[2] == "step" for key in decode_graph._pool[model])


def test_picture_codes_repaint_shapes(codes):
    from tinychameleon.documents.families import Picture
    result = picture_codes([Picture(3, 3, 5, 9), Picture(7, 7, 1, 2)], codes, recolor)
    assert result[:, :2].tolist() == [[69, 73], [65, 66]] and torch.equal(result[:, 2:], codes[[3, 7], 2:])


def test_mixed_batches_interleave_both_kinds_and_split_rows_over_ranks():
    from tinychameleon.device import Distributed
    from tinychameleon.training.lm_trainer import mixed_batches

    pairs = [("rows", i) for i in range(6)]
    documents = [(torch.arange(8)[:, None].repeat(1, 5) + 10 * i, torch.ones(8, 4)) for i in range(3)]
    order = list(mixed_batches(iter(pairs), 6, documents, torch.Generator().manual_seed(0)))
    assert [kind for kind, _ in order].count("documents") == 3 and len(order) == 9
    assert [batch for kind, batch in order if kind == "pairs"] == pairs                # pairs keep their order
    again = list(mixed_batches(iter(pairs), 6, documents, torch.Generator().manual_seed(0)))
    assert [kind for kind, _ in again] == [kind for kind, _ in order]                  # seeded: same on every rank

    halves = [[batch for kind, batch in mixed_batches(iter(pairs), 6, documents, torch.Generator().manual_seed(0),
                                                     Distributed(rank=r, world_size=2)) if kind == "documents"]
              for r in (0, 1)]
    for (first, _), (second, _), (whole, _) in zip(*halves, documents):
        assert torch.equal(torch.cat([first, second]), whole)


def training_documents(run, **train_settings):
    """The run's document source (epoch -> batches), its config changed by train_settings, and its digits' codes."""
    from tinychameleon.checkpoint import load_config, load_image_tokenizer
    from tinychameleon.data.colored import load_splits
    from tinychameleon.training.documents import document_source
    from tinychameleon.training.run import limit

    config = load_config(run)
    for name, value in train_settings.items():
        setattr(config.train, name, value)
    train = limit(load_splits(config.data_seed).train, config.train.max_train_examples)
    tokenizer = load_image_tokenizer(run, config)
    codes = tokenizer.encode(torch.from_numpy(train.images))
    return document_source(config, tokenizer, train, codes), codes, config


def test_training_documents_come_from_the_training_digits_only(document_run):
    import json

    source, codes, config = training_documents(document_run)
    first, again, second = source(0), source(0), source(1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))               # seeded per epoch
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))          # fresh each epoch
    train_grids = {tuple(row[2:].tolist()) for row in codes}
    vocab = Vocab.for_config(config)
    for ids, weights in first:
        assert ids.shape[0] == config.train.batch_size and weights.shape == (ids.shape[0], ids.shape[1] - 1)
        for row in ids.tolist():
            for document_image in DocumentTokenizer(vocab).decode(row).images:       # every image a training digit
                assert tuple(document_image[2:].tolist()) in train_grids
    log = json.loads((document_run / "transformer_metrics.json").read_text())
    assert any("validation_document_nll" in row for row in log["epochs"])


def test_stepping_stones_keep_their_words_when_the_text_is_dropped(document_run):
    """Text dropout keeps a document's images for guidance's unconditional stream; a document of words alone would be
    left empty, so it keeps its words."""
    source, _, config = training_documents(document_run, word_families=True, text_dropout=1.0)
    tokenizer = DocumentTokenizer(Vocab.for_config(config))
    documents = [tokenizer.decode(row) for ids, _ in source(0) for row in ids.tolist()]
    words_alone = [document for document in documents if not document.images]
    assert words_alone and all(document.text.endswith(" .") for document in words_alone)
    assert all("<image>" in document.text and not set(split_words(document.text)) - {"<image>"}
               for document in documents if document.images)


def test_a_deadline_stops_decoding_between_steps():
    from tinychameleon.errors import DeadlineExceeded

    model, grammar = model_and_grammar(5)
    forced_drawing(model)
    asked = []

    def stop_after_three():
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(DeadlineExceeded):
        decode(model, grammar, [[VOCAB.bos, VOCAB.text_ids[0]]], DecodeSettings(temperature=0.0), should_stop=stop_after_three)
    assert len(asked) == 4                                    # asked before every step, stopped at the 4th


def memory_bank(count: int = 60, retrieve: int = 2, seed: int = 0, retrieve_min: int = 0):
    from tinychameleon.documents.families import DigitBank

    rng = np.random.default_rng(seed)
    neighbours = np.stack([rng.permutation(np.delete(np.arange(count), row))[:8] for row in range(count)])
    return DigitBank(rng.integers(0, 10, count), np.full(count, 4), np.zeros(count, int), neighbours, retrieve,
                     retrieve_min=retrieve_min)


def test_retrieval_documents_read_every_count_from_retrieve_min_to_retrieve():
    """train.retrieve_min: each document draws how many neighbours it reads, so one model serves any --retrieve k;
    the documents that read four still hold five images and fit the vocabulary of a run trained so."""
    from tinychameleon.documents.families import MEMORY_FAMILIES, examples

    chosen = [e for e in examples(memory_bank(retrieve=4, retrieve_min=1), 3000, 0) if e.family in MEMORY_FAMILIES]
    counts = np.bincount([len(example.context_images) for example in chosen], minlength=5)
    assert counts[0] == 0 and (counts[1:] > len(chosen) / 4 * 0.8).all()        # 1..4, about evenly
    for example in chosen:
        query = (example.answer_images or example.prompt_images)[0].shape
        assert query not in [picture.shape for picture in example.context_images]
    config = make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                         train={"documents": 8, "prompt_end": True, "retrieve": 4, "retrieve_min": 1})
    vocab, older = Vocab.for_config(config), VOCAB
    assert (vocab.document_images, vocab.max_retrieve, older.document_images, older.max_retrieve) == (5, 4, 4, 3)
    longest = max((e for e in chosen if e.family == "read from memory"), key=lambda e: len(e.context_images))
    prompt = f"{longest.context} {longest.prompt}"
    assert DocumentTokenizer(vocab).check(prompt, 5).count("<image>") == 5
    with pytest.raises(PromptError, match="at most 4 images"):
        DocumentTokenizer(older).check(prompt, 5)


def test_retrieved_context_never_holds_the_example_and_reads_like_training():
    from tinychameleon.documents.families import MEMORY_FAMILIES, examples

    bank = memory_bank()
    chosen = [example for example in examples(bank, 2000, 0) if example.family in MEMORY_FAMILIES]
    assert {example.family for example in chosen} == set(MEMORY_FAMILIES)
    for example in chosen:
        query = (example.answer_images or example.prompt_images)[0].shape
        assert len(example.context_images) == 2 and query not in [p.shape for p in example.context_images]
        assert example.context.count("<image>") == 2 and example.context.endswith(" .")
        assert example.text.startswith(example.context + " ")
    # Without neighbours the memory families are never chosen.
    plain = memory_bank(retrieve=0)
    assert not [e for e in examples(plain, 500, 0) if e.family in MEMORY_FAMILIES]


def test_retrieval_augmented_documents_keep_their_layout_and_loss_weights():
    from tinychameleon.documents.batches import example_documents, padded, prefix_lengths
    from tinychameleon.documents.families import MEMORY_FAMILIES, examples

    bank = memory_bank()
    chosen = [e for e in examples(bank, 400, 1) if e.family in MEMORY_FAMILIES][:6]
    L = VOCAB.image_length
    codes = torch.randint(0, VOCAB.image_tokens, (len(bank.digits), L))
    ids = example_documents(chosen, codes, lambda c, f, b: c, TOKENIZER)
    prefixes = prefix_lengths(chosen, VOCAB)
    batch, weights = padded(ids, VOCAB.end_document, prefixes, LossWeights(context=0.25, answer=3.0))
    for row, (example, document, (context, answer)) in enumerate(zip(chosen, ids, prefixes)):
        assert context == 1 + 2 * (L + 2 + 7)            # <bos>, then two "<image> six words ." documents
        assert document[context - 1] == TOKENIZER.word_to_id["."] and document[context - L - 9] == VOCAB.begin_image
        assert TOKENIZER.decode(document[answer:]).text == example.answer    # the answer starts right there
        # The context's own next tokens at 0.25, the query's prompt (from its first token) at 1, its answer at 3,
        # padding at 0.
        assert (weights[row, :context - 1] == 0.25).all() and (weights[row, context - 1:answer - 1] == 1).all()
        assert (weights[row, answer - 1:len(document) - 1] == 3).all()
        assert (weights[row, len(document) - 1:] == 0).all()
        assert TOKENIZER.decode(document).text == example.text


def test_a_retrieval_document_is_drawn_in_one_stroke_style_and_reads_those_tokens():
    from dataclasses import replace

    from tinychameleon.documents.batches import example_documents, picture_codes
    from tinychameleon.documents.families import MEMORY_FAMILIES, examples

    plain, styled = memory_bank(), memory_bank()
    styled.strokes = 2
    # Without stroke styles the examples are exactly those of before (no random draw is spent on a style).
    assert [e.text for e in examples(plain, 300, 4)] == [e.text for e in examples(memory_bank(), 300, 4)]
    chosen = [e for e in examples(styled, 2000, 4) if e.family in MEMORY_FAMILIES]
    strokes = [{picture.stroke for picture in example.pictures} for example in chosen]
    assert all(len(one) == 1 for one in strokes)                        # context and query share one style
    assert {next(iter(one)) for one in strokes} == {0, 1, 2}             # the digits' own is among them
    assert all(p.stroke == 0 for e in examples(styled, 500, 4) if e.family not in MEMORY_FAMILIES for p in e.pictures)
    # Style s of digit i is row i of the s-th code table; the plain (N, L) table refuses a styled picture.
    N, L = len(plain.digits), VOCAB.image_length
    codes = torch.randint(0, VOCAB.image_tokens, (3, N, L))
    example = next(e for e, one in zip(chosen, strokes) if one == {2})
    ids = example_documents([example], codes, lambda c, f, b: c, TOKENIZER)[0]
    starts = [i + 1 for i, token in enumerate(ids) if token == VOCAB.begin_image]
    for start, picture in zip(starts, example.pictures):
        assert ids[start:start + L] == codes[2, picture.shape].tolist()
    with pytest.raises(ValueError, match="stroke style"):
        picture_codes([replace(example.pictures[0], stroke=1)], codes[0], lambda c, f, b: c)


def test_thickened_strokes_spread_each_digit_pixel_over_their_neighbourhood():
    from tinychameleon.data.colored import ColoredMNIST, colorize, digit_pixels, thickened

    dot = np.zeros((1, 28, 28), dtype=np.uint8)
    dot[0, 10, 10] = dot[0, 20, 5] = 255
    split = ColoredMNIST(colorize(dot, np.array([4]), np.array([0])).astype(np.uint8), np.array([1]), np.array([4]),
                         np.array([0]))
    for stroke, (dy, dx) in (("wider", (0, 1)), ("taller", (1, 0)), ("widest", (0, 2)), ("tallest", (2, 0)),
                             ("bolder", (1, 1))):
        pixels = digit_pixels(thickened(split, stroke).images)[0]
        assert pixels.sum() == 2 * (1 + 2 * dy) * (1 + 2 * dx)
        assert pixels[10 - dy:11 + dy, 10 - dx:11 + dx].all() and pixels[20 - dy:21 + dy, 5 - dx:6 + dx].all()
        assert (thickened(split, stroke).images[0][pixels] == split.images[0][10, 10]).all()   # the digit's color


def test_random_strokes_draw_each_digit_as_written_or_in_one_style_and_keep_its_labels(colored):
    from tinychameleon.data.colored import STROKES, in_random_strokes, thickened

    split = colored[1].subset(slice(0, 300))
    styled = in_random_strokes(split, tuple(STROKES), seed=3)
    variants = np.stack([split.images] + [thickened(split, stroke).images for stroke in STROKES])   # (6, N, 28, 28, 3)
    matches = (variants == styled.images[None]).all(axis=(2, 3, 4))                                  # (6, N)
    assert matches.any(axis=0).all()                          # every digit as written or in one of the styles
    assert (matches.argmax(axis=0)[:, None] == np.arange(6)).sum(axis=0).min() > 20   # each drawn for many
    assert (styled.digits == split.digits).all() and (styled.foreground == split.foreground).all()
    assert (in_random_strokes(split, tuple(STROKES), seed=3).images == styled.images).all()


EOP_CONFIG = make_config("tiny", vq={"kind": "patches", "codebook_size": 64}, train={"documents": 64, "prompt_end": True})
EOP_VOCAB = Vocab.for_config(EOP_CONFIG)
EOP_TOKENIZER = DocumentTokenizer(EOP_VOCAB)


def test_prompt_end_is_one_new_id_after_every_other():
    assert EOP_VOCAB.size == VOCAB.size + 1 and EOP_VOCAB.end_prompt == VOCAB.end_document + 1
    assert (EOP_VOCAB.begin_image, EOP_VOCAB.end_document, EOP_VOCAB.text_ids) == \
        (VOCAB.begin_image, VOCAB.end_document, VOCAB.text_ids)
    assert EOP_VOCAB.token_name(EOP_VOCAB.end_prompt) == "<eop>" and EOP_VOCAB.to_dict()["end_prompt"] == VOCAB.size
    with pytest.raises(ValueError, match="no <eop>"):
        VOCAB.end_prompt
    with pytest.raises(ValueError, match="prompt_end needs train.documents"):
        make_config("tiny", train={"prompt_end": True})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_prompt_ends_with_eop_and_the_answer_follows_it(family, bank, codes):
    """With train.prompt_end each family's document is its prompt, <eop>, its answer; the <eop> is given, never
    predicted (its target weighs 0); without it the same ids minus <eop> (older checkpoints read as before)."""
    from tinychameleon.documents.batches import prefix_lengths
    from tinychameleon.training.documents import given_token
    chosen = examples(bank, 10, [5, 6], families=[family])
    dropout = torch.arange(10) % 3 == 0
    ids = example_documents(chosen, codes, recolor, EOP_TOKENIZER, dropout)
    plain = example_documents(chosen, codes, recolor, TOKENIZER, dropout)
    prefixes = prefix_lengths(chosen, EOP_VOCAB, dropout)
    _, weights = padded(ids, EOP_VOCAB.end_document, prefixes, LossWeights(given=given_token(EOP_VOCAB)))
    for row, (example, document, (_, answer)) in enumerate(zip(chosen, ids, prefixes)):
        eop = document.index(EOP_VOCAB.end_prompt)
        assert document.count(EOP_VOCAB.end_prompt) == 1 and [t for t in document if t != EOP_VOCAB.end_prompt] == plain[row]
        assert weights[row, eop - 1] == 0 and (weights[row, :len(document) - 1] > 0).sum() == len(document) - 2
        prompt = EOP_TOKENIZER.bind(example.prompt, [torch.as_tensor(i) for i in EOP_TOKENIZER.decode(document[:eop]).images])
        if dropout[row]:     # images only, the prompt's before <eop> and the answer's after it
            assert len(EOP_TOKENIZER.decode(document[eop:]).images) == len(example.answer_images)
            continue
        assert answer == eop + 1 and EOP_TOKENIZER.encode(prompt) == document[:answer]     # as a user's prompt reads
        assert EOP_TOKENIZER.decode(document[answer:]).text == example.answer
        assert EOP_TOKENIZER.decode(document).text == f"{example.prompt} {example.answer}"


def test_the_model_is_never_let_write_eop_and_guidance_keeps_it():
    torch.manual_seed(0)
    model = build_transformer(EOP_CONFIG).eval()
    favour(model, EOP_VOCAB.end_prompt, 8.0)                 # the token it would pick almost always
    tokenizer = PaletteTokenizer(EOP_CONFIG.vq)
    grammar = DocumentGrammar(EOP_VOCAB, tokenizer.position_tokens(), tokenizer.token_follows())
    prompt = EOP_TOKENIZER.encode(EOP_TOKENIZER.bind("<image> what digit is this ?", [torch.arange(L) % 64]))
    assert prompt[-1] == EOP_VOCAB.end_prompt and grammar.without_words(prompt)[-1] == EOP_VOCAB.end_prompt
    written = decode(model, grammar, [prompt] * 8, DecodeSettings(temperature=1.0, text_temperature=1.0),
                     generator=torch.Generator().manual_seed(0))
    assert all(EOP_VOCAB.end_prompt not in ids and well_formed(ids, grammar) for ids in written)


OPEN_CONFIG = make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                          train={"documents": 64, "prompt_end": True, "unconditional_without_eop": True})
OPEN_VOCAB = Vocab.for_config(OPEN_CONFIG)


def test_unconditional_without_eop_needs_prompt_end():
    with pytest.raises(ValueError, match="unconditional_without_eop needs train.prompt_end"):
        make_config("tiny", train={"documents": 64, "unconditional_without_eop": True})
    assert OPEN_VOCAB.size == EOP_VOCAB.size and not EOP_VOCAB.unconditional_without_eop


def test_text_dropped_documents_have_no_eop_and_guidance_reads_them_so(bank, codes):
    """With train.unconditional_without_eop a text-dropped document is its images and <eod>, no <eop>: so no
    prompt a user can give (every one ends in <eop>) looks like one, and "<image> <eop>" (read this) is never
    followed by <eod> in training. The unconditional stream guidance reads at inference has the same form."""
    tokenizer = DocumentTokenizer(OPEN_VOCAB)
    chosen = examples(bank, 30, [5, 7])
    dropout = torch.arange(30) % 2 == 0
    ids = example_documents(chosen, codes, recolor, tokenizer, dropout)
    with_eop = example_documents(chosen, codes, recolor, EOP_TOKENIZER, dropout)
    grammar = DocumentGrammar(OPEN_VOCAB)
    for row, (example, document) in enumerate(zip(chosen, ids)):
        if not dropout[row]:
            assert document == with_eop[row] and document.count(OPEN_VOCAB.end_prompt) == 1
            continue
        assert OPEN_VOCAB.end_prompt not in document and document[-1] == OPEN_VOCAB.end_document
        assert [t for t in with_eop[row] if t != OPEN_VOCAB.end_prompt] == document
        assert len(tokenizer.decode(document).images) == len(example.pictures)
        prompt = with_eop[row][:with_eop[row].index(OPEN_VOCAB.end_prompt) + 1]    # its images, <eop>
        assert grammar.without_words(prompt) == document[:len(prompt) - 1]          # the stream reads it so
    # Older vocabularies keep <eop> in the stream, as their training documents did.
    prompt = EOP_TOKENIZER.encode(EOP_TOKENIZER.bind("<image> what digit is this ?", [torch.arange(L) % 64]))
    assert DocumentGrammar(EOP_VOCAB).without_words(prompt)[-1] == EOP_VOCAB.end_prompt
    assert DocumentGrammar(OPEN_VOCAB).without_words(prompt) == prompt[:L + 3]


PLAN_CONFIG = make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                          train={"documents": 64, "prompt_end": True, "plan_tokens": True, "prompt_plans": True})
PLAN_VOCAB = Vocab.for_config(PLAN_CONFIG)


def test_prompt_plans_give_every_prompt_image_its_digit_and_never_ask_for_it(bank, codes):
    """train.prompt_plans: each prompt image holds <plan DIGIT> after its colors, the digit its picture shows, as each
    drawn one does; the answer starts after them (prefix_lengths counts them) and a given plan's target weighs 0,
    every other target as without them; a text-dropped row has no plans. Without plan_tokens it is refused."""
    from tinychameleon.documents.batches import prefix_lengths
    from tinychameleon.tokenizers.vocab import PLAN_AT
    from tinychameleon.training.documents import given_plans, given_token
    tokenizer = DocumentTokenizer(PLAN_VOCAB)
    chosen = examples(bank, 120, [5, 7])
    dropout = torch.arange(len(chosen)) % 7 == 0
    ids = example_documents(chosen, codes, recolor, tokenizer, dropout)
    prefixes = prefix_lengths(chosen, PLAN_VOCAB, dropout)
    weighting = LossWeights(given=given_token(PLAN_VOCAB), given_plans=given_plans(PLAN_VOCAB))
    _, weights = padded(ids, PLAN_VOCAB.end_document, prefixes, weighting)
    _, unplanned = padded(ids, PLAN_VOCAB.end_document, prefixes, LossWeights(given=given_token(PLAN_VOCAB)))
    plans = set(PLAN_VOCAB.plan_ids)
    for row, (example, document, (_, answer)) in enumerate(zip(chosen, ids, prefixes)):
        begins = [j for j, token in enumerate(document) if token == PLAN_VOCAB.begin_image]
        read = [document[j + 1 + PLAN_AT] - PLAN_VOCAB.first_plan for j in begins]
        if dropout[row]:
            assert not plans & set(document) and answer == 0
            continue
        assert read == [picture.digit for picture in example.pictures]          # every image, prompt's and answer's
        assert document[answer - 1] == PLAN_VOCAB.end_prompt                    # the answer starts after the <eop>
        given = [j + 1 + PLAN_AT for j in begins if j < answer]
        assert len(given) == len(example.prompt_images)
        changed = (weights[row] != unplanned[row]).nonzero().flatten().tolist()
        assert changed == [j - 1 for j in given] and (weights[row, changed] == 0).all()
        prompt = tokenizer.decode(document[:answer])
        assert prompt.text == example.prompt and all(len(image) == L for image in prompt.images)
    assert sum(len(example.prompt_images) for example in chosen) > 50
    with pytest.raises(ValueError, match="prompt_plans .* needs train.plan_tokens"):
        make_config("tiny", vq={"kind": "patches", "codebook_size": 64}, train={"documents": 64, "prompt_plans": True})


def test_a_prompts_images_carry_the_plans_the_pair_reader_reads(colored):
    """At inference the plans of a prompt's images (train.prompt_plans) are the digits the pair caption reads in them:
    the prompt holds <plan d> after each image's colors, d the digit of pipe.caption, and decoding drops them again.
    A prompt with the most images still fits beside its plans; a decoder given no reader refuses."""
    from tinychameleon.checkpoint import build_image_tokenizer
    from tinychameleon.documents.decoder import DocumentDecoder
    from tinychameleon.pipeline import Pipeline
    from tinychameleon.tokenizers.vocab import PLAN_AT
    torch.manual_seed(3)
    config = make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                         train={"documents": 64, "prompt_end": True, "plan_tokens": True, "prompt_plans": True})
    pipe = Pipeline(config, build_image_tokenizer(config).eval(), build_transformer(config).eval(), torch.device("cpu"))
    images = colored[1].images[:4]
    read = [DIGIT_WORDS.index(caption.split()[2]) for caption in pipe.caption(images)]
    prompt = "<image> plus <image> is <image> <image>"
    ids = pipe.documents.prompt_ids([prompt], [list(images)])[0]
    begins = [j for j, token in enumerate(ids) if token == PLAN_VOCAB.begin_image]
    assert [ids[j + 1 + PLAN_AT] - PLAN_VOCAB.first_plan for j in begins] == read
    assert pipe.documents.tokenizer.decode(ids).text == prompt and len(ids) < PLAN_VOCAB.sequence_length
    answer = pipe.continue_documents(prompt, list(images), seed=0)[0][0]
    assert answer.images.shape[1:] == (28, 28, 3)
    counting = DocumentDecoder(pipe.model, pipe.vocab, pipe.image_tokenizer, pipe.device, lambda: False,
                               lambda codes, pixels: torch.arange(len(codes)) + 2)       # the plans follow the reader
    ids = counting.prompt_ids([prompt], [list(images)])[0]
    assert [ids[j + 1 + PLAN_AT] - PLAN_VOCAB.first_plan for j in begins] == [2, 3, 4, 5]
    repeated = [images[0], images[1], images[0], images[1]]               # each distinct picture is read once
    ids = counting.prompt_ids([prompt], [repeated])[0]
    assert [ids[j + 1 + PLAN_AT] - PLAN_VOCAB.first_plan for j in begins] == [2, 3, 2, 3]
    bare = DocumentDecoder(pipe.model, pipe.vocab, pipe.image_tokenizer, pipe.device, lambda: False)
    with pytest.raises(ValueError, match="give a reader"):
        bare.prompt_ids(["<image> what digit is this ?"], [[images[0]]])
