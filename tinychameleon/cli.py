"""The `tinychameleon` command: subcommands on top of the Python API. `main(argv)` is testable.

Errors caused by the user (bad prompt, missing checkpoint, unreadable image, no data) print
one line on stderr and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import TinyChameleonError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    """How to sample; each defaults to the checkpoint's sampling.json, else SamplingConfig."""
    parser.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-k", type=int, help="keep only the k most likely tokens (0 = all)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--candidates", type=int, dest="image_candidates", metavar="N",
                        help="text -> image: draw this many images per prompt, keep the one the model captions best")
    parser.add_argument("--rerank", action=argparse.BooleanOptionalAction, dest="rerank_captions",
                        help="image -> text: choose the digit word by Bayes re-ranking in both orders")
    parser.add_argument("--views", type=int, dest="caption_views", metavar="N",
                        help="with --rerank: score the digit on the image and N-1 recolorings of it (1 = image only)")


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="run directory to load (default: the shipped checkpoint)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default 0)")
    add_sampler_flags(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")


SAMPLER_SETTINGS = ("temperature", "top_k", "guidance", "image_candidates", "rerank_captions", "caption_views")


def sampling_overrides(args) -> dict:
    return {name: getattr(args, name, None) for name in SAMPLER_SETTINGS}


def load_pipeline(args):
    from .pipeline import Pipeline

    return Pipeline.from_pretrained(args.checkpoint, device=args.device)


def write_manifest(out_dir: Path, rows: list[dict]) -> None:
    from .io_utils import atomic_path

    with atomic_path(out_dir / "manifest.jsonl") as temp:
        temp.write_text("".join(json.dumps(row) + "\n" for row in rows))


def command_train(args) -> int:
    from .config import make_config
    from .training.run import train

    out = Path(args.out)
    if not args.resume and (out / "config.json").exists():
        raise TinyChameleonError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    overrides = {"train": {}, "vq_train": {}}
    for key, section, field in (("epochs", "train", "epochs"), ("batch_size", "train", "batch_size"),
                                ("lr", "train", "lr"), ("vq_epochs", "vq_train", "epochs"),
                                ("holdout_pairs", "train", "holdout_pairs"), ("train_seed", "train", "seed"),
                                ("max_train_examples", "train", "max_train_examples"),
                                ("warmup_steps", "train", "warmup_steps"), ("init_from", "train", "init_from"),
                                ("colorings", "train", "colorings")):
        if getattr(args, key) is not None:
            overrides[section][field] = getattr(args, key)
    if args.colorings is not None and args.colorings < 1:
        raise TinyChameleonError("--colorings must be at least 1")
    try:
        config = make_config(args.preset, **overrides)
        if args.scale_lr and args.batch_size and args.lr is None:
            # Large-batch recipe: square-root learning-rate scaling from the preset's batch size.
            base = make_config(args.preset).train
            config.train.lr = base.lr * (args.batch_size / base.batch_size) ** 0.5
    except ValueError as error:
        raise TinyChameleonError(str(error)) from None
    train(config, out, resume=args.resume, vqvae_from=args.vqvae_from, device_name=args.device,
          cache_dir=args.cache_dir, progress=not args.no_progress, compile_model=args.compile)
    return 0


def command_generate(args) -> int:
    from .imaging import save_png

    if args.prompts_file:
        try:
            prompts = [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise TinyChameleonError(f"cannot read prompts file {args.prompts_file}: {error}") from None
        count = args.samples_per_prompt
    else:
        prompts, count = args.prompt, args.n
    if not prompts:
        raise TinyChameleonError("give a prompt, e.g. tinychameleon generate \"dark green eight on bright cyan\"")
    if count < 1:
        raise TinyChameleonError("the number of samples must be at least 1")
    pipeline = load_pipeline(args)
    images = pipeline.generate_images(prompts, n=count, seed=args.seed, **sampling_overrides(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, image in enumerate(images):
        prompt = prompts[index // count]
        name = f"{index // count:04d}_{index % count:03d}.png"
        save_png(image, out / name)
        rows.append({"prompt": " ".join(prompt.lower().split()), "file": name, "sample": index % count})
    write_manifest(out, rows)
    print(f"wrote {len(rows)} images and manifest.jsonl to {out}")
    return 0


def collect_images(paths: list[str]) -> list[Path]:
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            files.append(path)
        else:
            raise TinyChameleonError(f"{name} does not exist")
    if not files:
        raise TinyChameleonError(f"no images found in {', '.join(paths)}")
    return files


def command_caption(args) -> int:
    import numpy as np

    from .imaging import read_image

    files = collect_images(args.images)
    images = np.stack([read_image(path) for path in files])  # fails on the first unreadable file, before work
    captions = load_pipeline(args).caption(images, seed=args.seed, **sampling_overrides(args))
    for path, caption in zip(files, captions):
        print(json.dumps({"image": str(path), "caption": caption}) if args.json else f"{path}: {caption}")
    return 0


def command_sample(args) -> int:
    from .imaging import save_png

    if args.n < 1:
        raise TinyChameleonError("-n must be at least 1")
    images, captions = load_pipeline(args).sample(args.n, seed=args.seed, first=args.first, ancestral=args.ancestral,
                                                  **sampling_overrides(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (image, caption) in enumerate(zip(images, captions)):
        name = f"{index:04d}.png"
        save_png(image, out / name)
        rows.append({"caption": caption, "file": name})
    write_manifest(out, rows)
    print(f"wrote {len(rows)} samples and manifest.jsonl to {out}")
    return 0


def command_report(args) -> int:
    from .evaluation.figures import write_figures

    written = write_figures(load_pipeline(args), args.out, seed=args.seed, cache_dir=args.cache_dir)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def command_evaluate(args) -> int:
    from .evaluation.evaluate import run_evaluation

    run_evaluation(args)
    return 0


def command_serve(args) -> int:
    from .web.server import serve

    serve(args)
    return 0


def command_bench(args) -> int:
    from .bench import run_bench

    run_bench(args)
    return 0


def command_data(args) -> int:
    from .data.mnist import default_cache_dir, load_mnist

    data = load_mnist(args.cache_dir)
    print(f"MNIST ready in {args.cache_dir or default_cache_dir()}: {len(data['train_labels'])} train, "
          f"{len(data['test_labels'])} test images")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinychameleon", description="One transformer for text and images "
                                     "of colored MNIST digits.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="fetch and verify MNIST into the cache")
    data.add_argument("--cache-dir", help="data cache (default $TINYCHAMELEON_CACHE or ~/.cache/tinychameleon)")
    data.set_defaults(handler=command_data)

    train = commands.add_parser("train", help="train the VQ-VAE and the transformer into a run directory")
    train.add_argument("--preset", default="quick", help="seed, quick, best or tiny (default quick)")
    train.add_argument("--out", required=True, help="run directory for checkpoints and logs")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--vqvae-from", help="reuse the image tokenizer of another run directory")
    train.add_argument("--epochs", type=int, help="transformer epochs (overrides the preset)")
    train.add_argument("--batch-size", type=int, help="transformer global batch size (overrides the preset)")
    train.add_argument("--lr", type=float, help="transformer peak learning rate (overrides the preset)")
    train.add_argument("--scale-lr", action="store_true",
                       help="with --batch-size: scale the preset's learning rate by sqrt(new batch / preset batch)")
    train.add_argument("--warmup-steps", type=int, help="transformer warmup steps (overrides the preset)")
    train.add_argument("--init-from", help="fine-tune: start the transformer from this run directory's weights "
                                           "(its tokenizer and model shape are used)")
    train.add_argument("--colorings", type=int,
                       help="color-pair draws of the training images, cycled over epochs (default 1: fixed colors)")
    train.add_argument("--vq-epochs", type=int, help="VQ-VAE epochs (overrides the preset)")
    train.add_argument("--holdout-pairs", type=int, help="hold this many color pairs out of training")
    train.add_argument("--train-seed", type=int, help="seed of initialisation and batch order")
    train.add_argument("--max-train-examples", type=int, help="use only the first N training images (quick trials)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    train.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    train.add_argument("--cache-dir", help="data cache directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    train.set_defaults(handler=command_train)

    generate = commands.add_parser("generate", help="text -> image: draw images for captions")
    generate.add_argument("prompt", nargs="*", help='captions like "dark green eight on bright cyan"')
    generate.add_argument("--prompts-file", help="a file with one caption per line")
    generate.add_argument("-n", type=int, default=1, help="images per prompt (default 1)")
    generate.add_argument("--samples-per-prompt", type=int, default=1, help="images per prompt with --prompts-file")
    generate.add_argument("--out", required=True, help="folder for the PNGs and manifest.jsonl")
    add_sampling_flags(generate)
    generate.set_defaults(handler=command_generate)

    caption = commands.add_parser("caption", help="image -> text: caption images (any size, RGB/RGBA/gray)")
    caption.add_argument("images", nargs="+", help="image files or folders of images")
    caption.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    add_sampling_flags(caption)
    caption.set_defaults(handler=command_caption)

    sample = commands.add_parser("sample", help="unconditional: sample image + caption pairs")
    sample.add_argument("-n", type=int, default=9, help="number of pairs (default 9)")
    sample.add_argument("--out", required=True, help="folder for the PNGs and manifest.jsonl")
    sample.add_argument("--first", choices=["text", "image", "model"], default="text",
                        help="modality drawn freely first; the other follows as a conditional request (default text)")
    sample.add_argument("--ancestral", action="store_true",
                        help="one plain pass through the model: no guidance, candidates or re-ranking")
    add_sampling_flags(sample)
    sample.set_defaults(handler=command_sample)

    report = commands.add_parser("report", help="the training curve and three captioned sample grids")
    report.add_argument("--out", required=True, help="folder for the PNG figures")
    report.add_argument("--cache-dir", help="data cache directory")
    add_sampling_flags(report)
    report.set_defaults(handler=command_report)

    from .evaluation.evaluate import add_arguments as add_evaluate_arguments

    evaluate = commands.add_parser("evaluate", help="measure a checkpoint: NLL, judged accuracy, diversity, FD")
    add_evaluate_arguments(evaluate)
    add_sampler_flags(evaluate)
    evaluate.set_defaults(handler=command_evaluate)

    serve = commands.add_parser("serve", help="serve the web page and JSON API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--checkpoint", help="run directory to load (default: the shipped checkpoint)")
    serve.add_argument("--max-samples", type=int, default=64, help="most images one request may ask for")
    serve.add_argument("--queue-size", type=int, default=32, help="requests waiting before 503s are returned")
    serve.add_argument("--timeout", type=float, default=10.0, help="seconds before a request is cancelled")
    serve.set_defaults(handler=command_serve)

    bench = commands.add_parser("bench", help="time training and sampling against a plain reference")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    bench.add_argument("--batches", default="1,64,1024", help="comma-separated sampling batch sizes")
    bench.add_argument("--train-batches", default="32,256", help="comma-separated training batch sizes")
    bench.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement")
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.add_argument("--checkpoint", help="run directory for the one-request timings (default: the shipped one)")
    bench.set_defaults(handler=command_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            # Warnings meant for the user (e.g. an off-palette color) print as one plain line.
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
            return args.handler(args) or 0
    except TinyChameleonError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished epochs are saved (use --resume to continue training)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
