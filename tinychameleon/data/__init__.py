"""Data: MNIST fetched from a hash-checked cache, then colored and captioned."""

from .colored import PALETTE, ColoredMNIST, caption_of, load_colored_mnist
from .mnist import default_cache_dir, load_mnist

__all__ = ["PALETTE", "ColoredMNIST", "caption_of", "load_colored_mnist", "default_cache_dir", "load_mnist"]
