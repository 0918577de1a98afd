"""Checkpoint directories: JSON config + safetensors weights + vocabulary, written atomically.

A run directory holds everything needed to rebuild the models:
  config.json         RunConfig (both stages)
  vocab.json          the joint id layout
  sampling.json       default sampler settings (optional)
  vqvae.safetensors   image tokenizer weights (stage 1)
  model.safetensors   transformer weights (stage 2)
  *_state.pt          optimizer + progress, for --resume (training/state.py)
  metrics.json/.csv, training_curve.png
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ADDABLE_PARTS, RunConfig, SamplingConfig
from .errors import CheckpointError, ConfigError
from .io_utils import atomic_path, write_json
from .config import NEXT_SCALES
from .model import Transformer
from .nextscale.model import NextScaleTransformer
from .tokenizers.vocab import Vocab
from .tokenizers.image import build_image_tokenizer as build_tokenizer

CONFIG_FILE, VOCAB_FILE = "config.json", "vocab.json"
VQVAE_FILE, MODEL_FILE = "vqvae.safetensors", "model.safetensors"
SAMPLING_FILE = "sampling.json"  # the run's default sampler settings (SamplingConfig fields)


def save_weights(module: torch.nn.Module, path: Path) -> None:
    state = {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}
    with atomic_path(path) as temp:
        try:
            save_file(state, str(temp))
        except (SafetensorError, RuntimeError) as error:  # a failed write (a full disk): one clear line
            raise OSError(errno.EIO, f"writing {path} failed ({str(error).splitlines()[0]}); is the disk full?") from None


def load_weights(module: torch.nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
        module.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or does not match its config: {str(error).splitlines()[0]}") from None
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:  # a valid header over NaN / inf weights would draw noise or crash deep in sampling
        raise CheckpointError(f"{path} holds non-finite weights ({broken[0]}{' and others' if len(broken) > 1 else ''})")


def save_config(run_dir: Path, config: RunConfig) -> None:
    write_json(run_dir / CONFIG_FILE, config.to_dict())
    write_json(run_dir / VOCAB_FILE, Vocab.for_config(config).to_dict())


def load_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a checkpoint directory")
    if not run_dir.is_dir():
        raise CheckpointError(f"checkpoint directory {run_dir} does not exist")
    if not (run_dir / CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir} is not a checkpoint: {CONFIG_FILE} is missing")
    return read_json_config(run_dir / CONFIG_FILE, RunConfig.from_dict)


def inherited_config(config: RunConfig, vqvae_from: str | Path | None = None) -> RunConfig:
    """The config a run trains with once its sources are read: a fine-tune (train.init_from) continues another
    run's transformer, so that run's shape and tokenizer come with it (parts that only add parameters, a slot
    embedding or a pointer head, may be asked on top and start fresh; a part asked for wins over the source's, so
    --digit-layer 2 moves a head the source read after block 3); vqvae_from reuses another run's tokenizer,
    whose codebook must match, so its VQ config too. Validated after: the tokenizer a rule asks for may be the
    source's, not the preset's."""
    if config.train.init_from:
        added = {name: getattr(config.model, name) for name in ADDABLE_PARTS}
        config.model = load_config(config.train.init_from).model
        for name, wanted in added.items():
            setattr(config.model, name, wanted or getattr(config.model, name))
    source = vqvae_from or config.train.init_from
    if source:
        config.vq = load_config(source).vq
    return config.validate()


def read_json_config(path: Path, build):
    """Parse a JSON settings file with `build` (a validating from_dict); one CheckpointError for any fault."""
    try:
        return build(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path} is invalid: {error}") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None


def build_image_tokenizer(config: RunConfig):
    """The run's image tokenizer (its kind and size from config.vq), untrained."""
    return build_tokenizer(config.vq)


def build_transformer(config: RunConfig) -> Transformer | NextScaleTransformer:
    """The run's stage-2 model: the raster transformer, or the next-scale one over a "scales" tokenizer."""
    vocab = Vocab.for_config(config)
    config.model.vocab_size = vocab.size
    config.model.image_tokens, config.model.image_length = vocab.image_tokens, vocab.image_length
    config.model.digit_words = vocab.digit_words
    config.model.first_plan = vocab.first_plan if vocab.plan_tokens else 0
    config.model.block_size = max(config.model.block_size, vocab.sequence_length)
    if config.vq.kind == "scales":
        return NextScaleTransformer(config.model, NEXT_SCALES, config.vq.code_dim)
    return Transformer(config.model)


def load_grown(model: torch.nn.Module, state: dict) -> None:
    """Copy another run's weights into `model`, whose tables may have grown since (a <mask> token at the end
    of the vocabulary, positions for the longer masked-span sequences): new rows keep their fresh init."""
    own = model.state_dict()
    for name, value in state.items():
        target = own.get(name)
        if target is None or target.shape[1:] != value.shape[1:] or target.shape[0] < value.shape[0]:
            raise CheckpointError(f"cannot start from these weights: {name} has shape {tuple(value.shape)}, "
                                  f"this model needs {None if target is None else tuple(target.shape)}")
        with torch.no_grad():
            target[:value.shape[0]].copy_(value)


def _load_module(run_dir, config, filename: str, build, what: str):
    run_dir = Path(run_dir)
    config = config or load_config(run_dir)
    path = run_dir / filename
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no trained {what} ({filename} is missing)")
    module = build(config)
    load_weights(module, path)
    return module.eval()


def load_image_tokenizer(run_dir: str | Path, config: RunConfig | None = None):
    return _load_module(run_dir, config, VQVAE_FILE, build_image_tokenizer, "image tokenizer")


def load_transformer(run_dir: str | Path, config: RunConfig | None = None) -> Transformer:
    return _load_module(run_dir, config, MODEL_FILE, build_transformer, "transformer")


def module_hash(module: torch.nn.Module) -> str:
    """A short content hash of a module's weights: keys the cache of encoded datasets."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_sampling(path: Path) -> SamplingConfig:
    """A run's sampling.json, validated; CheckpointError names what is wrong."""
    return read_json_config(path, SamplingConfig.from_dict)
