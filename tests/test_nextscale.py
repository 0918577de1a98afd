"""Next-scale prediction (VAR): the multi-scale tokenizer, the block-causal transformer, its sampler and
the shipped `var` checkpoint, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinychameleon.config import NEXT_SCALES, make_config
from tinychameleon.data.colored import COLOR_NAMES, VALID_PAIRS, color_counts, parse_caption
from tinychameleon.errors import ConfigError
from tinychameleon.nextscale.model import CAPTION, NextScaleLayout
from tinychameleon.nextscale.objective import captions, drawing_nll, reading_nll
from tinychameleon.nextscale.sampler import ImageRules, draw, read, reading_per_digit, rerank_digits
from tinychameleon.pipeline import PRETRAINED, Pipeline
from tinychameleon.reranking import DIGIT_SLOT, DIGIT_WORD_IDS, digit_candidates, view_images
from tinychameleon.checkpoint import build_transformer, load_config
from tinychameleon.sampling import ModalityRules, filter_logits
from tinychameleon.sequences import IMAGE_FIRST
from tinychameleon.tokenizers import Vocab, build_image_tokenizer

SIDES = [side * side for side in NEXT_SCALES]          # 1, 4, 9, 16, 25, 49


@pytest.fixture(scope="module")
def untrained():
    """A small next-scale model and tokenizer with random weights: the rules hold whatever the weights."""
    torch.manual_seed(0)
    config = make_config("tiny", vq={"kind": "scales", "codebook_size": 16})
    tokenizer = build_image_tokenizer(config.vq).eval()
    model = build_transformer(config).eval()
    return config, tokenizer, model, Vocab.for_config(config)


@pytest.fixture(scope="module")
def checkerboard(untrained):
    """The same with model.checkerboard: the finest scale drawn in two passes, one checkerboard colour first."""
    torch.manual_seed(0)
    config = make_config("tiny", vq={"kind": "scales", "codebook_size": 16}, model={"checkerboard": True})
    return config, untrained[1], build_transformer(config).eval(), Vocab.for_config(config)


def test_multi_scale_tokenizer_round_trips_and_scales_add_up(colored, untrained):
    _, tokenizer, _, _ = untrained
    images = torch.from_numpy(colored[1].images[:8])
    ids = tokenizer.encode(images)
    assert ids.shape == (8, 2 + sum(SIDES)) and tokenizer.tokens_per_image == 106
    foreground, background, shape = tokenizer.split(images)
    assert torch.equal(ids[:, 0] - tokenizer.color_offset, foreground)
    assert torch.equal(ids[:, 1] - tokenizer.color_offset, background)
    coder = tokenizer.shape
    quantizer = coder.quantizer
    z = coder.encode_latent(shape[..., None])
    f_hat, indices = quantizer.pyramid(z)
    assert torch.equal(indices, ids[:, 2:])
    # Each scale codes what the coarser ones left: the scales' upsampled codes add up to the reconstruction
    # the decoder reads, and that sum rebuilt from the ids alone is the same.
    parts = quantizer.split(indices)
    assert [p.shape[1] for p in parts] == SIDES
    summed = sum(quantizer.upsampled(k, part, 7) for k, part in enumerate(parts))
    assert torch.allclose(summed, f_hat, atol=1e-5)
    assert torch.allclose(quantizer.get_output_from_indices(indices), f_hat, atol=1e-5)
    # The first scale is the nearest code to the whole latent's mean.
    first = quantizer.book.nearest(z.mean(dim=(2, 3)))
    assert torch.equal(parts[0][:, 0], first)
    # Decoding paints exactly the two encoded colors.
    decoded = tokenizer.decode(ids)
    assert ((color_counts(decoded.numpy()) > 0).sum(1) <= 2).all()
    with pytest.raises(ValueError, match="raster tokenizer"):
        tokenizer.kept_tokens(torch.ones(28, 28, dtype=torch.bool))


@pytest.mark.parametrize("bf16", [False, True])
def test_upsampled_codes_are_half_vectors_half_refined_in_fp32_even_under_bf16_autocast(untrained, bf16):
    """A scale's codes -> 0.5 * vectors + 0.5 * refine(vectors), bit for bit, as fp32 also where training's bf16
    autocast makes the refining conv's output bf16 (the teacher-forced inputs are built so)."""
    quantizer = untrained[1].shape.quantizer
    codes = torch.randint(0, 16, (4, 9))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        vectors = quantizer.book.codebook[codes].view(4, 3, 3, -1).permute(0, 3, 1, 2)
        vectors = torch.nn.functional.interpolate(vectors, size=(7, 7), mode="bicubic", align_corners=False)
        expected = 0.5 * vectors + 0.5 * quantizer.refine[2](vectors)
        upsampled = quantizer.upsampled(2, codes, 7)
    assert upsampled.dtype == torch.float32 == expected.dtype
    assert torch.equal(upsampled, expected)


def test_block_causal_mask_sees_exactly_the_caption_and_coarser_scales():
    layout = NextScaleLayout(NEXT_SCALES)
    mask = layout.drawing_mask()
    assert layout.block_sizes == [3] + SIDES[1:] and layout.drawing_length == CAPTION + 106
    assert torch.equal(mask[:CAPTION, :CAPTION], torch.tril(torch.ones(CAPTION, CAPTION, dtype=torch.bool)))
    assert not mask[:CAPTION, CAPTION:].any()                           # the caption never sees the image
    for index, (start, size) in enumerate(zip(layout.block_starts(), layout.block_sizes)):
        rows = mask[start:start + size]
        assert rows[:, :CAPTION].all()                                 # the whole caption
        assert rows[:, CAPTION:start + size].all()                     # coarser blocks and its own inputs
        assert not rows[:, start + size:].any()                        # nothing finer


def test_a_scale_never_sees_its_own_or_finer_tokens(untrained):
    """Changing the tokens of scale k and finer leaves the logits of every block up to k unchanged."""
    config, tokenizer, model, vocab = untrained
    # The sampler's additive bias is the mask: 0 where a query sees a key, -inf elsewhere.
    assert torch.equal(model.attention_bias == 0, model.mask)
    assert torch.isinf(model.attention_bias[~model.mask]).all() and (model.attention_bias[~model.mask] < 0).all()
    words = torch.randint(0, 31, (2, 6))
    ids = torch.randint(0, 16, (2, 106))
    ids[:, :2] = tokenizer.color_offset + torch.tensor([3, 5])
    starts = [0] + list(np.cumsum([3] + SIDES[1:]))                   # block starts inside the image
    for k in range(1, len(SIDES)):
        changed = ids.clone()
        changed[:, starts[k]:] = torch.randint(0, 16, (2, 106 - starts[k]))
        latents = [model.layout.drawing_inputs(tokenizer.shape.quantizer, x[:, 2:]) for x in (ids, changed)]
        a, b = (model.drawing_logits(captions(vocab, words), x)[:, CAPTION:] for x in latents)
        stop = starts[k + 1] if k + 1 < len(starts) else 106
        assert torch.allclose(a[:, :stop], b[:, :stop], atol=1e-5)     # block k predicts from coarser codes only
        if stop < 106:
            assert not torch.allclose(a[:, stop:], b[:, stop:])        # finer blocks do read them


@pytest.mark.parametrize("guidance", [1.0, 2.5])
@pytest.mark.parametrize("models", ["untrained", "checkerboard"])
def test_cached_sampler_equals_uncached(models, guidance, request):
    config, tokenizer, model, vocab = request.getfixturevalue(models)
    rules, words = ImageRules(vocab, tokenizer), torch.randint(0, 31, (5, 6))
    runs = [draw(model, tokenizer.shape, vocab, rules, words, 1.0, None, 0.9, guidance,
                 torch.Generator().manual_seed(3), use_cache=cache) for cache in (True, False)]
    assert torch.equal(*runs)
    # The rules hold for an untrained model: colors first, a pair of the data, codes after.
    drawn = runs[0]
    offset = tokenizer.color_offset
    assert (drawn[:, :2] >= offset).all() and (drawn[:, 2:] < offset).all()
    valid = set(map(tuple, VALID_PAIRS.tolist()))
    assert all((f - offset, b - offset) in valid for f, b in drawn[:, :2].tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_replayed_passes_draw_what_eager_passes_draw(untrained):
    """On CUDA each block's pass replays a recorded graph (decode_graph.CapturedPasses): the same drawings as eager
    passes, also when a later drawing replays the passes an earlier one recorded."""
    import copy
    from contextlib import nullcontext

    from tinychameleon import decode_graph

    config, tokenizer, model, vocab = untrained
    model, coder = copy.deepcopy(model).cuda(), copy.deepcopy(tokenizer.shape).cuda()
    rules, words = ImageRules(vocab, tokenizer).to("cuda"), torch.randint(0, 31, (5, 6)).cuda()
    for guidance in (1.0, 2.5, 2.5):
        runs = []
        for context in (decode_graph.eager_steps(), nullcontext()):
            with context:
                runs.append(draw(model, coder, vocab, rules, words, 1.0, None, 0.9, guidance,
                                 torch.Generator("cuda").manual_seed(3)))
        assert torch.equal(*runs)
    assert {key[2:] for key in decode_graph._pool[model]} == {("passes", 5), ("passes", 10)}


def test_guidance_one_equals_plain_sampling(untrained):
    """Scale 1 runs one stream; a scale a hair above 1 runs two and combines them - same greedy draws."""
    config, tokenizer, model, vocab = untrained
    rules, words = ImageRules(vocab, tokenizer), torch.randint(0, 31, (4, 6))
    plain = draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0, guidance=1.0)
    two_streams = draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0, guidance=1.0 + 1e-7)
    assert torch.equal(plain, two_streams)
    assert not torch.equal(plain, draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0, guidance=4.0))


def test_guidance_on_the_coarse_scales_only(untrained, scales_run, tiny_pipeline):
    """guided_blocks=N: the N coarsest blocks are exactly those of full guidance, the finer ones differ; every block
    guided is full guidance; cached = uncached; the raster model refuses the setting."""
    config, tokenizer, model, vocab = untrained
    rules, words = ImageRules(vocab, tokenizer), torch.randint(0, 31, (4, 6))
    starts = [start - CAPTION for start in model.layout.block_starts()]
    guided = draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0, guidance=4.0)
    partly = [draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0, guidance=4.0, guided_blocks=3,
                   use_cache=cache) for cache in (True, False)]
    assert torch.equal(*partly)
    partly = partly[0]
    assert torch.equal(partly[:, :starts[3]], guided[:, :starts[3]])
    assert not torch.equal(partly[:, starts[3]:], guided[:, starts[3]:])     # the setting is honoured
    assert torch.equal(draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0, guidance=4.0,
                            guided_blocks=len(starts)), guided)              # every block guided = full guidance
    pipe = Pipeline.from_pretrained(scales_run)                          # the pipeline passes it on
    every, coarse = (pipe.generate_images(["dark green eight on bright cyan"] * 4, seed=5, guidance=3.0,
                                          guided_scales=value) for value in (0, 1))
    assert not np.array_equal(every, coarse)
    with pytest.raises(ConfigError, match="raster model guides every token"):
        tiny_pipeline.generate_images("dark green eight on bright cyan", guidance=2.0, guided_scales=2)


def test_greedy_above_takes_the_caption_streams_sure_tokens(untrained, scales_run):
    """greedy_above 0 takes every token from the unguided argmax (so it equals greedy without guidance, whatever the
    temperature and guidance), 1 leaves the draw alone, and the pipeline passes the setting on."""
    config, tokenizer, model, vocab = untrained
    rules, words = ImageRules(vocab, tokenizer), torch.randint(0, 31, (4, 6))

    def sample(temperature, guidance, **greedy_above):
        return draw(model, tokenizer.shape, vocab, rules, words, temperature=temperature, guidance=guidance,
                    generator=torch.Generator().manual_seed(2), **greedy_above)

    greedy = sample(0.0, 1.0)
    assert torch.equal(sample(1.0, 4.0, greedy_above=0.0), greedy)
    assert not torch.equal(sample(1.0, 4.0, greedy_above=1.0), greedy)
    pipe = Pipeline.from_pretrained(scales_run)
    plain, sure = (pipe.generate_images(["dark green eight on bright cyan"] * 4, seed=5, guidance=3.0,
                                        greedy_above=value) for value in (1.0, 0.0))
    assert np.array_equal(sure, pipe.generate_images(["dark green eight on bright cyan"] * 4, seed=6,
                                                     temperature=0.0, guidance=1.0))
    assert not np.array_equal(plain, sure)


def test_cached_reading_equals_teacher_forced_argmax(untrained):
    config, tokenizer, model, vocab = untrained
    rules = ModalityRules(vocab)
    ids = draw(model, tokenizer.shape, vocab, ImageRules(vocab, tokenizer), torch.randint(0, 31, (4, 6)),
               generator=torch.Generator().manual_seed(1))
    words = read(model, tokenizer.shape, vocab, rules, ids)
    # Teacher forcing the read words: each is the allowed argmax of -nll over its slot.
    nll = reading_nll(model, tokenizer.shape, vocab, words, ids)
    assert nll.shape == (4, 6) and torch.isfinite(nll).all()
    head = torch.cat([torch.tensor([vocab.bos, vocab.end_of_text]).expand(4, 2), ids[:, :2]], dim=1)
    tail = torch.cat([torch.full((4, 1), vocab.end_of_image), words[:, :-1] + vocab.word_offset], dim=1)
    logits = model.reading_logits(head, tokenizer.shape.features(ids[:, 2:]), tail)[:, -6:]
    orders = torch.full((4,), IMAGE_FIRST)
    previous = torch.full((4,), vocab.end_of_image)
    for slot in range(6):
        allowed = rules.mask(orders, vocab.image_first_words.start + slot, previous)
        expected = filter_logits(logits[:, slot], allowed, 0.0, None).argmax(-1)
        assert torch.equal(expected, words[:, slot] + vocab.word_offset)
        previous = expected


@pytest.mark.parametrize("models", ["untrained", "checkerboard"])
def test_drawing_loss_is_the_sampled_tokens_likelihood(models, request):
    """The objective scores exactly what the sampler draws: greedy draws are each block's argmax (with the
    checkerboard too, so teacher forcing gives the second half of the finest scale the inputs the sampler gives)."""
    config, tokenizer, model, vocab = request.getfixturevalue(models)
    words = torch.randint(0, 31, (3, 6))
    ids = draw(model, tokenizer.shape, vocab, ImageRules(vocab, tokenizer), words, temperature=0.0)
    _, image_nll = drawing_nll(model, tokenizer.shape, vocab, words, ids)
    assert image_nll.shape == (3, 106)
    # Shape codes are each block's allowed argmax, so each has the lowest loss among codes at its slot.
    latents = model.layout.drawing_inputs(tokenizer.shape.quantizer, ids[:, 2:])
    logits = model.drawing_logits(captions(vocab, words), latents)[:, CAPTION + 3:, :tokenizer.color_offset]
    assert torch.equal(logits.argmax(-1), ids[:, model.layout.order][:, 3:])


def test_checkerboard_draws_the_finest_scale_in_two_halves_the_second_seeing_the_first(checkerboard, untrained):
    """Blocks 3, 4, 9, 16, 25, then the finest scale's two checkerboard colours (25 + 24 cells: within a half no
    two cells touch, and every neighbour of a second-half cell is in the first); the drawing order is a
    permutation of the tokenizer's (the identity without the checkerboard); the second half's logits move when
    the first half's codes change, the first half's do not, and nothing coarser moves."""
    config, tokenizer, model, vocab = checkerboard
    layout = model.layout
    assert layout.block_sizes == [3, 4, 9, 16, 25, 25, 24] and layout.image_length == 106
    assert torch.equal(layout.order.sort().values, torch.arange(106))
    assert torch.equal(untrained[2].layout.order, torch.arange(106))
    quantizer, codes = tokenizer.shape.quantizer, torch.randint(0, 16, (2, 104))
    # Without it, scale k's inputs are the coarser scales' upsampled codes summed, area-downsampled to its grid.
    parts = quantizer.split(codes)
    coarser = [sum(quantizer.upsampled(j, parts[j], 7) for j in range(k)) for k in range(1, len(parts))]
    plain = torch.cat([quantizer.input_at(f_hat, k + 1) for k, f_hat in enumerate(coarser)], dim=1)
    assert torch.equal(untrained[2].layout.drawing_inputs(quantizer, codes), plain)
    first, second = (set(cells.tolist()) for cells in layout.block_cells[-2:])

    def neighbours(cell):
        row, column = divmod(cell, 7)
        return {r * 7 + c for r, c in ((row - 1, column), (row + 1, column), (row, column - 1), (row, column + 1))
                if 0 <= r < 7 and 0 <= c < 7}

    assert first | second == set(range(49)) and not first & second
    assert all(not neighbours(cell) & first for cell in first) and all(neighbours(cell) <= first for cell in second)
    words, ids = torch.randint(0, 31, (2, 6)), torch.randint(0, 16, (2, 106))
    ids[:, :2] = tokenizer.color_offset + torch.tensor([3, 5])
    finest = 106 - 49
    changed = ids.clone()
    changed[:, finest + layout.block_cells[-2]] = (ids[:, finest + layout.block_cells[-2]] + 1) % 16
    a, b = (model.drawing_logits(captions(vocab, words),
                                 layout.drawing_inputs(tokenizer.shape.quantizer, x[:, 2:]))[:, CAPTION:]
            for x in (ids, changed))
    assert torch.allclose(a[:, :106 - 24], b[:, :106 - 24], atol=1e-5)          # up to the first half: unchanged
    assert not torch.allclose(a[:, 106 - 24:], b[:, 106 - 24:], atol=1e-3)      # the second half reads it
    with pytest.raises(ValueError, match="checkerboard splits a next-scale model's finest scale"):
        make_config("tiny", model={"checkerboard": True})


def test_a_next_scale_run_trains_reloads_draws_reads_and_refuses_raster_tasks(scales_run, colored):
    metrics = json.loads((scales_run / "transformer_metrics.json").read_text())
    epochs = metrics["epochs"] if isinstance(metrics, dict) else metrics
    assert epochs[-1]["validation_nll"] < epochs[0]["validation_nll"]     # it learnt something
    pipe = Pipeline.from_pretrained(scales_run)
    assert pipe.next_scale and pipe.vocab.image_length == 106
    images = pipe.generate_images(["dark green eight on bright cyan"], n=3, seed=0, guidance=2.0, image_candidates=2)
    assert images.shape == (3, 28, 28, 3) and ((color_counts(images) > 0).sum(1) <= 2).all()
    again = pipe.generate_images(["dark green eight on bright cyan"], n=3, seed=0, guidance=2.0, image_candidates=2)
    assert np.array_equal(images, again)                                 # seeded
    captions_read = pipe.caption(colored[1].images[:4])
    assert len(captions_read) == 4 and all(len(c.split()) == 6 for c in captions_read)
    sampled, sampled_captions = pipe.sample(3, seed=0)
    assert sampled.shape == (3, 28, 28, 3) and all(parse_caption(c) is not None for c in sampled_captions)
    for first in ("image", "model"):
        assert pipe.sample(2, seed=0, first=first, ancestral=first == "model")[0].shape == (2, 28, 28, 3)
    with pytest.raises(ConfigError, match="raster"):
        pipe.generate_images("dark green eight on bright cyan", cd_k=4)
    with pytest.raises(ConfigError, match="raster model"):
        pipe.complete(colored[1].images[:1])
    with pytest.raises(ConfigError, match="raster model"):
        pipe.continue_documents("<image> what digit is this ?", [colored[1].images[0]])


def test_shipped_var_checkpoint_is_selectable_by_name_and_matches_its_preset():
    path = PRETRAINED["var"]
    if not (path / "model.safetensors").exists():
        pytest.skip("no shipped var checkpoint")
    shipped, preset = load_config(path), make_config("var")
    for section in ("vq", "vq_train", "train"):
        assert getattr(shipped, section) == getattr(preset, section), section
    assert (shipped.model.n_layer, shipped.model.d_model) == (preset.model.n_layer, preset.model.d_model)
    pipe = Pipeline.from_pretrained("var")
    assert pipe.next_scale and pipe.source == str(path)


def test_a_temperature_per_scale(untrained, scales_run, tiny_pipeline):
    config, tokenizer, model, vocab = untrained
    rules, words = ImageRules(vocab, tokenizer), torch.randint(0, 31, (4, 6))
    greedy = draw(model, tokenizer.shape, vocab, rules, words, temperature=0.0)
    assert torch.equal(draw(model, tokenizer.shape, vocab, rules, words, temperature=[0.0] * 6), greedy)
    pipe = Pipeline.from_pretrained(scales_run)
    from tinychameleon.config import SamplingConfig
    assert pipe._scale_temperatures(SamplingConfig(temperature=0.8, fine_temperature=0.5)) == \
        pytest.approx([0.8, 0.72, 0.64, 0.56, 0.48, 0.4])
    hot, cold = (pipe.generate_images(["dark green eight on bright cyan"] * 8, seed=5, fine_temperature=value)
                 for value in (1.0, 0.0))
    assert not np.array_equal(hot, cold)                      # the setting is honoured, not ignored
    with pytest.raises(ConfigError, match="raster model draws with one temperature"):
        tiny_pipeline.generate_images("dark green eight on bright cyan", fine_temperature=0.5)


def test_reading_out_only_the_last_positions_equals_the_full_output(untrained):
    """The raster sampler's prefill reads `last=1`; the next-scale model answers it like the raster one."""
    _, _, model, vocab = untrained
    ids = torch.randint(0, vocab.size, (3, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, last=2), model(ids)[:, -2:], atol=1e-5, rtol=1e-5)


def test_caption_digits_are_reranked_by_bayes_rule_in_both_orders(untrained, scales_run, colored):
    """rerank_digits keeps the digit whose caption scores best by log p(caption | image) + log p(caption, image),
    brute force over all ten; hypotheses=1 keeps the reading's own best; a second reader's scores are added. The
    pipeline honours rerank_captions for a next-scale model."""
    _, tokenizer, model, vocab = untrained
    pipe = Pipeline.from_pretrained(scales_run)
    words = torch.tensor([pipe.tokenizer.encode(caption) for caption in colored[1].captions()[:5]])
    image_ids = draw(model, tokenizer.shape, vocab, ImageRules(vocab, tokenizer), words,
                     generator=torch.Generator().manual_seed(0))
    candidates = digit_candidates(words)                                                   # (5, 10, 6)
    flat, repeated = candidates.view(50, 6), image_ids.repeat_interleave(10, 0)
    with torch.no_grad():
        reading = -reading_nll(model, tokenizer.shape, vocab, flat, repeated).sum(1).view(5, 10)
        word_nll, image_nll = drawing_nll(model, tokenizer.shape, vocab, flat, repeated)
    bayes = reading - (word_nll.sum(1) + image_nll.sum(1)).view(5, 10)
    # The cached reading (the shared prefix once per image) equals the uncached one on every candidate.
    torch.testing.assert_close(reading_per_digit(model, tokenizer.shape, vocab, words, image_ids), reading,
                               atol=1e-4, rtol=1e-5)
    rows = torch.arange(5)
    assert torch.equal(rerank_digits(model, tokenizer.shape, vocab, words, image_ids, batch_size=7),
                       candidates[rows, bayes.argmax(1)])
    assert torch.equal(rerank_digits(model, tokenizer.shape, vocab, words, image_ids, hypotheses=1),
                       candidates[rows, reading.argmax(1)])
    seven = DIGIT_WORD_IDS[7]
    outvoted = rerank_digits(model, tokenizer.shape, vocab, words, image_ids,
                             second_reader=lambda kept: 1e4 * (kept[:, :, DIGIT_SLOT] == seven).float())
    assert (outvoted[:, DIGIT_SLOT] == seven).all()
    images = colored[1].images[:6]
    plain, reranked = pipe.caption(images), pipe.caption(images, rerank_captions=True)
    codes = pipe.image_tokenizer.encode(torch.from_numpy(images))
    expected = rerank_digits(pipe.model, pipe.image_tokenizer.shape, pipe.vocab,
                             torch.tensor([pipe.tokenizer.encode(caption) for caption in plain]), codes)
    assert reranked == [pipe.tokenizer.decode(row) for row in expected]
    with pytest.raises(ConfigError, match="guidance on captions"):
        pipe.caption(images, guidance=2.0)


def test_caption_views_add_their_digit_scores(untrained, scales_run, colored):
    """A view's (recolored, shifted copy's) scores add to the image's own, in the reading and the joint term alike:
    the same reading twice cannot change the choice, another one moves it to the argmax of the summed brute-force
    scores; the pipeline's caption_views reads exactly the views reranking.view_images makes."""
    _, tokenizer, model, vocab = untrained
    generator = torch.Generator().manual_seed(1)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3], [4, 4, 18, 26, 2, 2]])
    other_words = torch.tensor([[3, 6, 11, 26, 5, 8]] * 3)
    rules = ImageRules(vocab, tokenizer)
    image_ids = draw(model, tokenizer.shape, vocab, rules, words, generator=generator)
    other_ids = draw(model, tokenizer.shape, vocab, rules, other_words, generator=generator)

    def bayes(caption_words, ids):                                                       # (3, 10) brute force
        flat, repeated = digit_candidates(caption_words).view(30, 6), ids.repeat_interleave(10, 0)
        with torch.no_grad():
            word_nll, image_nll = drawing_nll(model, tokenizer.shape, vocab, flat, repeated)
            reading = reading_nll(model, tokenizer.shape, vocab, flat, repeated).sum(1)
        return -(reading + word_nll.sum(1) + image_nll.sum(1)).view(3, 10)

    alone = rerank_digits(model, tokenizer.shape, vocab, words, image_ids)
    assert torch.equal(rerank_digits(model, tokenizer.shape, vocab, words, image_ids, views=[(words, image_ids)]),
                       alone)
    expected = digit_candidates(words)[torch.arange(3), (bayes(words, image_ids) + bayes(other_words, other_ids))
                                       .argmax(1)]
    assert torch.equal(rerank_digits(model, tokenizer.shape, vocab, words, image_ids, batch_size=7,
                                     views=[(other_words, other_ids)]), expected)
    pipe = Pipeline.from_pretrained(scales_run)
    images = colored[1].images[:4]
    plain = torch.tensor([pipe.tokenizer.encode(c) for c in pipe.caption(images)])
    views = [(torch.tensor(pipe.tokenizer.encode(f"{COLOR_NAMES[f]} zero on {COLOR_NAMES[b]}")).repeat(4, 1),
              pipe.image_tokenizer.encode(torch.from_numpy(pixels))) for f, b, pixels in view_images(images, 3)]
    expected = rerank_digits(pipe.model, pipe.image_tokenizer.shape, pipe.vocab, plain,
                             pipe.image_tokenizer.encode(torch.from_numpy(images)), views=views)
    assert pipe.caption(images, rerank_captions=True, caption_views=3) == [pipe.tokenizer.decode(r) for r in expected]


def test_scale_settings_count_scales_on_a_checkerboard(checkerboard, untrained):
    """guided_scales and fine_temperature name scales: both halves of a checkerboard's finest scale are guided and
    cooled as the finest; without the checkerboard a scale is a block."""
    from types import SimpleNamespace

    from tinychameleon.config import SamplingConfig
    from tinychameleon.pipeline_scales import NextScaleTasks

    settings = SamplingConfig(temperature=1.0, fine_temperature=0.5)
    split, plain = (SimpleNamespace(model=fixture[2]) for fixture in (checkerboard, untrained))
    assert NextScaleTasks._scale_temperatures(split, settings) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5])
    assert NextScaleTasks._scale_temperatures(plain, settings) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    for guided, blocks_split, blocks_plain in ((0, 0, 0), (3, 3, 3), (5, 5, 5), (6, 7, 6)):
        chosen = SamplingConfig(guided_scales=guided)
        assert NextScaleTasks._guided_blocks(split, chosen) == blocks_split
        assert NextScaleTasks._guided_blocks(plain, chosen) == blocks_plain
