"""Retrieval with more neighbours than a document holds: `retrieval_augmented.py` with the document limits lifted
for this process only (5 images and 40 words instead of 4 and 32), so `--retrieve 4` runs on a model trained on
documents of at most 4 images (244 tokens). It measures what the shipped limit refuses: whether a model reads
further than it was trained to (rotary positions have no table to run out of).

    python scripts/retrieval_beyond_limit.py --checkpoints memory --split validation --samples 300 --retrieve 4 \\
        --memory-settings '{"guidance": 1.5}' --json runs/retrieval_memory_val_k4.json
"""

import runpy
import sys
from pathlib import Path

import tinychameleon.tokenizers.vocab as vocab

# Before anything else imports them: the document tokenizer and the retrieval tasks read these at import.
vocab.MAX_DOCUMENT_IMAGES, vocab.MAX_DOCUMENT_TEXT = 5, 40
script = Path(__file__).with_name("retrieval_augmented.py")
sys.argv = [str(script)] + sys.argv[1:]
runpy.run_path(str(script), run_name="__main__")
