"""A shape decoder for the next-scale model tuned on the codes the model itself would draw: a study, not a setting.

Within a scale the next-scale sampler draws every token blind to its neighbours, so a drawn code map is noisier than
any the tokenizer's decoder saw in training (the codes of real digits). This script keeps the transformer, the
encoder and the quantizer as they are (so the codes, the transformer's inputs and the captions read do not change)
and tunes only the decoder: on `--images` training digits, each shape's code map has its scales from a random one
onward replaced by codes drawn from the transformer under teacher forcing (the caption, the true coarser scales,
guidance 1.5, temperature 1), and the decoder learns to paint the real shape from them. It writes a checkpoint
directory (the given one with the tuned decoder) that `scripts/fidelity_table.py --checkpoint` reads; since the
transformer is unchanged, a seed draws the same tokens with either decoder, so the two read as a paired comparison.

    python scripts/denoising_decoder.py --out runs/var-denoised --first-scale 0
    python scripts/fidelity_table.py --checkpoint runs/var-denoised --samples 1000 --grid '{"guidance": [1.5]}' --seed 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tinychameleon.batching import batch_slices
from tinychameleon.checkpoint import VQVAE_FILE
from tinychameleon.data.colored import load_splits
from tinychameleon.io_utils import atomic_path
from tinychameleon.nextscale import objective
from tinychameleon.nextscale.model import CAPTION, COLORS
from tinychameleon.pipeline import Pipeline
from tinychameleon.sampling import guided_logits
from tinychameleon.training.run import caption_word_ids, encode_images


@torch.no_grad()
def drawn_codes(pipe: Pipeline, words: torch.Tensor, image_ids: torch.Tensor, guidance: float,
                generator: torch.Generator, batch_size: int = 500) -> torch.Tensor:
    """(N, 6) words, (N, 106) true image ids -> (N, 106): every shape code drawn from the teacher-forced guided
    distribution (colors kept), tokenizer order."""
    model, vocab, coder = pipe.model.eval(), pipe.vocab, pipe.image_tokenizer.shape
    shape_ids = pipe.image_tokenizer.color_offset                  # ids below it are shape codes
    order, drawn = model.layout.order, image_ids.clone()
    for rows in batch_slices(len(words), batch_size):
        latents = model.layout.drawing_inputs(coder.quantizer, image_ids[rows, COLORS:])
        everyone_masked = torch.ones(len(latents), dtype=torch.bool)      # guidance's unconditional stream
        conditional = model.drawing_logits(objective.captions(vocab, words[rows]), latents)[:, CAPTION:]
        unconditional = model.drawing_logits(objective.captions(vocab, words[rows], everyone_masked), latents)
        logits = guided_logits(conditional, unconditional[:, CAPTION:], guidance)[..., :shape_ids]  # (B, 106, K)
        B, L, K = logits.shape
        draws = torch.multinomial(F.softmax(logits.reshape(B * L, K), -1), 1, generator=generator).view(B, L)
        block = drawn[rows]                                           # a view: writing it writes `drawn`
        block[:, order] = torch.where(order[None] >= COLORS, draws, block[:, order])   # drawing -> tokenizer order
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="var")
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=20000, help="training digits the decoder is tuned on")
    parser.add_argument("--first-scale", type=int, default=0,
                        help="the coarsest scale that may be replaced by drawn codes (0: any; 3: the 4x4 and finer)")
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.time()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    tokenizer = pipe.image_tokenizer
    coder = tokenizer.shape
    splits = load_splits(0)
    train = splits.train.subset(slice(0, args.images))
    images = torch.from_numpy(train.images)
    image_ids = encode_images(tokenizer, train.images, torch.device("cpu")).long()                     # (N, 106)
    shapes = torch.cat([tokenizer.split(images[rows])[2] for rows in batch_slices(len(images), 2000)])  # (N, 28, 28)
    drawn = drawn_codes(pipe, caption_word_ids(train), image_ids, args.guidance, torch.Generator().manual_seed(1))
    changed = float((drawn[:, COLORS:] != image_ids[:, COLORS:]).float().mean())
    print(json.dumps({"drawn_codes_seconds": round(time.time() - started, 1), "codes_changed": round(changed, 3)}))

    sizes = torch.tensor([side * side for side in coder.quantizer.scales])
    scale_of = torch.repeat_interleave(torch.arange(len(sizes)), sizes)          # (104,) scale of each shape code
    validation = splits.validation.subset(slice(0, 2000))
    validation_images = torch.from_numpy(validation.images)
    validation_codes = encode_images(tokenizer, validation.images, torch.device("cpu")).long()[:, COLORS:]
    validation_shapes = tokenizer.split(validation_images)[2]

    def reconstruction() -> dict:
        """The tuned decoder on real digits' own codes: pixels right, and shapes right to the pixel."""
        with torch.no_grad():
            right = coder.decode_levels(validation_codes)[..., 0] == validation_shapes
        return {"pixels": round(float(right.float().mean()), 4), "exact": round(float(right.flatten(1).all(1).float().mean()), 4)}

    before = reconstruction()
    coder.requires_grad_(False)
    decoder = [*coder.decoder_grid.parameters(), *coder.decoder_pixels.parameters()]
    for parameter in decoder:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(decoder, lr=args.lr, weight_decay=0.0)
    coder.train()
    for epoch in range(args.epochs):
        total = 0.0
        shuffled = torch.randperm(args.images)
        for piece in batch_slices(args.images, 128):
            rows = shuffled[piece]
            # Scales from a random first one on are drawn; first = the number of scales keeps the real codes.
            first = torch.randint(args.first_scale, len(sizes) + 1, (len(rows),))
            codes = torch.where(scale_of[None] >= first[:, None], drawn[rows, COLORS:], image_ids[rows, COLORS:])
            with torch.no_grad():
                latents = coder.quantizer.get_output_from_indices(codes, 7)
            logits = coder.decode_latent(latents)                                       # (B, 1, 2, 28, 28)
            loss = F.cross_entropy(logits.transpose(1, 2), shapes[rows].long()[:, None])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        print(json.dumps({"epoch": epoch + 1, "loss": round(total / args.images, 4),
                          "seconds": round(time.time() - started, 1)}))
    coder.eval()
    print(json.dumps({"real_codes_reconstructed_before": before, "after": reconstruction()}))
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(pipe.source, out)
    with atomic_path(out / VQVAE_FILE) as path:
        save_file({name: value.contiguous() for name, value in tokenizer.state_dict().items()}, str(path))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
