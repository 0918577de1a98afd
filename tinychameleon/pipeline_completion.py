"""What a Pipeline does with part of an image kept: draw the rest for a prompt, or for a caption read off the kept
part. A mixin of `Pipeline` (`pipe.complete(...)`), beside its retrieval and next-scale tasks; it draws and reads
through the pipeline's own `_draw_codes` and `_write_words`, so guidance, candidates and deadlines are the same as a
plain request's."""

from __future__ import annotations

import numpy as np
import torch

from .errors import PromptError
from .regions import check_kept_colors, erase_outside, keep_mask
from .reranking import DIGIT_SLOT, digit_for_kept_part
from .tokenizers.vocab import TEXT_LENGTH

COMPLETION_REDRAWS = 3  # completions without a prompt: redraws of one whose own caption disagrees with it


class CompletionTasks:
    @torch.inference_mode()
    def complete(self, images: np.ndarray, keep: str | np.ndarray = "top", prompts: list[str] | str | None = None,
                 n: int = 1, seed: int | None = None, **sampling) -> tuple[np.ndarray, list[str]]:
        """Fill the part of each image outside `keep` ('top' | 'bottom' | 'left' | 'right' or a (28, 28) mask).

        The region is drawn text first for a caption (guided, best of `image_candidates`), with the
        tokens of fully kept 4x4 patches held fixed, and every kept pixel is pasted back unchanged.
        The caption is the prompt (one per image, or one for all; "*" blanks are read off the kept
        part); without prompts a caption is read off the kept part to draw for, the completed image
        is captioned as an image -> text request, and a completion whose caption names another digit
        than the one drawn for is drawn again (up to COMPLETION_REDRAWS times). With the prompt, the
        prompt is returned. Nothing outside `keep` is ever looked at. Returns len(images) * n images,
        image-major, and their captions.
        """
        self._require_raster("completion")
        settings = self.resolve_settings(sampling)
        generator = self._generator(seed)
        images = np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28, 3)
        mask = keep_mask(keep)
        given = erase_outside(images, mask)
        codes = self.image_tokenizer.encode(torch.from_numpy(given).to(self.device)).cpu()
        kept = torch.where(self.image_tokenizer.kept_tokens(torch.from_numpy(mask)), codes, torch.tensor(-1)).repeat_interleave(n, dim=0)
        if prompts is None:
            partial = torch.full((len(images), TEXT_LENGTH), -1, dtype=torch.long)
        else:
            prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
            if len(prompts) != len(images):
                raise PromptError(f"{len(prompts)} prompts for {len(images)} images: give one per image, or one")
            partial = self.encode_partial(prompts)
            check_kept_colors(images, mask, partial.numpy())
        partial = partial.repeat_interleave(n, dim=0)
        codes = codes.repeat_interleave(n, dim=0)
        words = self.fill_blanks(partial, settings, generator, codes=codes)
        open_digit = partial[:, DIGIT_SLOT] < 0
        if open_digit.any():  # the digit that best explains the kept tokens, not a guess from the erased image
            words[open_digit] = digit_for_kept_part(
                self.model, self.vocab, *(part[open_digit].to(self.device) for part in (words, codes, kept >= 0))).cpu()
        originals = np.repeat(images, n, axis=0)
        completed, captions = np.empty_like(originals), words.clone()
        rows = torch.arange(len(words))                                                  # rows still to draw
        for attempt in range(1 + (COMPLETION_REDRAWS if prompts is None else 0)):
            drawn = self._draw_codes(words[rows], settings, generator, kept=kept[rows])
            completed[rows.numpy()] = self.image_tokenizer.decode(drawn.to(self.device)).cpu().numpy()
            completed[:, mask] = originals[:, mask]                                       # kept pixels, exactly
            if prompts is not None:
                break
            # Caption what was drawn, as an image -> text request. A drawing whose caption names another
            # digit than the one it was drawn for is drawn again (self-consistency, checked by the model).
            read = self._write_words(self.image_tokenizer.encode(torch.from_numpy(completed[rows.numpy()]).to(self.device)),
                                     self._caption_settings(sampling), generator, completed[rows.numpy()]).cpu()
            captions[rows] = read
            rows = rows[read[:, DIGIT_SLOT] != words[rows, DIGIT_SLOT].cpu()]
            if len(rows) == 0:
                break
        return completed, self._decode_words(captions)
