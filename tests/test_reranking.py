"""Self-reranking: the scores are the model's own log-probabilities, and they pick the right thing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinychameleon.config import ModelConfig
from tinychameleon.data.colored import COLOR_NAMES, COLOR_RGB, DIGIT_WORDS, VALID_PAIRS, parse_caption, recolor
from tinychameleon.model import KVCache, Transformer
from tinychameleon.pipeline import Pipeline
from tinychameleon.reranking import (DIGIT_SLOT, DIGIT_WORD_IDS, best_images, caption_given_image,
                                     caption_given_image_per_digit, digit_for_kept_part, digit_scores, joint, rerank_digits,
                                     view_images, view_pairs, VIEW_SHIFTS)
from tinychameleon.sequences import IMAGE_FIRST, TEXT_FIRST, build_sequences
from tinychameleon.tokenizers.vocab import Vocab

VOCAB = Vocab(16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=VOCAB.size, n_layer=2, n_head=2, d_model=32)).eval()


@pytest.fixture(scope="module")
def shipped():
    return Pipeline.from_pretrained()


def stepwise_log_probs(model, sequences):
    """Token by token through the KV cache: an independent path to the same numbers."""
    cache = KVCache(model.config, len(sequences))
    steps = []
    with torch.no_grad():
        for position in range(sequences.shape[1] - 1):
            logits = model(sequences[:, position:position + 1], kv_cache=cache)[:, -1]
            steps.append(F.log_softmax(logits.float(), -1).gather(1, sequences[:, position + 1, None]))
    return torch.cat(steps, dim=1)


def test_scores_are_the_model_log_probabilities(model):
    generator = torch.Generator().manual_seed(1)
    words = torch.randint(0, VOCAB.num_words, (3, 6), generator=generator)
    codes = torch.randint(0, VOCAB.image_tokens, (3, 49), generator=generator)
    image_first = stepwise_log_probs(model, build_sequences(VOCAB, words, codes, torch.full((3,), IMAGE_FIRST)))
    text_first = stepwise_log_probs(model, build_sequences(VOCAB, words, codes, torch.full((3,), TEXT_FIRST)))
    # Image first: the six words are the last six predictions.
    torch.testing.assert_close(caption_given_image(model, VOCAB, words, codes), image_first[:, -6:].sum(1),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(joint(model, VOCAB, words, codes), text_first.sum(1), rtol=1e-4, atol=1e-4)


def test_kept_part_scores_read_only_the_kept_tokens_and_pick_the_best_digit(model):
    generator = torch.Generator().manual_seed(3)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3]])
    codes = torch.randint(0, VOCAB.image_tokens, (2, 49), generator=generator)
    top = torch.zeros(2, 49, dtype=torch.bool)
    top[:, :21] = True                                                  # the first three rows of patches
    text_first = stepwise_log_probs(model, build_sequences(VOCAB, words, codes, torch.full((2,), TEXT_FIRST)))
    prefix = VOCAB.text_first_codes.start - 1 + 21                       # targets up to the 21st image token
    torch.testing.assert_close(joint(model, VOCAB, words, codes, kept=top), text_first[:, :prefix].sum(1),
                               rtol=1e-4, atol=1e-4)
    # The tokens after the kept part do not matter: scramble them and the choice stays.
    chosen = digit_for_kept_part(model, VOCAB, words, codes, top)
    scrambled = torch.where(top, codes, torch.randint(0, VOCAB.image_tokens, (2, 49), generator=generator))
    assert torch.equal(digit_for_kept_part(model, VOCAB, words, scrambled, top), chosen)
    keep = [slot for slot in range(6) if slot != DIGIT_SLOT]
    assert torch.equal(chosen[:, keep], words[:, keep])
    for row in range(2):                                                 # it is the argmax over the ten digits
        options = words[row].repeat(10, 1)
        options[:, DIGIT_SLOT] = torch.tensor(DIGIT_WORD_IDS)
        scores = joint(model, VOCAB, options, codes[row].repeat(10, 1), kept=top[row].repeat(10, 1))
        assert chosen[row, DIGIT_SLOT] == DIGIT_WORD_IDS[int(scores.argmax())]


def test_rerank_digits_changes_only_the_digit_and_never_lowers_the_score(model):
    generator = torch.Generator().manual_seed(2)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3]])
    codes = torch.randint(0, VOCAB.image_tokens, (2, 49), generator=generator)
    reranked = rerank_digits(model, VOCAB, words, codes)
    keep = [slot for slot in range(6) if slot != DIGIT_SLOT]
    assert torch.equal(reranked[:, keep], words[:, keep])

    def score(rows):
        return caption_given_image(model, VOCAB, rows, codes) + joint(model, VOCAB, rows, codes)

    assert (score(reranked) >= score(words) - 1e-4).all()


def test_views_add_their_digit_scores(model):
    generator = torch.Generator().manual_seed(3)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3], [4, 4, 18, 26, 2, 2]])
    codes = torch.randint(0, VOCAB.image_tokens, (3, 49), generator=generator)
    other_words = torch.tensor([[3, 6, 11, 26, 5, 8]] * 3)
    other_codes = torch.randint(0, VOCAB.image_tokens, (3, 49), generator=generator)
    # The same reading twice doubles every score: the choice cannot change.
    assert torch.equal(rerank_digits(model, VOCAB, words, codes, [(words, codes)]), rerank_digits(model, VOCAB, words, codes))
    candidates, own = digit_scores(model, VOCAB, words, codes)
    _, other = digit_scores(model, VOCAB, other_words, other_codes)
    expected = candidates[torch.arange(3), (own + other).argmax(dim=1)]
    assert torch.equal(rerank_digits(model, VOCAB, words, codes, [(other_words, other_codes)]), expected)


def test_a_second_reader_adds_its_scores_to_the_model_s(model):
    generator = torch.Generator().manual_seed(4)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3], [4, 4, 18, 26, 2, 2]])
    codes = torch.randint(0, VOCAB.image_tokens, (3, 49), generator=generator)
    bonus = torch.randn(3, 10, generator=generator) * 5                     # a reader's score of every digit
    seen = []

    def reader(candidates):
        seen.append(candidates)
        digit = torch.tensor([DIGIT_WORD_IDS.index(int(w)) for w in candidates[..., DIGIT_SLOT].flatten()])
        return bonus[torch.arange(len(candidates)).repeat_interleave(candidates.shape[1]), digit].view(
            candidates.shape[:2])

    candidates, own = digit_scores(model, VOCAB, words, codes)
    expected = candidates[torch.arange(3), (own + bonus).argmax(dim=1)]
    assert torch.equal(rerank_digits(model, VOCAB, words, codes, second_reader=reader), expected)
    # It is asked about each caption with every kept digit and nothing else changed.
    assert seen[0].shape == (3, 10, 6) and torch.equal(seen[0][:, :, 0], words[:, None, 0].expand(3, 10))
    zero = rerank_digits(model, VOCAB, words, codes, second_reader=lambda c: torch.zeros(c.shape[:2]))
    assert torch.equal(zero, rerank_digits(model, VOCAB, words, codes))


def test_clip_as_second_reader_decides_the_digit_at_a_large_weight(shipped, colored):
    from tinychameleon.retrieval.retriever import Retriever

    images = colored[1].images[:8]
    plain = shipped.caption(images, caption_hypotheses=10)
    clip = shipped.caption(images, caption_hypotheses=10, caption_clip_weight=1000.0)
    retriever = Retriever.from_pretrained()
    for image, read_plain, read_clip in zip(images, plain, clip):
        words = read_clip.split()
        assert words[:2] + words[3:] == read_plain.split()[:2] + read_plain.split()[3:]    # only the digit moves
        options = [" ".join(words[:2] + [digit] + words[3:]) for digit in DIGIT_WORDS]
        assert read_clip == options[int(retriever.similarity(options, np.stack([image] * 10)).argmax())]


def test_view_pairs_are_fixed_distinct_valid_pairs():
    pairs = view_pairs(6)
    assert len(pairs) == 5 and len({tuple(pair) for pair in pairs}) == 5
    assert {tuple(pair) for pair in pairs} <= {tuple(pair) for pair in VALID_PAIRS}
    assert np.array_equal(view_pairs(6), pairs) and np.array_equal(view_pairs(3), pairs[:2])
    assert len(view_pairs(1)) == 0 and len(view_pairs(0)) == 0


def test_views_are_recolored_and_shifted_by_a_pixel(colored):
    from tinychameleon.data.colored import digit_pixels

    images = colored[1].images[:5]
    views = view_images(images, 4)
    assert len(views) == 3
    for (foreground, background, pixels), pair, shift in zip(views, view_pairs(4), VIEW_SHIFTS):
        assert (foreground, background) == tuple(pair)
        strokes = np.roll(digit_pixels(images), shift, axis=(1, 2))        # the same strokes, one pixel over
        assert (pixels[strokes] == COLOR_RGB[foreground]).all() and (pixels[~strokes] == COLOR_RGB[background]).all()


def test_recolored_images_are_read_in_their_new_colors(shipped, colored):
    _, test = colored
    images = test.images[:6]
    foreground, background = view_pairs(2)[0]
    captions = shipped.caption(recolor(images, foreground, background), rerank_captions=False)
    for caption in captions:
        words = caption.split()
        assert " ".join(words[:2]) == COLOR_NAMES[foreground] and " ".join(words[4:]) == COLOR_NAMES[background]
    # Views change only how the digit is scored: the colors come from the image as given.
    with_views = shipped.caption(images, rerank_captions=True, caption_views=3)
    assert [c.split()[:2] + c.split()[3:] for c in with_views] == [
        t.split()[:2] + t.split()[3:] for t in test.captions()[:6]]


def test_best_images_picks_the_image_that_fits_the_prompt(shipped, colored):
    _, test = colored
    rows = np.arange(8)
    prompts = test.captions()[:8]
    words = shipped.encode_prompts(prompts).repeat_interleave(2, dim=0)
    # Each prompt's candidates: a real image of another caption, then its own real image.
    images = np.stack([test.images[(rows + 1) % 8], test.images[rows]], axis=1).reshape(16, 28, 28, 3)
    codes = shipped.image_tokenizer.encode(torch.from_numpy(images))
    chosen = best_images(shipped.model, shipped.vocab, words, codes, candidates=2)
    assert torch.equal(chosen, codes.view(8, 2, -1)[:, 1])


def test_reranked_captions_read_digits_better(shipped, colored):
    _, test = colored
    images, truth = test.images[:120], test.captions()[:120]
    plain = shipped.caption(images, rerank_captions=False)
    reranked = shipped.caption(images, rerank_captions=True, caption_views=1)  # views: tested below, and slow
    plain_right = np.mean([c == t for c, t in zip(plain, truth)])
    reranked_right = np.mean([c == t for c, t in zip(reranked, truth)])
    assert reranked_right >= plain_right and reranked_right >= 0.93  # measured 93.9 % -> 97.3 % on 1000 images


def test_caption_first_samples_agree_with_their_images(shipped):
    images, captions = shipped.sample(12, seed=3)
    for image, caption in zip(images, captions):
        _, _, background = parse_caption(caption)
        colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        # The most common level triple is the background color.
        assert tuple(colors[counts.argmax()]) == tuple(COLOR_RGB[background]), caption


def test_sample_orders_and_ancestral(tiny_pipeline):
    from tinychameleon.tokenizers.text import WordTokenizer

    for first in ("text", "image", "model"):
        for ancestral in (False, True):
            images, captions = tiny_pipeline.sample(5, seed=1, first=first, ancestral=ancestral)
            assert images.shape == (5, 28, 28, 3) and len(captions) == 5
            assert all(WordTokenizer().fits_template(caption) for caption in captions)  # grammar held
            # Two-color decoding: every image is exactly one or two palette colors.
            assert all(len(np.unique(image.reshape(-1, 3), axis=0)) <= 2 for image in images)
            if first == "text" and not ancestral:  # captions drawn first are checked color pairs
                assert all(parse_caption(caption) is not None for caption in captions)
    again = tiny_pipeline.sample(5, seed=1, first="image", ancestral=True)
    assert tiny_pipeline.sample(5, seed=1, first="image", ancestral=True)[1] == again[1]
    with pytest.raises(ValueError, match="first must be one of"):
        tiny_pipeline.sample(2, first="caption")


def test_shared_prefix_digit_scores_equal_full_sequences(model):
    generator = torch.Generator().manual_seed(4)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3], [4, 4, 18, 26, 2, 2]])
    codes = torch.randint(0, VOCAB.image_tokens, (3, 49), generator=generator)
    candidates = words[:, None, :].repeat(1, 10, 1)
    candidates[:, :, DIGIT_SLOT] = torch.tensor(DIGIT_WORD_IDS)
    full = caption_given_image(model, VOCAB, candidates.view(30, 6), codes.repeat_interleave(10, dim=0)).view(3, 10)
    shared = caption_given_image_per_digit(model, VOCAB, words, codes, batch_size=2)  # two chunks
    torch.testing.assert_close(shared, full, rtol=1e-4, atol=1e-4)


def test_pruned_hypotheses_rank_only_the_readings_top_digits(model):
    """hypotheses = m: the full two-way score decides among the m digits the image-first reading likes best."""
    generator = torch.Generator().manual_seed(5)
    words = torch.tensor([[0, 5, 16, 26, 1, 7], [2, 9, 20, 26, 0, 3], [4, 4, 18, 26, 2, 2], [1, 1, 12, 26, 3, 3]])
    codes = torch.randint(0, VOCAB.image_tokens, (4, 49), generator=generator)
    candidates, full = digit_scores(model, VOCAB, words, codes)
    reading = caption_given_image_per_digit(model, VOCAB, words, codes)
    for m in (1, 3, 10):
        top = reading.topk(m, dim=1).indices
        restricted = torch.full_like(full, float("-inf")).scatter(1, top, full.gather(1, top))
        expected = candidates[torch.arange(4), restricted.argmax(dim=1)]
        assert torch.equal(rerank_digits(model, VOCAB, words, codes, hypotheses=m), expected)
    assert torch.equal(rerank_digits(model, VOCAB, words, codes, hypotheses=1)[:, DIGIT_SLOT],
                       torch.tensor(DIGIT_WORD_IDS)[reading.argmax(dim=1)])
