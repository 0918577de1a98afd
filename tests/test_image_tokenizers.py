"""The image tokenizer family: one interface, the layout derived from it, and each kind end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinychameleon.config import VQConfig, make_config
from tinychameleon.data.colored import COLOR_ID, COLOR_RGB, VALID_PAIRS, color_counts, parse_caption
from tinychameleon.pipeline import Pipeline
from tinychameleon.sampling import ModalityRules, generate
from tinychameleon.sequences import IMAGE_FIRST, TEXT_FIRST, build_sequences, split_sequences, text_prefix
from tinychameleon.tokenizers import TOKENIZER_KINDS, PaletteTokenizer, Vocab, build_image_tokenizer
from tinychameleon.checkpoint import build_transformer

SMALL = dict(codebook_size=16, code_dim=8, hidden=16, pixel_channels=4)


def small_config(kind: str) -> VQConfig:
    """A small tokenizer of each kind (fsq takes its levels from one of the FSQ paper's sizes)."""
    return VQConfig(kind=kind, **{**SMALL, "codebook_size": 256 if kind == "fsq" else 16})


@pytest.mark.parametrize("kind", sorted(TOKENIZER_KINDS))
def test_every_kind_round_trips_shapes_and_ids(kind, colored):
    tokenizer = build_image_tokenizer(small_config(kind)).eval()
    images = torch.from_numpy(colored[1].images[:6])
    ids = tokenizer.encode(images)
    assert ids.shape == (6, tokenizer.tokens_per_image) and ids.min() >= 0 and ids.max() < tokenizer.token_count
    decoded = tokenizer.decode(ids)
    assert decoded.shape == (6, 28, 28, 3) and decoded.dtype == torch.uint8
    # Decoding only ever paints one valid palette pair: no stray colors, whatever the weights.
    assert ((color_counts(decoded.numpy()) > 0).sum(1) <= 2).all()
    palette = {tuple(c) for c in COLOR_RGB}
    assert {tuple(c) for c in decoded.reshape(-1, 3).tolist()} <= palette
    allowed = tokenizer.position_tokens()
    assert allowed.shape == (tokenizer.tokens_per_image, tokenizer.token_count)
    assert allowed[torch.arange(tokenizer.tokens_per_image)[:, None], ids.t()].all()   # real ids obey the rules
    # Ids below code_count are codes, the rest colors: two color tokens per image where the kind has them.
    colors = (ids >= tokenizer.code_count).sum(1)
    assert (colors == (2 if tokenizer.code_count < tokenizer.token_count else 0)).all()


def test_palette_tokens_are_the_colors_then_the_shape(colored):
    test = colored[1]
    tokenizer = PaletteTokenizer(VQConfig(kind="palette", **SMALL))
    images = torch.from_numpy(test.images[:50])
    foreground, background, shape = tokenizer.split(images)
    assert torch.equal(foreground, torch.from_numpy(test.foreground[:50]))
    assert torch.equal(background, torch.from_numpy(test.background[:50]))
    ids = tokenizer.encode(images)
    assert torch.equal(ids[:, 0] - 16, foreground) and torch.equal(ids[:, 1] - 16, background)
    # The shape codes do not depend on the colors: a recoloring changes only the two color tokens.
    recolored = torch.where(shape[..., None].bool(), torch.tensor([0, 0, 3], dtype=torch.uint8),
                            torch.tensor([3, 3, 1], dtype=torch.uint8))
    assert torch.equal(tokenizer.encode(recolored)[:, 2:], ids[:, 2:])
    blue, yellow = torch.full((50,), COLOR_ID["plain blue"]), torch.full((50,), COLOR_ID["plain yellow"])
    assert torch.equal(tokenizer.recolor(ids, blue, yellow), tokenizer.encode(recolored))  # training's shortcut
    # Decoding paints the decoded shape in exactly the encoded two colors (the untrained shape is arbitrary).
    painted = tokenizer.decode(ids)
    rgb = torch.as_tensor(COLOR_RGB)
    is_foreground = (painted == rgb[foreground][:, None, None]).all(-1)
    is_background = (painted == rgb[background][:, None, None]).all(-1)
    assert (is_foreground | is_background).all()


def test_palette_sampling_rules_allow_only_pairs_of_the_data():
    tokenizer = PaletteTokenizer(VQConfig(kind="palette", **SMALL))
    follows = tokenizer.token_follows()
    colors = follows[16:, 16:]
    pairs = set(map(tuple, colors.nonzero().tolist()))
    assert pairs == set(map(tuple, VALID_PAIRS.tolist()))
    allowed = tokenizer.position_tokens()
    assert allowed[:2, 16:].all() and not allowed[:2, :16].any() and allowed[2:, :16].all() and not allowed[2:, 16:].any()


@pytest.mark.parametrize("kind", sorted(TOKENIZER_KINDS))
def test_layout_follows_the_tokenizer(kind):
    config = make_config("tiny")
    config.vq = small_config(kind)
    tokenizer = build_image_tokenizer(config.vq)
    vocab = Vocab.for_config(config)
    L, K = tokenizer.tokens_per_image, tokenizer.token_count
    assert (vocab.image_length, vocab.image_tokens) == (L, K) and vocab.word_offset == K
    assert vocab.plain_length == L + 9 and vocab.text_first_codes == slice(9, 9 + L)
    assert vocab.image_first_codes == slice(2, 2 + L) and vocab.image_first_words == slice(3 + L, 9 + L)
    words = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    ids = torch.randint(0, K, (2, L))
    sequences = build_sequences(vocab, words, ids, torch.tensor([TEXT_FIRST, IMAGE_FIRST]))
    assert sequences.shape == (2, vocab.plain_length)
    assert sequences[0, vocab.text_first_words.stop] == vocab.end_of_text
    assert sequences[1, vocab.image_first_codes.stop] == vocab.end_of_image
    back_words, back_ids = split_sequences(vocab, sequences)
    assert torch.equal(back_words, words) and torch.equal(back_ids, ids)
    if kind == "scales":
        return   # drawn a scale at a time by the next-scale transformer, not token by token (tests/test_nextscale.py)
    model = build_transformer(config).eval()
    assert model.config.vocab_size == vocab.size and model.config.block_size >= vocab.plain_length
    rules = ModalityRules(vocab, image_positions=tokenizer.position_tokens(), image_follows=tokenizer.token_follows())
    prompts = words.repeat(32, 1)
    drawn = generate(model, text_prefix(vocab, prompts), rules, generator=torch.Generator().manual_seed(0))
    codes = drawn[:, vocab.text_first_codes]
    assert tokenizer.position_tokens()[torch.arange(L)[:, None], codes.t()].all()
    if kind == "palette":  # an untrained model, yet every drawn color pair is one the data has
        valid = set(map(tuple, VALID_PAIRS.tolist()))
        assert all((f - tokenizer.color_offset, b - tokenizer.color_offset) in valid for f, b in codes[:, :2].tolist())


@pytest.fixture(scope="module", params=["rvq", "fsq", "pixels", "palette", "patches"])
def kind_run(request, tmp_path_factory, cache_dir):
    """A tiny run of each kind the pipeline tests (tests/test_pipeline.py) do not already train."""
    from tinychameleon.training.run import train

    config = make_config("tiny")
    config.vq = small_config(request.param)
    run_dir = tmp_path_factory.mktemp("runs") / request.param
    train(config, run_dir, cache_dir=cache_dir, progress=False, device_name="cpu")
    return run_dir


def test_every_kind_trains_saves_reloads_draws_captions_and_completes(kind_run, colored):
    pipe = Pipeline.from_pretrained(kind_run)
    kind = pipe.config.vq.kind
    assert isinstance(pipe.image_tokenizer, TOKENIZER_KINDS[kind])
    assert pipe.vocab.image_length == {"rvq": 98, "fsq": 49, "pixels": 784, "palette": 51, "patches": 51}[kind]
    images = pipe.generate_images(["dark green eight on bright cyan"], n=4, seed=0, guidance=1.0)
    assert images.shape == (4, 28, 28, 3) and images.max() <= 3
    sampled, captions = pipe.sample(4, seed=0)
    assert all(parse_caption(c) is not None for c in captions)
    if kind != "pixels":  # decoded images never hold more than two colors (pixels paint what the model drew)
        assert ((color_counts(np.concatenate([images, sampled])) > 0).sum(1) <= 2).all()
    words = pipe.caption(colored[1].images[:3])
    assert len(words) == 3 and all(parse_caption(c) is not None for c in words)
    completed, _ = pipe.complete(colored[1].images[:2], keep="top", prompts=colored[1].captions()[:2], seed=0)
    assert not np.array_equal(completed, colored[1].images[:2])   # an untrained model redraws the bottom
    kept = np.zeros((28, 28), dtype=bool)
    kept[:14] = True
    assert (completed[:, kept] == colored[1].images[:2][:, kept]).all()


def test_patch_dictionary_is_exact_on_the_patches_it_keeps(colored):
    from tinychameleon.tokenizers.patches import PatchDictionary, to_patches

    tokenizer = build_image_tokenizer(VQConfig(kind="patches", codebook_size=4096))
    images = torch.from_numpy(colored[0].images[:200])
    shapes = tokenizer.training_targets(images)
    fitted = tokenizer.autoencoder.fit(shapes)
    assert fitted["covered"] == 1.0 and fitted["distinct_patches"] < 4096   # every patch of these 200 is a code
    assert torch.equal(tokenizer.decode(tokenizer.encode(images)), images)  # lossless on them
    small = PatchDictionary(8)
    small.fit(shapes)
    empty = torch.zeros(1, 28, 28, 1, dtype=torch.uint8)
    assert small.patterns[0].sum() == 0 and (small.encode(empty) == 0).all()  # the most common patch is blank
    ids = small.encode(shapes[:20])
    distance = (to_patches(small.decode_levels(ids)) != to_patches(shapes[:20])).sum(1)          # (980,)
    every = (to_patches(shapes[:20])[:, None, :] != small.patterns[None]).sum(-1).min(1).values  # nearest, by search
    assert torch.equal(distance, every)
    # Encoding is a lookup table built from the patterns: a refit dictionary must not read the old table.
    before = small.patterns.clone()
    small.fit(shapes[:3])
    assert not torch.equal(before, small.patterns)
    distance = (to_patches(small.decode_levels(small.encode(shapes[:20]))) != to_patches(shapes[:20])).sum(1)
    every = (to_patches(shapes[:20])[:, None, :] != small.patterns[None]).sum(-1).min(1).values
    assert torch.equal(distance, every)
