"""The causal-masked (CM3) objective: span sequences, their loss weights, training and infilling."""

import json

import numpy as np
import pytest
import torch

from tinychameleon import checkpoint
from tinychameleon.config import make_config
from tinychameleon.sequences import IMAGE_FIRST, TEXT_FIRST, build_sequences, masked_span_sequences, random_spans
from tinychameleon.tokenizers.vocab import Vocab

VOCAB = Vocab(16, infill=True)
SEQUENCE_LENGTH, INFILL_LENGTH = VOCAB.plain_length, VOCAB.sequence_length
TEXT_FIRST_WORDS, TEXT_FIRST_CODES = VOCAB.text_first_words, VOCAB.text_first_codes
IMAGE_FIRST_WORDS, IMAGE_FIRST_CODES = VOCAB.image_first_words, VOCAB.image_first_codes


def plain_rows(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(0, 31, (count, 6), generator=generator)
    codes = torch.randint(0, 16, (count, 49), generator=generator)
    orders = torch.arange(count) % 2
    return build_sequences(VOCAB, words, codes, orders)


def test_vocab_gains_one_mask_token_only_when_infilling():
    plain = Vocab(16)
    assert VOCAB.size == plain.size + 1 and VOCAB.mask == plain.size and VOCAB.token_name(VOCAB.mask) == "<mask>"
    assert INFILL_LENGTH == SEQUENCE_LENGTH + 2 == 60 and plain.sequence_length == SEQUENCE_LENGTH == 58
    with pytest.raises(ValueError, match="no <mask>"):
        plain.mask
    assert Vocab.for_config(make_config("tiny", train={"infill_rate": 0.3})).infill
    assert not Vocab.for_config(make_config("tiny")).infill


def test_a_span_moves_to_the_end_behind_paired_sentinels():
    rows = plain_rows(1)
    start, length = TEXT_FIRST_CODES.start + 10, 5
    masked, weights = masked_span_sequences(VOCAB, rows, torch.tensor([start]), torch.tensor([length]))
    row, original = masked[0].tolist(), rows[0].tolist()
    assert len(row) == INFILL_LENGTH and row.count(VOCAB.mask) == 2
    hole, second = row.index(VOCAB.mask), len(row) - length - 1
    assert hole == start and row[second] == VOCAB.mask
    assert row[:hole] == original[:start]                                  # before the hole: unchanged
    assert row[hole + 1:second] == original[start + length:]               # after the hole: shifted up
    assert row[second + 1:] == original[start:start + length]              # the span, at the end
    assert sorted(row[:hole] + row[hole + 1:second] + row[second + 1:]) == sorted(original)
    # Every prediction counts except the one of the first sentinel (where the hole is, not learnable).
    assert weights.shape == (1, INFILL_LENGTH - 1) and weights[0, hole - 1] == 0 and weights.sum() == INFILL_LENGTH - 2


def test_plain_rows_are_padded_and_their_padding_carries_no_loss():
    rows = plain_rows(2)
    masked, weights = masked_span_sequences(VOCAB, rows, torch.tensor([5, 5]), torch.tensor([0, 0]))
    assert torch.equal(masked[:, :SEQUENCE_LENGTH], rows) and (masked[:, SEQUENCE_LENGTH:] == VOCAB.mask).all()
    assert (weights[:, :SEQUENCE_LENGTH - 1] == 1).all() and (weights[:, SEQUENCE_LENGTH - 1:] == 0).all()


def test_random_spans_stay_inside_one_modality():
    rows = plain_rows(4000, seed=1)
    masked, weights = random_spans(VOCAB, rows, rate=0.5, generator=torch.Generator().manual_seed(0))
    spanned = (masked[:, :SEQUENCE_LENGTH] == VOCAB.mask).any(dim=1)
    assert 0.45 < spanned.float().mean() < 0.55                             # the rate
    image_spans = text_spans = 0
    for row, original in zip(masked[spanned], rows[spanned]):
        hole = int((row == VOCAB.mask).nonzero()[0])
        length = INFILL_LENGTH - 1 - int((row == VOCAB.mask).nonzero()[1])
        order = IMAGE_FIRST if int(original[1]) == VOCAB.end_of_text else TEXT_FIRST
        regions = {TEXT_FIRST: (TEXT_FIRST_WORDS, TEXT_FIRST_CODES), IMAGE_FIRST: (IMAGE_FIRST_WORDS, IMAGE_FIRST_CODES)}
        inside = [region for region in regions[order] if region.start <= hole and hole + length <= region.stop]
        assert len(inside) == 1 and length >= 1                            # never across the boundary
        image_spans += inside[0] in (TEXT_FIRST_CODES, IMAGE_FIRST_CODES)
        text_spans += inside[0] in (TEXT_FIRST_WORDS, IMAGE_FIRST_WORDS)
    assert image_spans > 4 * text_spans > 0                                 # spans fall where the tokens are
    assert (weights.sum(dim=1) == INFILL_LENGTH - 2).sum() == spanned.sum()


@pytest.fixture(scope="module")
def infill_run(tiny_run, tmp_path_factory, cache_dir):
    from tinychameleon.training.run import train

    config = make_config("tiny", train={"init_from": str(tiny_run), "infill_rate": 0.5, "lr": 1e-3})
    return train(config, tmp_path_factory.mktemp("infill") / "run", cache_dir=cache_dir, progress=False,
                 device_name="cpu")


def test_infill_objective_trains_and_grows_a_plain_checkpoint(tiny_run, infill_run):
    """A plain run fine-tuned with the objective: the <mask> row and two positions are added, the rest copied."""
    run = infill_run
    model, source = checkpoint.load_transformer(run), checkpoint.load_transformer(tiny_run)
    assert model.config.vocab_size == source.config.vocab_size + 1 and model.config.block_size == INFILL_LENGTH
    assert json.loads((run / "vocab.json").read_text())["mask"] == source.config.vocab_size
    epochs = json.loads((run / "transformer_metrics.json").read_text())["epochs"]
    # It starts where the source ended, up to the probability the fresh <mask> row takes from the softmax.
    assert epochs[0]["validation_nll"] == pytest.approx(
        json.loads((tiny_run / "transformer_metrics.json").read_text())["epochs"][-1]["validation_nll"], rel=0.02)
    assert epochs[-1]["validation_nll"] < epochs[0]["validation_nll"]


def test_infilling_reads_both_sides_and_keeps_the_kept_part(infill_run, colored, monkeypatch):
    from tinychameleon.pipeline import Pipeline
    from tinychameleon.pipeline_completion import COMPLETION_REDRAWS

    pipe = Pipeline.from_pretrained(infill_run)
    calls = []
    real = pipe.pairs.infill
    monkeypatch.setattr(pipe.pairs, "infill", lambda *args: calls.append(args[1]) or real(*args))
    images = colored[1].images[:3]
    completed, captions = pipe.complete(images, keep="bottom", n=2, seed=0)
    # One infilling pass for all six rows, then up to COMPLETION_REDRAWS for rows whose caption names
    # another digit than the one drawn for (without a prompt the model checks its own drawing).
    assert 1 <= len(calls) <= 1 + COMPLETION_REDRAWS and len(calls[0]) == 6
    assert completed.shape == (6, 28, 28, 3) and len(captions) == 6
    for kept in calls:
        assert (kept[:, :21] == -1).all() and (kept[:, 28:] >= 0).all()  # hole: rows 0-2 of the grid (+ row 3 split)
    assert np.array_equal(completed[:, 14:], np.repeat(images, 2, axis=0)[:, 14:])  # kept pixels, exactly
    count = len(calls)
    pipe.complete(images, keep="top", seed=0)                          # a suffix hole: plain raster completion
    assert len(calls) == count


def test_infill_decoding_with_the_cache_equals_full_forward_passes(infill_run):
    """The span is drawn through the KV cache exactly as a full forward pass would draw it (greedy)."""
    from tinychameleon.sampling import SpanRules, generate

    model = checkpoint.load_transformer(infill_run)
    vocab = Vocab.for_config(checkpoint.load_config(infill_run))
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, vocab.image_tokens, (4, 49), generator=generator)
    words = torch.randint(0, 31, (4, 6), generator=generator)
    rows = build_sequences(vocab, words, codes, torch.zeros(4, dtype=torch.long))
    masked, _ = masked_span_sequences(vocab, rows, torch.full((4,), TEXT_FIRST_CODES.start + 5), torch.full((4,), 9))
    prefix = masked[:, :INFILL_LENGTH - 9]
    free = torch.cat([torch.tensor([[vocab.bos, vocab.end_of_text]] * 4), prefix[:, TEXT_FIRST_CODES.start:]], 1)
    outputs = [generate(model, prefix, SpanRules(vocab), temperature=0.0, guidance=2.0, use_cache=cache,
                        length=INFILL_LENGTH, unconditional_prefix=free) for cache in (True, False)]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0][:, :prefix.shape[1]], prefix)
    assert (outputs[0][:, prefix.shape[1]:] < vocab.image_tokens).all()   # the span holds image codes only


def test_a_mixed_pool_draws_half_its_candidates_by_contrastive_decoding(tiny_run, monkeypatch):
    from tinychameleon.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_run)
    seen = []
    real = pipe.pairs.generate
    monkeypatch.setattr(pipe.pairs, "generate", lambda prefix, settings, *a, **k: seen.append((len(prefix), settings.cd_k))
                        or real(prefix, settings, *a, **k))
    images = pipe.generate_images(["normal red four on plain white"] * 3, seed=0, image_candidates=4, mixed_pool=True,
                                  guidance=2.0)
    assert images.shape == (3, 28, 28, 3)
    assert sorted(seen) == [(6, 0), (6, 5)]          # 12 candidate rows: 6 guided, 6 by CD-K (k 5 by default)
    seen.clear()
    pipe.generate_images(["normal red four on plain white"] * 3, seed=0, image_candidates=4, guidance=2.0)
    assert seen == [(12, 0)]
