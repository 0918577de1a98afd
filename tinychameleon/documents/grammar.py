"""The per-row grammar of mixed-modal decoding: what each row of a batch may write next, from its own state.

    text ──<boi>──> image position 0 .. L-1 (the image tokenizer's rules) ──<eoi>──> text ──<eod>──> done

In text a row may write any word, <boi> (the model decides to draw) or <eod>. After <boi> it writes
exactly L image tokens, each one the tokenizer allows at that position and after the previous one
(two color tokens, then shape codes, for the palette kinds), then <eoi>: an image is never cut short
and no text appears inside one. Runs trained with plan tokens write one more token after the two colors:
<plan DIGIT>, the digit the image will show (the model's own choice, never shown as text), before its
first stroke. The colors come first as without plans: after a plan, the colors a caption names were
misread for one digit or another in every run (BENCHMARKS.md, "Plan tokens"). <boi> is refused when
the room left could not hold a whole image, and a row with one token of room left must end. The state is
two tensors, so a batch steps in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..device import DeviceTables
from ..tokenizers.vocab import PLAN_AT, Vocab

TEXT = -1    # image_position of a row that is writing text


@dataclass
class RowState:
    image_position: torch.Tensor      # (B,) long: TEXT, or how many tokens the open image holds (span: only <eoi>)
    finished: torch.Tensor            # (B,) bool: <eod> written

    def select(self, rows: torch.Tensor) -> "RowState":
        return RowState(self.image_position[rows], self.finished[rows])


class DocumentGrammar(DeviceTables):
    def __init__(self, vocab: Vocab, image_positions: torch.Tensor | None = None,
                 image_follows: torch.Tensor | None = None) -> None:
        """image_positions (L, K): image ids allowed at each image position; image_follows (K, K): which image
        id may follow which (the tokenizer's rules, e.g. only color pairs of the data). Default: any."""
        V, K, L = vocab.size, vocab.image_tokens, vocab.image_length
        P = int(vocab.plan_tokens)                                              # 1: images hold a plan
        self.vocab = vocab
        self.image_span = P + L                                                 # tokens between <boi> and <eoi>
        self.words = torch.zeros(V, dtype=torch.bool)
        self.words[vocab.text_ids] = True
        self.text = self.words.clone()
        self.text[[vocab.begin_image, vocab.end_document]] = True
        self.image = torch.zeros(P + L + 1, V, dtype=torch.bool)                # row p: the p-th token after <boi>
        image_rows = [row for row in range(P + L) if not (P and row == PLAN_AT)]   # a plan sits after the colors
        self.image[image_rows, :K] = True if image_positions is None else image_positions
        if P:
            self.image[PLAN_AT, vocab.plan_ids] = True
        self.image[P + L, vocab.end_image] = True
        self.follows = torch.ones(V, V, dtype=torch.bool)
        if image_follows is not None:
            self.follows[:K, :K] = image_follows
        self.end_only = torch.zeros(V, dtype=torch.bool)
        self.end_only[vocab.end_document] = True
        # What guidance's unconditional stream never sees: words, and plan tokens (a digit named is text, so the
        # unconditional stream draws without it and guidance pushes the image towards the named digit).
        self.unseen = self.words.clone()
        self.unseen[vocab.plan_ids] = True
        # What it leaves out of a prompt: those, and <eop> where the run's text-dropped training documents had
        # none (train.unconditional_without_eop).
        # A set of ids, not a table: it filters Python lists, on the host whatever device the tables are on.
        self.unconditional_drops = set(vocab.text_ids) | set(vocab.plan_ids) | (
            {vocab.end_prompt} if vocab.unconditional_without_eop else set())

    def start(self, prompts: list[list[int]]) -> RowState:
        """The state after each prompt (<bos> first): inside an image if it ends after a <boi> without <eoi>."""
        positions = []
        for ids in prompts:
            opened = max((i for i, token in enumerate(ids) if token == self.vocab.begin_image), default=-1)
            closed = max((i for i, token in enumerate(ids) if token == self.vocab.end_image), default=-1)
            positions.append(len(ids) - 1 - opened if opened > closed else TEXT)
        finished = [bool(ids) and ids[-1] == self.vocab.end_document for ids in prompts]
        return RowState(torch.tensor(positions, dtype=torch.long), torch.tensor(finished, dtype=torch.bool))

    def allowed(self, state: RowState, previous: torch.Tensor, room: torch.Tensor) -> torch.Tensor:
        """(B, V) booleans: the tokens each row may write next. previous (B,): the last token of each row;
        room (B,): how many tokens each row may still write, this one included."""
        device = previous.device
        in_image = state.image_position >= 0
        image = self.image.to(device)[state.image_position.clamp(min=0)] & self.follows.to(device)[previous]
        text = self.text.to(device).expand(len(previous), -1).clone()
        # <boi> needs room for the image, its <eoi> and the <eod> after it.
        text[:, self.vocab.begin_image] &= room >= self.image_span + 3
        text = torch.where((room <= 1)[:, None], self.end_only.to(device), text)
        allowed = torch.where(in_image[:, None], image, text)
        return torch.where(state.finished[:, None], self.end_only.to(device), allowed)

    def advance(self, state: RowState, token: torch.Tensor) -> RowState:
        """The state after each row writes `token` (B,)."""
        vocab = self.vocab
        position = torch.where(state.image_position >= 0, state.image_position + 1, state.image_position)
        position = torch.where(token == vocab.end_image, TEXT, position)
        position = torch.where(token == vocab.begin_image, 0, position)
        return RowState(position, state.finished | (token == vocab.end_document))

    def unseen_unconditionally(self, token: torch.Tensor) -> torch.Tensor:
        """(B,) whether the unconditional stream of guidance skips each token: a word or a plan."""
        return self.unseen.to(token.device)[token]

    def without_words(self, ids: list[int]) -> list[int]:
        """A prompt as the unconditional stream of guidance reads it: the document with its words and plans left
        out (and its <eop>, for runs whose text-dropped training documents had none)."""
        return [token for token in ids if token not in self.unconditional_drops]
