"""Markdown report of an evaluation's metrics.json."""

from __future__ import annotations

from pathlib import Path

from ..io_utils import atomic_path


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def looks_row(name: str, looks: dict) -> str:
    stray, shape = looks["stray"], looks["shape"]
    speck_free = percent(looks["specks"]["speck_free"]) if "specks" in looks else "-"   # older metrics lack it
    return (f"| {name} | {percent(stray['clean'])} | {stray['stray_per_image']:.2f} | {stray['stray_p90']:.0f} | "
            f"{speck_free} | {shape['precision']:.3f} | {shape['recall']:.3f} |")


def tokenizer_name(metrics: dict) -> str:
    tokenizer = metrics.get("tokenizer", {"kind": "vq", "tokens_per_image": 49})
    return f"{tokenizer['kind']}, {tokenizer['tokens_per_image']} tokens per image"


def documents_section(documents: dict) -> list[str]:
    """The family table: accuracy with its parts, the judge on real pictures of the expected answers (and, for the
    edits, on the prompt's own tokens recolored: an exact copy), and the realism and variety of fresh drawings
    against real pictures of the same answers."""
    lines = ["## Documents (each task family on held-out digits)", "",
             "Fresh drawings are answers any shape of the digit will do (edits must keep theirs); their shape "
             "precision and recall are given as a share of real pictures' of the same answers.", "",
             "| family | documents | right | words right | images right | shape kept (IoU >= 0.95) | "
             "judge on real answers (ceiling) | an exact copy (ceiling) | fresh drawings: precision · recall (× real) | "
             "ms per document |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family, row in documents.items():
        copied = percent(row["exact_copy_ceiling"]) if "exact_copy_ceiling" in row else "-"
        lines.append(f"| {family} | {row['examples']} | {percent(row['accuracy'])} | {percent(row['words'])} | "
                     f"{percent(row['images'])} | {percent(row['shape_kept'])} | {percent(row['judge_on_real_answers'])}"
                     f" | {copied} | {fresh_drawings(row)} | {row['ms_per_document']:.1f} |")
    return lines + [""]


def fresh_drawings(row: dict) -> str:
    """"precision× · recall×" of a family's fresh drawings against real pictures, or "-" where it draws none."""
    if "looks" not in row:
        return "-"
    drawn, real = row["looks"]["shape"], row["real_looks"]["shape"]
    ratio = {key: drawn[key] / real[key] if real[key] else float("nan") for key in ("precision", "recall")}
    return f"{ratio['precision']:.2f}× · {ratio['recall']:.2f}×"


def write_report(metrics: dict, path: Path, grids: list[str]) -> None:
    nll, vq = metrics["nll"], metrics["vqvae"]
    split = metrics.get("split", "test")  # key names keep "real_test" for the real images of the evaluated split
    nll = {key.replace(f"{split}_", "", 1): value for key, value in nll.items()}
    t2i, i2t, unc, fd = metrics["text_to_image"], metrics["image_to_text"], metrics["unconditional"], metrics["frechet"]
    judge = metrics["judge_on_real_test"]

    def attribute_row(name: str, scores: dict) -> str:
        return (f"| {name} | {percent(scores['digit'])} | {percent(scores['foreground'])} | "
                f"{percent(scores['background'])} | {percent(scores['all'])} |")

    lines = [
        f"# Evaluation of `{metrics['checkpoint']}`", "",
        f"{metrics['samples']} samples per direction, sampler seed {metrics['seed']}, sampling {metrics['sampling']}; "
        f"Split: **{split}**; NLL on {nll['examples']} {split} examples in both orders. Took {metrics['elapsed_s']:.0f}s.", "",
        "## Likelihood (nats per token; per (caption, image) pair and per image given its caption, comparable "
        "across image tokenizers)", "",
        "| overall | text positions | image positions | text-first | image-first | nats per pair | nats per image "
        "| nats per caption given its image |",
        "|---|---|---|---|---|---|---|---|",
        f"| {nll['nll']:.4f} | {nll['text_nll']:.4f} | {nll['image_nll']:.4f} | "
        f"{nll['text_first_nll']:.4f} | {nll['image_first_nll']:.4f} | {nll.get('nats_per_pair', float('nan')):.1f} | "
        f"{nll.get('nats_per_image', float('nan')):.1f} | {nll.get('nats_per_caption', float('nan')):.3f} |", "",
        "## Judged accuracy", "",
        "| | digit | foreground | background | all |", "|---|---|---|---|---|",
        attribute_row(f"judge on real {split} images (ceiling)", judge),
        *(attribute_row(f"judge on tokenizer reconstructions{suffix}", vq[key]) for key, suffix in
          (("judge_on_reconstructions", ""), ("attributes_kept", ", against its reading of the originals"))
          if key in vq),
        f"| text -> image ({t2i.get('ms_per_image', float('nan')):.0f} ms per image) | {percent(t2i['digit'])} | {percent(t2i['foreground'])} | {percent(t2i['background'])} | "
        f"{percent(t2i['all'])} |",
        f"| image -> text, exact caption ({i2t.get('ms_per_image', float('nan')):.0f} ms per image) | {percent(i2t['digit'])} | {percent(i2t['foreground'])} | "
        f"{percent(i2t['background'])} | {percent(i2t['exact'])} |", "",
        *([f"CLIP score (cosine of image and caption by the retriever, a CLIP trained here): text -> image "
           f"{metrics['clip_score']['text_to_image']:.3f}, real {split} images {metrics['clip_score']['real']:.3f} "
           f"(ceiling), unconditional " + (f"{metrics['clip_score']['unconditional']:.3f}"
                                           if metrics['clip_score']['unconditional'] is not None else "n/a"), ""]
          if metrics.get("clip_score") else []),
        "## Unconditional samples", "",
        f"- image agrees with its own caption: {percent(unc['agreement'])} (caption drawn first, then its image as "
        f"a text -> image request); plain ancestral samples, order picked by the model: "
        f"{percent(metrics['unconditional_ancestral']['agreement'])}",
        f"- captions in the six-word template: {percent(unc['fits_template'])}; with two palette colors "
        f"(well-formed): {percent(unc['well_formed'])}; distinct captions: {percent(unc['distinct_captions'])}",
        f"- coverage: {unc['digits_covered']}/10 digits, {unc['foreground_colors_covered']}/31 foreground and "
        f"{unc['background_colors_covered']}/31 background colors", "",
        "## Frechet distance in the judge's feature space (lower is closer)", "",
        f"- text -> image samples vs real {split}: {fd['generated_vs_real']:.2f}",
        f"- unconditional samples vs real {split}: {fd['unconditional_vs_real']:.2f}",
        f"- reference, real train vs real {split}: {fd['real_train_vs_real_test']:.2f}; "
        f"two halves of real {split}: {fd['real_test_halves']:.2f}", "",
        "## What a person sees: speckle, specks and shape", "",
        "Stray pixels are neither the expected foreground nor background color (the prompt's or source's colors; "
        "for unconditional samples the image's own two most common); specks are dots of the digit's own color, "
        "pieces of at most 4 pixels apart from its strokes. Shape realism is improved precision / recall "
        f"(k = {metrics['real_test_looks']['shape']['k']}) of digit shapes against real training shapes of the "
        "digit asked for.", "",
        "| images | no stray pixel | stray pixels per image | 90th percentile | no speck | shape precision | "
        "shape recall |", "|---|---|---|---|---|---|---|",
        *[looks_row(name, looks) for name, looks in (
            (f"real {split} images (ceiling)", metrics["real_test_looks"]), ("VQ-VAE reconstructions", vq["looks"]),
            ("text -> image", t2i["looks"]), ("unconditional", unc["looks"]))], "",
        f"## Image tokenizer ({tokenizer_name(metrics)}, whole {split} split)", "",
        f"- pixel-exact reconstruction: {percent(vq['pixel_exact'])}",
        f"- codes in use: {percent(vq['code_usage'])}; code perplexity {vq['code_perplexity']:.1f}", "",
    ]
    if "compositional" in metrics:
        comp = metrics["compositional"]
        lines += ["## Compositional generalisation (held-out color pairs)", "",
                  f"{comp['held_out_pairs']} (foreground, background) pairs never seen in training.", "",
                  "| pairs | examples | text -> image all | image -> text exact |", "|---|---|---|---|"]
        for name in ("seen", "unseen"):
            if name in comp:
                row = comp[name]
                lines.append(f"| {name} | {row['examples']} | {percent(row['text_to_image']['all'])} | "
                             f"{percent(row['image_to_text']['exact'])} |")
        lines.append("")
    if "documents" in metrics:
        lines += documents_section(metrics["documents"]) + ["![documents](documents.png)", ""]
    lines += ["## Samples", ""] + [f"![{name}]({name})" for name in grids] + [""]
    with atomic_path(path) as temp:
        temp.write_text("\n".join(lines))
