"""The next-scale transformer (VAR, Tian et al. 2024) on the same blocks as the raster model (model.py).

Two orders, like the raster model's, over a "scales" image tokenizer (tokenizers/scales.py):

  drawing : <bos> <end of image> w1..w6 <end of text> | fg bg s1 | s2 (4) | s3 (9) | s4 (16) | s5 (25) | s7 (49)
  reading : <bos> <end of text> fg bg f1..f49 <end of image> w1..w6

Drawing: the caption is read causally; then each *block* of image positions predicts its own tokens
at once. Block 0's inputs are three learnt queries (the two colors and the 1x1 code); block k's inputs
are the sum of the coarser scales' codes, area-downsampled to scale k's grid (`NextScaleLayout.drawing_inputs`,
with the tokenizer's quantizer), so a block only carries what coarser scales said and may see itself: a token
sees the caption, every coarser scale and its own block's inputs - never a token of its own scale. Six forward
passes draw an image; seven with `checkerboard` (ModelConfig), whose finest scale is two blocks, the second's
inputs also carrying the first's codes (NextScaleLayout). Reading: the two color tokens and the finest latent
(f1..f49), then the words causally, so the same model writes captions (image -> text) and scores them (reranking).

Classifier-free guidance reads the caption replaced by <mask> tokens (dropped in training).
`forward(ids)` on plain token ids reads captions alone (prompts with blanks use the raster sampler).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..model import Block, KVCache, causal_mask, init_weights
from ..tokenizers.vocab import TEXT_LENGTH

CAPTION = 1 + 1 + TEXT_LENGTH + 1   # <bos> <marker> w1..w6 <end of text>
COLORS = 2


class NextScaleLayout:
    """Where everything sits in the two orders, from the scales alone.

    checkerboard=True draws the finest scale in two blocks, the cells of one checkerboard colour, then the other's
    (the checkerboard context of He et al. 2021): every pair of neighbouring finest codes then has one drawn knowing
    the other, where otherwise all 49 are drawn independently given the coarser scales. The drawing order holds the
    image's tokens in block order; `order` maps it to the tokenizer's (raster within each scale)."""

    def __init__(self, scales: tuple[int, ...], checkerboard: bool = False) -> None:
        self.scales, self.checkerboard = tuple(scales), checkerboard
        finest = scales[-1]
        cells = torch.arange(finest * finest)
        parity = (cells // finest + cells % finest) % 2
        # Each block's scale and its cells of that scale (raster order); block 0 also holds the two colors.
        self.block_cells = [torch.arange(side * side) for side in scales]
        self.block_scale = list(range(len(scales)))
        if checkerboard:
            self.block_cells[-1:] = [cells[parity == 0], cells[parity == 1]]
            self.block_scale.append(len(scales) - 1)
        self.block_sizes = [COLORS + len(self.block_cells[0])] + [len(cells) for cells in self.block_cells[1:]]
        # Once block k is drawn, the cells of its scale drawn so far, where block k + 1 continues that scale (what
        # block_input lends it); None where block k finishes its scale.
        self.drawn_cells = []
        for block, scale in enumerate(self.block_scale[:-1]):
            drawn = None
            if self.block_scale[block + 1] == scale:
                drawn = torch.zeros(scales[scale] ** 2, dtype=torch.bool)
                drawn[torch.cat([self.block_cells[k] for k in range(block + 1) if self.block_scale[k] == scale])] = True
            self.drawn_cells.append(drawn)
        self.image_length = sum(self.block_sizes)                                   # 106
        self.drawing_length = CAPTION + self.image_length                           # 115
        self.finest = finest * finest                                               # 49
        self.reading_length = 2 + COLORS + self.finest + 1 + TEXT_LENGTH             # 60
        scale_starts = [COLORS + sum(side * side for side in scales[:k]) for k in range(len(scales))]
        self.order = torch.cat([torch.arange(COLORS)] + [scale_starts[scale] + cells for scale, cells in
                                                          zip(self.block_scale, self.block_cells)])  # (106,)
        # Each block's image positions, tokenizer order: a slice where they run in order (indexing by a slice
        # copies nothing, and a request indexes six blocks three times each).
        self.block_positions = []
        for start, size in zip(self.block_starts(), self.block_sizes):
            positions = self.order[start - CAPTION:start - CAPTION + size]
            in_order = bool((positions == torch.arange(positions[0], positions[0] + size)).all())
            self.block_positions.append(slice(int(positions[0]), int(positions[0]) + size) if in_order else positions)

    def block_starts(self) -> list[int]:
        """Position of each block's first token in the drawing order."""
        return [CAPTION + sum(self.block_sizes[:k]) for k in range(len(self.block_sizes))]

    def drawing_mask(self) -> torch.Tensor:
        """(T, T) booleans, True where query i sees key j: causal over the caption, block-causal over the image."""
        T = self.drawing_length
        group = torch.arange(T)                                    # caption tokens: a group each (causal)
        for index, (start, size) in enumerate(zip(self.block_starts(), self.block_sizes)):
            group[start:start + size] = CAPTION + index           # one group per block
        return group[None, :] <= group[:, None]

    def block_input(self, quantizer, f_hat: torch.Tensor, codes: torch.Tensor, block: int) -> tuple:
        """The inputs of drawing block `block` + 1 once `block` is drawn: f_hat (B, C, 7, 7), the sum of the scales
        finished before `block`'s, and codes (B, s*s) of `block`'s scale so far -> ((B, n, code_dim) inputs, the
        new f_hat). A finished scale joins f_hat; a scale still being drawn lends its drawn cells (`upsampled`'s
        keep) to the next block of the same scale."""
        scale, drawn, side = self.block_scale[block], self.drawn_cells[block], self.scales[-1]
        if drawn is None:
            f_hat = f_hat + quantizer.upsampled(scale, codes, side)
            partial = f_hat
        else:
            partial = f_hat + quantizer.upsampled(scale, codes, side, keep=drawn.to(codes.device))
        inputs = quantizer.input_at(partial, self.block_scale[block + 1])           # (B, s*s, code_dim)
        cells = self.block_cells[block + 1]
        if len(cells) < inputs.shape[1]:                                             # a part of its scale
            inputs = inputs[:, cells.to(inputs.device)]
        return inputs, f_hat

    def drawing_inputs(self, quantizer, shape_codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, 104) shape codes, tokenizer order -> (B, 103, code_dim) the inputs of every block
        after block 0, in the drawing order: `block_input` block by block, as the sampler builds them."""
        scales, inputs, f_hat = quantizer.split(shape_codes), [], 0
        for block in range(len(self.block_sizes) - 1):
            block_inputs, f_hat = self.block_input(quantizer, f_hat, scales[self.block_scale[block]], block)
            inputs.append(block_inputs)
        return torch.cat(inputs, dim=1)


class NextScaleTransformer(nn.Module):
    """Token, position, scale and latent embeddings into `model.Block`s; the same head over the joint vocabulary."""

    def __init__(self, config: ModelConfig, scales: tuple[int, ...], code_dim: int) -> None:
        super().__init__()
        self.config, self.layout = config, NextScaleLayout(scales, config.checkerboard)
        C = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, C)
        self.position_embedding = nn.Embedding(config.block_size, C)
        self.queries = nn.Parameter(torch.randn(self.layout.block_sizes[0], C) * 0.02)   # block 0's inputs
        self.latent_projection = nn.Linear(code_dim, C)                              # a scale's input vectors
        self.scale_embedding = nn.Embedding(len(self.layout.block_sizes) + 1, C)    # + 1: the latent read
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        init_weights(self, config.n_layer)
        scale_of = torch.cat([torch.full((size,), k) for k, size in enumerate(self.layout.block_sizes)])
        self.register_buffer("scale_of", scale_of, persistent=False)                # (106,) block of each slot
        self.register_buffer("mask", self.layout.drawing_mask(), persistent=False)
        # The same mask as an additive bias (0 where a query sees a key, -inf elsewhere), what the sampler passes:
        # attention would otherwise turn the booleans into this in every layer of every pass (the same numbers).
        bias = torch.zeros(self.mask.shape).masked_fill(~self.mask, float("-inf"))
        self.register_buffer("attention_bias", bias, persistent=False)

    # -- embeddings ------------------------------------------------------------------------------
    def embed_tokens(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T) ids at positions start.. -> (B, T, C)."""
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        return self.token_embedding(ids) + self.position_embedding(positions)

    def embed_blocks(self, first: int, count: int, latents: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Inputs of drawing blocks first..first+count-1: (B, n, C). latents (B, n - queries, code_dim): the
        inputs of every block after block 0 among them (None when only block 0 is asked)."""
        starts = self.layout.block_starts()
        stop = starts[first + count - 1] + self.layout.block_sizes[first + count - 1]
        slots = torch.arange(starts[first], stop, device=self.queries.device)        # sequence positions
        parts = []
        if first == 0:
            parts.append(self.queries.expand(batch, -1, -1))
        if latents is not None:
            parts.append(self.latent_projection(latents))
        x = torch.cat(parts, dim=1)
        return x + self.position_embedding(slots) + self.scale_embedding(self.scale_of[slots - CAPTION])

    def embed_reading(self, head: torch.Tensor, latents: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """head (B, 4) = <bos> <end of text> fg bg, latents (B, 49, code_dim), words (B, W) = <end of image> w..
        -> (B, 4 + 49 + W, C)."""
        finest = latents.shape[1]
        image = (self.latent_projection(latents) + self.scale_embedding.weight[-1]
                 + self.position_embedding(torch.arange(4, 4 + finest, device=latents.device)))
        return torch.cat([self.embed_tokens(head), image, self.embed_tokens(words, 4 + finest)], dim=1)

    # -- the network -----------------------------------------------------------------------------
    def run(self, x: torch.Tensor, mask: torch.Tensor | None, kv_cache: KVCache | None = None, last: int = 0
            ) -> torch.Tensor:
        """(B, T, C) inputs, mask (T, S) booleans or their additive bias (`attention_bias`; None: causal)
        -> (B, T, vocab) logits; last > 0: only the last `last` positions', (B, last, vocab)."""
        if mask is None:
            past = 0 if kv_cache is None else kv_cache.position
            mask = causal_mask(x.shape[1], past, x.device)
        for layer, block in enumerate(self.blocks):
            x = block(x, kv_cache, layer, mask)
        if kv_cache is not None:
            kv_cache.advance(x.shape[1])
        return self.head(self.norm(x[:, -last:] if last else x))

    def forward(self, ids: torch.Tensor, kv_cache: KVCache | None = None, last: int = 0) -> torch.Tensor:
        """Plain token ids, causally (the caption of the drawing order): the raster sampler's interface (`last`
        included), so prompts with blanks are filled by the same code for either model."""
        start = 0 if kv_cache is None else kv_cache.position
        return self.run(self.embed_tokens(ids, start), None, kv_cache, last)

    def drawing_logits(self, captions: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: captions (B, 9), latents (B, 103, code_dim) -> (B, 115, vocab): the caption's
        next-token logits, then each image token's logits from its block's inputs."""
        x = torch.cat([self.embed_tokens(captions),
                       self.embed_blocks(0, len(self.layout.block_sizes), latents, len(captions))], dim=1)
        return self.run(x, self.mask)

    def reading_logits(self, head: torch.Tensor, latents: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """The reading order, causally: (B, 4 + 49 + W, vocab) (`embed_reading`'s arguments)."""
        return self.run(self.embed_reading(head, latents, words), None)
