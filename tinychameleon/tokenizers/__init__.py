"""Tokenizers: words <-> ids, images <-> VQ codes, and the joint id layout."""

from .text import WordTokenizer
from .vocab import Vocab
from .vqvae import VQVAE

__all__ = ["WordTokenizer", "Vocab", "VQVAE"]
