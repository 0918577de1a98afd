"""What every `tinychameleon` command shares: the sampler flags and their table, flag types, output folders
(checked and locked before any work), manifests, loading a checkpoint."""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from ..config import DOCUMENT_SETTINGS, SamplingConfig
from ..errors import ConfigError, OutputError, TinyChameleonError

MAX_SEED = 2**63 - 1

# Sampler flags: (flag, SamplingConfig field, help). The field name is the one used by the Python API,
# the web API and sampling.json; ranges come from SamplingConfig.RANGES.
SAMPLER_FLAGS = [
    ("--temperature", "temperature", "sampling temperature (0 = greedy)"),
    ("--fine-temperature", "fine_temperature", "next-scale model: the finest scale's temperature as a multiple of "
                                               "--temperature, scales between interpolated (1 = flat)"),
    ("--guided-scales", "guided_scales", "next-scale model: guidance on the N coarsest scales only, the finer "
                                         "ones from the caption alone (0 = every scale)"),
    ("--top-k", "top_k", "keep only the k most likely tokens (0 = all)"),
    ("--top-p", "top_p", "nucleus sampling: keep the tokens that make up this much probability (1 = off)"),
    ("--guidance", "guidance", "classifier-free guidance scale (1 = off)"),
    ("--greedy-above", "greedy_above", "take a token the model alone gives more than this probability as it stands, "
                                       "before guidance and temperature: copies stay exact (1 = off)"),
    ("--cd-k", "cd_k", "contrastive decoding CD-K instead of guidance (0 = off)"),
    ("--cd-alpha", "cd_alpha", "with --cd-k: candidates within this factor of the k-th likeliest token"),
    ("--candidates", "image_candidates", "text -> image: draw this many images per prompt, keep the one the "
                                         "model captions best"),
    ("--views", "caption_views", "with --rerank: score the digit (the model and CLIP) on the image and N-1 "
                                 "recolorings of it (1 = image only)"),
    ("--hypotheses", "caption_hypotheses", "with --rerank: digits (the image-first reading's top ones) that get the "
                                           "full two-way score (10 = all)"),
    ("--caption-clip", "caption_clip_weight", "with --rerank: add this times the retriever's (CLIP's) image-caption "
                                              "cosine to each digit's score (0 = off)"),
]


# Sampler on/off switches: (flag, SamplingConfig field, help); each also has its --no- form.
SAMPLER_SWITCHES = [
    ("--rerank", "rerank_captions", "image -> text: choose the digit word by Bayes re-ranking in both orders"),
    ("--mixed-pool", "mixed_pool", "with --candidates N: draw half of them by CD-K, half with guidance"),
    ("--clip-rerank", "clip_rerank", "with --candidates N: keep the image the retriever (CLIP) finds closest to "
                                     "the prompt"),
]


def family_share(text: str) -> tuple[str, float]:
    """An argparse type: "NAME=SHARE" (a family of documents/families.py and a finite number) -> (NAME, SHARE)."""
    name, equals, share = text.rpartition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not NAME=SHARE (for example counting=2)")
    return " ".join(name.split()), number(float)(share)


def setting(text: str) -> tuple[str, str, str]:
    """An argparse type: "SECTION.KEY=VALUE" (a config field without a flag of its own) -> (SECTION, KEY, VALUE);
    the value is read by the field's type in cli.train.field_value."""
    name, equals, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not equals or not dot or not section or not key:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not SECTION.KEY=VALUE (for example "
                                         f"train.decision_loss_weight=10)")
    return section, key, value.strip()


def number(kind):
    """An argparse type: a finite int or float, so 'nan', 'inf' and '1e309' are refused with exit 2."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a{'n integer' if kind is int else ' number'}")
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a finite number")
        return value
    parse.__name__ = kind.__name__
    return parse


def add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    """How to sample; each defaults to the checkpoint's sampling.json, else SamplingConfig."""
    for flag, field, text in SAMPLER_FLAGS:
        kind = int if isinstance(getattr(SamplingConfig(), field), int) else float
        low, high = SamplingConfig.RANGES[field]
        parser.add_argument(flag, type=number(kind), dest=field, metavar="N" if kind is int else "X",
                            help=f"{text}; {low}..{high}")
    for flag, field, text in SAMPLER_SWITCHES:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, dest=field, help=text)


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="run directory, or a shipped model by name: raster (the default) or "
                                             "var (next-scale)")
    parser.add_argument("--seed", type=number(int), default=0, help="random seed of the sampler (default 0)")
    add_sampler_flags(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")


def sampling_overrides(args) -> dict:
    """The sampler flags that were given, validated before any work (ConfigError names the bad one)."""
    overrides = {field: getattr(args, field, None) for _, field, _ in SAMPLER_FLAGS}
    for _, switch, _ in SAMPLER_SWITCHES:
        overrides[switch] = getattr(args, switch, None)
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        replace(SamplingConfig(), **overrides).validate()
    except ConfigError as error:  # name the flag the user typed, not the field behind it
        message = str(error).removeprefix("sampling.")
        for flag, field, _ in SAMPLER_FLAGS:
            if message.startswith(field + " "):
                message = flag + message[len(field):]
        raise ConfigError(message) from None
    seed = getattr(args, "seed", 0)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be between 0 and {MAX_SEED}, got {str(seed)[:40]}")
    return overrides


def retrieval_request(args, sampling: dict, honoured: tuple[str, ...] = DOCUMENT_SETTINGS) -> dict | None:
    """{"retrieve": K, "memory": DIR} for --retrieve K [--memory DIR], or None; flags it would not honour are refused.
    A retrieval-augmented request decodes a document, so it reads what sampling.documents may set (`honoured`:
    generate also keeps the best of n, as sampling.retrieved may set)."""
    if args.retrieve is None:
        if args.memory is not None:
            raise TinyChameleonError("--memory DIR needs --retrieve K (how many of its documents to read)")
        return None
    if args.retrieve < 1:   # the upper bound is the checkpoint's (Pipeline checks it: Vocab.max_retrieve)
        raise TinyChameleonError(f"--retrieve must be at least 1, got {args.retrieve}")
    flags = {field: flag for flag, field, _ in SAMPLER_FLAGS + SAMPLER_SWITCHES}
    ignored = [flags[field] for field in sampling if field not in honoured]
    if ignored:
        allowed = [flags[field] for field in honoured]
        raise TinyChameleonError(f"with --retrieve only {', '.join(allowed[:-1])} and {allowed[-1]} apply here; "
                                 f"drop {', '.join(ignored)}")
    return {"retrieve": args.retrieve, "memory": args.memory}


def add_retrieval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retrieve", type=number(int), metavar="K",
                        help="read the K nearest documents of the memory bank first (retrieval-augmented; needs a "
                             "checkpoint trained with train.retrieve)")
    parser.add_argument("--memory", metavar="DIR", help="with --retrieve: a folder of images + manifest.jsonl rows "
                                                        "{\"file\", \"caption\"} instead of the training digits")


_held_locks = []  # descriptors of --out folders this command has locked (flock on the folder itself)


def prepare_output(out: str | Path, inputs=(), lock: bool = True) -> Path:
    """Check an output folder before any work: it can be created and written to, it is none of the command's
    `inputs` and holds none of them (its PNGs and manifest would overwrite them), and no other command is
    writing to it (an exclusive flock on the folder itself, so nothing is left in it; released when main returns).
    `train` does not lock: under torchrun its ranks write one run directory together."""
    import fcntl

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    target = out.resolve()
    for path in inputs:
        path = Path(path).resolve()
        if path == target or target in path.parents:
            raise OutputError(f"--out {out} holds the input {path.name}: its files would be overwritten; "
                              "choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
        if not lock:
            return out
        descriptor = os.open(out, os.O_RDONLY)
    except OSError as error:
        raise OutputError(f"cannot write to {out}: {error.strerror or error}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise OutputError(f"another tinychameleon command is writing to {out}; wait for it or choose "
                          "another --out") from None
    _held_locks.append(descriptor)
    return out


def load_pipeline(args):
    from ..pipeline import Pipeline

    return Pipeline.from_pretrained(args.checkpoint, device=args.device)


def write_outputs(out: Path, images, rows: list[dict]) -> None:
    """PNGs then the manifest, each written atomically; a failing disk gives one clear error."""
    from ..imaging import save_png

    try:
        for image, row in zip(images, rows):
            save_png(image, out / row["file"])
        write_manifest(out, rows)
    except OSError as error:
        raise OutputError(f"writing to {out} failed: {error.strerror or error}") from None


def write_manifest(out_dir: Path, rows: list[dict]) -> None:
    from ..io_utils import atomic_path

    with atomic_path(out_dir / "manifest.jsonl") as temp:
        temp.write_text("".join(json.dumps(row) + "\n" for row in rows))
