"""`tinychameleon evaluate`: every number a reader needs to trust a checkpoint, in one run.

NLL (overall, text, image, per order) on the whole test split; judged text -> image accuracy;
image -> text caption exactness; unconditional agreement and variety; a Frechet distance in
the judge's feature space; the VQ-VAE's reconstruction quality; and, for runs trained with
held-out color pairs, seen vs unseen accuracy. Writes metrics.json, report.md and grids.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data.colored import VALID_PAIRS, holdout_pair_ids, load_colored_mnist, load_splits, parse_caption
from ..data.mnist import default_cache_dir
from ..imaging import caption_grid
from ..io_utils import atomic_path, write_json
from ..nextscale.objective import split_nll as next_scale_nll
from ..pipeline import Pipeline
from ..training.lm_trainer import split_nll
from ..training.run import caption_word_ids, encode_images
from ..training.vqvae_trainer import reconstruction_metrics
from .documents import documents_figure, evaluate_documents
from .judge import attribute_accuracy, load_or_train_judge
from .metrics import caption_accuracy, frechet_distance, shape_realism, specks, stray_pixels, unconditional_metrics

SHAPE_REFERENCE = 5000  # real training shapes that span each digit's manifold for shape realism
from .report import write_report


def stage(name: str, started: float) -> None:
    print(f"[{time.time() - started:6.1f}s] {name}", flush=True)


def evaluate(pipeline: Pipeline, samples: int = 1000, nll_examples: int = 0, seed: int = 0, cache_dir=None,
             sampling: dict | None = None, out_dir: Path | None = None, offset: int = 0, split: str = "test",
             document_samples: int = 0) -> dict:
    """Run the whole evaluation on a loaded pipeline; returns the metrics dictionary.

    For runs trained on documents, every task family is measured on `document_samples` documents each
    (default: `samples`), built from the split's digits.

    `split` is "test" (the final report) or "validation" (5k training digits no run trains on:
    where epochs and sampler settings are chosen).
    """
    started = time.time()
    sampling = {key: value for key, value in (sampling or {}).items() if value is not None}
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    config = pipeline.config
    # The judge is an instrument, not a model under test: it reads all 60k colored training digits.
    judge = load_or_train_judge(load_colored_mnist(config.data_seed, cache_dir)[0], cache_dir, config.data_seed)
    splits = load_splits(config.data_seed, cache_dir)
    train, test = splits.train, splits[split]
    stage("judge ready", started)
    samples = min(samples, len(test) - offset)
    subset = test.subset(slice(offset, offset + samples))
    metrics: dict = {"checkpoint": pipeline.source, "split": split, "samples": samples, "offset": offset, "seed": seed,
                     "sampling": {**pipeline.sampling.__dict__, **sampling}}

    real = judge.predict(test.images)
    metrics["judge_on_real_test"] = attribute_accuracy(real, test.digits, test.foreground, test.background)
    shape_reference = judge.shape_features(train.images[:SHAPE_REFERENCE]), train.digits[:SHAPE_REFERENCE]

    def looks(images, digits, foreground=None, background=None) -> dict:
        """What a person sees: stray pixels, specks and shape realism (improved precision / recall)."""
        return {"stray": stray_pixels(images, foreground, background), "specks": specks(images),
                "shape": shape_realism(*shape_reference, judge.shape_features(images), digits)}

    # The ceiling, measured the same way: real test images of the sampled slice.
    metrics["real_test_looks"] = looks(subset.images, subset.digits, subset.foreground, subset.background)

    nll_split = test if not nll_examples else test.subset(slice(0, nll_examples))
    codes = encode_images(pipeline.image_tokenizer, nll_split.images, pipeline.device).long().to(pipeline.device)
    words = caption_word_ids(nll_split).to(pipeline.device)
    metrics["nll"] = (next_scale_nll(pipeline.model, pipeline.image_tokenizer.shape, pipeline.vocab, words, codes, split)
                      if pipeline.next_scale else split_nll(pipeline.model, pipeline.vocab, words, codes, split=split))
    metrics["nll"]["examples"] = len(nll_split)
    stage(f"{split} NLL {metrics['nll'][f'{split}_nll']:.4f}", started)

    reconstructions = pipeline.image_tokenizer.decode(encode_images(pipeline.image_tokenizer, subset.images, pipeline.device).long()
                                            .to(pipeline.device)).cpu().numpy()
    tokenizer = pipeline.image_tokenizer
    metrics["tokenizer"] = {"kind": tokenizer.config.kind, "tokens_per_image": tokenizer.tokens_per_image,
                            "token_count": tokenizer.token_count}
    on_reconstructions = judge.predict(reconstructions)
    on_originals = {key: value[offset:offset + samples] for key, value in real.items()}
    metrics["vqvae"] = {**reconstruction_metrics(pipeline.image_tokenizer, test.images, device=pipeline.device),
                        "judge_on_reconstructions": attribute_accuracy(on_reconstructions, subset.digits,
                                                                       subset.foreground, subset.background),
                        # Attributes kept: the judge reads the reconstruction as it reads the original (its own
                        # misreadings of real digits cancel out, so this one can reach 100 %).
                        "attributes_kept": attribute_accuracy(on_reconstructions, on_originals["digit"],
                                                              on_originals["foreground"], on_originals["background"]),
                        "looks": looks(reconstructions, subset.digits, subset.foreground, subset.background)}
    stage("VQ-VAE measured", started)

    prompts = subset.captions()
    drawing = time.time()
    generated = pipeline.generate_images(prompts, n=1, seed=seed, **sampling)
    drawing = time.time() - drawing
    judged = judge.predict(generated)
    metrics["text_to_image"] = attribute_accuracy(judged, subset.digits, subset.foreground, subset.background)
    metrics["text_to_image"]["ms_per_image"] = 1000 * drawing / max(1, len(prompts))
    metrics["text_to_image"]["looks"] = looks(generated, subset.digits, subset.foreground, subset.background)
    stage(f"text -> image all-three {metrics['text_to_image']['all']:.3f}", started)

    reading = time.time()
    captions = pipeline.caption(subset.images, seed=seed, **sampling)
    reading = time.time() - reading
    metrics["image_to_text"] = caption_accuracy(captions, subset.digits, subset.foreground, subset.background)
    metrics["image_to_text"]["ms_per_image"] = 1000 * reading / max(1, len(subset))
    stage(f"image -> text exact {metrics['image_to_text']['exact']:.3f}", started)

    sampled, sampled_captions = pipeline.sample(samples, seed=seed, **sampling)
    metrics["unconditional"] = unconditional_metrics(judge.predict(sampled), sampled_captions)
    metrics["unconditional"]["looks"] = looks(sampled, caption_digits(sampled_captions))
    stage(f"unconditional agreement {metrics['unconditional']['agreement']:.3f}", started)
    # The model's joint distribution as it stands: one pass, order picked by the model, nothing added.
    plain, plain_captions = pipeline.sample(samples, seed=seed, first="model", ancestral=True, **sampling)
    metrics["unconditional_ancestral"] = unconditional_metrics(judge.predict(plain), plain_captions)
    stage(f"ancestral unconditional agreement {metrics['unconditional_ancestral']['agreement']:.3f}", started)

    metrics["clip_score"] = clip_scores(prompts, generated, subset.images, sampled_captions, sampled)
    if metrics["clip_score"]:
        stage(f"CLIP score text -> image {metrics['clip_score']['text_to_image']:.3f} "
              f"(real {metrics['clip_score']['real']:.3f})", started)

    half = samples // 2
    train_features = judge.predict(train.images[:samples])["features"]
    real_features = real["features"][offset:offset + samples]
    metrics["frechet"] = {
        "generated_vs_real": frechet_distance(judged["features"], real_features),
        "real_train_vs_real_test": frechet_distance(train_features, real_features),
        "real_test_halves": frechet_distance(real_features[:half], real_features[half:]),
        "unconditional_vs_real": frechet_distance(judge.predict(sampled)["features"], real_features),
    }
    stage("Frechet distances done", started)

    shown = None
    if pipeline.vocab.documents:  # every task family, on documents of the evaluated split's digits
        metrics["documents"], shown = evaluate_documents(pipeline, judge, test, document_samples or samples, seed,
                                                         sampling, looks=looks)
        stage("documents: " + ", ".join(f"{family} {100 * row['accuracy']:.1f}%"
                                        for family, row in metrics["documents"].items()), started)

    if config.train.holdout_pairs:
        metrics["compositional"] = compositional(pipeline, judge, test, config.train.holdout_pairs, samples,
                                                 seed, sampling)
        stage("compositional generalisation done", started)
    metrics["elapsed_s"] = time.time() - started
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        grids = {"text_to_image.png": caption_grid(generated[:9], prompts[:9], title="text -> image"),
                 "image_to_text.png": caption_grid(subset.images[:9], captions[:9], title="image -> text"),
                 "unconditional.png": caption_grid(sampled[:9], sampled_captions[:9], title="unconditional")}
        for name, image in grids.items():
            with atomic_path(out_dir / name) as temp:
                image.save(temp, format="PNG")
        if shown:
            with atomic_path(out_dir / "documents.png") as temp:
                documents_figure(shown).save(temp, format="PNG")
        write_json(out_dir / "metrics.json", metrics)
        write_report(metrics, out_dir / "report.md", list(grids))
    return metrics


def clip_scores(prompts, generated, real, sampled_captions, sampled) -> dict:
    """Mean cosine similarity of image and caption by the shipped retriever (a CLIP trained here): a score that
    needs no judge of this dataset. Real images with their captions are the ceiling. {} without a retriever."""
    from ..errors import CheckpointError
    from ..retrieval.retriever import Retriever

    try:
        retriever = Retriever.from_pretrained()
    except CheckpointError:
        return {}
    well_formed = [row for row, caption in enumerate(sampled_captions) if parse_caption(caption)]
    return {"text_to_image": float(retriever.similarity(prompts, generated).mean()),
            "real": float(retriever.similarity(prompts, real).mean()),
            "unconditional": float(retriever.similarity([sampled_captions[row] for row in well_formed],
                                                        sampled[well_formed]).mean()) if well_formed else None,
            "retriever": retriever.version}


def caption_digits(captions: list[str]) -> np.ndarray:
    """The digit each caption names (-1 where it names none): what an unconditional sample should show."""
    return np.array([(parse_caption(caption) or (-1,))[0] for caption in captions])


def compositional(pipeline, judge, test, holdout_pairs: int, samples: int, seed: int, sampling: dict) -> dict:
    """Seen vs unseen (held-out) color pairs, in both directions."""
    held = {tuple(pair) for pair in VALID_PAIRS[holdout_pair_ids(holdout_pairs)]}
    unseen = np.array([(f, b) in held for f, b in zip(test.foreground, test.background)])
    results = {"held_out_pairs": holdout_pairs}
    for name, mask in (("seen", ~unseen), ("unseen", unseen)):
        split = test.subset(np.flatnonzero(mask)[:samples])
        if len(split) == 0:
            continue
        images = pipeline.generate_images(split.captions(), n=1, seed=seed, **sampling)
        captions = pipeline.caption(split.images, seed=seed, **sampling)
        results[name] = {"examples": len(split),
                         "text_to_image": attribute_accuracy(judge.predict(images), split.digits, split.foreground,
                                                             split.background),
                         "image_to_text": caption_accuracy(captions, split.digits, split.foreground, split.background)}
    return results


def run_evaluation(checkpoint: str | None = None, out: str | Path = "evaluation", samples: int | None = None,
                   offset: int = 0, quick: bool = False, seed: int = 0, cache_dir=None, device: str = "cpu",
                   sampling: dict | None = None, split: str = "test", document_samples: int | None = None) -> dict:
    """Load a run directory, evaluate it, write metrics.json / report.md / grids into `out`. `quick` scores the
    NLL on 500 examples and makes 64 samples and 16 documents per family the defaults (what a caller gives wins)."""
    torch.manual_seed(seed)
    pipeline = Pipeline.from_pretrained(checkpoint, device=device)
    nll_examples = 500 if quick else 0
    samples = samples if samples is not None else 64 if quick else 1000
    document_samples = document_samples if document_samples is not None else 16 if quick else 0
    out = Path(out)
    metrics = evaluate(pipeline, samples, nll_examples, seed, cache_dir, sampling, out, offset, split, document_samples)
    print(json.dumps({key: metrics[key] for key in ("nll", "text_to_image", "image_to_text", "unconditional",
                                                   "unconditional_ancestral")}, indent=1))
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return metrics
