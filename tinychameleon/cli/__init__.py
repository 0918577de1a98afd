"""The `tinychameleon` command: subcommands on top of the Python API. `main(argv)` is testable.

Each subcommand is a `command_NAME(args)` handler followed by `add_NAME_command(commands)`, its flags;
`build_parser` adds them in the order `--help` lists them. The training commands live in `cli/train.py`, what
every command shares (sampler flags, output folders, manifests) in `cli/common.py`.

Errors caused by the user (bad prompt, missing checkpoint, unreadable image, no data, a flag
out of range, an output folder that cannot be written) print one line on stderr and exit
with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from ..config import RETRIEVED_SETTINGS
from ..errors import OutputError, TinyChameleonError
from ..tasks import TASKS
from .common import (_held_locks, add_retrieval_flags, add_sampler_flags, add_sampling_flags, load_pipeline, number,
                     prepare_output, retrieval_request, sampling_overrides, write_manifest, write_outputs)
from .train import add_train_command, add_train_retriever_command

def command_generate(args) -> int:
    from ..tokenizers.text import normalize_prompt

    if args.prompts_file:
        prompts = read_prompts_file(args.prompts_file)
        count = args.samples_per_prompt
    else:
        prompts, count = args.prompt, args.n
    if not prompts:
        raise TinyChameleonError("give a prompt, e.g. tinychameleon generate \"dark green eight on bright cyan\"")
    if not 1 <= count <= 100_000:
        raise TinyChameleonError("the number of samples must be at least 1 (and at most 100000)")
    sampling = sampling_overrides(args)
    retrieval = retrieval_request(args, sampling, RETRIEVED_SETTINGS)
    out = prepare_output(args.out, [args.prompts_file] if args.prompts_file else [])
    pipeline = load_pipeline(args)
    if retrieval:
        images, captions = pipeline.draw_from_memory(prompts, n=count, seed=args.seed, **retrieval, **sampling)
    else:
        pipeline.encode_partial(prompts)  # every prompt is checked before any drawing ("*" blanks allowed)
        images, captions = pipeline.draw(prompts, n=count, seed=args.seed, **sampling)
    rows = [{"prompt": normalize_prompt(prompts[index // count]), "file": f"{index // count:04d}_{index % count:03d}.png",
             "sample": index % count, "caption": captions[index]} for index in range(len(images))]
    write_outputs(out, images, rows)
    print(f"wrote {len(rows)} images and manifest.jsonl to {out}")
    return 0


def add_generate_command(commands) -> None:
    """The `generate` command's flags."""
    generate = commands.add_parser("generate", help=TASKS["generate"].summary)
    generate.add_argument("prompt", nargs="*", help='captions like "dark green eight on bright cyan"; a "*" word is '
                                                    'a blank the model fills (the manifest\'s "caption")')
    generate.add_argument("--prompts-file", help="a file with one caption per line")
    generate.add_argument("-n", type=number(int), default=1, help="images per prompt (default 1)")
    generate.add_argument("--samples-per-prompt", type=number(int), default=1, help="images per prompt with --prompts-file")
    generate.add_argument("--out", required=True, help="folder for the PNGs and manifest.jsonl")
    add_sampling_flags(generate)
    add_retrieval_flags(generate)
    generate.set_defaults(handler=command_generate)


def collect_images(paths: list[str]) -> list[Path]:
    from ..imaging import IMAGE_SUFFIXES

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
    """Caption every readable file; each unreadable one is reported on stderr (and in --json output) and
    skipped. Exit 2 if nothing could be read, or with --strict if anything was skipped."""
    sampling = sampling_overrides(args)
    retrieval = retrieval_request(args, sampling)
    readable, images, skipped = read_images(collect_images(args.images), strict=args.strict)
    pipeline = load_pipeline(args)
    captions = (pipeline.caption_from_memory(images, seed=args.seed, **retrieval, **sampling) if retrieval
                else pipeline.caption(images, seed=args.seed, **sampling))
    for path, caption in zip(readable, captions):
        print(json.dumps({"image": str(path), "caption": caption}) if args.json else f"{path}: {caption}")
    if args.json:
        for path, error in skipped:
            print(json.dumps({"image": str(path), "caption": None, "error": error}))
    return 0


def add_caption_command(commands) -> None:
    """The `caption` command's flags."""
    caption = commands.add_parser("caption", help=TASKS["caption"].summary)
    caption.add_argument("images", nargs="+", help="image files or folders of images")
    caption.add_argument("--json", action="store_true", help="one JSON object per image on stdout (skipped files "
                                                             "with \"caption\": null and an \"error\")")
    caption.add_argument("--strict", action="store_true", help="exit 2 if any image cannot be read (default: "
                                                               "report it on stderr, caption the rest)")
    add_sampling_flags(caption)
    add_retrieval_flags(caption)
    caption.set_defaults(handler=command_caption)


def read_images(files: list[Path], strict: bool = False) -> tuple:
    """The readable files, their (N, 28, 28, 3) levels and the skipped (file, reason) pairs: each unreadable
    one (not an image, a FIFO, a folder) is reported on stderr and skipped. Exit 2 if none can be read, or
    with `strict` if any cannot."""
    import numpy as np

    from ..errors import ImageInputError
    from ..imaging import read_image

    readable, images, skipped = [], [], []
    for path in files:
        try:
            images.append(read_image(path))
            readable.append(path)
        except ImageInputError as error:
            skipped.append((path, str(error)))
            print(f"skipped: {error}", file=sys.stderr)
    if strict and skipped:
        raise TinyChameleonError(f"{len(skipped)} of {len(files)} images could not be read (--strict)")
    if not images:
        raise TinyChameleonError(f"none of the {len(files)} images could be read")
    return readable, np.stack(images), skipped


def read_prompts_file(path: str) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise TinyChameleonError(f"cannot read prompts file {path}: {error}") from None


def command_complete(args) -> int:
    """Keep part of each image, let the model draw the rest (for a prompt, or reading one off the kept part)."""
    from ..regions import KEEP_REGIONS, read_mask

    if not 1 <= args.n <= 1000:
        raise TinyChameleonError("-n must be at least 1 (and at most 1000)")
    sampling = sampling_overrides(args)
    if args.keep not in KEEP_REGIONS and not Path(args.keep).is_file():
        raise TinyChameleonError(f"--keep must be {', '.join(KEEP_REGIONS)} or a mask image file; got {args.keep[:60]!r}")
    keep = args.keep if args.keep in KEEP_REGIONS else read_mask(args.keep)   # 28x28 only
    files = collect_images(args.images)
    prompts = read_prompts_file(args.prompts_file) if args.prompts_file else args.prompt
    if isinstance(prompts, list) and len(prompts) != len(files):
        raise TinyChameleonError(f"{args.prompts_file} has {len(prompts)} prompts for {len(files)} images: "
                                 "line i goes with the i-th image in sorted name order")
    readable, images, _ = read_images(files)  # unreadable entries are skipped, as by caption
    if isinstance(prompts, list):
        prompts = [prompt for path, prompt in zip(files, prompts) if path in readable]
    files = readable
    out = prepare_output(args.out, files + ([args.prompts_file] if args.prompts_file else []))
    completed, captions = load_pipeline(args).complete(images, keep=keep, prompts=prompts, n=args.n,
                                                       seed=args.seed, **sampling)
    rows = [{"source": str(files[index // args.n]), "file": f"{index // args.n:04d}_{index % args.n:03d}.png",
             "caption": caption} for index, caption in enumerate(captions)]
    write_outputs(out, completed, rows)
    print(f"wrote {len(rows)} completed images and manifest.jsonl to {out}")
    return 0


def add_complete_command(commands) -> None:
    """The `complete` command's flags."""
    complete = commands.add_parser("complete", help=TASKS["complete"].summary)
    complete.add_argument("images", nargs="+", help="image files or folders of images (sorted by name)")
    complete.add_argument("--keep", required=True, help="top, bottom, left or right (rows / columns 0-13 or 14-27), "
                                                         "or a 28x28 mask image whose white pixels are kept")
    complete.add_argument("--out", required=True, help="folder for the PNGs and manifest.jsonl")
    complete.add_argument("-n", type=number(int), default=1, help="completions per image (default 1)")
    given = complete.add_mutually_exclusive_group()
    given.add_argument("--prompt", help='the caption to draw for, "*" blanks allowed (default: read off the kept part)')
    given.add_argument("--prompts-file", help="one caption per image, line i for the i-th image")
    add_sampling_flags(complete)
    complete.set_defaults(handler=command_complete)


def read_document_prompts(path: str) -> list[tuple[str, list[Path]]]:
    """A --prompts-file of JSON rows {"prompt": "... <image> ...", "images": ["a.png", ...]}; image paths are
    relative to the file's folder unless absolute."""
    from ..io_utils import json_lines

    rows = []
    for number_, row in json_lines(path, "prompts file"):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or \
                not isinstance(row.get("images", []), list) or \
                not all(isinstance(name, str) for name in row.get("images", [])) or set(row) - {"prompt", "images"}:
            raise TinyChameleonError(f'{path} line {number_} must be {{"prompt": "text with <image>", '
                                     f'"images": ["file.png", ...]}}')
        rows.append((row["prompt"], [Path(path).parent / name for name in row.get("images", [])]))
    if not rows:
        raise TinyChameleonError(f"{path} holds no prompts")
    return rows


def command_continue(args) -> int:
    """Continue mixed-modal documents; one manifest row per continuation, one PNG per image the model drew."""
    import numpy as np

    from ..imaging import read_image, save_png

    if not 1 <= args.n <= 1000:
        raise TinyChameleonError("-n must be at least 1 (and at most 1000)")
    if args.prompts_file and (args.prompt is not None or args.image):
        raise TinyChameleonError("give either a PROMPT (with --image for its placeholders) or --prompts-file, not both")
    if not args.prompts_file and args.prompt is None:
        raise TinyChameleonError('give a prompt, e.g. tinychameleon continue "<image> swap the colors ." --image a.png')
    requests = read_document_prompts(args.prompts_file) if args.prompts_file else \
        [(args.prompt, [Path(name) for name in args.image])]
    sampling = sampling_overrides(args)
    retrieval = retrieval_request(args, sampling) or {}
    out = prepare_output(args.out, [path for _, paths in requests for path in paths] +
                         ([args.prompts_file] if args.prompts_file else []))
    images = [[read_image(path) for path in paths] for _, paths in requests]   # unreadable: one clear error
    results = load_pipeline(args).continue_documents([prompt for prompt, _ in requests], images, n=args.n,
                                                     seed=args.seed, **retrieval, **sampling)
    rows = []
    try:
        for index, continuations in enumerate(results):
            for sample, continuation in enumerate(continuations):
                files = [f"{index:04d}_{sample:03d}_{k}.png" for k in range(len(continuation.images))]
                for image, name in zip(continuation.images, files):
                    save_png(np.asarray(image), out / name)
                rows.append({"index": index, "sample": sample, "text": continuation.text, "images": files})
        write_manifest(out, rows)
    except OSError as error:
        raise OutputError(f"writing to {out} failed: {error.strerror or error}") from None
    print(f"wrote {len(rows)} continuations ({sum(len(row['images']) for row in rows)} images) and "
          f"manifest.jsonl to {out}")
    return 0


def add_continue_command(commands) -> None:
    """The `continue` command's flags."""
    continuation = commands.add_parser("continue", help=TASKS["continue"].summary)
    continuation.add_argument("prompt", nargs="?", help='e.g. "<image> make the digit normal red ." or "count from '
                                                        'two to four in plain white on dark blue :"')
    continuation.add_argument("--image", action="append", default=[], metavar="PATH",
                              help="an image for the next <image> placeholder (repeat, in order)")
    continuation.add_argument("--prompts-file", help='JSON lines {"prompt": ..., "images": [paths relative to the file]}')
    continuation.add_argument("-n", type=number(int), default=1, help="continuations per prompt (default 1)")
    continuation.add_argument("--out", required=True, help="folder for the PNGs and manifest.jsonl")
    add_sampling_flags(continuation)
    add_retrieval_flags(continuation)
    continuation.set_defaults(handler=command_continue)


def read_search_queries(path: str) -> list:
    """A --queries-file of JSON rows {"text": "..."} or {"image": "a.png"} (relative to the file's folder)."""
    from ..imaging import read_image
    from ..io_utils import json_lines

    queries = []
    for number_, row in json_lines(path, "queries file"):
        if not isinstance(row, dict) or len(row) != 1 or not isinstance(row.get("text", row.get("image")), str):
            raise TinyChameleonError(f'{path} line {number_} must be {{"text": "..."}} or {{"image": "a.png"}}')
        queries.append(row["text"] if "text" in row else read_image(Path(path).parent / row["image"]))
    if not queries:
        raise TinyChameleonError(f"{path} holds no queries")
    return queries


def command_search(args) -> int:
    """Nearest documents of the memory bank for text or image queries; one line (or JSON row) per hit."""
    from ..imaging import read_image
    from ..retrieval.memory import embed_queries, load_bank
    from ..retrieval.retriever import Retriever

    given = [args.text is not None, args.image is not None, args.queries_file is not None]
    if sum(given) != 1:
        raise TinyChameleonError('give one of TEXT, --image PATH or --queries-file Q.jsonl, e.g. '
                                 'tinychameleon search "normal red eight"')
    if not 1 <= args.k <= 1000:
        raise TinyChameleonError("-k must be 1..1000")
    if not -1 <= args.min_score <= 1 or not (args.distinct is None or -1 <= args.distinct <= 1):
        raise TinyChameleonError("--min-score and --distinct must be -1..1 (cosine similarities)")
    queries = [args.text] if args.text is not None else \
        [read_image(args.image)] if args.image is not None else read_search_queries(args.queries_file)
    retriever = Retriever.from_pretrained(args.retriever)
    vectors = embed_queries(retriever, queries)   # bad words fail here, before the bank is built
    bank = load_bank(retriever, args.memory, args.cache_dir)
    for query, hits in enumerate(bank.search(vectors, args.k, args.min_score, args.distinct)):
        if not args.json:
            shown = queries[query] if isinstance(queries[query], str) else args.image or f"image of row {query + 1}"
            print(f"query {query}: {shown}")
        for hit in hits:
            row = hit.to_dict(query)
            print(json.dumps(row) if args.json else
                  f"  {hit.rank:>3}. {hit.score:.3f}  {hit.caption}  ({row.get('file', f'index {hit.position}')})")
    return 0


def add_search_command(commands) -> None:
    """The `search` command's flags."""
    search = commands.add_parser("search", help=TASKS["search"].summary)
    search.add_argument("text", nargs="?", help='a text query, e.g. "normal red eight" or "dark green eight on bright cyan"')
    search.add_argument("--image", help="an image query (any size, RGB/RGBA/gray)")
    search.add_argument("--queries-file", help='JSON lines {"text": ...} or {"image": path relative to the file}')
    search.add_argument("-k", type=number(int), default=5, help="hits per query (default 5)")
    search.add_argument("--memory", help="a folder of images with manifest.jsonl rows {\"file\", \"caption\"} "
                                         "(default: the training digits)")
    search.add_argument("--min-score", type=number(float), default=-1.0,
                        help="leave out hits less similar than this (cosine, -1..1; default: none)")
    search.add_argument("--distinct", type=number(float), metavar="X",
                        help="diversity: skip a hit as alike as this (cosine) to the query or to a better hit, e.g. 0.9")
    search.add_argument("--json", action="store_true", help='one JSON row per hit: {"query", "rank", "score", '
                                                            '"caption", "file" or "index"}')
    search.add_argument("--retriever", help="retriever directory (default: the shipped one)")
    search.add_argument("--cache-dir", help="data and memory-bank cache directory")
    search.set_defaults(handler=command_search)


def command_sample(args) -> int:
    if not 1 <= args.n <= 100_000:
        raise TinyChameleonError("-n must be at least 1 (and at most 100000)")
    sampling = sampling_overrides(args)
    out = prepare_output(args.out)
    images, captions = load_pipeline(args).sample(args.n, seed=args.seed, first=args.first, ancestral=args.ancestral,
                                                  **sampling)
    rows = [{"caption": caption, "file": f"{index:04d}.png"} for index, caption in enumerate(captions)]
    write_outputs(out, images, rows)
    print(f"wrote {len(rows)} samples and manifest.jsonl to {out}")
    return 0


def add_sample_command(commands) -> None:
    """The `sample` command's flags."""
    sample = commands.add_parser("sample", help=TASKS["sample"].summary)
    sample.add_argument("-n", type=number(int), default=9, help="number of pairs (default 9)")
    sample.add_argument("--out", required=True, help="folder for the PNGs and manifest.jsonl")
    sample.add_argument("--first", choices=["text", "image", "model"], default="text",
                        help="modality drawn freely first; the other follows as a conditional request (default text)")
    sample.add_argument("--ancestral", action="store_true",
                        help="one plain pass through the model: no guidance, candidates or re-ranking")
    add_sampling_flags(sample)
    sample.set_defaults(handler=command_sample)


def command_report(args) -> int:
    from ..evaluation.figures import write_figures

    sampling_overrides(args)
    written = write_figures(load_pipeline(args), prepare_output(args.out), seed=args.seed, cache_dir=args.cache_dir)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def add_report_command(commands) -> None:
    """The `report` command's flags."""
    report = commands.add_parser("report", help="the training curve and three captioned sample grids")
    report.add_argument("--out", required=True, help="folder for the PNG figures")
    report.add_argument("--cache-dir", help="data cache directory")
    add_sampling_flags(report)
    report.set_defaults(handler=command_report)


def command_evaluate(args) -> int:
    from ..evaluation.evaluate import run_evaluation

    from ..data.colored import VALIDATION_SIZE

    sampling = sampling_overrides(args)
    size = VALIDATION_SIZE if args.split == "validation" else 10_000
    if args.document_samples is not None and not 0 <= args.document_samples <= 100_000:
        raise TinyChameleonError("--document-samples must be 0..100000 (0: as many as --samples)")
    if (args.samples is not None and not 1 <= args.samples <= size) or not 0 <= args.offset < size:
        raise TinyChameleonError(f"--samples must be 1..{size} and --offset 0..{size - 1} on the {args.split} split")
    run_evaluation(checkpoint=args.checkpoint, out=prepare_output(args.out), samples=args.samples,
                   offset=args.offset, quick=args.quick, seed=args.seed, cache_dir=args.cache_dir,
                   device=args.device, sampling=sampling, split=args.split, document_samples=args.document_samples)
    return 0


def add_evaluate_command(commands) -> None:
    """The `evaluate` command's flags."""
    evaluate = commands.add_parser("evaluate", help="measure a checkpoint: NLL, judged accuracy, diversity, FD, "
                                                    "speckle and shape realism")
    evaluate.add_argument("--checkpoint", help="run directory, or a shipped model by name: raster (default) or var")
    evaluate.add_argument("--out", default="evaluation", help="folder for metrics.json, report.md and grids")
    evaluate.add_argument("--samples", type=number(int), help="samples per direction (default 1000; 64 with --quick)")
    evaluate.add_argument("--offset", type=number(int), default=0,
                          help="use test examples from this index on for the sampled metrics")
    evaluate.add_argument("--split", choices=("test", "validation"), default="test",
                          help="test (the final report, default) or validation (where settings are chosen)")
    evaluate.add_argument("--document-samples", type=number(int),
                          help="documents per task family, for runs trained on documents (default: --samples; 16 "
                               "with --quick)")
    evaluate.add_argument("--quick", action="store_true",
                          help="a tiny run for tests: 500 NLL examples, and 64 samples / 16 documents unless given")
    evaluate.add_argument("--seed", type=number(int), default=0, help="sampler seed (default 0)")
    evaluate.add_argument("--cache-dir", help="data and judge cache directory")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    add_sampler_flags(evaluate)
    evaluate.set_defaults(handler=command_evaluate)


def command_serve(args) -> int:
    from ..web.server import ServerSettings, serve

    if not 0 <= args.port <= 65535:
        raise TinyChameleonError(f"--port must be 0..65535, got {args.port}")
    if args.max_samples < 1 or args.queue_size < 1 or not 0 < args.timeout <= 3600:
        raise TinyChameleonError("--max-samples and --queue-size must be at least 1, --timeout 0..3600 seconds")
    settings = ServerSettings(max_samples=args.max_samples, queue_size=args.queue_size, timeout_s=args.timeout)
    serve(checkpoint=args.checkpoint, host=args.host, port=args.port, settings=settings)
    return 0


def add_serve_command(commands) -> None:
    """The `serve` command's flags."""
    serve = commands.add_parser("serve", help="serve the web page and JSON API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=number(int), default=8000, help="port (default 8000)")
    serve.add_argument("--checkpoint", help="run directory, or a shipped model by name: raster (default) or var")
    serve.add_argument("--max-samples", type=number(int), default=64, help="most images one request may ask for")
    serve.add_argument("--queue-size", type=number(int), default=32, help="requests waiting before 503s are returned")
    serve.add_argument("--timeout", type=number(float), default=10.0, help="seconds before a request is cancelled")
    serve.set_defaults(handler=command_serve)


def command_bench(args) -> int:
    from ..bench import run_bench

    try:
        batches = [int(b) for b in args.batches.split(",")]
        train_batches = [int(b) for b in args.train_batches.split(",")]
    except ValueError:
        raise TinyChameleonError("--batches and --train-batches are comma-separated integers, e.g. 1,64") from None
    if min(batches + train_batches) < 1 or args.repeats < 1:
        raise TinyChameleonError("batch sizes and --repeats must be at least 1")
    run_bench(device=args.device, batches=batches, train_batches=train_batches, repeats=args.repeats,
              json_path=args.json, checkpoint=args.checkpoint)
    return 0


def add_bench_command(commands) -> None:
    """The `bench` command's flags."""
    bench = commands.add_parser("bench", help="time training and sampling against a plain reference")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    bench.add_argument("--batches", default="1,64,1024", help="comma-separated sampling batch sizes")
    bench.add_argument("--train-batches", default="32,256", help="comma-separated training batch sizes")
    bench.add_argument("--repeats", type=number(int), default=3, help="timed repetitions per measurement")
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.add_argument("--checkpoint", help="run directory or shipped model name (raster, var) for the one-request "
                                          "timings (default: raster)")
    bench.set_defaults(handler=command_bench)


def command_data(args) -> int:
    from ..data.mnist import default_cache_dir, load_mnist

    data = load_mnist(args.cache_dir)
    print(f"MNIST ready in {args.cache_dir or default_cache_dir()}: {len(data['train_labels'])} train, "
          f"{len(data['test_labels'])} test images")
    return 0


def add_data_command(commands) -> None:
    """The `data` command's flags."""

    data = commands.add_parser("data", help="fetch and verify MNIST into the cache")
    data.add_argument("--cache-dir", help="data cache (default $TINYCHAMELEON_CACHE or ~/.cache/tinychameleon)")
    data.set_defaults(handler=command_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinychameleon", description="One transformer for text and images "
                                     "of colored MNIST digits.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_command(commands)
    add_train_command(commands)
    add_train_retriever_command(commands)
    add_generate_command(commands)
    add_complete_command(commands)
    add_caption_command(commands)
    add_continue_command(commands)
    add_search_command(commands)
    add_sample_command(commands)
    add_report_command(commands)
    add_evaluate_command(commands)
    add_serve_command(commands)
    add_bench_command(commands)
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
    except OSError as error:  # the environment failed us (full disk, permissions): say so in one line
        print(f"error: {error.strerror or error}" + (f": {error.filename}" if error.filename else ""),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished epochs are saved (use --resume to continue training)", file=sys.stderr)
        return 130
    finally:
        while _held_locks:          # the command has written what it will write: other writers may go on
            os.close(_held_locks.pop())


if __name__ == "__main__":
    sys.exit(main())
