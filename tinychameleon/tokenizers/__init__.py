"""Tokenizers: words <-> ids, images <-> image tokens (a family behind one interface), and the joint id layout."""

from .image import TOKENIZER_KINDS, build_image_tokenizer
from .palette import PaletteTokenizer
from .text import WordTokenizer
from .vocab import Vocab
from .vqvae import VQVAE

__all__ = ["WordTokenizer", "Vocab", "VQVAE", "PaletteTokenizer", "TOKENIZER_KINDS", "build_image_tokenizer"]
