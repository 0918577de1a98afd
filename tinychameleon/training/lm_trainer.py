"""Stage 2: train the transformer on text+image sequences (both orders, 50/50 per batch; 58 tokens
for a 49-token image tokenizer).

Data lives on the device as token tensors (word ids and VQ codes), so a step does no host
work. Under torchrun every rank draws the same global permutation and takes its slice of
each global batch; DistributedDataParallel averages the gradients, so a step equals the
single-process step at the same global batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..batching import batch_slices
from ..config import RunConfig
from ..model import Transformer, hidden_states, next_token_log_probs
from ..nextscale import objective as next_scale
from ..nextscale.model import NextScaleTransformer
from ..sequences import IMAGE_FIRST, build_sequences, image_first_rows, random_spans, target_kinds
from ..tokenizers.vocab import Vocab
from ..checkpoint import MODEL_FILE, build_transformer, load_grown, load_transformer
from .state import elapsed_before, resume_from, save_epoch
from ..device import Distributed, autocast, precision_notice, trains_in_bf16
from .logs import plot_curve
from .optimizers import build_optimizer
from .schedule import warmup_cosine

STATE_FILE = "train_state.pt"


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int, world: Distributed = Distributed(),
                  reading_share: float = 0.5):
    """Yield (example indices, orders) for this rank; identical global draws on every rank."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    permutation = torch.randperm(num_examples, generator=generator)
    per_rank = batch_size // world.world_size
    reading = int(batch_size * reading_share)       # exact for 0.5: batch_size // 2, as every release trained
    for start in range(0, num_examples - batch_size + 1, batch_size):
        # Exactly `reading` rows of every global batch are image-first, the rest text-first.
        orders = (torch.randperm(batch_size, generator=generator) < reading).long()
        rows = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
        yield permutation[start:start + batch_size][rows], orders[rows]


def mixed_batches(pair_batches, pair_steps: int, document_batches: list, generator: torch.Generator,
                  world: Distributed = Distributed()):
    """Yield ("pairs", (rows, orders)) and ("documents", (ids, weights)) batches in a seeded random order
    (the same on every rank); each rank keeps its slice of a document batch's rows."""
    kinds = torch.cat([torch.zeros(pair_steps, dtype=torch.bool), torch.ones(len(document_batches), dtype=torch.bool)])
    kinds = kinds[torch.randperm(len(kinds), generator=generator)]
    pairs, documents = iter(pair_batches), iter(document_batches)
    for is_document in kinds.tolist():
        if not is_document:
            yield "pairs", next(pairs)
            continue
        batch = next(documents)                                 # (ids, weights) or (ids, weights, digit labels)
        per_rank = len(batch[0]) // world.world_size
        rows = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
        yield "documents", tuple(tensor[rows] for tensor in batch)


def document_metrics(model: Transformer, ids: torch.Tensor, weights: torch.Tensor, digits: torch.Tensor | None = None,
                     batch_size: int = 256) -> dict:
    """validation_document_nll: mean NLL per token of documents (weights (B, T-1) mark the real next tokens); with
    `digits` (B, T) (the model has a digit head): validation_digit_accuracy, how often the head reads each image's
    digit right at its <eoi>."""
    was_training = model.training
    model.eval()
    total, count, right = 0.0, 0.0, 0
    with torch.no_grad(), hidden_states(model, model.config.digit_layer) as final:
        for rows in batch_slices(len(ids), batch_size):
            with autocast(ids.device):
                losses = -next_token_log_probs(model, ids[rows]).double()
            total += float((losses * weights[rows]).sum())
            count += float(weights[rows].sum())
            if digits is not None:
                labels = digits[rows, :-1]
                read = model.digit_logits(final["hidden"][labels >= 0].float()).argmax(-1)
                right += int((read == labels[labels >= 0]).sum())
    model.train(was_training)
    metrics = {"validation_document_nll": total / count}
    if digits is not None:
        metrics["validation_digit_accuracy"] = right / max(int((digits[:, :-1] >= 0).sum()), 1)
    return metrics


def documents_summary(metrics: dict) -> str:
    """The epoch line's part for documents ('' without them)."""
    if "validation_document_nll" not in metrics:
        return ""
    digits = metrics.get("validation_digit_accuracy")
    return (f" | documents {metrics['validation_document_nll']:.4f}"
            + ("" if digits is None else f" (digits read {digits:.1%})"))


def sequence_loss(model, sequences: torch.Tensor, weights: torch.Tensor | None = None,
                  digits: torch.Tensor | None = None, digit_weight: float = 0.0) -> torch.Tensor:
    """Mean next-token NLL over the predicted positions (nats per token); `weights` (B, T-1) leaves some out.
    With `digits` (B, T) (documents.batches.digit_labels; the model has a digit head): plus digit_weight times
    the digit head's mean cross-entropy at the labelled positions."""
    if digits is None:
        log_probs, digit_loss = next_token_log_probs(model, sequences), 0.0
    else:
        log_probs, digit_loss = model(sequences[:, :-1], targets=sequences[:, 1:], digits=digits[:, :-1])
    nll = -log_probs.mean() if weights is None else -(log_probs * weights).sum() / weights.sum()
    return nll + digit_weight * digit_loss


def loss_weights(vocab: Vocab, sequences: torch.Tensor, caption_weight: float = 1.0,
                 reading_only: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T-1) loss weights of a batch.

    The words of image-first rows (the model reading the image) count `caption_weight` times; rows
    marked in `reading_only` (B,) train the reading alone, their image targets count 0 (a shifted
    copy of a digit: read, never drawn); `weights` (from the CM3 spans) are multiplied in.
    """
    is_text, is_image = target_kinds(vocab, sequences[:, 1:])
    result = torch.where(is_text & image_first_rows(vocab, sequences)[:, None], caption_weight, 1.0)
    if reading_only is not None:
        result = torch.where(is_image & reading_only.to(sequences.device)[:, None], 0.0, result)
    return result if weights is None else result * weights


@torch.no_grad()
def split_nll(model: Transformer, vocab: Vocab, words: torch.Tensor, codes: torch.Tensor,
              split: str = "validation", batch_size: int = 1000) -> dict:
    """Mean NLL on a whole split in both orders (fp32): overall, text / image positions, per order.

    Keys name the split: validation_nll, validation_text_nll, ... (test_nll, ... for the final report).
    Per-token NLL depends on how many tokens an image takes; {split}_nats_per_pair, -log p(caption,
    image) from the text-first reading, and {split}_nats_per_image, -log p(image | caption), compare
    models across image tokenizers. {split}_nats_per_caption, -log p(caption | image) from the
    image-first reading, is how well the model reads images (image -> text).
    """
    was_training = model.training
    model.eval()
    device = codes.device
    sums = {key: torch.zeros((), dtype=torch.float64, device=device)
            for key in ("all", "text", "image", "text_first", "image_first")}
    counts = {key: 0 for key in sums}
    image_given_caption = torch.zeros((), dtype=torch.float64, device=device)
    caption_given_image = torch.zeros((), dtype=torch.float64, device=device)
    for order, name in ((0, "text_first"), (1, "image_first")):
        for rows in batch_slices(len(codes), batch_size):
            orders = torch.full((len(codes[rows]),), order, dtype=torch.long, device=device)
            sequences = build_sequences(vocab, words[rows], codes[rows], orders)
            with autocast(device):
                losses = -next_token_log_probs(model, sequences).double()
            is_text, is_image = target_kinds(vocab, sequences[:, 1:])
            for key, mask in (("all", None), (name, None), ("text", is_text), ("image", is_image)):
                sums[key] += losses.sum() if mask is None else losses[mask].sum()
                counts[key] += losses.numel() if mask is None else int(mask.sum())
            if name == "text_first":
                image_given_caption += losses[is_image].sum()
            else:
                caption_given_image += losses[is_text].sum()
    model.train(was_training)
    metrics = {(f"{split}_nll" if key == "all" else f"{split}_{key}_nll"): (sums[key] / counts[key]).item()
               for key in sums}
    metrics[f"{split}_nats_per_pair"] = (sums["text_first"] / len(codes)).item()
    metrics[f"{split}_nats_per_image"] = (image_given_caption / len(codes)).item()
    metrics[f"{split}_nats_per_caption"] = (caption_given_image / len(codes)).item()
    return metrics


def validation_history(epoch_log: list[dict]) -> list[float]:
    """Validation NLL after each trained epoch (epoch 0, before training, is not a candidate)."""
    return [row["validation_nll"] for row in epoch_log if row["epoch"] > 0 and "validation_nll" in row]


def should_stop(settings, epoch_log: list[dict]) -> str:
    """Why training stops after the last logged epoch ('' = go on): validation NLL at the target,
    or `patience` epochs without a better one."""
    history = validation_history(epoch_log)
    if not history:
        return ""
    if settings.stop_at_nll and history[-1] <= settings.stop_at_nll:
        return f"validation NLL {history[-1]:.4f} reached the target {settings.stop_at_nll}"
    best_epoch = min(range(len(history)), key=history.__getitem__)
    if settings.patience and len(history) - 1 - best_epoch >= settings.patience:
        return f"no better validation NLL for {settings.patience} epochs (best {history[best_epoch]:.4f})"
    return ""


def is_best(epoch_log: list[dict]) -> bool:
    """Whether the last logged epoch has the lowest validation NLL so far (its weights are the ones kept)."""
    history = validation_history(epoch_log)
    return bool(history) and history[-1] <= min(history)


def plans_start_as_digit_words(model: Transformer, vocab: Vocab, loaded_rows: int) -> None:
    """Plan tokens new to a fine-tune (train.plan_tokens, ids past the `loaded_rows` it started from) start with
    their digit words' embedding and output rows: <plan two> begins as "two" does, not as noise."""
    if not vocab.plan_tokens or vocab.first_plan < loaded_rows:
        return
    digit_words = list(range(vocab.digit_words, vocab.digit_words + len(vocab.plan_ids)))
    with torch.no_grad():
        for table in (model.token_embedding.weight, model.head.weight):
            table[vocab.plan_ids] = table[digit_words]


def train_transformer(config: RunConfig, train_words: torch.Tensor, train_codes: torch.Tensor,
                      validation_words: torch.Tensor, validation_codes: torch.Tensor, run_dir: Path,
                      device: torch.device, resume: bool = False, progress: bool = True, world: Distributed = Distributed(),
                      compile_model: bool = False, shifted_codes: torch.Tensor | None = None,
                      documents: Callable[[int], list] | None = None,
                      validation_documents: tuple[torch.Tensor, ...] | None = None,
                      image_tokenizer=None) -> Transformer:
    """Train (or resume) the transformer; `shifted_codes` (D, N, L), tokens of the training digits moved by
    a pixel or two, are read by a train.shifted_reading share of the image-first rows. `documents(epoch)`
    gives that epoch's document batches ((B, T) ids, (B, T-1) loss weights; this rank's rows), trained
    beside the pairs; `validation_documents` (ids, weights[, digit labels]) are scored after every epoch. A next-scale
    run (vq.kind "scales") trains the same way on its own objective (nextscale/objective.py), which reads
    the frozen `image_tokenizer`'s multi-scale codes; model.patch_pixels reads its `patches` patterns."""
    settings = config.train
    vocab = Vocab.for_config(config)
    torch.manual_seed(settings.seed)
    model = build_transformer(config).to(device)
    coder = image_tokenizer.shape.to(device).eval() if isinstance(model, NextScaleTransformer) else None
    if config.model.patch_pixels:   # the tokenizer's patterns, before any weights are loaded over them
        if image_tokenizer is None:
            raise ValueError("model.patch_pixels reads the run's `patches` tokenizer: pass image_tokenizer")
        model.set_patch_pixels(image_tokenizer.shape.patterns)

    def validation_nll() -> dict:
        if coder is not None:
            return next_scale.split_nll(model, coder, vocab, validation_words, validation_codes)
        return split_nll(model, vocab, validation_words, validation_codes)

    optimizer = build_optimizer(model, settings, fused=device.type == "cuda",
                                bf16=trains_in_bf16(device, settings.precision))
    if settings.batch_size % world.world_size:
        raise ValueError(f"batch size {settings.batch_size} must divide evenly over {world.world_size} processes")
    if train_codes.dim() == 2:  # one coloring of the training set: (N, L) -> (1, N, L)
        train_words, train_codes = train_words[None], train_codes[None]
    if shifted_codes is not None and shifted_codes.dim() == 2:
        shifted_codes = shifted_codes[None]
    num_examples = train_codes.shape[1]
    document_steps = settings.documents // settings.batch_size if documents is not None else 0
    # train.pairs: an epoch reads only the first batches of its fresh permutation of the digits (epoch_batches)
    pairs_per_epoch = min(settings.pairs, num_examples) if settings.pairs else num_examples
    steps_per_epoch = pairs_per_epoch // settings.batch_size + document_steps
    total_steps = settings.epochs * steps_per_epoch
    start_epoch, step_log, epoch_log = resume_from(run_dir / STATE_FILE, model, optimizer) if resume else (0, [], [])
    if start_epoch and world.is_main:
        print(f"transformer: resuming after epoch {start_epoch}")
    elif settings.init_from:
        state = load_transformer(settings.init_from).state_dict()
        load_grown(model, state)
        plans_start_as_digit_words(model, vocab, len(state["token_embedding.weight"]))
        if world.is_main:
            print(f"transformer: starting from the weights of {settings.init_from}")
    notice = precision_notice(device, settings.precision)
    if notice and world.is_main:
        print(f"transformer: {notice}", flush=True)
    if coder is not None and (world.enabled or compile_model):
        raise ValueError("a next-scale run trains in one process, without --compile")
    train_model = model
    if world.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_model:
        train_model = torch.compile(train_model)
    train_words, train_codes = train_words.to(device), train_codes.to(device)
    shifted_codes = None if shifted_codes is None else shifted_codes.to(device)
    validation_words, validation_codes = validation_words.to(device), validation_codes.to(device)
    if not epoch_log and world.is_main:
        epoch_log.append({"epoch": 0, "step": 0, **validation_nll()})
        print(f"transformer epoch 0: validation nll {epoch_log[0]['validation_nll']:.4f}", flush=True)
    started = time.time() - elapsed_before(epoch_log)   # a resumed run's clock goes on from its last save
    for epoch in range(start_epoch, settings.epochs):
        if should_stop(settings, epoch_log):
            break
        span_generator = torch.Generator().manual_seed(settings.seed * 7919 + epoch)
        shift_generator = torch.Generator().manual_seed(settings.seed * 7927 + epoch)
        model.train()
        # Epoch e trains on color draw e % D (same digits, fresh color pairs when D > 1).
        epoch_words, epoch_codes = train_words[epoch % len(train_codes)], train_codes[epoch % len(train_codes)]
        epoch_shifted = None if shifted_codes is None else shifted_codes[epoch % len(shifted_codes)]

        def pair_batch(rows, orders):
            """Token ids and loss weights (None: plain) of a batch of pairs, in the orders drawn for it."""
            codes, reading_only = epoch_codes[rows], None
            if shifted_codes is not None:  # some image-first rows read a shifted copy of their digit instead
                reading_only = (orders == IMAGE_FIRST) & (torch.rand(len(rows), generator=shift_generator)
                                                          < settings.shifted_reading)
                codes = torch.where(reading_only[:, None].to(device), epoch_shifted[rows], codes)
            rows = rows.to(device)
            sequences = build_sequences(vocab, epoch_words[rows], codes.to(device), orders.to(device))
            weights = None
            if settings.infill_rate:  # CM3: some rows get a span moved to the end (same draws on every rank)
                sequences, weights = random_spans(vocab, sequences, settings.infill_rate, span_generator)
            if settings.caption_loss_weight != 1.0 or reading_only is not None:
                weights = loss_weights(vocab, sequences, settings.caption_loss_weight, reading_only, weights)
            return sequences, weights

        document_batches = documents(epoch)[:document_steps] if documents is not None else []
        batches = mixed_batches(epoch_batches(num_examples, settings.batch_size, settings.seed, epoch, world,
                                              settings.reading_share),
                                steps_per_epoch - len(document_batches), document_batches,
                                torch.Generator().manual_seed(settings.seed * 7933 + epoch), world)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"transformer epoch {epoch + 1}/{settings.epochs}",
                   disable=not (progress and world.is_main), leave=False)
        epoch_losses = []
        for batch_index, (kind, batch) in enumerate(bar):
            step = epoch * steps_per_epoch + batch_index
            lr = settings.lr * warmup_cosine(step, total_steps, settings.warmup_steps, settings.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)   # older resume states lack the scale
            with autocast(device, precision=settings.precision):
                if coder is not None:   # next-scale: its own two orders, built from the pairs' tokens
                    rows, orders = batch
                    loss = next_scale.pair_loss(model, coder, vocab, epoch_words[rows.to(device)],
                                                epoch_codes[rows.to(device)], orders.to(device) == IMAGE_FIRST,
                                                settings.text_dropout, settings.caption_loss_weight, span_generator)
                else:
                    sequences, weights, *labels = (pair_batch(*batch) if kind == "pairs"
                                                   else (t.to(device) for t in batch))
                    digits = labels[0] if labels else None
                    if config.model.digit_head and digits is None:  # pairs: no label, but DDP wants the head used
                        digits = torch.full_like(sequences, -1)
                    loss = sequence_loss(train_model, sequences, weights, digits, settings.digit_loss_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            epoch_losses.append(loss.detach())
            if batch_index % 50 == 0:
                value = loss.item()
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        losses = torch.stack(epoch_losses).cpu().tolist()
        step_log.extend({"step": epoch * steps_per_epoch + i, "epoch": epoch, "loss": value}
                        for i, value in enumerate(losses))
        if world.is_main:
            metrics = validation_nll()
            if validation_documents is not None:
                metrics.update(document_metrics(model, *(t.to(device) for t in validation_documents)))
            epoch_log.append({"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                              "train_loss": sum(losses) / len(losses), **metrics, "elapsed_s": time.time() - started})
            print(f"transformer epoch {epoch + 1}/{settings.epochs}: train {epoch_log[-1]['train_loss']:.4f}"
                  f" | validation {metrics['validation_nll']:.4f} (text {metrics['validation_text_nll']:.4f},"
                  f" image {metrics['validation_image_nll']:.4f}; {metrics['validation_nats_per_pair']:.1f} nats per pair)"
                  + documents_summary(metrics) + f" | {time.time() - started:.0f}s", flush=True)
            # The weights file keeps the best validation epoch; the resume state always holds the latest.
            save_epoch(run_dir, "transformer", model, optimizer, MODEL_FILE, STATE_FILE, step_log, epoch_log,
                       keep_weights=is_best(epoch_log))
            plot_curve(run_dir, step_log, epoch_log)
        reason = should_stop(settings, epoch_log) if world.is_main else ""
        if world.agree(bool(reason), device):  # every rank stops together under torchrun
            if world.is_main:
                print(f"transformer: stopping early after epoch {epoch + 1}: {reason}", flush=True)
            break
    return model.eval()
