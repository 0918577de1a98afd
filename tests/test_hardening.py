"""Abuse cases: bad configs, crafted state files, fuzzed CLI flags and HTTP fields, deadlines.

Each regression case of the hardening issue has a test here; the property-based ones
(Hypothesis) assert the two invariants that matter: the CLI never prints a traceback (exit 0
or 2) and the server never answers 5xx.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from tinychameleon.checkpoint import load_config
from tinychameleon.cli import main
from tinychameleon.config import RunConfig, SamplingConfig, make_config
from tinychameleon.errors import CheckpointError, ConfigError, DeadlineExceeded
from tinychameleon.imaging import read_image
from tinychameleon.training.state import load_state
from tinychameleon.web.server import ServerSettings, create_app

PROMPT = "dark green eight on bright cyan"


def run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


# ---- configs and state files ---------------------------------------------------------------

@pytest.mark.parametrize("change, fragment", [
    ({"model": {"n_layer": "two"}}, "model.n_layer must be int"),
    ({"model": {"n_head": 5}}, "multiple of model.n_head"),
    ({"vq": {"codebook_size": -1}}, "vq.codebook_size must be between"),
    ({"train": {"lr": True}}, "train.lr must be float"),
    ({"unknown": 1}, "unknown setting 'unknown'"),
    ({"model": {"depth": 3}}, "unknown setting model.depth"),
    ({"model": [1, 2]}, "model must be a JSON object"),
    ({"train": {"family_shares": [1]}}, "train.family_shares must be dict"),
    ({"train": {"family_shares": {"counting": "2"}}}, "maps family names to finite numbers"),
    ({"train": {"documents": 8, "family_shares": {"counting": float("nan")}}}, "maps family names to finite numbers"),
    ({"train": {"documents": 8, "family_shares": {"counting": 1e4}}}, "between 0.0 and 1000.0"),
    ({"train": {"family_shares": {"counting": 2}}}, "family_shares needs train.documents"),
])
def test_run_config_is_validated(change, fragment):
    data = make_config("tiny").to_dict()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        RunConfig.from_dict(data)


def test_every_preset_round_trips():
    from tinychameleon.config import PRESETS, STAGES

    for preset in PRESETS:   # a preset that continues a run is asked for with that run
        config = make_config(preset, **({"train": {"init_from": "runs/base"}} if preset in STAGES else {}))
        assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("settings, fragment", [
    ({"temperature": float("nan")}, "finite"), ({"temperature": 1e-300}, "at least 0.01"),
    ({"temperature": -1.0}, "between"), ({"top_k": -5}, "top_k"), ({"guidance": float("inf")}, "finite"),
    ({"image_candidates": 0}, "image_candidates"), ({"caption_views": 0}, "caption_views"),
    ({"image_candidates": 2.5}, "must be int"), ({"rerank_captions": 1}, "must be bool"),
])
def test_sampling_settings_are_validated(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SamplingConfig(**settings).validate()


@pytest.mark.parametrize("config_text, fragment", [
    (b"\x00\xff\xfe binary", "not valid JSON"), (b'{"model": {"n_layer": "two"}}', "model.n_layer"),
    (b"[1, 2]", "JSON object"),
])
def test_bad_config_json_is_one_clear_error(tiny_run, tmp_path, capsys, config_text, fragment):
    assert_damaged_file_is_reported(tiny_run, tmp_path, capsys, "config.json", config_text, fragment)


def assert_damaged_file_is_reported(tiny_run, tmp_path, capsys, name: str, content: bytes, fragment: str):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / name).write_bytes(content)
    code, _, err = run(["generate", PROMPT, "--out", tmp_path / "out", "--checkpoint", run_dir], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err


@pytest.mark.parametrize("sampling_text, fragment", [
    ("garbage", "not valid JSON"), ('{"guidance": "x"}', "guidance must be float"),
    ('{"bogus": 1}', "unknown sampling setting"), ('{"temperature": 1e-300}', "at least 0.01"),
])
def test_bad_sampling_json_is_one_clear_error(tiny_run, tmp_path, capsys, sampling_text, fragment):
    assert_damaged_file_is_reported(tiny_run, tmp_path, capsys, "sampling.json", sampling_text.encode(), fragment)


class Exploit:
    """Unpickling this would run code; a weights_only load must refuse it."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_resume_state_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "train_state.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="cannot resume"):
        load_state(path)
    assert not (tmp_path / "PWNED").exists()
    # A genuine state file (tensors, numbers, lists of dicts, optimizer state) still loads.
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1,
                "steps": [{"step": 0, "loss": 1.5}], "epochs": [{"epoch": 1}]}, path)
    assert load_state(path)["epoch"] == 1


def test_checkpoint_that_is_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_config(tmp_path / "file")


# ---- CLI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, fragment", [
    (["--temperature", "nan"], "finite"), (["--temperature", "inf"], "finite"), (["--temperature", "1e309"], "finite"),
    (["--temperature", "1e-300"], "--temperature must be 0"), (["--temperature", "-1"], "--temperature"),
    (["--top-k", "-5"], "--top-k"), (["--guidance", "nan"], "finite"), (["--seed", str(2**70)], "--seed"),
    (["--device", "tpu"], "unknown device"), (["--candidates", "0"], "--candidates"), (["--views", "0"], "--views"),
    (["--candidates", "two"], "not an integer"), (["--guided-scales", "-1"], "--guided-scales"),
    (["--guidance", "2", "--guided-scales", "2"], "raster model guides every token"),
])
def test_bad_flags_exit_2_with_one_line(tiny_run, tmp_path, capsys, flags, fragment):
    code, _, err = run(["generate", PROMPT, "--out", tmp_path / "out", "--checkpoint", tiny_run] + flags, capsys)
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cuda_without_gpu_is_a_clear_error(tiny_run, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(["generate", PROMPT, "--out", tmp_path / "o", "--checkpoint", tiny_run, "--device", "cuda"],
                       capsys)
    assert code == 2 and "no CUDA GPU" in err


def test_output_that_cannot_be_written(tiny_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, fragment in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "cannot write")):
        code, _, err = run(["generate", PROMPT, "--out", out, "--checkpoint", tiny_run], capsys)
        assert code == 2 and fragment in err and "Traceback" not in err


def test_long_prompt_is_refused_without_echo(tiny_run, tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("dark " * 200_000 + "\n")
    started = time.perf_counter()
    code, _, err = run(["generate", "--prompts-file", tmp_path / "prompts.txt", "--out", tmp_path / "o",
                        "--checkpoint", tiny_run], capsys)
    assert code == 2 and "too long" in err and len(err) < 500 and time.perf_counter() - started < 5


def test_caption_batch_survives_bad_files(tiny_run, tmp_path, capsys, colored):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(colored[1].images[index] * 85).save(folder / f"good{index}.png")
    for index in range(3):
        (folder / f"bad{index}.png").write_bytes(b"not a png" * index)
    code, out, err = run(["caption", folder, "--checkpoint", tiny_run, "--json"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(row["image"]).name for row in rows if row["caption"]) == [f"good{i}.png" for i in range(6)]
    assert sorted(Path(row["image"]).name for row in rows if row["caption"] is None) == [f"bad{i}.png" for i in range(3)]
    assert err.count("skipped:") == 3 and "Traceback" not in err
    code, _, err = run(["caption", folder, "--checkpoint", tiny_run, "--strict"], capsys)
    assert code == 2 and "3 of 9 images could not be read" in err


from pathlib import Path  # noqa: E402  (used above in the batch test)

flag_values = st.one_of(st.integers(-2**80, 2**80).map(str), st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
                        st.sampled_from(["nan", "-inf", "1e309", "1e-300", "", "x", "0", "-0", "3", "true"]),
                        st.text(max_size=12))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--temperature", "--top-k", "--guidance", "--candidates", "--views", "--seed", "-n"]),
       value=flag_values)
def test_flag_fuzz_never_tracebacks(tiny_run, tmp_path, capsys, flag, value):
    code, _, err = run(["generate", PROMPT, "--out", tmp_path / "fuzz", "--checkpoint", tiny_run, f"{flag}={value}"],
                       capsys)
    assert code in (0, 2) and "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", PROMPT, "--out", "o", "--temperature", "nan"])
    assert exit_info.value.code == 2


# ---- images --------------------------------------------------------------------------------

def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    array = np.zeros((28, 28, 3), dtype=np.uint8)
    array[:, :14] = 255                                    # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 3                                       # "rotate 180" on display
    levels = read_image(encode(Image.fromarray(array), "JPEG", exif=exif, quality=100))
    assert levels[:, 20:].mean() > 2.5 and levels[:, :8].mean() < 0.5  # shown rotated: white on the right


def test_float_tiff_is_not_black():
    values = np.zeros((28, 28), dtype=np.float32)
    values[8:20, 8:20] = 0.9
    levels = read_image(encode(Image.fromarray(values, "F"), "TIFF"))
    assert levels[14, 14].min() == 3 and levels[0, 0].max() == 0


def test_a_shrunk_drawing_keeps_its_two_colors():
    """A 280x280 drawing shrunk to 28x28 blends its stroke's edges with the paper; the levels the model reads
    have only the stroke's and the paper's colors, the stroke where it was drawn (a thin white stroke on
    dark blue once read as "plain gray" from its blended edge)."""
    image = Image.new("RGB", (280, 280), (0, 0, 170))                             # dark blue paper
    ImageDraw.Draw(image).line([(143, 45), (137, 235)], fill=(255, 255, 255), width=14)
    levels = read_image(encode(image, "PNG"))
    colors = {tuple(int(v) for v in color) for color in levels.reshape(-1, 3)}
    assert colors == {(0, 0, 2), (3, 3, 3)}
    stroke = (levels == 3).all(-1)
    assert stroke[5:24, 13:15].any(axis=1).all() and not stroke[:, :10].any() and not stroke[:, 18:].any()


def test_eps_and_other_formats_are_refused():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n"
    with pytest.raises(Exception, match="accepted: PNG"):
        read_image(eps)


# ---- the HTTP API --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tiny_pipeline):
    app = create_app(tiny_pipeline, ServerSettings(max_samples=16, max_upload_bytes=200_000, max_cost=256))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def png(levels: np.ndarray) -> bytes:
    return encode(Image.fromarray(levels * 85), "PNG")


@pytest.mark.parametrize("body", [
    '{"prompt": "dark green eight on bright cyan", "temperature": NaN}',
    '{"prompt": "dark green eight on bright cyan", "guidance": Infinity}',
    '{"prompt": "dark green eight on bright cyan", "temperature": 1e309}',
    '{"prompt": "\\ud800 green eight on bright cyan"}',
    '{"prompt": "dark green eight on bright cyan", "temperature": 1e-300}',
    '{"prompt": "dark green eight on bright cyan", "n": true}',
    '{"prompt": "dark green eight on bright cyan", "n": "3"}',
    '{"prompt": "dark green eight on bright cyan", "seed": 18446744073709551616}',
    '{"prompt": "dark green eight on bright cyan", "n": 16, "candidates": 16, "guidance": 10}',
    '{"prompt": "dark green eight on bright cyan", "extra": 1}',
    '[1, 2]', 'null', '{"prompt": ', '',
])
def test_bad_json_gets_422_never_500(client, body):
    response = client.post("/api/generate", content=body.encode("utf-8", "surrogatepass"),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert len(response.text) < 2000


def test_cost_budget_message_names_the_factors(client):
    response = client.post("/api/generate", json={"prompt": PROMPT, "n": 16, "candidates": 16, "guidance": 10})
    assert response.status_code == 422 and "limit is 256" in response.json()["detail"]


def test_huge_prompt_is_not_echoed(client):
    response = client.post("/api/generate", json={"prompt": "a" * 150_000})
    assert response.status_code == 422 and len(response.text) < 1000


def test_body_limit(client):
    response = client.post("/api/generate", content=b"{" + b" " * 400_000 + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_chunked_body_over_the_limit_is_413_not_400(client):
    """No Content-Length (Transfer-Encoding: chunked): the limit is found mid-parse; the answer stays 413."""
    boundary = b"----limit"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")

    def chunks():
        yield head
        for _ in range(40):
            yield b"\x00" * 100_000

    for path in ("/api/caption", "/api/search"):
        response = client.post(path, content=chunks(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"})
        assert response.status_code == 413 and "larger than" in response.json()["detail"], (path, response.text)


@pytest.mark.parametrize("query", ["seed=18446744073709551616", "seed=-1", "temperature=nan", "temperature=inf",
                                   "temperature=1e-300", "seed=abc"])
def test_caption_query_parameters(client, colored, query):
    response = client.post(f"/api/caption?{query}", files={"file": ("a.png", png(colored[1].images[0]))})
    assert response.status_code == 422, response.text


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_subnormal=False) | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(["/api/generate", "/api/sample"]),
       fields=st.dictionaries(st.sampled_from(["prompt", "n", "temperature", "top_k", "seed", "guidance",
                                               "candidates", "other"]), json_values, max_size=5),
       prompt=st.one_of(st.just(PROMPT), st.text(max_size=60)))
def test_http_fuzz_never_5xx(client, endpoint, fields, prompt):
    body = {"prompt": prompt, "n": 1, **fields}
    try:
        content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return
    response = client.post(endpoint, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body, response.text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), temperature=st.one_of(st.none(), st.text(max_size=8)),
       seed=st.one_of(st.none(), st.text(max_size=25)))
def test_caption_fuzz_never_5xx(client, data, temperature, seed):
    params = {key: value for key, value in (("temperature", temperature), ("seed", seed)) if value is not None}
    response = client.post("/api/caption", params=params, files={"file": ("x.png", data)})
    assert response.status_code < 500, response.text


# ---- deadlines -----------------------------------------------------------------------------

def test_time_limit_stops_sampling(tiny_pipeline):
    with tiny_pipeline.time_limit(0.0):
        with pytest.raises(DeadlineExceeded):
            tiny_pipeline.generate_images([PROMPT], n=4, seed=0)
    assert tiny_pipeline.generate_images([PROMPT], n=1, seed=0).shape == (1, 28, 28, 3)  # limit lifted after


def test_expired_request_stops_its_work(tiny_pipeline):
    """A request that times out answers 504 and its work stops: the inference thread is free long before
    the heavy job would have finished."""
    heavy = {"prompt": PROMPT, "n": 64, "candidates": 16, "guidance": 2.0}
    started = time.perf_counter()
    tiny_pipeline.generate_images([PROMPT] * 64, n=1, image_candidates=16, guidance=2.0)
    unstopped = time.perf_counter() - started
    app = create_app(tiny_pipeline, ServerSettings(timeout_s=0.05, max_samples=64, max_cost=4096))
    with TestClient(app) as client:
        app.state.worker.timings.clear()   # a wrong prediction admits it: the deadline must still stop it
        assert client.post("/api/generate", json=heavy).status_code == 504
        started = time.perf_counter()
        app.state.worker.lanes["heavy"].executor.submit(lambda: None).result()  # waits until the inference thread is free
        freed = time.perf_counter() - started
        assert client.get("/api/health").status_code == 200
    assert freed < 0.3 * unstopped, (freed, unstopped)


def test_the_two_colors_of_an_upload_are_counted_as_in_numpy():
    """image_two_colors (counted inside PIL, no pixel copy) agrees with two_colors on the rounded levels,
    ties included (the lower color id wins in both)."""
    from tinychameleon.imaging import LEVEL_SCALE, image_two_colors, two_colors

    rng = np.random.default_rng(0)
    for size in ((31, 17), (64, 64), (2, 2)):
        pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
        pixels[: size[1] // 2] = (10, 200, 90)                       # a most common color
        image = Image.fromarray(pixels, "RGB")
        expected = two_colors((pixels.astype(np.uint16) + LEVEL_SCALE // 2) // LEVEL_SCALE)
        assert all((a == b).all() for a, b in zip(image_two_colors(image), expected))
    tie = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8), "RGB")
    assert all((a == b).all() for a, b in zip(image_two_colors(tie), two_colors(np.array([[[3, 0, 0], [0, 0, 3]]]))))
