"""`tinychameleon bench`: training and sampling speed, side by side with a plain reference.

Training: the project's step (fused attention, token tensors on the device, bf16 autocast and
fused AdamW on CUDA) against a naive reference step (hand-written attention, fp32, batches
built example by example in Python on the host, then copied to the device). Sampling:
text -> image with the static KV cache against recomputing the whole prefix each step.
Models have the seed shape (4 layers, d 128) with random weights: speed does not depend on them.
On CUDA, the checkpoint's own decode step and requests are also timed eagerly and replayed as a recorded
CUDA graph (decode_graph.py): before and after in one run.
"""

from __future__ import annotations

import platform
import resource
import time

import numpy as np
import torch

from .config import make_config
from .io_utils import write_json
from .decode_graph import eager_steps
from .sampling import ModalityRules, Stream, generate
from .sequences import build_sequences, text_prefix
from .tokenizers.vocab import Vocab
from .checkpoint import build_transformer
from .device import autocast, native_bf16, resolve_device, resolved_precision
from .training.lm_trainer import sequence_loss

SLOW_UNCACHED_ROWS = 256  # on CPU, uncached decoding above this batch takes minutes: skipped


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def training_case(device, batch_size: int, reference: bool, repeats: int, data_size: int = 8192) -> dict:
    config = make_config("seed")
    vocab = Vocab.for_config(config)
    torch.manual_seed(0)
    model = build_transformer(config).to(device)
    words = torch.randint(0, vocab.num_words, (data_size, 6))
    codes = torch.randint(0, vocab.image_tokens, (data_size, vocab.image_length))
    if reference:
        model.set_fused_attention(False)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        host_words, host_codes = words.tolist(), codes.tolist()

        def step():
            rows = np.random.randint(0, data_size, batch_size)
            sequences = []
            for position, row in enumerate(rows):  # the per-example host work a plain loop does
                text = [vocab.word_offset + w for w in host_words[row]]
                if position % 2 == 0:
                    sequences.append([vocab.bos, vocab.end_of_image, *text, vocab.end_of_text, *host_codes[row]])
                else:
                    sequences.append([vocab.bos, vocab.end_of_text, *host_codes[row], vocab.end_of_image, *text])
            batch = torch.tensor(sequences, device=device)
            loss = sequence_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
        words, codes = words.to(device), codes.to(device)

        def step():
            rows = torch.randint(0, data_size, (batch_size,), device=device)
            orders = (torch.arange(batch_size, device=device) % 2)
            batch = build_sequences(vocab, words[rows], codes[rows], orders)
            with autocast(device):
                loss = sequence_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    seconds = timed(step, device, repeats)
    return {"batch": batch_size, "ms_per_step": seconds * 1000, "tokens_per_s": batch_size * 57 / seconds,
            "peak_memory_mb": peak_memory_mb(device)}


def precision_case(device, precision: str, repeats: int, batch_size: int = 128) -> dict:
    """One training step of the `base` preset's transformer (both stages of `best` have its shapes) at `batch_size`
    (the preset's own, 128, unless a caller asks less), fp32 or under bf16 autocast."""
    config = make_config("base")
    vocab = Vocab.for_config(config)
    torch.manual_seed(0)
    model = build_transformer(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = build_sequences(vocab, torch.randint(0, vocab.num_words, (batch_size, 6)),
                            torch.randint(0, vocab.image_tokens, (batch_size, vocab.image_length)),
                            torch.arange(batch_size) % 2).to(device)

    def step():
        with autocast(device, precision=precision):
            loss = sequence_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: first-call allocations and kernel choice
    return {"precision": precision, "batch": batch_size, "ms_per_step": timed(step, device, repeats) * 1000}


def sampling_case(device, batch_size: int, use_cache: bool, repeats: int) -> dict:
    config = make_config("seed")
    vocab = Vocab.for_config(config)
    torch.manual_seed(0)
    model = build_transformer(config).to(device).eval()
    rules = ModalityRules(vocab)
    prefix = text_prefix(vocab, torch.randint(0, vocab.num_words, (batch_size, 6))).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def run():
        with autocast(device):
            generate(model, prefix, rules, generator=generator, use_cache=use_cache)

    seconds = timed(run, device, repeats)
    return {"batch": batch_size, "ms_per_batch": seconds * 1000, "images_per_s": batch_size / seconds,
            "ms_per_image": seconds * 1000 / batch_size, "ms_per_token": seconds * 1000 / vocab.image_length,
            "peak_memory_mb": peak_memory_mb(device)}


def decode_step_case(model, vocab: Vocab, batch_size: int, static: bool, steps: int = 40, repeats: int = 3) -> dict:
    """Microseconds per one-token decode step of `model` (the prefill not counted): the growing KVCache, or
    the static step (on a GPU, a replayed CUDA graph). The median of `repeats` decodes after a warm-up one."""
    device = next(model.parameters()).device
    prefix = text_prefix(vocab, torch.randint(0, vocab.num_words, (batch_size, 6))).to(device)
    token = torch.zeros(batch_size, dtype=torch.long, device=device)

    def decode() -> float:
        stream = Stream(model, [prefix], length=vocab.plain_length, static=static)
        stream.prefill()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            stream.decode_one_token(token)
        synchronize(device)
        return time.perf_counter() - started

    with torch.no_grad():
        decode()
        seconds = float(np.median([decode() for _ in range(repeats)]))
    return {"batch": batch_size, "static": static, "us_per_step": seconds / steps * 1e6}


def pipeline_cases(device, checkpoint: str | None, repeats: int) -> list[dict]:
    """One request at a time through the Pipeline, plain vs the checkpoint's own settings
    (guidance, best-of-n images, re-ranked captions): what a user of the API or web page waits.
    On CUDA each is timed twice: decode steps replayed as CUDA graphs (the default), then eagerly."""
    from .pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(checkpoint, device=str(device))
    prompt = "dark green eight on bright cyan"
    image = pipeline.generate_images([prompt], seed=0)
    plain = {"guidance": 1.0, "image_candidates": 1, "rerank_captions": False, "caption_views": 1}
    cases = [("text -> image", "plain", lambda: pipeline.generate_images([prompt], seed=0, **plain)),
             ("text -> image", "checkpoint", lambda: pipeline.generate_images([prompt], seed=0)),
             ("image -> text", "plain", lambda: pipeline.caption(image, **plain)),
             ("image -> text", "checkpoint", lambda: pipeline.caption(image))]
    rows = []
    for request, name, call in cases:
        row = {"request": request, "settings": name, "ms": timed(call, device, repeats) * 1000}
        if device.type == "cuda":
            with eager_steps():
                row["eager_ms"] = timed(call, device, repeats) * 1000
        rows.append(row)
    return rows


def decode_step_cases(device, checkpoint: str | None, batches: list[int]) -> list[dict]:
    """The checkpoint's raster decode step at each batch, eager and static (CUDA only: on the CPU the static
    step is the same kernels plus a mask, so there is nothing to compare)."""
    from .pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(checkpoint, device=str(device))
    if pipeline.next_scale:
        return []
    torch.manual_seed(0)
    return [{"batch": batch, "eager_us": decode_step_case(pipeline.model, pipeline.vocab, batch, False)["us_per_step"],
             "graph_us": decode_step_case(pipeline.model, pipeline.vocab, batch, True)["us_per_step"]}
            for batch in batches]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def run_bench(device: str = "auto", batches: list[int] = (1, 64, 1024), train_batches: list[int] = (32, 256),
              repeats: int = 3, json_path: str | None = None, checkpoint: str | None = None,
              precision_batch: int = 128) -> dict:
    """Time training and sampling against the plain reference; print tables, optionally write JSON.
    precision_batch: the batch of the `best` preset's fp32-vs-bf16 step (its own, 128, unless a test asks less)."""
    device = resolve_device(device)
    sample_batches = list(batches)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
               or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "training": [], "sampling": []}
    print(f"device: {results['device']} ({device}), torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)
    rows = [["training batch", "reference tok/s", "project tok/s", "speed-up", "project ms/step", "peak MB"]]
    for batch in train_batches:
        reference = training_case(device, batch, True, repeats)
        project = training_case(device, batch, False, repeats)
        results["training"].append({"batch": batch, "reference": reference, "project": project})
        rows.append([str(batch), f"{reference['tokens_per_s']:,.0f}", f"{project['tokens_per_s']:,.0f}",
                     f"{project['tokens_per_s'] / reference['tokens_per_s']:.2f}x", f"{project['ms_per_step']:.1f}",
                     f"{project['peak_memory_mb']:.0f}"])
        print(f"training batch {batch}: reference {reference['tokens_per_s']:,.0f} tok/s, "
              f"project {project['tokens_per_s']:,.0f} tok/s", flush=True)
    print("\n" + table(rows) + "\n")
    if device.type == "cpu":  # CUDA training always runs under bf16 autocast; on CPU it is train.precision
        native = native_bf16(device)   # emulated bf16 takes ~40 s a step: timed once, not `repeats` times
        results["precision"] = [precision_case(device, "fp32", repeats, precision_batch),
                                precision_case(device, "bf16", repeats if native else 1, precision_batch)]
        fp32, bf16 = results["precision"]
        print(f"best-preset training step, batch {precision_batch}: fp32 {fp32['ms_per_step']:.0f} ms, bf16 autocast "
              f"{bf16['ms_per_step']:.0f} ms ({fp32['ms_per_step'] / bf16['ms_per_step']:.2f}x; this CPU "
              f"{'has' if native else 'has no'} native bf16, so train.precision auto picks "
              f"{resolved_precision(device, 'auto')})\n", flush=True)
    rows = [["sampling batch", "no cache img/s", "KV cache img/s", "speed-up", "KV ms/image", "KV ms/token", "peak MB"]]
    for batch in sample_batches:
        cached = sampling_case(device, batch, True, repeats)
        skip = device.type == "cpu" and batch > SLOW_UNCACHED_ROWS
        uncached = None if skip else sampling_case(device, batch, False, max(1, repeats // 2))
        results["sampling"].append({"batch": batch, "kv_cache": cached, "no_cache": uncached})
        rows.append([str(batch), f"{uncached['images_per_s']:,.1f}" if uncached else "skipped (minutes on CPU)",
                     f"{cached['images_per_s']:,.1f}",
                     f"{uncached['ms_per_batch'] / cached['ms_per_batch']:.2f}x" if uncached else "-",
                     f"{cached['ms_per_image']:.2f}", f"{cached['ms_per_token']:.2f}", f"{cached['peak_memory_mb']:.0f}"])
        print(f"sampling batch {batch}: KV cache {cached['images_per_s']:,.1f} img/s"
              + (f", no cache {uncached['images_per_s']:,.1f} img/s" if uncached else ""), flush=True)
    print("\n" + table(rows) + "\n")
    if device.type == "cuda":
        results["decode_step"] = decode_step_cases(device, checkpoint, sorted({2, *sample_batches}))
        rows = [["checkpoint decode step, batch", "eager us", "CUDA graph us", "speed-up"]]
        rows += [[str(case["batch"]), f"{case['eager_us']:.0f}", f"{case['graph_us']:.0f}",
                  f"{case['eager_us'] / case['graph_us']:.1f}x"] for case in results["decode_step"]]
        print(table(rows) + "\n")
    results["pipeline"] = pipeline_cases(device, checkpoint, repeats)
    gpu = device.type == "cuda"
    rows = [["one request (batch 1)", "settings", "ms"] + (["eager ms"] if gpu else [])]
    rows += [[case["request"], case["settings"], f"{case['ms']:.1f}"] + ([f"{case['eager_ms']:.1f}"] if gpu else [])
             for case in results["pipeline"]]
    print(table(rows))
    if json_path:
        write_json(json_path, results)
    return results


__all__ = ["run_bench"]
