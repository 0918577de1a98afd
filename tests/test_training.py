import json
import time

import numpy as np
import pytest
import torch

from tinychameleon.config import RunConfig, make_config
from tinychameleon.errors import CheckpointError
from tinychameleon import checkpoint
from tinychameleon.training.lm_trainer import epoch_batches
from tinychameleon.training.schedule import warmup_cosine


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)
    values = [warmup_cosine(step, 100, 10) for step in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_presets_and_config_round_trip():
    config = make_config("quick", train={"epochs": 7})
    assert config.train.epochs == 7 and config.preset == "quick"
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    seed = make_config("seed")
    assert (seed.train.lr, seed.train.batch_size, seed.train.epochs) == (1e-3, 32, 30)
    assert (seed.model.n_layer, seed.model.d_model, seed.model.n_head) == (4, 128, 4)
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")


def test_every_batch_is_half_text_first():
    for rows, orders in epoch_batches(1000, 32, seed=0, epoch=0):
        assert len(rows) == 32 and int(orders.sum()) == 16


def test_reading_share_sets_the_image_first_rows_of_every_batch():
    for rows, orders in epoch_batches(1000, 32, seed=0, epoch=0, reading_share=0.25):
        assert len(rows) == 32 and int(orders.sum()) == 8
    # The default draws exactly what every release trained on (0.5 is batch_size // 2, same permutations).
    plain = list(epoch_batches(1000, 33, seed=0, epoch=1))
    halves = list(epoch_batches(1000, 33, seed=0, epoch=1, reading_share=0.5))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and int(a[1].sum()) == 16
               for a, b in zip(plain, halves))


def test_tiny_run_writes_a_self_describing_checkpoint(tiny_run):
    for name in ("config.json", "vocab.json", "vqvae.safetensors", "model.safetensors", "training_curve.png",
                 "transformer_metrics.json", "transformer_metrics.csv", "vqvae_metrics.json"):
        assert (tiny_run / name).exists(), name
    history = json.loads((tiny_run / "transformer_metrics.json").read_text())
    epochs = history["epochs"]
    assert epochs[0]["epoch"] == 0 and epochs[-1]["validation_nll"] < epochs[0]["validation_nll"]  # it learned
    assert {"validation_text_nll", "validation_image_nll", "validation_text_first_nll",
            "validation_image_first_nll"} <= set(epochs[-1])
    assert not any(key.startswith("test") for key in epochs[-1])  # training never looks at the test split
    info = json.loads((tiny_run / "run_info.json").read_text())
    assert info["wall_time_s"] > 0 and info["cpu_count"] >= 1 and "torch" in info
    assert len(history["steps"]) == 512 // 32  # one train loss per minibatch
    model = checkpoint.load_transformer(tiny_run)
    assert model.config.n_layer == 1


def test_corrupt_checkpoint_is_a_clear_error(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocab.json", "vqvae.safetensors"):
        (broken / name).write_bytes((tiny_run / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load_transformer(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load_config(broken)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_an_interrupted_run(optimizer, tmp_path, cache_dir, monkeypatch):
    from tinychameleon.training import lm_trainer
    from tinychameleon.training.run import train

    uninterrupted = tmp_path / "uninterrupted"
    train(make_config("tiny", train={"epochs": 2, "optimizer": optimizer}), uninterrupted, cache_dir=cache_dir,
          progress=False, device_name="cpu")
    assert not (uninterrupted / "train_state.pt").exists()  # a finished run leaves no resume state

    # Interrupt right after epoch 1 has been saved (the curve is drawn last in each epoch).
    real_plot = lm_trainer.plot_curve

    def plot_then_interrupt(*args, **kwargs):
        real_plot(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(lm_trainer, "plot_curve", plot_then_interrupt)
    interrupted = tmp_path / "interrupted"
    first_started = time.time()
    with pytest.raises(KeyboardInterrupt):
        train(make_config("tiny", train={"epochs": 2, "optimizer": optimizer}), interrupted, cache_dir=cache_dir,
              progress=False, device_name="cpu")
    first_segment = time.time() - first_started
    assert (interrupted / "train_state.pt").exists()
    monkeypatch.setattr(lm_trainer, "plot_curve", real_plot)
    # Say epoch 1 took 1000 s longer than it did: the resumed epoch's clock must go on from there.
    from tinychameleon.training.state import load_state, save_state
    state = load_state(interrupted / "train_state.pt")
    state["epochs"][-1]["elapsed_s"] += 1000.0
    epoch_one = state["epochs"][-1]["elapsed_s"]
    save_state(interrupted / "train_state.pt", state)
    time.sleep(1.0)  # a pause between the segments is not training time
    second_started = time.time()
    train(make_config("tiny"), interrupted, resume=True, cache_dir=cache_dir, progress=False, device_name="cpu")
    second_segment = time.time() - second_started

    # run_info's wall time counts both segments (the first up to its last save), not the pause between them.
    wall_time = json.loads((interrupted / "run_info.json").read_text())["wall_time_s"]
    assert second_segment + 0.5 * first_segment - 0.2 <= wall_time <= first_segment + second_segment + 0.2
    assert not (interrupted / "segment.json").exists()

    history = json.loads((interrupted / "transformer_metrics.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [0, 1, 2]  # the run's own config (2 epochs) won
    assert epoch_one < history["epochs"][2]["elapsed_s"] <= epoch_one + second_segment   # the whole run, not a segment
    finished = checkpoint.load_transformer(uninterrupted).state_dict()
    for key, value in checkpoint.load_transformer(interrupted).state_dict().items():
        torch.testing.assert_close(value, finished[key])  # same weights as if never interrupted


def test_newton_schulz_makes_updates_nearly_orthogonal():
    from tinychameleon.training.optimizers import newton_schulz

    torch.manual_seed(0)
    for shape in ((32, 32), (96, 32), (32, 96)):
        update = torch.randn(shape) * torch.logspace(-1, 0.5, shape[1])   # columns of 30x different sizes
        exact = newton_schulz(update)
        singular = torch.linalg.svdvals(exact)
        # Every direction now moves at about the same rate (the quintic lands in roughly 0.7..1.2).
        assert singular.min() > 0.5 and singular.max() < 1.3, singular
        # In bf16 (runs that train in it) the same map, to bf16's precision, returned in fp32.
        rounded = newton_schulz(update, dtype=torch.bfloat16)
        assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
        torch.testing.assert_close(rounded, exact, atol=0.05, rtol=0.05)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from tinychameleon.training.optimizers import Muon, build_optimizer

    config = make_config("tiny", train={"optimizer": "muon"})
    model = checkpoint.build_transformer(config)
    optimizer = build_optimizer(model, config.train)
    muon = [o for o in optimizer.optimizers if isinstance(o, Muon)][0]
    assert muon.dtype == torch.float32
    bf16_muon = [o for o in build_optimizer(model, config.train, bf16=True).optimizers if isinstance(o, Muon)][0]
    assert bf16_muon.dtype == torch.bfloat16
    names = {id(p): name for name, p in model.named_parameters()}
    on_muon = {names[id(p)] for p in muon.param_groups[0]["params"]}
    assert on_muon == {n for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks.")}
    assert "token_embedding.weight" not in on_muon and "head.weight" not in on_muon
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert muon.param_groups[0]["lr_scale"] == config.train.muon_lr / config.train.lr
    # One step moves a matrix by lr x an orthogonalized update: its singular values are all about lr.
    before = model.blocks[0].mlp.up.weight.detach().clone()
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    moved = torch.linalg.svdvals(model.blocks[0].mlp.up.weight.detach() - before)
    scale = max(1, before.shape[0] / before.shape[1]) ** 0.5 * config.train.muon_lr
    assert moved.max() < 1.3 * scale and moved.min() > 0.5 * scale


def test_init_from_fine_tunes_another_run(tiny_run, tmp_path, cache_dir):
    from tinychameleon.training.run import train

    source = json.loads((tiny_run / "transformer_metrics.json").read_text())["epochs"][-1]
    # A different preset shape on purpose: the source run's shape and tokenizer must win.
    config = make_config("tiny", model={"n_layer": 3}, train={"init_from": str(tiny_run), "lr": 1e-3})
    train(config, tmp_path / "tuned", cache_dir=cache_dir, progress=False, device_name="cpu")
    tuned = json.loads((tmp_path / "tuned" / "transformer_metrics.json").read_text())["epochs"]
    assert tuned[0]["validation_nll"] == pytest.approx(source["validation_nll"], rel=1e-5)  # starts where it ended
    assert tuned[-1]["validation_nll"] < tuned[0]["validation_nll"]
    saved = checkpoint.load_config(tmp_path / "tuned")
    assert saved.model.n_layer == 1 and saved.train.init_from == str(tiny_run)
    assert (tmp_path / "tuned" / "vqvae.safetensors").read_bytes() == (tiny_run / "vqvae.safetensors").read_bytes()


def test_reading_share_reaches_every_batch_a_run_trains(tiny_run, tmp_path, cache_dir, monkeypatch):
    """--set train.reading_share is not ignored: every batch the trainer draws reads that share image-first."""
    from tinychameleon.training import lm_trainer
    from tinychameleon.training.run import train

    real, shares = lm_trainer.epoch_batches, []

    def recording(*args, **kwargs):
        for rows, orders in real(*args, **kwargs):
            shares.append(float(orders.float().mean()))
            yield rows, orders

    monkeypatch.setattr(lm_trainer, "epoch_batches", recording)
    config = make_config("tiny", train={"init_from": str(tiny_run), "reading_share": 0.25})
    train(config, tmp_path / "quarter", cache_dir=cache_dir, progress=False, device_name="cpu")
    assert shares and all(share == 0.25 for share in shares)          # 8 of every 32


def test_colorings_cycle_over_epochs(tiny_run, tmp_path, cache_dir, monkeypatch):
    from tinychameleon.data.colored import recolored_train
    from tinychameleon.training import lm_trainer
    from tinychameleon.training.run import caption_word_ids, train

    seen = []  # the first batch's word ids of every epoch, as the trainer builds them
    original = lm_trainer.build_sequences

    def spy(vocab, words, codes, orders):
        if codes.shape[0] == 32:  # a training batch (test NLL batches are larger)
            seen.append(words.clone())
        return original(vocab, words, codes, orders)

    monkeypatch.setattr(lm_trainer, "build_sequences", spy)
    config = make_config("tiny", train={"epochs": 3, "colorings": 2, "max_train_examples": 64})
    train(config, tmp_path / "colors", vqvae_from=tiny_run, cache_dir=cache_dir, progress=False, device_name="cpu")
    firsts = [seen[0], seen[2], seen[4]]  # 64 examples / batch 32 = 2 batches per epoch
    rows = [list(lm_trainer.epoch_batches(64, 32, 0, epoch))[0][0] for epoch in range(3)]
    draws = [caption_word_ids(recolored_train(d, 0, cache_dir).subset(slice(0, 64))) for d in (0, 1)]
    for epoch in range(3):
        assert torch.equal(firsts[epoch], draws[epoch % 2][rows[epoch]])  # epoch e uses draw e % 2
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(draws[0][:, 2], draws[1][:, 2])  # the digit word is the same in every draw


def test_pairs_per_epoch_reads_a_fresh_subset_of_the_digits_each_epoch(tiny_run, tmp_path, cache_dir, monkeypatch):
    from tinychameleon.data.colored import load_splits
    from tinychameleon.training import lm_trainer
    from tinychameleon.training.run import caption_word_ids, train

    seen = []  # every training batch's caption word ids, as the trainer builds them
    original = lm_trainer.build_sequences

    def spy(vocab, words, codes, orders):
        if codes.shape[0] == 32:
            seen.append(words.clone())
        return original(vocab, words, codes, orders)

    monkeypatch.setattr(lm_trainer, "build_sequences", spy)
    config = make_config("tiny", train={"epochs": 2, "max_train_examples": 128, "pairs": 64})
    train(config, tmp_path / "pairs", vqvae_from=tiny_run, cache_dir=cache_dir, progress=False, device_name="cpu")
    assert len(seen) == 4                                     # 64 of the 128 digits per epoch: 2 batches of 32, twice
    steps = json.loads((tmp_path / "pairs" / "transformer_metrics.json").read_text())["epochs"][-1]["step"]
    assert steps == 4
    rows = [torch.cat([batch[0] for batch in list(lm_trainer.epoch_batches(128, 32, 0, epoch))[:2]])
            for epoch in range(2)]
    words = caption_word_ids(load_splits(config.data_seed, cache_dir).train.subset(slice(0, 128)))
    for epoch in range(2):                                    # each epoch: the first two batches of its permutation
        assert torch.equal(torch.cat(seen[2 * epoch:2 * epoch + 2]), words[rows[epoch]])
    assert set(rows[0].tolist()) != set(rows[1].tolist())    # a fresh half each epoch, not the same one


def test_early_stopping_rules():
    from tinychameleon.config import TrainConfig
    from tinychameleon.training.lm_trainer import is_best, should_stop

    log = [{"epoch": 0, "validation_nll": 9.0}] + [{"epoch": e + 1, "validation_nll": v}
                                                  for e, v in enumerate([3.0, 2.0, 2.5, 2.4])]
    assert should_stop(TrainConfig(patience=0), log) == ""
    assert should_stop(TrainConfig(patience=3), log) == ""            # only 2 epochs since the best
    assert "2 epochs" in should_stop(TrainConfig(patience=2), log)
    assert "target" in should_stop(TrainConfig(stop_at_nll=2.45), log)
    assert should_stop(TrainConfig(stop_at_nll=2.3), log) == ""
    assert not is_best(log) and is_best(log[:3])


def test_early_stopping_keeps_the_best_epoch_weights(tmp_path, cache_dir):
    """A target the first epoch meets: training stops after it, however many epochs were asked for."""
    from tinychameleon.training.run import train

    run = train(make_config("tiny", train={"epochs": 4, "stop_at_nll": 50.0}), tmp_path / "stop",
                cache_dir=cache_dir, progress=False, device_name="cpu", command="tinychameleon train --preset tiny")
    epochs = json.loads((run / "transformer_metrics.json").read_text())["epochs"]
    assert [row["epoch"] for row in epochs] == [0, 1]
    assert json.loads((run / "run_info.json").read_text())["command"] == "tinychameleon train --preset tiny"


def cpu_with_bf16(monkeypatch, native: bool) -> None:
    """Pretend this CPU has (or lacks) native bf16: the two hardware probes device.native_bf16 reads."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def losses_under(tiny_run, precisions: list[str]) -> dict[str, float]:
    """The tiny run's loss on one fixed batch without autocast ("none"), then under autocast at each precision."""
    from tinychameleon.device import autocast
    from tinychameleon.training.lm_trainer import sequence_loss

    model, cpu = checkpoint.load_transformer(tiny_run), torch.device("cpu")
    sequences = torch.randint(0, 32, (16, 58), generator=torch.Generator().manual_seed(0))
    losses = {}
    with torch.no_grad():
        losses["none"] = sequence_loss(model, sequences).item()
        for precision in precisions:
            with autocast(cpu, precision=precision):
                losses[precision] = sequence_loss(model, sequences).item()
    return losses


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(tiny_run, monkeypatch, native):
    """train.precision "auto" (the presets'): bf16 autocast on a CPU with native bf16, exactly fp32 on one without
    (where emulated bf16 is ~15x slower), and a notice says which; "bf16" asked on such a CPU is kept and warned of."""
    from tinychameleon.device import precision_notice, resolved_precision, trains_in_bf16

    cpu_with_bf16(monkeypatch, native)
    cpu = torch.device("cpu")
    loss = losses_under(tiny_run, ["auto", "bf16"])
    assert resolved_precision(cpu, "auto") == ("bf16" if native else "fp32")
    assert loss["auto"] == (loss["bf16"] if native else loss["none"]) and loss["bf16"] != loss["none"]
    assert resolved_precision(cpu, "bf16") == "bf16" and resolved_precision(cpu, "fp32") == "fp32"
    assert trains_in_bf16(cpu, "auto") == native and trains_in_bf16(cpu, "bf16") and not trains_in_bf16(cpu, "fp32")
    if native:
        assert precision_notice(cpu, "auto") is None and precision_notice(cpu, "bf16") is None
    else:
        assert "trains in fp32" in precision_notice(cpu, "auto") and "emulated" in precision_notice(cpu, "bf16")
    assert precision_notice(cpu, "fp32") is None


def test_a_run_says_what_precision_it_trained_in(tmp_path, cache_dir, monkeypatch, capsys):
    """A run asking for "auto" on a CPU without native bf16 prints why it trains in fp32 and records "fp32" in
    run_info.json; the presets that train in bf16 ask for "auto"."""
    from tinychameleon.training.run import train

    cpu_with_bf16(monkeypatch, False)
    run = train(make_config("tiny", train={"precision": "auto"}), tmp_path / "auto", cache_dir=cache_dir,
                progress=False, device_name="cpu")
    assert "train.precision auto: this CPU has no native bf16" in capsys.readouterr().out
    assert json.loads((run / "run_info.json").read_text())["precision"] == "fp32"
    assert {make_config(name).train.precision for name in ("base", "var", "memory-base", "pixels")} == {"auto"}


def test_bf16_autocast_on_cpu_matches_fp32(tiny_run):
    """The bf16 training path (train.precision) computes the same loss as fp32 within bf16's precision."""
    loss = losses_under(tiny_run, ["bf16", "fp32"])
    assert loss["fp32"] == loss["none"]
    assert loss["bf16"] == pytest.approx(loss["none"], rel=0.02) and loss["bf16"] != loss["none"]


def test_cached_codes_are_keyed_by_how_many_images(tmp_path, colored):
    """Runs limited to their first N digits share a weightless tokenizer (pixels): each gets its own N rows,
    never another run's cache (a 512-row cache was once read by a 15 000-digit run)."""
    from tinychameleon.config import VQConfig
    from tinychameleon.tokenizers.pixels import PixelTokenizer
    from tinychameleon.training.run import cached_codes, limit

    tokenizer = PixelTokenizer(VQConfig(kind="pixels"))
    few = cached_codes(tokenizer, limit(colored[0], 8), "train", "key", tmp_path, torch.device("cpu"))
    more = cached_codes(tokenizer, limit(colored[0], 16), "train", "key", tmp_path, torch.device("cpu"))
    assert few.shape == (8, 784) and more.shape == (16, 784)
    torch.testing.assert_close(more[:8], few)
    torch.testing.assert_close(more, tokenizer.encode(torch.from_numpy(colored[0].images[:16])).long())


def test_loss_weights_count_the_read_caption_more(tiny_run):
    """train.caption_loss_weight: the six words after an image (the model reading it) count w times in the
    loss; every other target, and every target of text-first rows, counts once."""
    from tinychameleon.model import next_token_log_probs
    from tinychameleon.sequences import IMAGE_FIRST, TEXT_FIRST, build_sequences
    from tinychameleon.tokenizers.vocab import TEXT_LENGTH, Vocab
    from tinychameleon.training.lm_trainer import loss_weights, sequence_loss

    config = RunConfig.from_dict(json.loads((tiny_run / "config.json").read_text()))
    vocab, model = Vocab.for_config(config), checkpoint.load_transformer(tiny_run)
    words = torch.randint(0, 31, (4, TEXT_LENGTH))
    codes = torch.randint(0, vocab.image_tokens, (4, vocab.image_length))
    sequences = build_sequences(vocab, words, codes, torch.tensor([TEXT_FIRST, IMAGE_FIRST, TEXT_FIRST, IMAGE_FIRST]))
    weights = loss_weights(vocab, sequences, 4.0)
    assert weights.shape == (4, vocab.plain_length - 1)
    for row in (1, 3):  # the last six targets of an image-first row are its caption's words
        assert weights[row, -TEXT_LENGTH:].tolist() == [4.0] * TEXT_LENGTH
        assert weights[row, :-TEXT_LENGTH].eq(1.0).all()
    assert weights[[0, 2]].eq(1.0).all()
    with torch.no_grad():
        log_probs = next_token_log_probs(model, sequences)
        expected = -(log_probs.sum() + 3 * log_probs[[1, 3], -TEXT_LENGTH:].sum()) / (log_probs.numel() + 3 * 12)
        assert sequence_loss(model, sequences, weights).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss_weights(vocab, sequences, 4.0, weights=torch.full_like(weights, 0.5)).equal(weights * 0.5)
    # A reading-only row (a shifted copy of its digit) keeps its caption's loss and drops its image's.
    reading = loss_weights(vocab, sequences, 4.0, reading_only=torch.tensor([False, True, False, False]))
    L = vocab.image_length
    assert reading[1, 1:1 + L].eq(0).all() and reading[1, -TEXT_LENGTH:].eq(4.0).all()
    assert reading[[0, 2, 3]].equal(weights[[0, 2, 3]])
    assert make_config("tiny", train={"caption_loss_weight": 4.0}).train.caption_loss_weight == 4.0
    with pytest.raises(ValueError, match="caption_loss_weight"):
        make_config("tiny", train={"caption_loss_weight": -1.0})


def test_split_nll_reads_both_conditionals(tiny_run):
    """nats per image is -log p(image | caption) from text-first rows; nats per caption is -log p(caption | image)
    from image-first rows: each the sum of its own targets' NLL, per example."""
    from tinychameleon.model import next_token_log_probs
    from tinychameleon.sequences import build_sequences
    from tinychameleon.tokenizers.vocab import TEXT_LENGTH, Vocab
    from tinychameleon.training.lm_trainer import split_nll

    config = RunConfig.from_dict(json.loads((tiny_run / "config.json").read_text()))
    vocab, model = Vocab.for_config(config), checkpoint.load_transformer(tiny_run)
    words = torch.randint(0, 31, (6, TEXT_LENGTH))
    codes = torch.randint(0, vocab.image_tokens, (6, vocab.image_length))
    metrics = split_nll(model, vocab, words, codes, split="check", batch_size=4)
    with torch.no_grad():
        text_first = next_token_log_probs(model, build_sequences(vocab, words, codes, torch.zeros(6)))
        image_first = next_token_log_probs(model, build_sequences(vocab, words, codes, torch.ones(6)))
    L = vocab.image_length
    assert metrics["check_nats_per_image"] == pytest.approx(-text_first[:, -L:].sum().item() / 6, rel=1e-4)
    assert metrics["check_nats_per_caption"] == pytest.approx(-image_first[:, -TEXT_LENGTH:].sum().item() / 6, rel=1e-4)
    assert metrics["check_nats_per_pair"] == pytest.approx(-text_first.sum().item() / 6, rel=1e-4)


def test_shifted_digits_move_and_keep_their_colors(colored):
    """data.colored.shifted: every digit moves by a non-zero step of at most MAX_SHIFT pixels per axis, keeps its
    caption and its two colors, and the run trains reading-only rows on such copies (train.shifted_reading)."""
    import numpy as np
    from tinychameleon.data.colored import MAX_SHIFT, digit_pixels, shifted

    split = colored[1].subset(slice(0, 200))
    moved = shifted(split, seed=3)
    assert np.array_equal(moved.digits, split.digits) and np.array_equal(moved.foreground, split.foreground)
    before, after = digit_pixels(split.images), digit_pixels(moved.images)
    for original, copy, image, new in zip(before, after, split.images, moved.images):
        assert {tuple(c) for c in new.reshape(-1, 3)} == {tuple(c) for c in image.reshape(-1, 3)}
        steps = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)
                 if np.array_equal(np.roll(np.pad(original, MAX_SHIFT), (dy, dx), (0, 1))[MAX_SHIFT:-MAX_SHIFT,
                                                                                          MAX_SHIFT:-MAX_SHIFT], copy)]
        assert steps and (0, 0) not in steps
    assert np.array_equal(shifted(split, seed=3).images, moved.images)       # seeded: the same copies every run


def test_shifted_reading_rows_read_moved_digits_and_draw_none(tiny_run, tmp_path, cache_dir, monkeypatch):
    """train.shifted_reading 1: every image-first row reads the tokens of its digit's shifted copy (of the
    epoch's color draw) with no loss on those image tokens; text-first rows keep the plain tokens."""
    from tinychameleon.data.colored import recolored_train, shifted
    from tinychameleon.sequences import IMAGE_FIRST
    from tinychameleon.training import lm_trainer
    from tinychameleon.training.run import encode_images, train

    seen = []  # (codes, orders, weights) of the first batch of each epoch
    build, loss = lm_trainer.build_sequences, lm_trainer.sequence_loss
    monkeypatch.setattr(lm_trainer, "build_sequences",
                        lambda vocab, words, codes, orders: seen.append([codes.clone(), orders.clone()])
                        or build(vocab, words, codes, orders))
    monkeypatch.setattr(lm_trainer, "sequence_loss",
                        lambda model, sequences, weights=None, *digits: seen[-1].append(weights)
                        or loss(model, sequences, weights, *digits))
    config = make_config("tiny", train={"epochs": 2, "colorings": 2, "max_train_examples": 64, "shifted_reading": 1.0})
    train(config, tmp_path / "moved", vqvae_from=tiny_run, cache_dir=cache_dir, progress=False, device_name="cpu")
    tokenizer = checkpoint.load_image_tokenizer(tmp_path / "moved")
    batches = [entry for entry in seen if len(entry) == 3 and entry[0].shape[0] == 32]
    for epoch in range(2):
        codes, orders, weights = batches[2 * epoch]                  # 64 examples / batch 32: 2 batches an epoch
        rows = list(lm_trainer.epoch_batches(64, 32, 0, epoch))[0][0]
        draw = recolored_train(epoch, 0, cache_dir).subset(slice(0, 64))
        plain = encode_images(tokenizer, draw.images, torch.device("cpu")).long()[rows]
        moved = encode_images(tokenizer, shifted(draw, [0, epoch, 1]).images, torch.device("cpu")).long()[rows]
        image_first = orders == IMAGE_FIRST
        assert torch.equal(codes[image_first], moved[image_first]) and torch.equal(codes[~image_first], plain[~image_first])
        assert not torch.equal(moved, plain)
        L = tokenizer.tokens_per_image
        assert weights[image_first, 1:1 + L].eq(0).all() and weights[~image_first].eq(1).all()


def test_a_kill_inside_the_first_save_of_each_stage_never_reads_as_finished(tmp_path, cache_dir, monkeypatch):
    """The weights of an epoch are written before its resume state: a kill between the two (inside the state's
    save) used to leave "weights, no state", read as "already fully trained". progress.json decides now."""
    from tinychameleon.training import state
    from tinychameleon.training.run import train

    def config():
        return make_config("tiny", train={"epochs": 2}, vq_train={"epochs": 2})

    whole = tmp_path / "whole"
    train(config(), whole, cache_dir=cache_dir, progress=False, device_name="cpu")
    real_save = state.save_state

    def killed_inside(stage_file):
        def save(path, data):
            if path.name == stage_file:
                (path.parent / f".{path.name}.killed.tmp").write_bytes(b"")   # what a kill mid-write leaves
                raise KeyboardInterrupt
            real_save(path, data)
        return save

    run = tmp_path / "killed"
    for stage_file, weights in (("vqvae_state.pt", "vqvae.safetensors"), ("train_state.pt", "model.safetensors")):
        monkeypatch.setattr(state, "save_state", killed_inside(stage_file))
        with pytest.raises(KeyboardInterrupt):
            train(config(), run, resume=run.exists(), cache_dir=cache_dir, progress=False, device_name="cpu")
        assert (run / weights).exists() and not (run / stage_file).exists()   # the state of the hole
        monkeypatch.setattr(state, "save_state", real_save)
    train(config(), run, resume=True, cache_dir=cache_dir, progress=False, device_name="cpu")
    assert not list(run.glob(".*.tmp"))                                         # stale temp files are gone
    assert [row["epoch"] for row in json.loads((run / "vqvae_metrics.json").read_text())["epochs"]] == [1, 2]
    assert [row["epoch"] for row in json.loads((run / "transformer_metrics.json").read_text())["epochs"]] == [0, 1, 2]
    assert (run / "run_info.json").exists() and json.loads((run / "progress.json").read_text()) == {
        "vqvae": {"finished": True}, "transformer": {"finished": True}}
    for name in ("load_transformer", "load_image_tokenizer"):
        finished = getattr(checkpoint, name)(whole).state_dict()
        for key, value in getattr(checkpoint, name)(run).state_dict().items():
            torch.testing.assert_close(value, finished[key])


@pytest.mark.slow
def test_sigkill_at_random_instants_then_resume_ends_like_the_uninterrupted_run(tmp_path, cache_dir):
    """A real SIGKILL at 6 random instants of a tiny run (scripts/kill_resume.py does 50): each resume finishes,
    writes every artifact and ends with the uninterrupted run's weights."""
    import os
    import signal
    import subprocess
    import sys

    def train_command(out, resume=False):
        return [sys.executable, "-m", "tinychameleon", "train", "--preset", "tiny", "--vq-epochs", "2", "--epochs", "2",
                "--no-progress", "--device", "cpu", "--cache-dir", str(cache_dir), "--out", str(out)] + \
            (["--resume"] if resume else [])

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.time()
    subprocess.run(train_command(tmp_path / "whole"), check=True, env=env, capture_output=True)
    duration = time.time() - started
    whole = checkpoint.load_transformer(tmp_path / "whole").state_dict()
    for trial, at in enumerate(np.random.default_rng(1).uniform(0.5, duration, 6)):
        out = tmp_path / f"killed{trial}"
        process = subprocess.Popen(train_command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(at)
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed = subprocess.run(train_command(out, resume=(out / "config.json").exists()), env=env,
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert (out / "run_info.json").exists() and not list(out.glob(".*.tmp")) and not list(out.glob("*_state.pt"))
        for key, value in checkpoint.load_transformer(out).state_dict().items():
            torch.testing.assert_close(value, whole[key])


def test_document_metrics_count_how_often_the_digit_head_names_the_digit():
    """With a digit head that always names 3, the accuracy is the share of labelled positions whose digit is 3; the
    document NLL is the one without labels, and without labels there is no accuracy."""
    from tinychameleon.config import ModelConfig
    from tinychameleon.model import Transformer
    from tinychameleon.training.lm_trainer import document_metrics
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=20, n_layer=1, n_head=2, d_model=16, digit_head=True))
    with torch.no_grad():
        model.digit_head.weight.zero_()
        model.digit_head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 10).float())
    ids = torch.tensor([[1, 18, 5, 19, 18, 6, 19, 2], [1, 2, 18, 7, 19, 3, 4, 0]])
    digits = torch.full_like(ids, -1)
    digits[0, [3, 6]] = torch.tensor([3, 4])
    digits[1, 4] = 3
    weights = torch.ones(2, 7)
    metrics = document_metrics(model, ids, weights, digits, batch_size=1)
    assert metrics["validation_digit_accuracy"] == pytest.approx(2 / 3)
    digits[0, 6] = 3
    assert document_metrics(model, ids, weights, digits)["validation_digit_accuracy"] == 1.0
    plain = document_metrics(model, ids, weights)
    assert plain["validation_document_nll"] == metrics["validation_document_nll"] and len(plain) == 1


def test_the_digit_loss_joins_the_training_loss_at_its_weight():
    """sequence_loss with digit labels: the next-token loss plus digit_weight times the head's cross-entropy, so the
    head (and the state it reads) learns; at weight 0 the head gets no gradient."""
    from tinychameleon.config import ModelConfig
    from tinychameleon.model import Transformer
    from tinychameleon.training.lm_trainer import sequence_loss
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=20, n_layer=1, n_head=2, d_model=16, digit_head=True))
    sequences = torch.randint(0, 20, (2, 9))
    digits = torch.full_like(sequences, -1)
    digits[0, 2], digits[1, 5] = 7, 1
    plain = sequence_loss(model, sequences)
    _, head_loss = model(sequences[:, :-1], targets=sequences[:, 1:], digits=digits[:, :-1])
    weighted = sequence_loss(model, sequences, None, digits, 0.5)
    assert torch.allclose(weighted, plain + 0.5 * head_loss) and head_loss > 1.0
    weighted.backward()
    assert model.digit_head.weight.grad.abs().sum() > 0
    model.zero_grad()
    sequence_loss(model, sequences, None, digits, 0.0).backward()
    assert model.digit_head.weight.grad.abs().sum() == 0


def test_a_fine_tune_adds_patch_pixels_from_its_tokenizer_and_starts_where_its_source_ended(document_run, tmp_path,
                                                                                            cache_dir):
    """`--set model.patch_pixels=true` on a `patches` run: the trainer fills the model's table from the run's own
    tokenizer (shape token i -> its 16 pixels as -1 / +1), the map starts at zero (the first validation equals the
    source's last), and training moves it."""
    from tinychameleon.training.run import train

    source = json.loads((document_run / "transformer_metrics.json").read_text())["epochs"][-1]
    config = make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                         model={"patch_pixels": True},
                         train={"documents": 64, "prompt_end": True, "init_from": str(document_run), "lr": 1e-3})
    train(config, tmp_path / "pixels", cache_dir=cache_dir, progress=False, device_name="cpu")
    tuned = json.loads((tmp_path / "pixels" / "transformer_metrics.json").read_text())["epochs"]
    assert tuned[0]["validation_nll"] == pytest.approx(source["validation_nll"], rel=1e-5)
    model = checkpoint.load_transformer(tmp_path / "pixels")
    patterns = checkpoint.load_image_tokenizer(tmp_path / "pixels").shape.patterns
    assert model.config.patch_pixels and model.config.image_tokens > len(patterns)
    torch.testing.assert_close(model.patch_pixels[:len(patterns)], 2 * patterns.float() - 1)
    assert not model.patch_pixels[len(patterns):].any()                   # color tokens have no pixels
    assert model.pixel_embedding.weight.abs().sum() > 0
