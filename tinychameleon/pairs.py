"""Captions and images in the pair layout (`sequences.py`): the steps the raster model's requests are made of -
draw codes for captions, read captions off codes, fill a caption's blanks, draw a hole of a kept image - batched
and deadline-checked. `Pipeline` turns requests into these steps; this module knows nothing of checkpoints,
pixels or the next-scale model (whose blanks it still fills: its forward reads plain caption ids too).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .batching import batch_slices
from .config import SamplingConfig
from .data.colored import COLOR_NAMES, VALID_PAIRS, parse_caption
from .errors import PromptError, stop_if_expired
from .reranking import best_images, rerank_digits
from .sampling import ModalityRules, SpanRules, generate
from .sequences import IMAGE_FIRST, TEXT_FIRST, header, image_prefix, split_sequences, text_prefix
from .tokenizers.text import WordTokenizer
from .tokenizers.vocab import TEXT_LENGTH, WORDS, Vocab

VALID_PAIR_SET = {(int(foreground), int(background)) for foreground, background in VALID_PAIRS}


def hole_span(kept: torch.Tensor) -> tuple[int, int]:
    """(B, L) kept codes (-1 where any row draws) -> [start, stop) from the first to the last drawn position."""
    hole = (kept < 0).any(dim=0).nonzero().squeeze(1)
    return (int(hole[0]), int(hole[-1]) + 1) if len(hole) else (kept.shape[1], kept.shape[1])


def hole_is_a_suffix(kept: torch.Tensor) -> bool:
    """Whether nothing is kept after the hole begins: then plain raster completion already reads all there is."""
    start, _ = hole_span(kept)
    return bool((kept[:, start:] < 0).any(dim=0).all())


class PairDecoder:
    """The pair-layout steps on one model. `expired` says when the caller's deadline has passed (checked
    between batches and decode steps)."""

    def __init__(self, model, vocab: Vocab, image_tokenizer, rules: ModalityRules, device,
                 expired: Callable[[], bool]) -> None:
        self.model, self.vocab, self.image_tokenizer, self.rules = model, vocab, image_tokenizer, rules
        self.device, self.expired = device, expired
        self.tokenizer = WordTokenizer()

    def check_time(self) -> None:
        stop_if_expired(self.expired)

    def generate(self, prefix: torch.Tensor, settings: SamplingConfig, generator,
                 length: int | None = None, forced: torch.Tensor | None = None, rules=None,
                 unconditional: torch.Tensor | None = None) -> torch.Tensor:
        """Complete prefixes in chunks of settings.batch_size; `forced` (B, length) keeps tokens (-1: draw)."""
        outputs = []
        for rows in batch_slices(len(prefix), settings.batch_size):
            self.check_time()
            outputs.append(generate(self.model, prefix[rows].to(self.device), rules or self.rules,
                                    settings.temperature, settings.top_k or None, settings.guidance, generator,
                                    length=length, should_stop=self.expired,
                                    forced=None if forced is None else forced[rows].to(self.device),
                                    top_p=settings.top_p, cd_k=settings.cd_k, cd_alpha=settings.cd_alpha,
                                    unconditional_prefix=None if unconditional is None else
                                    unconditional[rows].to(self.device), greedy_above=settings.greedy_above))
        return torch.cat(outputs)

    # -- text -> image ---------------------------------------------------------------------------------
    def draw(self, words: torch.Tensor, settings: SamplingConfig, generator, candidates: int = 1,
             kept: torch.Tensor | None = None) -> torch.Tensor:
        """(B * candidates, 6) word ids, prompt-major -> (B * candidates, L) codes. kept (B * candidates, L): image
        tokens to keep (-1 where the model draws): a hole with kept tokens after it is drawn by infilling."""
        if kept is not None and self.vocab.infill and not hole_is_a_suffix(kept):
            return self.infill(words, kept, settings, generator)
        forced = None
        if kept is not None:
            forced = torch.full((len(words), self.vocab.plain_length), -1, dtype=torch.long)
            forced[:, self.vocab.text_first_codes] = kept.cpu()
        _, codes = split_sequences(self.vocab, self.pool(text_prefix(self.vocab, words), settings, generator, forced,
                                                         candidates))
        return codes

    def best_of(self, words: torch.Tensor, codes: torch.Tensor, candidates: int) -> torch.Tensor:
        """The candidate whose prompt the model reads back likeliest, per prompt."""
        self.check_time()
        return best_images(self.model, self.vocab, words.to(self.device), codes, candidates)

    def infill(self, words: torch.Tensor, kept: torch.Tensor, settings: SamplingConfig, generator) -> torch.Tensor:
        """(B, 6) word ids, (B, L) kept codes (-1 in the hole, one hole for all rows) -> (B, L) codes.

        The causal-masked reading: the caption, the image with the hole cut out and a <mask> in its
        place, a second <mask>, then the hole's tokens - so the model draws them having read what comes
        after the hole too. Guidance compares with the same masked image read without its caption.
        """
        start, stop = hole_span(kept)
        B, sentinel = len(words), torch.full((len(words), 1), self.vocab.mask, dtype=torch.long)
        kept = kept.cpu()
        outside = [kept[:, :start], sentinel, kept[:, stop:], sentinel]
        prefix = torch.cat([text_prefix(self.vocab, words.cpu()), *outside], dim=1)
        free = torch.cat([header(self.vocab, B, IMAGE_FIRST), *outside], dim=1)
        P = prefix.shape[1]
        forced = torch.full((B, P + stop - start), -1, dtype=torch.long)
        forced[:, P:] = kept[:, start:stop]                    # kept tokens inside the span stay as given
        sequences = self.generate(prefix, settings, generator, length=P + stop - start, forced=forced,
                                  rules=SpanRules(self.vocab), unconditional=free)
        codes = kept.clone().to(self.device)
        codes[:, start:stop] = sequences[:, P:]
        return codes

    def pool(self, prefix: torch.Tensor, settings: SamplingConfig, generator, forced, candidates: int
             ) -> torch.Tensor:
        """Draw the candidate rows (prompt-major). A mixed pool (CM3Leon) draws the second half of each
        prompt's candidates with contrastive decoding (CD-K) and the first half with guidance."""
        if not (settings.mixed_pool and candidates > 1):
            return self.generate(prefix, settings, generator, forced=forced)
        contrastive = (torch.arange(len(prefix)) % candidates) >= candidates // 2
        sequences = torch.empty(len(prefix), self.vocab.plain_length, dtype=torch.long, device=self.device)
        for rows, rule in ((~contrastive, replace(settings, cd_k=0)),
                           (contrastive, replace(settings, cd_k=settings.cd_k or 5))):
            sequences[rows.to(self.device)] = self.generate(prefix[rows], rule, generator,
                                                            forced=None if forced is None else forced[rows])
        return sequences

    # -- image -> text ---------------------------------------------------------------------------------
    def read(self, codes: torch.Tensor, settings: SamplingConfig, generator,
             views: list[tuple[torch.Tensor, torch.Tensor]] = (), second_reader=None) -> torch.Tensor:
        """(B, L) codes -> (B, 6) caption word ids. With rerank_captions the digit is re-ranked
        (reranking.rerank_digits) on the image and its `views` ((word ids, codes) of recolored, shifted copies);
        `second_reader` adds another model's scores of the candidate captions."""
        words, _ = split_sequences(self.vocab, self.generate(image_prefix(self.vocab, codes), settings, generator))
        if settings.reranks_captions:
            self.check_time()
            words = rerank_digits(self.model, self.vocab, words, codes, views, settings.caption_hypotheses,
                                  second_reader)
        return words

    # -- captions with blanks --------------------------------------------------------------------------
    def fill_blanks(self, partial: torch.Tensor, settings: SamplingConfig, generator,
                    codes: torch.Tensor | None = None, tries: int = 8) -> torch.Tensor:
        """(B, 6) word ids with -1 blanks -> (B, 6) complete word ids.

        Without `codes` the caption is drawn text-first at the sampling temperature (a prompt); with
        codes (B, L) it is read image-first at the caption temperature, so the words fit that image.
        The grammar decides word classes left to right, so a blank adjective before a given hue may
        name a color the palette lacks ("bright black"), and two blank colors may be too alike to
        be a pair of the data: such rows are drawn again.
        """
        blank = partial < 0
        if not blank.any():
            return partial
        self.check_fillable(partial)
        words = partial.clone()
        offset = (self.vocab.image_first_words if codes is not None else self.vocab.text_first_words).start
        for attempt in range(tries):
            rows = blank.any(1) if attempt == 0 else blank.any(1) & ~self.valid_colors(words)
            if not rows.any():
                break
            forced = torch.full((int(rows.sum()), self.vocab.plain_length), -1, dtype=torch.long)
            given = partial[rows]
            forced[:, offset:offset + TEXT_LENGTH] = torch.where(given >= 0, given + self.vocab.word_offset, -1)
            if codes is None:
                # A caption is drawn from the model's whole distribution: top-p sharpens images, but on six
                # words it would drop whole digits and colors from unconditional samples.
                prefix = header(self.vocab, len(forced), TEXT_FIRST)
                drawn = self.generate(prefix, replace(settings, guidance=1.0, cd_k=0, top_p=1.0), generator,
                                      length=offset + TEXT_LENGTH, forced=forced[:, :offset + TEXT_LENGTH])
            else:
                read = replace(settings, guidance=1.0, cd_k=0, temperature=settings.caption_temperature)
                drawn = self.generate(image_prefix(self.vocab, codes[rows.to(codes.device)]), read, generator,
                                      forced=forced)
            words[rows] = drawn[:, offset:offset + TEXT_LENGTH].cpu() - self.vocab.word_offset
        unfilled = blank.any(1) & ~self.valid_colors(words)
        if codes is None and unfilled.any():  # never draw for a pair the palette does not have (a reading of an
            # image, codes given, is what the model reads: it is returned as read)
            row = int(unfilled.nonzero()[0])
            raise PromptError(f"could not fill the blanks of '{partial_text(partial[row])}' with a valid color "
                              f"pair in {tries} tries; name a color")
        return words

    def check_fillable(self, partial: torch.Tensor) -> None:
        """Refuse, before any work, a prompt whose blanks no valid pair can fill ("* black eight on * black":
        the palette's only black cannot be both colors)."""
        for row in partial:
            options = []
            for slots in (slice(0, 2), slice(4, 6)):
                adjective, hue = (int(word) for word in row[slots])
                options.append({index for index, name in enumerate(COLOR_NAMES)
                                if (adjective < 0 or name.split()[0] == WORDS[adjective])
                                and (hue < 0 or name.split()[1] == WORDS[hue])})
            if not any((foreground, background) in VALID_PAIR_SET for foreground in options[0] for background in options[1]):
                raise PromptError(f"no pair of palette colors fits '{partial_text(row)}': the two colors must "
                                  "be palette colors far enough apart to tell apart")

    def valid_colors(self, words: torch.Tensor) -> torch.Tensor:
        """(B, 6) word ids -> (B,) whether the two colors are palette colors that make a pair the data has
        (far enough apart to tell apart: data.colored.VALID_PAIRS)."""
        parsed = [parse_caption(self.tokenizer.decode(row)) for row in words]
        return torch.tensor([p is not None and (p[1], p[2]) in VALID_PAIR_SET for p in parsed])


def partial_text(row: torch.Tensor) -> str:
    """(6,) word ids with -1 blanks -> the caption with "*" for each blank."""
    return " ".join(WORDS[int(word)] if word >= 0 else "*" for word in row)
