"""`continue` end to end: the Python API, the CLI contract (manifest fields, index order, one PNG per <image>),
the JSON endpoint, and bad input everywhere."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tinychameleon.cli import main
from tinychameleon.data.colored import colorize
from tinychameleon.errors import PromptError
from tinychameleon.imaging import png_bytes
from tinychameleon.web.server import ServerSettings, create_app


def digit_image(foreground: int = 3, background: int = 20) -> np.ndarray:
    shape = np.zeros((28, 28), dtype=np.uint8)
    shape[6:22, 12:16] = 255
    return colorize(shape[None], np.array([foreground]), np.array([background]))[0].astype(np.uint8)


def png_file(path, levels):
    Image.fromarray((levels * 85).astype(np.uint8)).save(path)
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_python_api_continues_and_is_seeded(document_pipeline):
    image = digit_image()
    prompts = ["<image> swap the colors .", "count from two to four in plain white on dark blue :"]
    first = document_pipeline.continue_documents(prompts, [[image], []], n=3, seed=4, guidance=2.0)
    again = document_pipeline.continue_documents(prompts, [[image], []], n=3, seed=4, guidance=2.0)
    assert len(first) == 2 and all(len(group) == 3 for group in first)
    for group, same in zip(first, again):
        for one, two in zip(group, same):
            assert one.text == two.text and np.array_equal(one.images, two.images)
            assert one.text.count("<image>") == len(one.images)     # one picture per placeholder it wrote
            assert one.images.shape[1:] == (28, 28, 3) and one.images.dtype == np.uint8
    single = document_pipeline.continue_documents("<image> what digit is this ?", [image], n=1, seed=4)
    assert len(single) == 1 and len(single[0]) == 1
    with pytest.raises(PromptError, match="placeholder"):
        document_pipeline.continue_documents("<image> plus <image> is", [image])


def test_pairs_only_checkpoints_refuse_documents(tiny_pipeline):
    with pytest.raises(PromptError, match="trained without documents"):
        tiny_pipeline.continue_documents("<image> swap the colors .", [digit_image()])


def test_cli_contract(document_run, tmp_path, capsys):
    a, b = png_file(tmp_path / "a.png", digit_image(3, 20)), png_file(tmp_path / "b.png", digit_image(19, 0))
    (tmp_path / "sub").mkdir()
    prompts = tmp_path / "sub" / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "<image> plus <image> is", "images": ["../a.png", str(b)]},
        {"prompt": "count from one to three in plain white on dark blue :"},
        {"prompt": "<image> make the digit plain red .", "images": ["../b.png"]}]) + "\n")
    out = tmp_path / "out"
    code, stdout, _ = run(["continue", "--prompts-file", prompts, "-n", 2, "--out", out, "--seed", 3,
                           "--checkpoint", document_run], capsys)
    assert code == 0 and "wrote 6 continuations" in stdout
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(row["index"], row["sample"]) for row in rows] == [(i, s) for i in range(3) for s in range(2)]
    for row in rows:
        assert set(row) == {"index", "sample", "text", "images"}
        assert row["text"].count("<image>") == len(row["images"])
        for name in row["images"]:
            picture = np.asarray(Image.open(out / name))
            assert picture.shape == (28, 28, 3) and set(np.unique(picture)) <= {0, 85, 170, 255}
    assert {path.name for path in out.glob("*.png")} == {name for row in rows for name in row["images"]}
    # One prompt with --image; the same seed gives the same manifest.
    for name in ("one", "two"):
        code, _, _ = run(["continue", "<image> swap the colors .", "--image", a, "-n", 2, "--out", tmp_path / name,
                          "--seed", 9, "--checkpoint", document_run], capsys)
        assert code == 0
    assert (tmp_path / "one" / "manifest.jsonl").read_text() == (tmp_path / "two" / "manifest.jsonl").read_text()
    assert all(row["index"] == 0 for row in map(json.loads, (tmp_path / "one" / "manifest.jsonl").open()))


def test_cli_sampler_flags_reach_the_documents(document_run, tmp_path, capsys, monkeypatch):
    from tinychameleon.pipeline import Pipeline

    seen, real = [], Pipeline.continue_documents
    monkeypatch.setattr(Pipeline, "continue_documents", lambda self, *args, **kwargs: seen.append(kwargs)
                        or real(self, *args, **kwargs))
    code, _, _ = run(["continue", "count from one to three in plain white on dark blue :", "--out", tmp_path,
                      "--checkpoint", document_run, "--greedy-above", 0.4, "--guidance", 2.5, "--top-p", 0.9], capsys)
    assert code == 0 and len(seen) == 1
    assert {key: seen[0][key] for key in ("greedy_above", "guidance", "top_p")} == \
        {"greedy_above": 0.4, "guidance": 2.5, "top_p": 0.9}


@pytest.mark.parametrize("argv, message", [
    (["<image> maek the digit plain red .", "--image", "A"], "did you mean make"),
    (["<image> plus <image> is", "--image", "A"], "2 <image> placeholders but 1 image"),
    (["<image> swap the colors .", "--image", "MISSING"], "missing.png"),
    (["<image> swap the colors .", "--image", "BAD"], "bad.png"),
    (["the " * 40], "too long"),
    ([], "give a prompt"),
])
def test_cli_bad_input_exits_2_with_one_line(document_run, tmp_path, capsys, argv, message):
    a = png_file(tmp_path / "a.png", digit_image())
    (tmp_path / "bad.png").write_text("not an image")
    names = {"A": a, "MISSING": tmp_path / "missing.png", "BAD": tmp_path / "bad.png"}
    argv = [str(names.get(arg, arg)) for arg in argv]
    code, _, err = run(["continue", *argv, "--out", tmp_path / "out", "--checkpoint", document_run], capsys)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_cli_bad_prompts_file(document_run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    for text, message in (("{not json", "not JSON"), ('{"prompt": 3}', "must be"), ("", "holds no prompts"),
                          ('{"prompt": "x", "images": ["a.png"], "extra": 1}', "must be"),
                          ('{"prompt": "<image>", "images": 5}', "must be")):
        bad.write_text(text)
        code, _, err = run(["continue", "--prompts-file", bad, "--out", tmp_path / "o", "--checkpoint", document_run],
                           capsys)
        assert code == 2 and message in err


@pytest.fixture(scope="module")
def client(document_pipeline):
    with TestClient(create_app(document_pipeline, ServerSettings(max_samples=16, max_upload_bytes=200_000,
                                                                     max_cost=100))) as client:
        yield client


def upload(levels) -> tuple:
    buffer = io.BytesIO()
    Image.fromarray((levels * 85).astype(np.uint8)).save(buffer, format="PNG")
    return ("images", ("a.png", buffer.getvalue(), "image/png"))


def test_endpoint_continues_documents(client):
    response = client.post("/api/continue", data={"prompt": "<image> Swap the colors.", "n": "2", "seed": "1",
                                                  "guidance": "1"}, files=[upload(digit_image())])
    assert response.status_code == 200
    body = response.json()
    assert body["prompt"] == "<image> swap the colors ." and len(body["seen"]) == 1 and len(body["continuations"]) == 2
    for item in body["continuations"]:
        assert item["text"].count("<image>") == len(item["images"])
    again = client.post("/api/continue", data={"prompt": "<image> swap the colors .", "n": "2", "seed": "1",
                                               "guidance": "1"}, files=[upload(digit_image())])
    assert again.json()["continuations"] == body["continuations"]
    counting = client.post("/api/continue", data={"prompt": "count from two to three in plain white on dark blue :"})
    assert counting.status_code == 200 and len(counting.json()["continuations"]) == 1
    assert body["warnings"] == [] and counting.json()["warnings"] == []
    off = client.post("/api/continue", data={"prompt": "count from two to three in plain white on light yellow :"})
    assert off.status_code == 200 and len(off.json()["continuations"]) == 1
    assert off.json()["warnings"] == ["'light yellow' is not a palette color; palette colors of hue yellow: "
                                      "plain yellow, bright yellow, dark yellow"]


def test_endpoint_refuses_bad_input(client):
    cases = [({"prompt": "<image> plus <image> is"}, [upload(digit_image())], 422, "placeholders"),
             ({"prompt": "<image> maek it a one ."}, [upload(digit_image())], 422, "did you mean"),
             ({"prompt": "count from two to four in plain white on dark blue :", "n": "64"}, [], 422, "16 samples"),
             ({"prompt": "count from two to four in plain white on dark blue :", "n": "13", "guidance": "2"}, [], 422,
              "13 x candidates 1 x 2 guidance streams x 4 images); the limit is 100"),
             ({"prompt": "<image> swap the colors ."}, [("images", ("a.png", b"junk", "image/png"))], 415, ""),
             ({"prompt": "x" * 2000}, [], 422, ""),
             ({"prompt": "<image> <image> <image> <image> <image>"}, [upload(digit_image())] * 5, 422, "at most")]
    for data, files, status, message in cases:
        response = client.post("/api/continue", data=data, files=files)
        assert response.status_code == status, (data, response.text)
        assert message in response.json()["detail"]


def test_time_limit_stops_continue(document_pipeline):
    from tinychameleon.errors import DeadlineExceeded

    with document_pipeline.time_limit(0.0), pytest.raises(DeadlineExceeded):
        document_pipeline.continue_documents("count from two to four in plain white on dark blue :", n=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.one_of(st.sampled_from(["<image> swap the colors .", "<image> plus <image> is", "<image>", ""]),
                        st.text(max_size=40)),
       fields=st.dictionaries(st.sampled_from(["n", "seed", "temperature", "guidance", "other"]),
                              st.one_of(st.text(max_size=12), st.integers(-5, 20).map(str)), max_size=4),
       images=st.lists(st.one_of(st.binary(max_size=64), st.just(b"PNG")), max_size=2))
def test_endpoint_fuzz_never_5xx(client, prompt, fields, images):
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = client.post("/api/continue", data={"prompt": prompt, **fields}, files=files or None)
    assert response.status_code < 500, response.text


def test_images_in_documents_use_the_documents_sampling_entries(document_pipeline, monkeypatch):
    """sampling.json's `documents` entries replace the pair settings for images inside documents, a call's own
    setting still wins, the server prices a continuation by them, and pairs ignore them."""
    from dataclasses import replace

    import tinychameleon.documents.decoder as decoder_module
    from tinychameleon.config import SamplingConfig
    from tinychameleon.errors import ConfigError

    pipe, image, seen = document_pipeline, digit_image(), []
    monkeypatch.setattr(pipe, "sampling", replace(pipe.sampling, temperature=1.0, guidance=1.0,
                                                  documents={"temperature": 0.0, "guidance": 1.5, "greedy_above": 0.5}))
    real_decode = decoder_module.decode
    monkeypatch.setattr(decoder_module, "decode", lambda model, grammar, rows, settings, unconditional, *rest, **kw:
                        seen.append((settings.temperature, settings.guidance, settings.greedy_above,
                                     unconditional is not None))
                        or real_decode(model, grammar, rows, settings, unconditional, *rest, **kw))
    pipe.continue_documents("<image> swap the colors .", [image], seed=1)
    pipe.continue_documents("<image> swap the colors .", [image], seed=1, temperature=0.7, guidance=None)
    assert seen == [(0.0, 1.5, 0.5, True), (0.7, 1.5, 0.5, True)]   # the guided stream runs for guidance 1.5
    assert pipe.resolve_settings({}).temperature == 1.0 and pipe.resolve_settings({}).streams == 1
    with TestClient(create_app(pipe, ServerSettings(max_samples=16, max_cost=7))) as client:
        response = client.post("/api/continue", data={"prompt": "<image> swap the colors .", "n": "1"},
                               files=[("images", ("a.png", png_bytes(image), "image/png"))])
        assert response.status_code == 422 and "2 guidance streams" in response.json()["detail"]  # 1 x 2 x 4 > 7
    with pytest.raises(ConfigError, match="sampling.documents may set"):
        SamplingConfig.from_dict({"documents": {"image_candidates": 4}})
    with pytest.raises(ConfigError, match="sampling.documents: temperature must be"):
        SamplingConfig.from_dict({"documents": {"temperature": -1.0}})
