"""Retrieval with more neighbours than a checkpoint's documents hold: `retrieval_augmented.py` with the document
limits lifted for this process only (5 images and 40 words for a run whose documents hold 4 and 32), so
`--retrieve 4` runs on a model trained to read at most 3 neighbours (memory release 2: 2). It measures what that
checkpoint's limit refuses: whether a model reads further than it was trained to (rotary positions have no table
to run out of). Release 3 of `memory` is trained with 1..4 neighbours and needs no lifting.

    python scripts/retrieval_beyond_limit.py --checkpoints runs/memory-open2 --split validation --samples 300 \\
        --retrieve 4 --memory-settings '{"guidance": 1.5}' --json runs/retrieval_memory_val_k4.json
"""

import runpy
import sys
from pathlib import Path

import tinychameleon.tokenizers.vocab as vocab

# Vocab.document_images and .document_text read these module constants: every document limit follows them.
vocab.MAX_DOCUMENT_IMAGES, vocab.MAX_DOCUMENT_TEXT = 5, 40
script = Path(__file__).with_name("retrieval_augmented.py")
sys.argv = [str(script)] + sys.argv[1:]
runpy.run_path(str(script), run_name="__main__")
