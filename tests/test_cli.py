"""Every CLI form, driven through main(argv) in-process and once as a real subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tinychameleon.cli import main
from tinychameleon.pipeline import Pipeline


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_one_prompt(tiny_run, tmp_path, capsys):
    code, out, _ = run(["generate", "dark green eight on bright cyan", "-n", 3, "--out", tmp_path,
                        "--checkpoint", tiny_run, "--seed", 1], capsys)
    assert code == 0 and "wrote 3 images" in out
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row["prompt"] == "dark green eight on bright cyan" for row in rows)
    for row in rows:
        image = Image.open(tmp_path / row["file"])
        assert image.size == (28, 28) and image.mode == "RGB"
        assert set(np.unique(np.asarray(image))) <= {0, 85, 170, 255}


def test_generate_prompts_file_is_reproducible(tiny_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("dark green eight on bright cyan\n\nplain white one on plain black\n")
    for name in ("a", "b"):
        code, _, _ = run(["generate", "--prompts-file", prompts, "--samples-per-prompt", 2, "--out", tmp_path / name,
                          "--checkpoint", tiny_run, "--seed", 5], capsys)
        assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [row["prompt"] for row in rows] == ["dark green eight on bright cyan"] * 2 + ["plain white one on plain black"] * 2
    for row in rows:
        assert (tmp_path / "a" / row["file"]).read_bytes() == (tmp_path / "b" / row["file"]).read_bytes()


@pytest.mark.parametrize("argv, fragment", [
    (["generate", "dark green eigth on bright cyan"], "did you mean eight"),
    (["generate", "dark green eight"], "expected 6"),
    (["generate"], "give a prompt"),
    (["generate", "--prompts-file", "/nonexistent/prompts.txt"], "cannot read prompts file"),
    (["generate", "dark green eight on bright cyan", "-n", "0"], "at least 1"),
])
def test_generate_errors(tiny_run, tmp_path, capsys, argv, fragment):
    code, _, err = run(argv + ["--out", tmp_path / "out", "--checkpoint", tiny_run], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_off_palette_prompt_warns_but_works(tiny_run, tmp_path, capsys):
    code, _, err = run(["generate", "bright red eight on bright cyan", "--out", tmp_path, "--checkpoint", tiny_run],
                       capsys)
    assert code == 0 and "normal red, dark red" in err


def test_caption_any_image_kind(tiny_run, tmp_path, capsys):
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[8:20, 12:16] = (255, 255, 255)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").resize((100, 100)).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").resize((56, 40)).save(tmp_path / "gray.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    code, out, _ = run(["caption", tmp_path, "--json", "--checkpoint", tiny_run], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4 and all(len(row["caption"].split()) == 6 for row in rows)
    assert {row["image"].rsplit("/", 1)[-1] for row in rows} == {"rgb.png", "rgba.png", "gray.png", "photo.jpg"}
    code, out, _ = run(["caption", tmp_path / "rgb.png", "--checkpoint", tiny_run], capsys)
    assert code == 0 and out.startswith(str(tmp_path / "rgb.png") + ": ")


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"])
def test_caption_unreadable_image(tiny_run, tmp_path, capsys, content):
    (tmp_path / "bad.png").write_bytes(content)
    code, out, err = run(["caption", tmp_path / "bad.png", "--checkpoint", tiny_run], capsys)
    assert code == 2 and "not a readable image" in err and out == ""


def test_caption_missing_file(tiny_run, tmp_path, capsys):
    code, _, err = run(["caption", tmp_path / "nope.png", "--checkpoint", tiny_run], capsys)
    assert code == 2 and "does not exist" in err


def test_sample(tiny_run, tmp_path, capsys):
    code, out, _ = run(["sample", "-n", 5, "--out", tmp_path, "--checkpoint", tiny_run], capsys)
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(len(row["caption"].split()) == 6 and (tmp_path / row["file"]).exists()
                                  for row in rows)


def test_sampler_flags(tiny_run, tmp_path, capsys):
    code, _, _ = run(["sample", "-n", 3, "--out", tmp_path / "a", "--checkpoint", tiny_run, "--first", "image",
                      "--ancestral"], capsys)
    assert code == 0 and len((tmp_path / "a" / "manifest.jsonl").read_text().splitlines()) == 3
    code, _, _ = run(["generate", "plain white one on plain black", "--candidates", 3, "--out", tmp_path / "b",
                      "--checkpoint", tiny_run], capsys)
    assert code == 0
    image = tmp_path / "b" / json.loads((tmp_path / "b" / "manifest.jsonl").read_text().splitlines()[0])["file"]
    for flags in (["--rerank"], ["--no-rerank"], ["--rerank", "--views", 3]):
        code, out, _ = run(["caption", image, *flags, "--checkpoint", tiny_run], capsys)
        assert code == 0 and len(out.split(": ")[1].split()) == 6
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "-n", "2", "--out", str(tmp_path / "c"), "--first", "caption"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_caption_clip_flag_reaches_the_reranking(tiny_run, tmp_path, capsys, monkeypatch, colored):
    from tinychameleon.imaging import levels_to_pil
    from tinychameleon.pipeline import Pipeline

    asked, real_reader = [], Pipeline._clip_reader

    def clip_reader(self, codes, images, weight, views=()):
        if real_reader(self, codes, images, weight, views) is None:   # weight 0: no second reader
            return None

        def scores(candidates):                               # what rerank_digits asks the second reader
            asked.append((weight, len(views), tuple(candidates.shape)))
            return torch.zeros(candidates.shape[:2])
        return scores

    monkeypatch.setattr(Pipeline, "_clip_reader", clip_reader)
    image = tmp_path / "digit.png"
    levels_to_pil(colored[1].images[0]).save(image)
    code, _, _ = run(["caption", image, "--rerank", "--hypotheses", 3, "--checkpoint", tiny_run], capsys)
    assert code == 0 and asked == []                          # off by default
    code, _, _ = run(["caption", image, "--rerank", "--hypotheses", 3, "--caption-clip", 7, "--checkpoint",
                      tiny_run], capsys)
    assert code == 0 and asked == [(7.0, 0, (1, 3, 6))]
    code, _, _ = run(["caption", image, "--rerank", "--hypotheses", 3, "--caption-clip", 7, "--views", 3,
                      "--checkpoint", tiny_run], capsys)
    assert code == 0 and asked[1:] == [(7.0, 2, (1, 3, 6))]       # and reads the views
    code, _, err = run(["caption", image, "--caption-clip", -1, "--checkpoint", tiny_run], capsys)
    assert code == 2 and "--caption-clip must be between 0.0 and 1000.0" in err


def test_report(tiny_run, tmp_path, capsys):
    code, out, _ = run(["report", "--out", tmp_path, "--checkpoint", tiny_run], capsys)
    assert code == 0
    for name in ("training_curve.png", "text_to_image.png", "image_to_text.png", "unconditional.png",
                 "temperature_sweep.png"):
        assert Image.open(tmp_path / name).size[0] > 100, name
    sweep = Image.open(tmp_path / "temperature_sweep.png")
    assert sweep.size[0] > 5 * 28 * 4  # one column per temperature


def test_temperature_sweep_columns_differ_in_variety(tiny_pipeline):
    """Low temperature repeats itself; high temperature does not (image tokens of 8 draws of one prompt)."""
    import torch

    from tinychameleon.evaluation.figures import SWEEP_PROMPTS
    from tinychameleon.sampling import generate
    from tinychameleon.sequences import text_prefix

    pipe = tiny_pipeline
    prefix = text_prefix(pipe.vocab, pipe.encode_prompts([SWEEP_PROMPTS[0]] * 8))
    distinct = {}
    for temperature in (0.1, 2.0):
        codes = generate(pipe.model, prefix, pipe.rules, temperature, None, 1.0, torch.Generator().manual_seed(0))
        distinct[temperature] = len({tuple(row.tolist()) for row in codes})
    assert distinct[0.1] < distinct[2.0] == 8


@pytest.mark.parametrize("make_checkpoint, fragment", [
    (lambda path: None, "does not exist"),
    (lambda path: path.mkdir(), "config.json is missing"),
    (lambda path: (path.mkdir(), (path / "config.json").write_text("{oops")), "corrupt"),
])
def test_missing_or_corrupt_checkpoint(tmp_path, capsys, make_checkpoint, fragment):
    checkpoint = tmp_path / "checkpoint"
    make_checkpoint(checkpoint)
    code, _, err = run(["sample", "-n", 1, "--out", tmp_path / "o", "--checkpoint", checkpoint], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err


def test_truncated_weights(tiny_run, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for path in tiny_run.iterdir():
        if path.is_file():
            (checkpoint / path.name).write_bytes(path.read_bytes())
    data = (checkpoint / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run(["sample", "-n", 1, "--out", tmp_path / "o", "--checkpoint", checkpoint], capsys)
    assert code == 2 and "corrupt" in err


def test_train_refuses_to_overwrite_a_run(tiny_run, capsys):
    code, _, err = run(["train", "--preset", "tiny", "--out", tiny_run], capsys)
    assert code == 2 and "--resume" in err


def test_train_retriever_shifted_reaches_the_run_and_is_bounded(tmp_path, capsys, cache_dir):
    code, _, err = run(["train-retriever", "--out", tmp_path / "far", "--shifted", 1.5], capsys)
    assert code == 2 and "--shifted in [0, 1]" in err and not (tmp_path / "far").exists()
    tiny = ["--epochs", 1, "--batch-size", 64, "--max-train-examples", 128, "--cache-dir", cache_dir]
    for name, share in (("still", 0), ("moved", 1)):
        code, out, _ = run(["train-retriever", "--out", tmp_path / name, "--shifted", share] + tiny, capsys)
        assert code == 0 and "retriever written" in out
        assert json.loads((tmp_path / name / "retriever_metrics.json").read_text())["shifted"] == share
    still, moved = ((tmp_path / name / "clip.safetensors").read_bytes() for name in ("still", "moved"))
    assert still != moved                                  # the same seed and data: only the moves differ


def test_unknown_preset(tmp_path, capsys):
    code, _, err = run(["train", "--preset", "huge", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "unknown preset" in err


def test_best_is_base_plus_a_tune_stage_and_needs_the_run_it_continues():
    """`best`'s last stage is `base` plus two epochs with counting at 6, addition at 8, the two color edits at 1.5
    and the swap at 3, the answers' words at 3x, a digit head after block 3, the pointer's slot bias, half the pairs
    and 56 000 documents, plan tokens (the prompt images' too) with the word after each answer image at 10x, and a
    fresh 20-step warmup, nothing else changed; asked for alone (as a config, without the run it continues) it says
    what to give."""
    from tinychameleon.config import STAGES, make_config

    assert STAGES["best"] == "base"
    with pytest.raises(ValueError, match="init_from"):
        make_config("best")
    base, best = make_config("base"), make_config("best", train={"init_from": "runs/base"})
    assert (best.train.epochs, best.train.warmup_steps, best.train.init_from) == (2, 20, "runs/base")
    edits = {"digit color": 1.5, "background color": 1.5, "swap": 3.0}
    assert best.train.family_shares == {**base.train.family_shares, "counting": 6.0, "addition": 8.0, **edits}
    assert (best.train.pairs, best.train.documents, base.train.pairs, base.train.documents) == (28000, 56000, 0, 42000)
    assert best.train.family_shares != base.train.family_shares
    assert (best.model.digit_head, best.model.digit_layer, best.model.pointer_slots) == (True, 3, True)
    assert not (base.model.digit_head or base.model.pointer_slots)
    best.model.digit_head, best.model.digit_layer, best.model.pointer_slots = False, 0, False
    assert (best.model, best.vq, best.vq_train) == (base.model, base.vq, base.vq_train)
    assert (best.train.answer_loss_weight, best.train.answer_words_only) == (3.0, True)
    assert (best.train.plan_tokens, best.train.decision_loss_weight, base.train.plan_tokens) == (True, 10.0, False)
    assert (best.train.prompt_plans, base.train.prompt_plans) == (True, False)
    best.train.epochs, best.train.warmup_steps, best.train.init_from = 3, 300, ""
    best.train.family_shares = base.train.family_shares
    best.train.answer_loss_weight, best.train.answer_words_only = 1.0, False
    best.train.plan_tokens, best.train.decision_loss_weight, best.train.prompt_plans = False, 0.0, False
    best.train.pairs, best.train.documents = 0, 42000
    assert best.train == base.train


def test_memory_is_memory_base_plus_a_tune_epoch_at_lower_memory_shares():
    """`memory`'s last stage is `memory-base` plus one epoch with the memory families at 2 and 1 (the registry's 4
    and 2) and a fresh 20-step warmup, nothing else changed; alone it asks for the run it continues."""
    from tinychameleon.config import STAGES, make_config
    from tinychameleon.documents.families import family_shares

    assert STAGES["memory"] == "memory-base"
    with pytest.raises(ValueError, match="memory-base"):
        make_config("memory")
    base, memory = make_config("memory-base"), make_config("memory", train={"init_from": "runs/memory-base"})
    assert (memory.train.epochs, memory.train.warmup_steps, memory.train.init_from) == (1, 20, "runs/memory-base")
    registry, tuned = family_shares(retrieve=True), family_shares(memory.train.family_shares, retrieve=True)
    assert (registry["draw from memory"], registry["read from memory"]) == (4.0, 2.0)
    assert (tuned["draw from memory"], tuned["read from memory"]) == (2.0, 1.0)
    assert {name: share for name, share in tuned.items() if "memory" not in name} == \
        {name: share for name, share in registry.items() if "memory" not in name}
    assert (memory.model, memory.vq, memory.vq_train) == (base.model, base.vq, base.vq_train)
    memory.train.epochs, memory.train.warmup_steps = base.train.epochs, base.train.warmup_steps
    memory.train.init_from = ""
    memory.train.family_shares = {}
    assert memory.train == base.train


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def test_a_two_stage_preset_trains_both_in_one_command(tmp_path, capsys, cache_dir, monkeypatch):
    """`train --preset best` is two stages in one command (issue 22: one command, one model). Shown on a tiny
    chain of the same kind: the first stage's run in OUT/<its preset>, the second continuing it in OUT, equal to
    the two commands run by hand; flags reach both stages; a second call refuses, --resume finds nothing to do;
    --init-from RUN runs the last stage alone, on RUN."""
    from tinychameleon import config as config_module

    monkeypatch.setitem(config_module.PRESETS, "tiny-tuned", {**config_module.PRESETS["tiny"],
                                                            "train": {**config_module.PRESETS["tiny"]["train"],
                                                                      "lr": 1e-3, "warmup_steps": 2}})
    monkeypatch.setitem(config_module.STAGES, "tiny-tuned", "tiny")
    flags = ["--max-train-examples", 256, "--no-progress", "--cache-dir", cache_dir, "--device", "cpu"]
    out = tmp_path / "chain"
    code, printed, _ = run(["train", "--preset", "tiny-tuned", "--out", out, "--train-seed", 3] + flags, capsys)
    assert code == 0 and "stage 1 of 2: --preset tiny in" in printed and "stage 2 of 2: --preset tiny-tuned" in printed
    first, last = (json.loads((run_dir / "config.json").read_text()) for run_dir in (out / "tiny", out))
    assert (first["preset"], first["train"]["init_from"], first["train"]["lr"]) == ("tiny", "", 3e-3)
    assert (last["preset"], last["train"]["init_from"], last["train"]["lr"]) == ("tiny-tuned", str(out / "tiny"), 1e-3)
    assert first["train"]["seed"] == last["train"]["seed"] == 3 and first["train"]["max_train_examples"] == 256
    info, first_info = (json.loads((run_dir / "run_info.json").read_text()) for run_dir in (out, out / "tiny"))
    assert [stage["preset"] for stage in info["stages"]] == ["tiny", "tiny-tuned"]
    assert [stage["wall_time_s"] for stage in info["stages"]] == [first_info["wall_time_s"], info["wall_time_s"]]
    assert info["total_wall_time_s"] == pytest.approx(first_info["wall_time_s"] + info["wall_time_s"], abs=0.11)
    chained, base = weights(out), weights(out / "tiny")
    assert any(not torch.equal(chained[name], base[name]) for name in chained)      # the second stage trained
    by_hand = tmp_path / "by-hand"
    assert run(["train", "--preset", "tiny", "--out", by_hand / "first", "--train-seed", 3] + flags, capsys)[0] == 0
    assert run(["train", "--preset", "tiny-tuned", "--init-from", by_hand / "first", "--out", by_hand,
                "--train-seed", 3] + flags, capsys)[0] == 0
    assert not (by_hand / "tiny").exists()                                          # --init-from: no first stage
    assert all(torch.equal(tensor, weights(by_hand)[name]) for name, tensor in chained.items())
    code, _, err = run(["train", "--preset", "tiny-tuned", "--out", out] + flags, capsys)
    assert code == 2 and "already holds a run" in err
    code, printed, _ = run(["train", "--preset", "tiny-tuned", "--out", out, "--resume"] + flags, capsys)
    assert code == 0 and printed.count("already fully trained") == 2
    assert all(torch.equal(tensor, weights(out)[name]) for name, tensor in chained.items())


def test_every_flag_has_help():
    from tinychameleon.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_console_entry_point_runs_as_a_process(tiny_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tinychameleon", "caption", str(tmp_path / "missing.png"),
                             "--checkpoint", str(tiny_run)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_a_fine_tune_keeps_its_sources_parts_unless_asked_for_other_placements(tmp_path):
    from tinychameleon.checkpoint import inherited_config, save_config
    from tinychameleon.config import make_config

    source = tmp_path / "source"
    source.mkdir()
    save_config(source, make_config("base", model={"digit_head": True, "digit_layer": 3}, train={"documents": 64}))

    def tuned(**model):
        return inherited_config(make_config("base", validate=False, model=model,
                                            train={"init_from": str(source), "documents": 64})).model
    assert (tuned().digit_head, tuned().digit_layer) == (True, 3)           # not asked: the source's placement
    assert tuned(digit_head=True, digit_layer=2).digit_layer == 2           # asked: the flag wins
    assert tuned(image_slots=True).image_slots and tuned().image_slots is False   # added on top only when asked


def test_set_reaches_any_config_field_typed_and_refuses_what_it_cannot_apply(tmp_path, capsys):
    """--set SECTION.KEY=VALUE: fields without a flag reach the config as their type (never silently dropped); a
    misspelt name, a wrong type, or a shape or tokenizer setting (by --set or by its flag) that --init-from or
    --vqvae-from would replace with the source's are refused with exit 2 and no run."""
    from tinychameleon.cli import build_parser
    from tinychameleon.cli.train import stage_config

    args = build_parser().parse_args(["train", "--preset", "base", "--set", "train.decision_loss_weight=10",
                                      "train.digit_plan=true", "model.digit_head=true", "model.n_layer=4",
                                      "train.optimizer=adamw", "--out", str(tmp_path / "unused")])
    config = stage_config("base", args)
    assert (config.train.decision_loss_weight, config.train.digit_plan, config.model.n_layer) == (10.0, True, 4)
    assert config.model.digit_head is True and config.train.optimizer == "adamw"
    for argv, fragment in ((["--set", "train.decison_loss_weight=3"], "did you mean train.decision_loss_weight"),
                           (["--set", "train.digit_plan=maybe"], "takes true or false"),
                           (["--set", "train.epochs=two"], "is not an integer"),
                           (["--set", "train.family_shares=x"], "has its own flag"),
                           (["--set", "train.digit_plan=true"], "train.digit_plan trains the digit head"),
                           (["--init-from", str(tmp_path), "--set", "model.n_layer=4"], "keeps its source's model"),
                           (["--init-from", str(tmp_path), "--tokenizer", "vq"], "vq.kind cannot be set"),
                           (["--vqvae-from", str(tmp_path), "--codebook-size", "64"], "vq.codebook_size cannot be set")):
        code, _, err = run(["train", "--preset", "base", *argv, "--out", tmp_path / "refused"], capsys)
        assert code == 2 and fragment in err and not (tmp_path / "refused").exists(), (argv, err)


def test_train_documents_image_slots_and_copy_head_flags_reach_the_run(tmp_path, capsys, cache_dir):
    out = tmp_path / "docs"
    code, _, _ = run(["train", "--preset", "tiny", "--tokenizer", "patches", "--codebook-size", 64, "--documents", 256,
                      "--image-slots", "--max-train-examples", 256, "--out", out, "--no-progress", "--cache-dir",
                      cache_dir], capsys)
    assert code == 0
    config, vocab = (json.loads((out / name).read_text()) for name in ("config.json", "vocab.json"))
    assert config["train"]["documents"] == 256 and vocab["end_document"] == vocab["size"] - 1
    assert config["model"]["image_slots"] is True
    assert Pipeline.from_pretrained(out).model.slot_embedding.num_embeddings == vocab["image_length"] + 1
    # A fine-tune keeps its source's shape (slots included) and tokenizer (documents need patches: not restated
    # here) and may add a pointer head on top: never dropped.
    tuned = tmp_path / "tuned"
    code, _, _ = run(["train", "--preset", "tiny", "--init-from", out, "--copy-head", "--digit-head", "--documents", 64,
                      "--word-families", "--family-shares", "counting=3", "what comes next=0.5", "--max-train-examples", 64, "--out", tuned, "--no-progress", "--cache-dir",
                      cache_dir], capsys)
    assert code == 0
    model = Pipeline.from_pretrained(tuned).model
    assert hasattr(model, "copy") and hasattr(model, "slot_embedding") and hasattr(model, "digit_head")
    assert not hasattr(Pipeline.from_pretrained(out).model, "digit_head")
    tuned_history = json.loads((tuned / "transformer_metrics.json").read_text())["epochs"]
    assert 0.0 <= tuned_history[-1]["validation_digit_accuracy"] <= 1.0
    assert "validation_digit_accuracy" not in json.loads((out / "transformer_metrics.json").read_text())["epochs"][-1]
    tuned_config = json.loads((tuned / "config.json").read_text())
    assert tuned_config["vq"] == config["vq"] and tuned_config["train"]["word_families"] is True
    assert tuned_config["model"]["digit_layer"] == 0
    assert tuned_config["train"]["family_shares"] == {"counting": 3.0, "what comes next": 0.5}
    assert config["train"]["family_shares"] == {}
    assert config["train"]["word_families"] is False
    history = json.loads((out / "transformer_metrics.json").read_text())["epochs"]
    assert "validation_document_nll" in history[-1]
    code, _, err = run(["train", "--preset", "tiny", "--documents", 64, "--out", tmp_path / "vq"], capsys)
    assert code == 2 and "keeps color apart from shape" in err
    code, _, err = run(["train", "--preset", "tiny", "--word-families", "--out", tmp_path / "words"], capsys)
    assert code == 2 and "word_families needs train.documents" in err
    code, _, err = run(["train", "--preset", "tiny", "--digit-head", "--out", tmp_path / "digits"], capsys)
    assert code == 2 and "digit_head reads the digits of documents' images: it needs train.documents" in err
    code, _, err = run(["train", "--preset", "tiny", "--init-from", out, "--digit-head", "--digit-layer", 1,
                        "--documents", 64, "--out", tmp_path / "layer"], capsys)   # tiny has one block: nothing below it
    assert code == 2 and "model.digit_layer" in err
    code, _, err = run(["train", "--preset", "tiny", "--documents", 64, "--tokenizer", "patches", "--family-shares",
                        "countin=2", "--out", tmp_path / "shares"], capsys)
    assert code == 2 and "did you mean 'counting'" in err and not (tmp_path / "shares").exists()
    code, _, err = run(["train", "--preset", "tiny", "--documents", 64, "--tokenizer", "patches", "--family-shares",
                        "draw from memory=2", "--out", tmp_path / "shares"], capsys)
    assert code == 2 and "drawn only with train.retrieve" in err and not (tmp_path / "shares").exists()
