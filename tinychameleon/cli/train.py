"""The training commands: `train` (a preset's stages into a run directory) and `train-retriever` (the CLIP)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import shlex
import sys
from pathlib import Path

from ..config import ADDABLE_PARTS, IMAGE_TOKENIZER_KINDS, RunConfig
from ..errors import TinyChameleonError
from ..io_utils import write_json
from .common import family_share, number, prepare_output, setting


def train_overrides(args) -> dict:
    """The config overrides the train flags name, per section."""
    overrides = {"train": {}, "vq_train": {}, "vq": {}, "model": {}}
    for key, section, field in (("tokenizer", "vq", "kind"), ("codebook_size", "vq", "codebook_size"),
                                ("epochs", "train", "epochs"), ("batch_size", "train", "batch_size"),
                                ("lr", "train", "lr"), ("vq_epochs", "vq_train", "epochs"),
                                ("holdout_pairs", "train", "holdout_pairs"), ("train_seed", "train", "seed"),
                                ("max_train_examples", "train", "max_train_examples"),
                                ("warmup_steps", "train", "warmup_steps"), ("init_from", "train", "init_from"),
                                ("colorings", "train", "colorings"), ("infill_rate", "train", "infill_rate"),
                                ("optimizer", "train", "optimizer"),
                                ("caption_loss_weight", "train", "caption_loss_weight"),
                                ("shifted_reading", "train", "shifted_reading"), ("documents", "train", "documents"),
                                ("retrieve", "train", "retrieve"), ("memory_strokes", "train", "memory_strokes"),
                                ("word_families", "train", "word_families"),
                                ("image_slots", "model", "image_slots"), ("copy_head", "model", "copy_head"),
                                ("digit_head", "model", "digit_head"), ("digit_layer", "model", "digit_layer")):
        if getattr(args, key) is not None:
            overrides[section][field] = getattr(args, key)
    if args.colorings is not None and args.colorings < 1:
        raise TinyChameleonError("--colorings must be at least 1")
    if args.family_shares is not None:
        overrides["train"]["family_shares"] = dict(args.family_shares)
    for section, key, value in args.set or ():
        overrides[section][key] = field_value(section, key, value)
    # What a source run fixes would be silently replaced by the source's (checkpoint.inherited_config): refused.
    fixed = [f"vq.{key}" for key in overrides["vq"]] if args.init_from or args.vqvae_from else []
    fixed += [f"model.{key}" for key in overrides["model"] if args.init_from and key not in ADDABLE_PARTS]
    if fixed:
        raise TinyChameleonError(f"{', '.join(fixed)} cannot be set here: a fine-tune (--init-from) keeps its source's "
                                 f"model shape and tokenizer, and --vqvae-from that run's tokenizer; only "
                                 f"{', '.join(ADDABLE_PARTS)} may be added")
    return overrides


def field_value(section: str, key: str, text: str):
    """--set SECTION.KEY=VALUE -> the value, read as the type of the field's default (bool, int, float or str); an
    unknown name is refused with the closest ones."""
    defaults = RunConfig()
    fields = {f"{part}.{item.name}": getattr(getattr(defaults, part), item.name)
              for part in ("model", "train", "vq", "vq_train") for item in dataclasses.fields(getattr(defaults, part))}
    name = f"{section}.{key}"
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.6)
        raise TinyChameleonError(f"--set: unknown setting {name!r}" +
                                 (f" (did you mean {', '.join(close)}?)" if close else
                                  "; settings are model.*, train.*, vq.* and vq_train.* (config.py)"))
    default = fields[name]
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise TinyChameleonError(f"--set {name} takes true or false, got {text[:40]!r}")
        return text.lower() == "true"
    if isinstance(default, (int, float)):
        try:
            return number(type(default))(text)
        except argparse.ArgumentTypeError as error:
            raise TinyChameleonError(f"--set {name}: {error}") from None
    if isinstance(default, str):
        return text
    raise TinyChameleonError(f"--set {name}: a {type(default).__name__} setting has its own flag, not --set")


def stage_config(preset: str, args, init_from: str = "", inherit: bool = True, vqvae_from: str | None = None):
    """One training stage's config: the preset, the flags over it, `init_from` (a run it continues) when given,
    the tokenizer of `vqvae_from`. inherit=False checks the flags only: the run a stage continues may not exist yet
    (the stage before trains it)."""
    from ..checkpoint import inherited_config
    from ..config import make_config

    overrides = train_overrides(args)
    if init_from:
        overrides["train"]["init_from"] = init_from
    try:
        config = make_config(preset, validate=False, **overrides)
        if inherit:
            config = inherited_config(config, vqvae_from)
        if args.scale_lr and args.batch_size and args.lr is None:
            # Large-batch recipe: square-root learning-rate scaling from the preset's batch size.
            base = make_config(preset, validate=False, train={"init_from": config.train.init_from}).train
            config.train.lr = base.lr * (args.batch_size / base.batch_size) ** 0.5
        if config.train.family_shares:   # unknown names, or families this run never draws: refused before any work
            from ..documents.families import family_shares
            family_shares(config.train.family_shares, config.train.word_families, bool(config.train.retrieve))
    except ValueError as error:
        raise TinyChameleonError(str(error)) from None
    return config


def command_train(args) -> int:
    """Train a preset into --out. A preset that continues another's run (config.STAGES: `best` continues `base`)
    trains that run first, in --out/<its preset>, unless --init-from names the run to continue; --resume resumes
    whichever stage was cut short, and the flags apply to every stage."""
    from ..config import STAGES
    from ..device import close_distributed, exit_without_teardown
    from ..training.run import train

    out = Path(args.out)
    first = STAGES.get(args.preset) if args.init_from is None else None     # the preset of the run this continues
    stages = ([(first, out / first)] if first else []) + [(args.preset, out)]
    for _, run_dir in stages:
        if not args.resume and (run_dir / "config.json").exists():
            raise TinyChameleonError(f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                                     "--out")
    # Every stage's flags are checked before any work; the last stage's source is read once the first has trained.
    configs = [stage_config(first, args, vqvae_from=args.vqvae_from)] if first else []
    configs.append(stage_config(args.preset, args, str(out / first) if first else "", inherit=not first,
                                vqvae_from=None if first else args.vqvae_from))
    prepare_output(out, lock=False)
    command = " ".join(["tinychameleon"] + [shlex.quote(word) for word in sys.argv[1:]])
    left_group = False
    try:
        for index, ((preset, run_dir), config) in enumerate(zip(stages, configs)):
            if len(stages) > 1:
                print(f"stage {index + 1} of {len(stages)}: --preset {preset} in {run_dir}", flush=True)
            if index:   # continues the run the stage before it wrote
                config = stage_config(preset, args, str(stages[index - 1][1]))
            train(config, run_dir, resume=args.resume, vqvae_from=None if index else args.vqvae_from,
                  device_name=args.device, cache_dir=args.cache_dir, progress=not args.no_progress,
                  compile_model=args.compile, command=command)
    finally:
        left_group = close_distributed()   # under torchrun; a plain run never joined a group
    if len(stages) > 1:
        record_stages(out, stages)
    if left_group:
        exit_without_teardown(0)
    return 0


def record_stages(out: Path, stages: list[tuple[str, Path]]) -> None:
    """The last stage's run_info.json also lists every stage's wall time and their total: what the one command
    cost (each stage's own run_info keeps its `wall_time_s`)."""
    infos = [json.loads((run_dir / "run_info.json").read_text()) for _, run_dir in stages]
    times = [{"preset": preset, "run": str(run_dir), "wall_time_s": info["wall_time_s"]}
             for (preset, run_dir), info in zip(stages, infos)]
    write_json(out / "run_info.json", {**infos[-1], "stages": times,
                                       "total_wall_time_s": round(sum(t["wall_time_s"] for t in times), 1)})


def add_train_command(commands) -> None:
    """The `train` command's flags."""
    train = commands.add_parser("train", help="train the VQ-VAE and the transformer into a run directory")
    train.add_argument("--preset", default="quick",
                       help="seed, quick, base, best (the shipped recipe: a base run in OUT/base, then two more epochs "
                            "on it with counting at 6 and plan tokens, the prompt images' too; with --init-from RUN "
                            "only that stage, on RUN), "
                            "memory (retrieval-augmented; two stages the same way, the first memory-base), var (next-scale), "
                            "pixels or tiny (default quick); the other flags apply to every stage")
    train.add_argument("--out", required=True, help="run directory for checkpoints and logs")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--vqvae-from", help="reuse the image tokenizer of another run directory")
    train.add_argument("--epochs", type=number(int), help="transformer epochs (overrides the preset)")
    train.add_argument("--batch-size", type=number(int), help="transformer global batch size (overrides the preset)")
    train.add_argument("--lr", type=number(float), help="transformer peak learning rate (overrides the preset)")
    train.add_argument("--scale-lr", action="store_true",
                       help="with --batch-size: scale the preset's learning rate by sqrt(new batch / preset batch)")
    train.add_argument("--warmup-steps", type=number(int), help="transformer warmup steps (overrides the preset)")
    train.add_argument("--init-from", help="fine-tune: start the transformer from this run directory's weights "
                                           "(its tokenizer and model shape are used); with --preset best: the run "
                                           "its last stage continues (no base run is trained)")
    train.add_argument("--colorings", type=number(int),
                       help="color-pair draws of the training images, cycled over epochs (default 1: fixed colors)")
    train.add_argument("--infill-rate", type=number(float),
                       help="CM3 objective: share of sequences with one span moved to the end (0..1; 0 = off)")
    train.add_argument("--caption-loss-weight", type=number(float),
                       help="loss weight of caption words that follow the image (1 = plain next-token loss)")
    train.add_argument("--shifted-reading", type=number(float),
                       help="share of image-first rows that read their digit moved by 1-2 pixels (0..1; 0 = off)")
    train.add_argument("--documents", type=number(int),
                       help="task-family documents per epoch beside the pairs (0 = pairs only; overrides the preset)")
    train.add_argument("--retrieve", type=number(int),
                       help="retrieval-augmented documents: draw and read after this many retrieved neighbours "
                            "(1..4; needs --documents; 0 = off)")
    train.add_argument("--memory-strokes", action="store_const", const=True,
                       help="with --retrieve: draw each retrieval document, neighbours and query alike, in one random "
                            "stroke style (spread sideways or up and down, or their own), so the model draws like "
                            "what it retrieved")
    train.add_argument("--word-families", action="store_const", const=True,
                       help="with --documents: also train two stepping stones in words alone (\"three plus four is\" -> "
                            "\"seven .\"; \"count from two to four :\" -> \"two three four .\"), so sums and the order of "
                            "the digits are learnt apart from reading and drawing them (BENCHMARKS.md)")
    train.add_argument("--family-shares", nargs="+", type=family_share, metavar="NAME=SHARE",
                       help="with --documents: these families' shares of the documents, over the registry's "
                            "(docs/documents.md), e.g. counting=2 \"what comes next=0.5\"")
    train.add_argument("--image-slots", action="store_const", const=True,
                       help="add a learned embedding of each image token's place in its image (0..50), so an edit "
                            "finds slot s of the prompt's image by content, not by an offset (measured with best: "
                            "edits copied worse; BENCHMARKS.md)")
    train.add_argument("--copy-head", action="store_const", const=True,
                       help="add a pointer beside the output head: the next token may be copied from an earlier "
                            "position (an edit's strokes), its gate learnt (part of --preset best since release 7: validation "
                            "edits 69.5-70.5 -> 91.5-93.5 %%; BENCHMARKS.md)")
    train.add_argument("--digit-head", action="store_const", const=True,
                       help="with --documents: train a head that reads, at each image's end, the digit the image shows "
                            "(an auxiliary loss), so the choice of the next image or of the stop can see what was just "
                            "drawn; unused when sampling (measured: counting alone 12.5 -> 28.5 %%, but in the whole "
                            "mixture no gain and \"what comes next\" -6.5 points; after block 3, with the answers' "
                            "words at 3x, in --preset best's second stage since release 12; BENCHMARKS.md)")
    train.add_argument("--digit-layer", type=number(int), metavar="K",
                       help="with --digit-head: the head reads the stream after block K (1..n_layer-1) instead of the "
                            "final hidden state, so the digit is known early enough for later blocks to combine it")
    train.add_argument("--set", nargs="+", type=setting, metavar="SECTION.KEY=VALUE",
                       help="any other config field (config.py), e.g. train.decision_loss_weight=10 "
                            "train.digit_plan=true; flags and --set apply over the preset")
    train.add_argument("--optimizer", choices=("adamw", "muon"),
                       help="transformer optimizer: adamw, or muon for the blocks' matrices (overrides the preset)")
    train.add_argument("--vq-epochs", type=number(int), help="image tokenizer epochs (overrides the preset)")
    train.add_argument("--tokenizer", choices=IMAGE_TOKENIZER_KINDS,
                       help="image tokenizer: vq (VQ codes of colored 4x4 patches), rvq (2 residual VQ codes per "
                            "patch), fsq (finite scalar codes), pixels (a token per pixel), palette (two color tokens "
                            "and VQ codes of the digit's shape), patches (two color tokens and the most frequent 4x4 "
                            "shape patches) or scales (two color tokens and the shape coded at six scales: a "
                            "next-scale model); overrides the preset")
    train.add_argument("--codebook-size", type=number(int), help="image codes (VQ codes or patches; overrides the preset)")
    train.add_argument("--holdout-pairs", type=number(int), help="hold this many color pairs out of training")
    train.add_argument("--train-seed", type=number(int), help="seed of initialisation and batch order")
    train.add_argument("--max-train-examples", type=number(int), help="use only the first N training images (quick trials)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    train.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    train.add_argument("--cache-dir", help="data cache directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    train.set_defaults(handler=command_train)


def command_train_retriever(args) -> int:
    from ..training.retriever_trainer import train_retriever

    if not 1 <= args.epochs <= 1000 or not 2 <= args.batch_size <= 65536 or not 0 < args.lr <= 1 or \
            not 0 <= args.shifted <= 1 or (args.max_train_examples is not None and args.max_train_examples < 2):
        raise TinyChameleonError("--epochs must be 1..1000, --batch-size 2..65536, --lr in (0, 1], --shifted in [0, 1] "
                                 "and --max-train-examples at least 2")
    out = prepare_output(args.out)
    train_retriever(out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.train_seed,
                    shifted_share=args.shifted, cache_dir=args.cache_dir, resume=args.resume,
                    max_examples=args.max_train_examples)
    print(f"retriever written to {out} (load it with --retriever {out})")
    return 0


def add_train_retriever_command(commands) -> None:
    """The `train-retriever` command's flags."""
    retriever = commands.add_parser("train-retriever", help="train the retriever (a small CLIP) on the training split")
    retriever.add_argument("--out", required=True, help="folder for clip.json, clip.safetensors and metrics")
    retriever.add_argument("--epochs", type=number(int), default=30, help="epochs, each under a fresh color draw (default 30)")
    retriever.add_argument("--batch-size", type=number(int), default=512, help="texts and images per step (default 512)")
    retriever.add_argument("--lr", type=number(float), default=2e-3, help="peak learning rate (default 0.002)")
    retriever.add_argument("--train-seed", type=number(int), default=0, help="seed of initialisation and order")
    retriever.add_argument("--shifted", type=number(float), default=0.9,
                           help="share of training images moved by up to 2 pixels each way (default 0.9)")
    retriever.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    retriever.add_argument("--max-train-examples", type=number(int), help="use only the first N training digits "
                                                                          "(quick trials)")
    retriever.add_argument("--cache-dir", help="data cache directory")
    retriever.set_defaults(handler=command_train_retriever)
