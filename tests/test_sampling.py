import pytest
import torch

from tinychameleon.config import ModelConfig
from tinychameleon.data.colored import parse_caption
from tinychameleon.model import Transformer
from tinychameleon.sampling import ModalityRules, generate
from tinychameleon.sequences import (IMAGE_FIRST, TEXT_FIRST, build_sequences, image_prefix, split_sequences,
                                     text_prefix)
from tinychameleon.tokenizers.text import SLOTS, WordTokenizer
from tinychameleon.tokenizers.vocab import WORDS, Vocab

VOCAB = Vocab(16)
PROMPTS = torch.tensor([WordTokenizer().encode("dark green eight on bright cyan"),
                        WordTokenizer().encode("plain white one on plain black")])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # an untrained model: its raw preferences ignore modality, so masks do all the work
    return Transformer(ModelConfig(vocab_size=VOCAB.size, n_layer=1, n_head=2, d_model=16)).eval()


def assert_well_formed(sequences: torch.Tensor, grammar: bool = True):
    for row in sequences.tolist():
        assert row[0] == VOCAB.bos and row[1] in (VOCAB.end_of_image, VOCAB.end_of_text)
        if row[1] == VOCAB.end_of_image:  # text first
            words, end, codes = row[2:8], row[8], row[9:]
            assert end == VOCAB.end_of_text
        else:
            codes, end, words = row[2:51], row[51], row[52:]
            assert end == VOCAB.end_of_image
        assert len(codes) == 49 and all(0 <= c < VOCAB.codebook_size for c in codes)
        assert len(words) == 6 and all(w in VOCAB.word_range for w in words)
        if grammar:
            for word, (_, allowed) in zip(words, SLOTS):
                assert WORDS[word - VOCAB.word_offset] in allowed
            caption = " ".join(WORDS[w - VOCAB.word_offset] for w in words)
            assert parse_caption(caption) is not None, caption  # both colors are palette colors


@pytest.mark.parametrize("grammar", [True, False])
def test_unconditional_sampling_never_leaves_its_modality(model, grammar):
    rules = ModalityRules(VOCAB, grammar=grammar)
    prefix = torch.full((200, 1), VOCAB.bos)
    sequences = generate(model, prefix, rules, temperature=2.0, generator=torch.Generator().manual_seed(0))
    assert_well_formed(sequences, grammar)
    orders = (sequences[:, 1] == VOCAB.end_of_text)
    assert 0 < orders.sum() < 200  # both orders get sampled


def test_text_to_image_and_image_to_text_complete_their_prompts(model):
    rules = ModalityRules(VOCAB)
    words = PROMPTS.repeat(2, 1)
    sequences = generate(model, text_prefix(VOCAB, words), rules, top_k=5)
    assert_well_formed(sequences)
    assert (sequences[:, :9] == text_prefix(VOCAB, words)).all()
    codes = torch.randint(0, 16, (4, 49))
    sequences = generate(model, image_prefix(VOCAB, codes), rules, guidance=2.0)
    assert_well_formed(sequences)
    assert (split_sequences(VOCAB, sequences)[1] == codes).all()


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_cached_and_uncached_decoding_agree(model, guidance):
    rules = ModalityRules(VOCAB)
    prefix = text_prefix(VOCAB, PROMPTS)
    cached = generate(model, prefix, rules, temperature=0, guidance=guidance, use_cache=True)
    uncached = generate(model, prefix, rules, temperature=0, guidance=guidance, use_cache=False)
    assert torch.equal(cached, uncached)


def test_sampling_is_reproducible_with_a_seed(model):
    rules = ModalityRules(VOCAB)
    prefix = torch.full((8, 1), VOCAB.bos)
    first = generate(model, prefix, rules, generator=torch.Generator().manual_seed(3))
    second = generate(model, prefix, rules, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_build_and_split_sequences_round_trip():
    words = torch.randint(0, 31, (6, 6))
    codes = torch.randint(0, 16, (6, 49))
    orders = torch.tensor([TEXT_FIRST, IMAGE_FIRST] * 3)
    sequences = build_sequences(VOCAB, words, codes, orders)
    assert sequences.shape == (6, 58)
    assert_well_formed(sequences, grammar=False)
    got_words, got_codes = split_sequences(VOCAB, sequences)
    assert torch.equal(got_words, words) and torch.equal(got_codes, codes)


def test_length_stops_early_with_the_same_tokens(model):
    rules = ModalityRules(VOCAB)
    prefix = torch.full((6, 1), VOCAB.bos)
    full = generate(model, prefix, rules, generator=torch.Generator().manual_seed(3))
    head = generate(model, prefix, rules, generator=torch.Generator().manual_seed(3), length=9)
    assert head.shape == (6, 9) and torch.equal(head, full[:, :9])
