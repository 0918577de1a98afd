"""Faults that lose work (issue 24): outputs never overwrite inputs, concurrent writers cannot drop each other's
work, special files never hang a command, one unreadable entry does not abort `complete`, masks of the wrong
size and non-finite weights are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from tinychameleon.cli import main, prepare_output


def run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.fixture
def drawn(tiny_run, tmp_path, capsys):
    """Two generated images and their manifest in a folder, as `generate` leaves them."""
    out = tmp_path / "drawn"
    assert run(["generate", "dark green eight on bright cyan", "-n", "2", "--checkpoint", str(tiny_run), "--out",
                str(out)], capsys)[0] == 0
    return out


def snapshot(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir() if not path.name.startswith(".")}


def test_complete_refuses_to_write_over_its_inputs(tiny_run, drawn, capsys):
    before = snapshot(drawn)
    code, err = run(["complete", str(drawn), "--keep", "top", "--checkpoint", str(tiny_run), "--out", str(drawn)],
                    capsys)
    assert code == 2 and "holds the input" in err and err.count("\n") == 1
    assert snapshot(drawn) == before
    # A folder that holds the inputs deeper down, and a prompts file inside --out, are refused alike.
    code, err = run(["complete", str(drawn / "0000_000.png"), "--keep", "top", "--checkpoint", str(tiny_run),
                     "--out", str(drawn.parent)], capsys)
    assert code == 2 and "holds the input" in err
    prompts = drawn / "prompts.txt"
    prompts.write_text("dark green eight on bright cyan\n")
    code, err = run(["generate", "--prompts-file", str(prompts), "--checkpoint", str(tiny_run), "--out", str(drawn)],
                    capsys)
    assert code == 2 and "holds the input prompts.txt" in err


def test_a_second_writer_to_one_folder_is_refused_not_silently_dropped(tiny_run, tmp_path, capsys):
    out = tmp_path / "shared"
    prepare_output(out)                      # another command holds the folder
    code, err = run(["generate", "dark green eight on bright cyan", "--checkpoint", str(tiny_run), "--out", str(out)],
                    capsys)
    assert code == 2 and "another tinychameleon command is writing to" in err
    assert not (out / "manifest.jsonl").exists()
    # main() releases its own lock when it returns: the same process may write there again afterwards.
    from tinychameleon import cli

    while cli._held_locks:
        os.close(cli._held_locks.pop())
    assert run(["generate", "dark green eight on bright cyan", "--checkpoint", str(tiny_run), "--out", str(out)],
               capsys)[0] == 0
    assert run(["sample", "-n", "1", "--checkpoint", str(tiny_run), "--out", str(out)], capsys)[0] == 0


def test_a_fifo_among_the_images_is_skipped_not_waited_on(tiny_run, drawn, tmp_path):
    folder = tmp_path / "with-fifo"
    shutil.copytree(drawn, folder)
    os.mkfifo(folder / "b.png")
    for command in (["caption", str(folder), "--json"],
                    ["complete", str(folder), "--keep", "top", "--out", str(tmp_path / "completed")]):
        result = subprocess.run([sys.executable, "-m", "tinychameleon", *command, "--checkpoint", str(tiny_run)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "b.png is not a regular file" in result.stderr


def test_complete_skips_an_unreadable_entry_as_caption_does(tiny_run, drawn, tmp_path, capsys):
    (drawn / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "completed"
    code, err = run(["complete", str(drawn), "--keep", "top", "--checkpoint", str(tiny_run), "--out", str(out)], capsys)
    assert code == 0 and "skipped" in err and "broken.png" in err
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [os.path.basename(row["source"]) for row in rows] == ["0000_000.png", "0000_001.png"]


def test_a_mask_of_the_wrong_size_is_refused(tiny_run, drawn, tmp_path, capsys):
    mask = tmp_path / "mask.png"
    Image.new("RGB", (1, 1), "white").save(mask)
    code, err = run(["complete", str(drawn), "--keep", str(mask), "--checkpoint", str(tiny_run), "--out",
                     str(tmp_path / "out")], capsys)
    assert code == 2 and "is 1x1 pixels; a mask is 28x28" in err
    top = Image.new("RGB", (28, 28), "black")
    top.paste((255, 255, 255), (0, 0, 28, 14))
    top.save(mask)
    assert run(["complete", str(drawn), "--keep", str(mask), "--checkpoint", str(tiny_run), "--out",
                str(tmp_path / "out")], capsys)[0] == 0


def test_non_finite_weights_are_refused_at_load(tiny_run, tmp_path, capsys):
    broken = tmp_path / "nan-run"
    shutil.copytree(tiny_run, broken)
    state = load_file(str(broken / "model.safetensors"))
    name = next(key for key, value in state.items() if value.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(broken / "model.safetensors"))
    for command in (["generate", "dark green eight on bright cyan", "--out", str(tmp_path / "x")],
                    ["caption", str(tiny_run / "training_curve.png")]):
        code, err = run([*command, "--checkpoint", str(broken)], capsys)
        assert code == 2 and "non-finite weights" in err and err.count("\n") == 1


def test_a_completion_prompt_must_match_the_kept_pixels_by_role(tiny_pipeline, colored):
    from tinychameleon.data.colored import COLOR_ID, colorize
    from tinychameleon.errors import PromptError

    test = colored[1]
    eight = test.images[np.flatnonzero(test.digits == 8)[0]]
    shape = (eight != eight.reshape(-1, 3)[0]).any(-1) * 255        # corner pixel = paper
    image = colorize(shape[None].astype(np.uint8), np.array([COLOR_ID["dark green"]]),
                     np.array([COLOR_ID["bright cyan"]]))[0].astype(np.uint8)
    with pytest.raises(PromptError, match="ink and paper swapped"):
        tiny_pipeline.complete(image[None], keep="top", prompts="bright cyan eight on dark green", seed=0)
    with pytest.raises(PromptError, match="digit 'normal red'"):
        tiny_pipeline.complete(image[None], keep="top", prompts="normal red eight on * *", seed=0)
    images, captions = tiny_pipeline.complete(image[None], keep="top", prompts="dark green eight on * *", seed=0)
    assert captions[0].startswith("dark green eight on")


def test_blanks_no_valid_pair_can_fill_are_refused(tiny_pipeline, tiny_run, tmp_path, capsys):
    from tinychameleon.errors import PromptError

    with pytest.raises(PromptError, match="no pair of palette colors fits"):
        tiny_pipeline.draw(["* black eight on * black"], seed=0)
    code, err = run(["generate", "* black eight on * black", "--checkpoint", str(tiny_run), "--out",
                     str(tmp_path / "x")], capsys)
    assert code == 2 and "no pair of palette colors fits" in err
    images, captions = tiny_pipeline.draw(["* * eight on plain black"], n=8, seed=0)
    from tinychameleon.data.colored import VALID_PAIRS, parse_caption

    valid = {tuple(pair) for pair in VALID_PAIRS.tolist()}
    assert all(parse_caption(caption) and parse_caption(caption)[1:] in valid for caption in captions)


def test_a_full_disk_during_training_is_one_error_line_and_nothing_half_written(tmp_path, capsys, monkeypatch,
                                                                               cache_dir):
    from tinychameleon.training import state

    def full_disk(data, path):
        with open(path, "wb") as handle:
            handle.write(b"partial")                    # what a write cut short leaves
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(state.torch, "save", full_disk)
    out = tmp_path / "run"
    code, err = run(["train", "--preset", "tiny", "--out", str(out), "--no-progress", "--cache-dir", str(cache_dir)],
                    capsys)
    assert code == 2 and err.startswith("error: writing") and "is the disk full?" in err and err.count("\n") == 1
    assert not list(out.glob("*.pt")) and not list(out.glob(".*.tmp"))   # no state file, no temp left behind
