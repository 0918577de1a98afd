"""Dataclass configs (the single source of truth) and named presets.

A run is described by a `RunConfig`: the VQ-VAE tokenizer, the transformer, and how each
is trained. Presets are plain dicts of overrides, minGPT-style, applied by `make_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class VQConfig:
    codebook_size: int = 256      # number of image codes (K)
    code_dim: int = 32            # dimension of each code vector
    hidden: int = 64              # conv channels on the 7x7 grid (encoder and decoder)
    pixel_channels: int = 16      # channels of the decoder's full-resolution layer
    beta: float = 0.25            # commitment loss weight
    ema_decay: float = 0.99       # EMA codebook update; dead codes are restarted from encoder outputs
    dead_code_threshold: float = 1.0  # a code with EMA count below this is restarted
    two_color_decode: bool = True  # decode into the likeliest valid color pair (no stray colors); False: per channel


@dataclass
class VQTrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200


@dataclass
class ModelConfig:
    vocab_size: int = 0           # filled in from the joint vocabulary
    block_size: int = 58          # 1 + 1 + 6 + 1 + 49
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1     # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    max_train_examples: int = 0   # 0 = all 60k; small values make test runs fast
    max_test_examples: int = 0    # 0 = all 10k
    holdout_pairs: int = 0        # hold out this many (fg, bg) color pairs from training (generalisation study)
    init_from: str = ""           # fine-tune: start from this run's transformer (its tokenizer and shape come too)
    colorings: int = 1            # distinct color-pair draws of the training images; epoch e uses draw e % colorings


@dataclass
class RunConfig:
    preset: str = "seed"
    data_seed: int = 0            # seed of the color-pair draw for each image
    vq: VQConfig = field(default_factory=VQConfig)
    vq_train: VQTrainConfig = field(default_factory=VQTrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        sections = {"vq": VQConfig, "vq_train": VQTrainConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                continue
            if key in sections:
                section_fields = {f.name for f in dataclasses.fields(sections[key])}
                value = sections[key](**{k: v for k, v in value.items() if k in section_fields})
            kwargs[key] = value
        return cls(**kwargs)


# Presets: overrides per section. `seed` is the seed recipe (Adam, lr 1e-3, batch 32, 30 epochs).
PRESETS: dict[str, dict] = {
    "seed": {},
    # Finishes both stages on a 2-core CPU in about 15 minutes.
    "quick": {
        "vq_train": {"epochs": 4, "batch_size": 128, "lr": 2e-3},
        "train": {"epochs": 3, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100},
    },
    # The shipped checkpoint's recipe (see MODEL_CARD.md): a wider tokenizer with twice the codes,
    # a 6-layer d192 transformer, batch 128 with warmup + cosine, sized for ~1 hour on a 2-core CPU.
    "best": {
        "vq": {"codebook_size": 512, "hidden": 96},
        "vq_train": {"epochs": 12, "batch_size": 128, "lr": 2e-3},
        "model": {"n_layer": 6, "n_head": 6, "d_model": 192},
        "train": {"epochs": 7, "batch_size": 128, "lr": 1.5e-3, "warmup_steps": 300},
    },
    # A few seconds end to end: for tests only.
    "tiny": {
        "vq": {"codebook_size": 32, "code_dim": 8, "hidden": 16, "pixel_channels": 4},
        "vq_train": {"epochs": 1, "batch_size": 64, "lr": 3e-3, "warmup_steps": 5},
        "model": {"n_layer": 1, "n_head": 2, "d_model": 32},
        "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5,
                  "max_train_examples": 512, "max_test_examples": 128},
    },
}


def make_config(preset: str = "seed", **overrides) -> RunConfig:
    """Build a RunConfig from a preset name plus `section={field: value}` overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = RunConfig(preset=preset)
    for layer in (PRESETS[preset], overrides):
        for section, values in layer.items():
            if not isinstance(values, dict):
                setattr(config, section, values)
                continue
            target = getattr(config, section)
            for key, value in values.items():
                if not hasattr(target, key):
                    raise ValueError(f"unknown setting {section}.{key}")
                setattr(target, key, value)
    return config


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    caption_temperature: float = 0.0  # image -> text wants the single best caption: greedy by default
    top_k: int = 0                # 0 = no top-k filtering
    guidance: float = 1.0         # classifier-free guidance scale for conditional modes (1 = off)
    grammar: bool = True          # word slots follow the caption template (False: any word in any slot)
    image_candidates: int = 1     # text -> image: draw this many per prompt, keep the one the model captions best
    rerank_captions: bool = False  # image -> text: pick the digit word by Bayes' rule in both orders (reranking.py)
    caption_views: int = 1        # with rerank_captions: sum the digit scores over the image and views - 1 recolorings
    batch_size: int = 1024        # rows decoded together; bounds memory
