"""The fast paths: encoded-dataset cache, the benchmark harness, bf16 and torch.compile."""

import json
import platform
import subprocess
import sys

import pytest
import torch

from tinychameleon.config import make_config
from tinychameleon.checkpoint import build_transformer, load_image_tokenizer
from tinychameleon.training.run import cached_codes, encode_images


def test_encoded_dataset_is_cached_by_tokenizer_hash(tiny_run, colored, tmp_path):
    vqvae = load_image_tokenizer(tiny_run)
    split = colored[1].subset(slice(0, 300))
    first = cached_codes(vqvae, split, "test", "k", tmp_path, torch.device("cpu"))
    files = list((tmp_path / "codes").iterdir())
    assert len(files) == 1 and first.shape == (300, 49)
    stamp = files[0].stat().st_mtime_ns
    again = cached_codes(vqvae, split, "test", "k", tmp_path, torch.device("cpu"))
    assert torch.equal(first, again) and files[0].stat().st_mtime_ns == stamp  # read, not recomputed
    assert torch.equal(first, encode_images(vqvae, split.images, torch.device("cpu")).long())
    with torch.no_grad():
        vqvae.quantizer.codebook.add_(0.01)  # other weights -> another cache entry
    cached_codes(vqvae, split, "test", "k", tmp_path, torch.device("cpu"))
    assert len(list((tmp_path / "codes").iterdir())) == 2


def test_bench_prints_side_by_side_table(tmp_path, capsys, tiny_run):
    from tinychameleon.bench import run_bench

    results = run_bench(device="cpu", train_batches=[4], batches=[1, 2], repeats=1, json_path=str(tmp_path / "b.json"),
                        checkpoint=str(tiny_run), precision_batch=2)   # batch 128 in emulated bf16 takes ~40 s
    out = capsys.readouterr().out
    assert [(row["precision"], row["batch"]) for row in results["precision"]] == [("fp32", 2), ("bf16", 2)]
    assert all(row["ms_per_step"] > 0 for row in results["precision"])
    assert "best-preset training step, batch 2: fp32" in out
    assert "reference tok/s" in out and "KV cache img/s" in out
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["training"][0]["project"]["tokens_per_s"] > 0
    assert [row["batch"] for row in results["sampling"]] == [1, 2]
    assert all(row["no_cache"] is not None for row in results["sampling"])
    assert "one request (batch 1)" in out
    assert [(row["request"], row["settings"]) for row in saved["pipeline"]] == [
        ("text -> image", "plain"), ("text -> image", "checkpoint"), ("image -> text", "plain"),
        ("image -> text", "checkpoint")] and all(row["ms"] > 0 for row in saved["pipeline"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast is the CUDA path; no CUDA GPU here")
def test_bf16_training_step_on_cuda():
    from tinychameleon.device import autocast
    from tinychameleon.training.lm_trainer import sequence_loss

    device = torch.device("cuda")
    model = build_transformer(make_config("tiny")).to(device)
    sequences = torch.randint(0, 30, (8, 58), device=device)
    with autocast(device):
        loss = sequence_loss(model, sequences)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    model = build_transformer(make_config("tiny")).eval()
    ids = torch.randint(0, 30, (2, 58))
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(ids), model(ids), atol=1e-4, rtol=1e-4)


FREE_AND_MEASURE = """
import os, sys, torch
from tinychameleon.device import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
block = torch.ones(64, 2**20)          # 256 MB, touched
before = resident_mb()
del block
print(kept, before - resident_mb())    # MB handed back to the system by the free
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_keeps_a_freed_tensor_for_reuse():
    """Training keeps freed memory (device.keep_freed_memory): a freed 256 MB tensor stays with the process for the next
    one, where by default glibc unmaps it at once (and the next step page-faults it in again)."""
    def run(mode):
        result = subprocess.run([sys.executable, "-c", FREE_AND_MEASURE, mode], capture_output=True, text=True,
                                check=True)
        kept, released = result.stdout.split()
        return kept, float(released)
    assert run("default")[1] > 200                  # glibc gave the block back
    kept, released = run("keep")
    assert kept == "True" and released < 10        # kept for the next tensor
