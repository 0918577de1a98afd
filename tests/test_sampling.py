import pytest
import torch

import tinychameleon.pairs as pairs_module
from tinychameleon.config import ModelConfig
from tinychameleon.data.colored import parse_caption
from tinychameleon.model import Transformer
from tinychameleon.sampling import ModalityRules, filter_logits, generate, invert_cdf, keep_sure, pick
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
        assert len(codes) == 49 and all(0 <= c < VOCAB.image_tokens for c in codes)
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


def test_the_inverse_cdf_draw_has_the_softmax_distribution():
    """pick(inverse_cdf=True) draws each allowed token as often as its probability (200k draws, a fixed seed: the
    largest gap is ~3 standard errors at most), never a masked one, and with the same tokens as multinomial's
    argmax at temperature 0."""
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 3.0, 0.0]])
    allowed = torch.tensor([[True, True, True, False, True, False]])
    filtered = filter_logits(logits, allowed, 1.0, None).expand(200_000, -1)
    tokens = pick(filtered, 1.0, torch.Generator().manual_seed(0), inverse_cdf=True)
    frequencies = torch.bincount(tokens, minlength=6).double() / len(tokens)
    expected = torch.softmax(filtered[0].double(), dim=0)
    assert frequencies[~allowed[0]].sum() == 0
    assert (frequencies - expected).abs().max() < 3 * (expected * (1 - expected) / len(tokens)).sqrt().max()
    # The draw is not the exponential one: other tokens for the same seed, the same distribution.
    plain = pick(filtered[:1000], 1.0, torch.Generator().manual_seed(0))
    assert not torch.equal(plain, tokens[:1000])
    assert torch.equal(pick(filtered[:3], 0.0, None, inverse_cdf=True), torch.full((3,), 4))


def test_invert_cdf_takes_the_first_token_past_the_uniform_and_never_a_zero():
    probabilities = torch.tensor([[0.0, 0.25, 0.0, 0.5, 0.25, 0.0]]).expand(5, -1)
    uniforms = torch.tensor([[0.0], [0.2499], [0.25], [0.7501], [1.0]])     # 1.0: where rounding takes x total
    assert invert_cdf(probabilities, uniforms).tolist() == [1, 1, 3, 4, 4]


def test_top_p_keeps_the_smallest_set_with_enough_mass():
    from tinychameleon.sampling import filter_logits

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]))
    allowed = torch.ones(2, 4, dtype=torch.bool)
    kept = filter_logits(logits, allowed, 1.0, None, top_p=0.8) > float("-inf")
    assert kept[0].tolist() == [True, True, False, False]   # 0.5 + 0.3 reach 0.8
    assert kept[1].sum() == 4                                # mass before the 4th token is 0.75 < 0.8
    assert (filter_logits(logits, allowed, 1.0, None, top_p=0.4) > float("-inf")).sum(1).tolist() == [1, 2]
    assert torch.equal(filter_logits(logits, allowed, 1.0, None, top_p=1.0), logits.float())


def test_the_ranked_prefix_nucleus_equals_a_full_sort():
    """outside_nucleus ranks only each row's likeliest tokens unless they hold too little mass; the mask must be
    the one a full sort gives, for peaked rows (a short nucleus) and flat ones (past the prefix: the fallback)."""
    from tinychameleon.sampling import outside_nucleus

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(48, 2139, generator=generator) * torch.tensor([0.3, 3.0, 8.0]).repeat(16)[:, None]
    logits[::5, 2048:] = float("-inf")                                   # rows with masked ids, as the grammar does

    def by_full_sort(top_p):
        probabilities = torch.softmax(logits, -1)
        order = torch.sort(logits, dim=-1, descending=True).indices
        mass = probabilities.gather(-1, order)
        return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass.cumsum(-1) - mass >= top_p)

    for top_p in (0.3, 0.9, 0.99, 0.999):
        expected = by_full_sort(top_p)
        for first in (4, 256, 4096):
            assert torch.equal(outside_nucleus(logits, top_p, first), expected), (top_p, first)
    kept = (~outside_nucleus(logits, 0.99)).sum(1)
    assert kept[0::3].min() > 256 and kept[2::3].max() < 256       # flat rows went past the prefix, peaked did not


def test_contrastive_scores_on_a_hand_made_distribution():
    from tinychameleon.sampling import contrastive_scores

    conditional = torch.log(torch.tensor([[0.40, 0.30, 0.20, 0.06, 0.04]]))
    unconditional = torch.log(torch.tensor([[0.60, 0.10, 0.10, 0.01, 0.19]]))
    allowed = torch.ones(1, 5, dtype=torch.bool)
    # k = 1, alpha = 0.5: candidates have p_cond >= 0.5 * 0.40 = 0.20 -> tokens 0, 1, 2.
    scores = contrastive_scores(conditional, unconditional, allowed, k=1, alpha=0.5)
    assert (scores > float("-inf")).tolist() == [[True, True, True, False, False]]
    expected = torch.log(torch.tensor([0.40 / 0.60, 0.30 / 0.10, 0.20 / 0.10]))
    assert torch.allclose(scores[0, :3], expected, atol=1e-5)
    assert scores.argmax().item() == 1                       # ranked by the contrast, not by p_cond
    # A disallowed token never passes, even when it would be the best contrast.
    allowed[0, 1] = False
    scores = contrastive_scores(conditional, unconditional, allowed, k=1, alpha=0.5)
    assert (scores > float("-inf")).tolist() == [[True, False, True, False, False]]
    # k = 3, alpha = 0.1: threshold 0.1 * 0.20 = 0.02 -> every allowed token.
    assert (contrastive_scores(conditional, unconditional, torch.ones(1, 5, dtype=torch.bool), 3, 0.1)
            > float("-inf")).all()


def test_guidance_one_is_plain_conditional_sampling(tiny_pipeline):
    """At scale 1 the guided mix log p_u + 1 * (log p_c - log p_u) is the conditional distribution: the
    same draws as no guidance at all."""
    from tinychameleon.sampling import generate
    from tinychameleon.sequences import text_prefix

    pipe = tiny_pipeline
    prefix = text_prefix(pipe.vocab, pipe.encode_prompts(["dark green eight on bright cyan"] * 6))
    plain = generate(pipe.model, prefix, pipe.rules, 1.0, None, 1.0, torch.Generator().manual_seed(3))
    mixed = generate(pipe.model, prefix, pipe.rules, 1.0, None, 1.0 + 1e-7, torch.Generator().manual_seed(3))
    assert torch.equal(plain, mixed)


def test_greedy_above_keeps_what_the_model_alone_is_sure_of(tiny_pipeline, monkeypatch):
    """keep_sure replaces a drawn token by the conditional argmax exactly where that argmax holds more than
    greedy_above of the allowed mass; through the pipeline, greedy_above 0 is greedy without guidance whatever the
    temperature and guidance, and 1 leaves the draw alone."""
    conditional = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]).log()
    allowed, drawn = torch.ones(2, 3, dtype=torch.bool), torch.tensor([2, 2])
    assert keep_sure(drawn, conditional, allowed, 0.5).tolist() == [0, 2]       # 0.7 > 0.5; 0.4 is not
    assert keep_sure(drawn, conditional, allowed, 0.3).tolist() == [0, 0]
    assert keep_sure(drawn, conditional, allowed, 1.0).tolist() == [2, 2]       # off
    allowed[:, 0] = False                                                       # the mass of the allowed ones counts:
    assert keep_sure(drawn, conditional, allowed, 0.55).tolist() == [1, 1]      # 0.2 / 0.3 and 0.35 / 0.6 > 0.55
    pipe = tiny_pipeline
    captions = ["dark green eight on bright cyan", "plain white two on dark blue"] * 4
    prefix = text_prefix(pipe.vocab, pipe.encode_prompts(captions))

    def draw(temperature, guidance, **greedy_above):
        return generate(pipe.model, prefix, pipe.rules, temperature, None, guidance, torch.Generator().manual_seed(3),
                        **greedy_above)

    greedy = draw(0.0, 1.0)
    assert torch.equal(draw(1.0, 3.0, greedy_above=0.0), greedy)
    assert not torch.equal(draw(1.0, 3.0, greedy_above=1.0), greedy)
    # The pipeline passes the setting on to the sampler.
    seen = []
    monkeypatch.setattr(pairs_module, "generate", lambda *args, **kwargs: seen.append(kwargs["greedy_above"])
                        or generate(*args, **kwargs))
    pipe.generate_images("dark green eight on bright cyan", seed=0, image_candidates=1, greedy_above=0.25)
    assert seen == [0.25]


def test_captions_use_their_own_guidance(tiny_pipeline, monkeypatch):
    """Image guidance is not applied to captions: a caption decodes one stream unless the call (or
    caption_guidance) asks for guidance."""
    import tinychameleon.pairs as pairs_module

    pipe = tiny_pipeline
    images = pipe.generate_images(["dark green eight on bright cyan"] * 2, seed=0)
    scales = []
    real_generate = pairs_module.generate
    monkeypatch.setattr(pairs_module, "generate",
                        lambda *args, **kwargs: scales.append(args[5]) or real_generate(*args, **kwargs))
    monkeypatch.setattr(pipe, "sampling", pipe.resolve_settings({"guidance": 3.0}))
    pipe.caption(images)
    pipe.caption(images, guidance=2.0)
    pipe.caption(images, caption_guidance=1.5)
    assert scales == [1.0, 2.0, 1.5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's whole-sort path runs on CUDA only")
def test_the_gpu_nucleus_equals_the_cpu_one():
    from tinychameleon.sampling import outside_nucleus

    logits = torch.randn(48, 2139, generator=torch.Generator().manual_seed(1)) * torch.tensor([0.3, 3.0, 8.0]).repeat(16)[:, None]
    for top_p in (0.3, 0.99, 0.999):
        assert torch.equal(outside_nucleus(logits.cuda(), top_p).cpu(), outside_nucleus(logits, top_p))
