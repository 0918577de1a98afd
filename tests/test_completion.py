"""Completion and partial prompts: forced tokens, kept pixels, filled blanks, CLI / API / errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tinychameleon.cli import main
from tinychameleon.data.colored import VALID_PAIRS, parse_caption
from tinychameleon.errors import PromptError
from tinychameleon.regions import RegionError, erase_outside, keep_mask
from tinychameleon.tokenizers.vqvae import kept_patches
from tinychameleon.sampling import generate
from tinychameleon.sequences import text_prefix
from tinychameleon.web.server import ServerSettings, create_app


def test_keep_masks_and_kept_tokens():
    top = keep_mask("top")
    assert top[:14].all() and not top[14:].any()
    kept = kept_patches(torch.from_numpy(top)).reshape(7, 7)
    assert kept[:3].all() and not kept[3:].any()  # row 3 straddles
    assert (keep_mask("left") == keep_mask("top").T).all() and (keep_mask("bottom") == ~top).all()
    with pytest.raises(RegionError, match="28x28"):
        keep_mask(np.ones((10, 10)))
    with pytest.raises(RegionError, match="nothing to fill"):
        keep_mask(np.ones((28, 28)))
    with pytest.raises(RegionError, match="one of top"):
        keep_mask("diagonal")


def test_erase_outside_hides_the_region_to_fill(colored):
    images = colored[1].images[:5]
    erased = erase_outside(images, keep_mask("top"))
    assert (erased[:, :14] == images[:, :14]).all()
    assert (erased[:, 14:] == erased[:, 27:28]).all()   # one flat color below: the kept part's background


def test_forced_tokens_are_kept_and_the_rest_drawn(tiny_pipeline):
    pipe = tiny_pipeline
    words = pipe.encode_prompts(["dark green eight on bright cyan"] * 4)
    prefix = text_prefix(pipe.vocab, words)
    forced = torch.full((4, 58), -1, dtype=torch.long)
    forced[:, 9:30] = torch.randint(0, pipe.vocab.image_tokens, (4, 21))
    out = generate(pipe.model, prefix, pipe.rules, 1.0, None, 2.0, torch.Generator().manual_seed(0), forced=forced)
    assert (out[:, 9:30] == forced[:, 9:30]).all()
    free = generate(pipe.model, prefix, pipe.rules, 1.0, None, 2.0, torch.Generator().manual_seed(0))
    assert not (free[:, 9:30] == forced[:, 9:30]).all()
    # Forcing with the KV cache equals forcing with full forward passes (same draws, same seed).
    uncached = generate(pipe.model, prefix, pipe.rules, 0.0, None, 1.0, None, use_cache=False, forced=forced)
    cached = generate(pipe.model, prefix, pipe.rules, 0.0, None, 1.0, None, forced=forced)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("keep", ["top", "bottom", "left", "right", "mask"])
def test_completion_keeps_every_kept_pixel(tiny_pipeline, colored, keep):
    images = colored[1].images[:3]
    region = keep_mask(keep) if keep != "mask" else np.random.default_rng(0).random((28, 28)) < 0.5
    for prompts in (None, colored[1].captions()[:3]):
        out, captions = tiny_pipeline.complete(images, region if keep == "mask" else keep, prompts, n=2, seed=0)
        assert out.shape == (6, 28, 28, 3) and len(captions) == 6
        assert (out[:, region] == np.repeat(images, 2, axis=0)[:, region]).all()
        if prompts:
            assert captions == [c for c in prompts for _ in range(2)]


def test_completion_errors(tiny_pipeline, colored):
    images = colored[1].images[:2]
    with pytest.raises(PromptError, match="colors do not match"):
        tiny_pipeline.complete(images[:1], "top", "plain white seven on plain black"
                               if colored[1].captions()[0].split()[:2] != ["plain", "white"] else
                               "plain red seven on plain black")
    with pytest.raises(PromptError, match="'bright red' is not a palette color"):
        tiny_pipeline.complete(images[:1], "top", "bright red seven on plain black")
    with pytest.raises(PromptError, match="3 prompts for 2 images"):
        tiny_pipeline.complete(images, "top", ["dark green eight on bright cyan"] * 3)


def test_partial_prompts_fill_every_blank(tiny_pipeline):
    prompts = ["dark green * on bright cyan", "* * seven on * *", "* black * on * *", "* * * * * *"]
    images, captions = tiny_pipeline.draw(prompts, n=8, seed=0)
    assert images.shape == (32, 28, 28, 3) and len(captions) == 32
    for index, caption in enumerate(captions):
        parsed = parse_caption(caption)
        assert parsed is not None, caption                           # well formed, palette colors
        assert any((VALID_PAIRS == parsed[1:]).all(1)), caption      # a color pair the data has
        for given, filled in zip(prompts[index // 8].split(), caption.split()):
            assert given == "*" or given == filled
    with pytest.raises(PromptError, match="word 3"):
        tiny_pipeline.draw(["dark green blue on * *"])
    with pytest.raises(PromptError, match="expected 6"):
        tiny_pipeline.draw(["dark green *"])


def test_cli_complete_and_blank_generate(tiny_run, tmp_path, capsys, colored):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(colored[1].images[index] * 85).save(folder / f"{index}.png")
    (tmp_path / "prompts.txt").write_text("\n".join(colored[1].captions()[:3]) + "\n")
    code = main(["complete", str(folder), "--keep", "top", "--prompts-file", str(tmp_path / "prompts.txt"), "-n", "2",
                 "--out", str(tmp_path / "out"), "--checkpoint", str(tiny_run), "--seed", "1"])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [row["source"] for row in rows] == [str(folder / f"{i}.png") for i in range(3) for _ in range(2)]
    assert [row["caption"] for row in rows] == [c for c in colored[1].captions()[:3] for _ in range(2)]
    for row in rows:
        levels = np.asarray(Image.open(tmp_path / "out" / row["file"])) // 85
        source = np.asarray(Image.open(row["source"])) // 85
        assert (levels[:14] == source[:14]).all()
    mask = np.zeros((28, 28), dtype=np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["complete", str(folder / "0.png"), "--keep", str(tmp_path / "mask.png"), "--out",
                 str(tmp_path / "m"), "--checkpoint", str(tiny_run)]) == 0
    capsys.readouterr()
    for argv, fragment in ((["--keep", "diagonal"], "--keep must be"),
                           (["--keep", "top", "--prompts-file", str(tmp_path / "one.txt")], "1 prompts for 3 images"),
                           (["--keep", "top", "--prompt", "dark green * on"], "expected 6")):
        (tmp_path / "one.txt").write_text("dark green eight on bright cyan\n")
        assert main(["complete", str(folder), "--out", str(tmp_path / "bad"), "--checkpoint", str(tiny_run)] + argv) == 2
        assert fragment in capsys.readouterr().err
    assert main(["generate", "* * seven on * *", "-n", "3", "--out", str(tmp_path / "g"),
                 "--checkpoint", str(tiny_run)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "g" / "manifest.jsonl").read_text().splitlines()]
    assert all(row["prompt"] == "* * seven on * *" and row["caption"].split()[2] == "seven" for row in rows)


def test_complete_endpoint(tiny_pipeline, colored):
    image = colored[1].images[0]
    buffer = io.BytesIO()
    Image.fromarray(image * 85).save(buffer, format="PNG")
    upload = {"file": ("a.png", buffer.getvalue())}
    with TestClient(create_app(tiny_pipeline, ServerSettings(max_samples=8))) as client:
        response = client.post("/api/complete", files=upload, data={"keep": "top", "n": "3", "seed": "0"})
        assert response.status_code == 200
        body = response.json()
        assert body["keep"] == "top" and len(body["completions"]) == 3
        with_prompt = client.post("/api/complete", files=upload,
                                  data={"keep": "bottom", "prompt": colored[1].captions()[0].replace(
                                      colored[1].captions()[0].split()[2], "*"), "n": "2"})
        assert with_prompt.status_code == 200
        assert all(item["caption"].split()[:2] == colored[1].captions()[0].split()[:2]
                   for item in with_prompt.json()["completions"])
        for data, status in (({"keep": "diagonal"}, 422), ({"keep": "top", "n": "0"}, 422),
                             ({"keep": "top", "n": "99"}, 422), ({"keep": "top", "prompt": "dark green"}, 422),
                             ({"keep": "top", "n": "true"}, 422)):
            assert client.post("/api/complete", files=upload, data=data).status_code == status, data
        blanks = client.post("/api/generate", json={"prompt": "* * seven on * *", "n": 3, "seed": 0}).json()
        assert len(blanks["captions"]) == 3 and all(c.split()[2] == "seven" for c in blanks["captions"])


def test_a_completion_its_own_caption_disagrees_with_is_drawn_again(tiny_pipeline, colored, monkeypatch):
    """Without a prompt: rows whose caption (read back) names another digit than the one drawn for are
    redrawn, at most COMPLETION_REDRAWS times; rows that agree are drawn once."""
    from tinychameleon.pipeline_completion import COMPLETION_REDRAWS
    from tinychameleon.reranking import DIGIT_SLOT
    from tinychameleon.tokenizers.vocab import WORDS

    drawn_for = torch.tensor([[WORDS.index(w) for w in "normal red four on plain white".split()]] * 4)
    read_back = drawn_for.clone()
    read_back[0, DIGIT_SLOT] = WORDS.index("five")          # row 0's drawing always reads as another digit
    draws, real_draw = [], tiny_pipeline._draw_codes

    def draw(words, *args, **kwargs):
        draws.append(words.clone())
        return real_draw(words, *args, **kwargs)

    monkeypatch.setattr(tiny_pipeline, "fill_blanks", lambda *args, **kwargs: drawn_for.clone())
    monkeypatch.setattr(tiny_pipeline, "_draw_codes", draw)
    monkeypatch.setattr(tiny_pipeline, "_write_words", lambda codes, *args: read_back[:len(codes)].clone())
    images = colored[1].images[:4]
    completed, captions = tiny_pipeline.complete(images, keep="top", seed=0)
    assert [len(words) for words in draws] == [4] + [1] * COMPLETION_REDRAWS
    assert all(torch.equal(words, drawn_for[:len(words)]) for words in draws)   # always drawn for the same caption
    assert captions[1:] == ["normal red four on plain white"] * 3 and captions[0] == "normal red five on plain white"
    assert np.array_equal(completed[:, :14], images[:, :14])
