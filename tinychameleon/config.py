"""Dataclass configs (the single source of truth) and named presets.

A run is described by a `RunConfig`: the VQ-VAE tokenizer, the transformer, and how each
is trained. Presets are plain dicts of overrides, minGPT-style, applied by `make_config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ConfigError

FIELD_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,)}


def check_types(section: str, config) -> None:
    """Every field holds its declared type (bool is not an int here; an int is a fine float)."""
    for item in dataclasses.fields(config):
        value, allowed = getattr(config, item.name), FIELD_TYPES.get(str(item.type))
        if allowed is None:
            continue
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            raise ConfigError(f"{section}.{item.name} must be {item.type}, got {type(value).__name__} "
                              f"{short(repr(value))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{item.name} must be a finite number, got {value}")


def check_range(name: str, value, low=None, high=None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if low is not None and high is not None else (
            f"at least {low}" if low is not None else f"at most {high}")
        raise ConfigError(f"{name} must be {bounds}, got {value}")


def short(text: str, limit: int = 60) -> str:
    """Echo at most `limit` characters of user input back in a message."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


IMAGE_TOKENIZER_KINDS = ("vq", "rvq", "fsq", "pixels", "palette", "patches", "scales")  # built by tokenizers/image.py
NEXT_SCALES = (1, 2, 3, 4, 5, 7)  # "scales": the side of each scale of the 7x7 shape latent, coarse to fine (VAR)
# FSQ's levels per dimension for about K codes, as the FSQ paper (Mentzer et al. 2023) recommends them.
FSQ_LEVELS = {256: [8, 6, 5], 1024: [8, 5, 5, 5], 4096: [7, 5, 5, 5, 5], 16384: [8, 8, 8, 6, 5]}


@dataclass
class VQConfig:
    kind: str = "vq"              # image tokenizer: "vq" (codes of colored patches) | "rvq" (residual_depth codes per
                                  # patch) | "fsq" (finite scalar codes) | "pixels" (a token per pixel) | "palette"
                                  # (2 colors + VQ codes of the shape) | "patches" (2 colors + 4x4 shape patches) |
                                  # "scales" (2 colors + the shape coded at 1x1 .. 7x7 for next-scale prediction)
    codebook_size: int = 256      # number of VQ codes (K); "fsq": the levels of FSQ_LEVELS[K] (their product codes)
    residual_depth: int = 2       # "rvq": codebooks per patch, each coding what the previous ones left
    code_dim: int = 32            # dimension of each code vector
    hidden: int = 64              # conv channels on the 7x7 grid (encoder and decoder)
    pixel_channels: int = 16      # channels of the decoder's full-resolution layer
    beta: float = 0.25            # commitment loss weight
    ema_decay: float = 0.99       # EMA codebook update; dead codes are restarted from encoder outputs
    dead_code_threshold: float = 1.0  # a code with EMA count below this is restarted
    two_color_decode: bool = True  # decode into the likeliest valid color pair (no stray colors); False: per channel


    def validate(self) -> None:
        check_types("vq", self)
        if self.kind not in IMAGE_TOKENIZER_KINDS:
            raise ConfigError(f"vq.kind must be one of {', '.join(IMAGE_TOKENIZER_KINDS)}, got {short(str(self.kind))!r}")
        for name in ("codebook_size", "code_dim", "hidden", "pixel_channels"):
            check_range(f"vq.{name}", getattr(self, name), 1, 65536)
        check_range("vq.residual_depth", self.residual_depth, 1, 8)
        if self.kind == "fsq" and self.codebook_size not in FSQ_LEVELS:
            raise ConfigError(f"vq.codebook_size of an fsq tokenizer must be one of {', '.join(map(str, FSQ_LEVELS))}"
                              f" (FSQ_LEVELS), got {self.codebook_size}")
        check_range("vq.beta", self.beta, 0.0)
        check_range("vq.ema_decay", self.ema_decay, 0.0, 1.0)


@dataclass
class VQTrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200


    def validate(self, section: str = "vq_train") -> None:
        check_types(section, self)
        check_range(f"{section}.epochs", self.epochs, 0, 10_000)
        check_range(f"{section}.batch_size", self.batch_size, 1, 1 << 20)
        check_range(f"{section}.lr", self.lr, 0.0, 10.0)
        check_range(f"{section}.warmup_steps", self.warmup_steps, 0)


POSITIONS = ("learned", "rope")


@dataclass
class ModelConfig:
    vocab_size: int = 0           # filled in from the joint vocabulary
    block_size: int = 58          # 1 + 1 + 6 + 1 + 49
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    positions: str = "learned"    # learned absolute embeddings, or "rope" (rotary: attention sees relative offsets)
    image_slots: bool = False     # a learned embedding of each image token's place in its image (measured: edits
                                  # copied worse; BENCHMARKS.md "Image slots")
    copy_head: bool = False       # a pointer beside the output head: the next token copied from an earlier position
                                  # (the best preset's since release 7: validation edits 69.5-70.5 -> 91.5-93.5 %;
                                  # BENCHMARKS.md "A pointer head" and "Release 7")
    pointer_slots: bool = False   # with copy_head: a learned bias on where the pointer looks, by the image slot of the
                                  # position it predicts from and of the position it looks at, so "the patch the
                                  # prompt's image has at the slot I am writing" is one table entry, not a match of
                                  # two hidden states a patch apart (where release 13's pointer splits its weight)
    digit_head: bool = False      # training only: a 10-way head reads, at each image's <eoi>, the digit that image
                                  # shows (train.digit_loss_weight), so what decides the next image or the stop (a
                                  # counting document's) holds the digit just drawn; unused when sampling. Measured:
                                  # counting alone 12.5 -> 28.5 %, in the whole mixture no gain and "what comes next"
                                  # 78 -> 71.5 % (BENCHMARKS.md "A digit head"). After block 3 (digit_layer), with
                                  # the answers' words at 3x, in `best`'s second stage since release 12
    digit_layer: int = 0          # with digit_head: 0 reads the final hidden state; k (1..n_layer-1) the stream after
                                  # block k, so the digit is known early enough at <eoi> for later positions' blocks
                                  # to combine (a sum needs both addends, then layers to add them)
    digit_head_tied: bool = False  # with digit_head: its weights are the ten digit words' own embeddings (times a
                                  # learned scale), so the stream at <eoi> comes to hold the drawn digit's word, which
                                  # later blocks can compare with the prompt's words (a count's end, an addend) the
                                  # way they compare words with words. Measured in `best`'s tune stage: the same stop
                                  # and sums as the free head (BENCHMARKS.md, "Reading pairs again, and a digit head tied")
    patch_pixels: bool = False    # the `patches` tokenizer's shape tokens also embedded by their 16 pixels (a learned
                                  # 16 -> d_model map, zero at the start, added to each id's own row), so patches a
                                  # pixel apart start near each other: reading generalises from pixels, not from ids
                                  # that share nothing (reading is ~96 % in documents, every family that reads).
                                  # Added in `best`'s second stage: likelihoods better (caption 0.118 -> 0.111
                                  # nats), reading and families within noise (BENCHMARKS.md, "Shape tokens
                                  # embedded by their pixels"); in `base` from the start: a caption 14 % likelier
    checkerboard: bool = False    # next-scale only: the finest scale drawn in two passes, one checkerboard colour's
                                  # cells, then the other's knowing them (nextscale.model.NextScaleLayout), so no two
                                  # neighbouring codes are drawn blind to each other
    image_tokens: int = 0         # filled in: ids below this are image tokens
    digit_words: int = 0          # filled in: the id of the word "zero" (the nine other digit words follow it)
    image_length: int = 0         # filled in: tokens per image
    first_plan: int = 0           # filled in: the id of <plan zero> (train.plan_tokens; 0: none)

    def validate(self) -> None:
        check_types("model", self)
        check_range("model.vocab_size", self.vocab_size, 0, 1 << 20)
        check_range("model.block_size", self.block_size, 1, 1 << 16)
        check_range("model.n_layer", self.n_layer, 1, 256)
        check_range("model.n_head", self.n_head, 1, 256)
        check_range("model.d_model", self.d_model, 1, 1 << 16)
        check_range("model.dropout", self.dropout, 0.0, 1.0)
        check_range("model.image_tokens", self.image_tokens, 0, 1 << 20)
        check_range("model.image_length", self.image_length, 0, 1 << 16)
        check_range("model.digit_words", self.digit_words, 0, 1 << 20)
        check_range("model.digit_layer", self.digit_layer, 0, self.n_layer - 1)
        if self.digit_layer and not self.digit_head:
            raise ConfigError("model.digit_layer places the digit head: it needs model.digit_head")
        if self.pointer_slots and not self.copy_head:
            raise ConfigError("model.pointer_slots biases the pointer: it needs model.copy_head")
        if self.digit_head_tied and not self.digit_head:
            raise ConfigError("model.digit_head_tied ties the digit head to the digit words: it needs model.digit_head")
        if self.positions not in POSITIONS:
            raise ConfigError(f"model.positions must be one of {', '.join(POSITIONS)}, got {short(repr(self.positions))}")
        if self.positions == "rope" and (self.d_model // self.n_head) % 2:
            raise ConfigError("model.positions rope needs an even head dimension (d_model / n_head)")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model ({self.d_model}) must be a multiple of model.n_head ({self.n_head})")


# Model parts that only add parameters to a transformer (and where the digit head reads): a fine-tune
# (train.init_from) may add them, fresh.
ADDABLE_PARTS = ("image_slots", "copy_head", "pointer_slots", "digit_head", "digit_layer", "digit_head_tied",
                 "patch_pixels")
PRECISIONS = ("fp32", "bf16", "auto")
OPTIMIZERS = ("adamw", "muon")
# Settings renamed since a checkpoint was written: old config.json files still load.
RENAMED = {"max_test_examples": "max_validation_examples"}


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
    max_validation_examples: int = 0  # 0 = all 5k validation examples for the per-epoch check
    holdout_pairs: int = 0        # hold out this many (fg, bg) color pairs from training (generalisation study)
    init_from: str = ""           # fine-tune: start from this run's transformer (its tokenizer and shape come too)
    colorings: int = 1            # distinct color-pair draws of the training images; epoch e uses draw e % colorings
    precision: str = "fp32"       # "bf16": bf16 autocast for the transformer's matmuls; "auto": bf16 only where the CPU
                                  # runs it natively (AVX512-BF16 or AMX), else fp32 (device.native_bf16); CUDA: always bf16
    patience: int = 0             # early stopping: stop after this many epochs without a better validation NLL (0 = off)
    stop_at_nll: float = 0.0      # stop once validation NLL is at or below this (0 = off)
    infill_rate: float = 0.0      # CM3 objective: this share of sequences has one span moved to the end (sequences.py)
    optimizer: str = "adamw"      # "adamw", or "muon": Muon for the blocks' matrices, AdamW for the rest
    muon_lr: float = 0.02         # Muon's peak learning rate (it follows the same warmup and cosine)
    caption_loss_weight: float = 1.0  # loss weight of the caption's words in image-first rows (the model reading
                                  # the image); 1 = plain next-token loss. The digit word is 1 of ~60 targets of a
                                  # row, so reading learns slowly otherwise.
    reading_share: float = 0.5    # share of each batch of pairs read image-first (image -> caption); the rest are
                                  # drawn text-first (caption -> image)
    shifted_reading: float = 0.0  # share of image-first rows that read a copy of their digit moved by 1-2 pixels
                                  # (data.colored.shifted): they train the reading only, their image tokens carry no
                                  # loss, so the model learns to read digits off any grid phase but draws them centred
    pairs: int = 0                # pairs trained per epoch, a fresh random subset of the training digits each epoch;
                                  # 0 = every one (a tune stage on a model that already draws and reads may spend
                                  # its steps on documents instead)
    documents: int = 0            # mixed-modal documents (documents/families.py) trained per epoch beside the pairs,
                                  # built afresh each epoch from the training digits; 0 = pairs only
    text_dropout: float = 0.1     # share of those documents (and of a next-scale model's drawing rows) trained with
                                  # their text removed: the unconditional stream classifier-free guidance reads
    retrieve: int = 0             # retrieval-augmented documents (CM3Leon): draw / read after this many retrieved
                                  # neighbours of the example (the shipped retriever's, never the example); 0 = off
    retrieve_min: int = 0         # with retrieve: each retrieval document reads a number of neighbours drawn evenly
                                  # from retrieve_min..retrieve, so one model reads any k a user asks; 0 = always
                                  # `retrieve` of them
    word_families: bool = False   # also train the stepping stones in words alone (documents/families.WORD_FAMILIES:
                                  # "three plus four is" -> "seven ."; "count from two to four :" -> "two three four .")
    family_shares: dict = field(default_factory=dict)  # family name -> its share of the documents, over the
                                  # registry's (documents/families.FAMILIES): {"counting": 10} for a mixture to probe
    memory_strokes: bool = False  # retrieval-augmented documents: draw the neighbours and the query in one random
                                  # stroke style (data.colored.TRAINING_STROKES, or the digits' own), so a memory's
                                  # strokes predict the drawing's: style from memory, not only words
    context_loss_weight: float = 0.5  # loss weight of those retrieved neighbours' tokens (the query's stays 1)
    answer_loss_weight: float = 1.0   # loss weight of a document's answer (what follows its prompt, <eod> included):
                                  # a question's answer is 2 of ~60 targets, so routing it to the right part of the
                                  # image learns slowly otherwise (like caption_loss_weight for pairs)
    prompt_end: bool = False      # documents mark where their prompt ends with <eop> (as a chat template marks the
                                  # answer's turn): a prompt of one image then reads as "caption this", not as the
                                  # start of a question
    unconditional_without_eop: bool = False  # text-dropped documents (guidance's unconditional stream) leave out
                                  # <eop> too: with it, "<bos> <image> <eop> <eod>" (a question with its words
                                  # dropped) taught that a prompt of one image may end at once, which is exactly
                                  # the prompt that asks for a caption
    answer_words_only: bool = False   # answer_loss_weight on the answer's words, <boi>, <eoi> and <eod> only: its
                                  # images keep weight 1, so drawing keeps its share of the document loss
    decision_loss_weight: float = 0.0  # > 0: loss weight of what an answer writes right after each of its images
                                  # (<boi> again, <eod>, a word): counting's only cue to stop is a 1-in-55 target
                                  # that the digit just drawn is the last one asked; 0 leaves it the answer's weight.
                                  # At 10 in the tune stage: counting 28.3 -> 32.0 %, addition 56.8 -> 49.2 % (not
                                  # shipped; BENCHMARKS.md "Counting's stop")
    digit_loss_weight: float = 0.2    # with model.digit_head: weight of its cross-entropy (a mean over the documents'
                                  # images) beside the next-token loss (a mean over tokens)
    digit_plan: bool = False      # with model.digit_head: it also reads, at each <boi> an answer writes, the digit
                                  # that image will show: counting draws its next digit with no word to say which,
                                  # and the image's first tokens (background) barely tell. Measured with the
                                  # decision weight at 10: it stops after two images always (not shipped)
    plan_tokens: bool = False     # every image an answer draws names its digit, <plan DIGIT> after its two colors,
                                  # written by the model: counting's stop and next digit read a token, as counting
                                  # in words does, not the image just drawn (BENCHMARKS.md "Plan tokens")
    prompt_plans: bool = False    # with plan_tokens: the prompt's images carry their digit's plan too, given, never
                                  # asked for: at inference the pair reader (Bayes re-ranking, CLIP) writes it, so
                                  # "what digit", addition and "what comes next" read a token the best reader chose


    def validate(self) -> None:
        VQTrainConfig.validate(self, "train")
        check_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("train.weight_decay", self.weight_decay, 0.0)
        check_range("train.grad_clip", self.grad_clip, 0.0)
        check_range("train.seed", self.seed, 0, 2**63 - 1)
        for name in ("max_train_examples", "max_validation_examples", "holdout_pairs", "patience", "pairs"):
            check_range(f"train.{name}", getattr(self, name), 0)
        check_range("train.colorings", self.colorings, 1, 1000)
        check_range("train.stop_at_nll", self.stop_at_nll, 0.0)
        check_range("train.infill_rate", self.infill_rate, 0.0, 1.0)
        check_range("train.muon_lr", self.muon_lr, 0.0, 10.0)
        check_range("train.caption_loss_weight", self.caption_loss_weight, 0.0, 1000.0)
        check_range("train.digit_loss_weight", self.digit_loss_weight, 0.0, 1000.0)
        check_range("train.reading_share", self.reading_share, 0.0, 1.0)
        check_range("train.shifted_reading", self.shifted_reading, 0.0, 1.0)
        check_range("train.documents", self.documents, 0, 10_000_000)
        check_range("train.text_dropout", self.text_dropout, 0.0, 1.0)
        check_range("train.retrieve", self.retrieve, 0, 4)  # documents grow past 4 images to hold k neighbours + 1
        check_range("train.retrieve_min", self.retrieve_min, 0, self.retrieve)
        check_range("train.context_loss_weight", self.context_loss_weight, 0.0, 1.0)
        check_range("train.answer_loss_weight", self.answer_loss_weight, 0.0, 100.0)
        check_range("train.decision_loss_weight", self.decision_loss_weight, 0.0, 100.0)
        if self.prompt_end and not self.documents:
            raise ConfigError("train.prompt_end needs train.documents > 0: only documents have prompts")
        if self.unconditional_without_eop and not self.prompt_end:
            raise ConfigError("train.unconditional_without_eop needs train.prompt_end: only then has a prompt an <eop>")
        if self.memory_strokes and not self.retrieve:
            raise ConfigError("train.memory_strokes needs train.retrieve > 0: only retrieval documents have a memory")
        for name, share in self.family_shares.items():
            if (not isinstance(name, str) or isinstance(share, bool) or not isinstance(share, (int, float))
                    or not math.isfinite(share)):
                raise ConfigError(f"train.family_shares maps family names to finite numbers, got {short(repr(name))}: "
                                  f"{short(repr(share))}")
            check_range(f"train.family_shares[{short(repr(name))}]", share, 0.0, 1000.0)
        if self.family_shares and not self.documents:
            raise ConfigError("train.family_shares needs train.documents > 0: the shares are of documents")
        if self.word_families and not self.documents:
            raise ConfigError("train.word_families needs train.documents > 0: the stepping stones are documents")
        if self.retrieve and not self.documents:
            raise ConfigError("train.retrieve needs train.documents > 0: retrieved neighbours are read in documents")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {short(repr(self.optimizer))}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {short(repr(self.precision))}")


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
        """Rebuild a config from its JSON form; unknown keys, wrong types and bad values raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"a run config must be a JSON object, got {type(data).__name__}")
        sections = {"vq": VQConfig, "vq_train": VQTrainConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs = {}
        for key, value in data.items():
            if key not in {f.name for f in dataclasses.fields(cls)}:
                raise ConfigError(f"unknown setting {short(str(key))!r}")
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} must be a JSON object, got {type(value).__name__}")
                value = {RENAMED.get(name, name): item for name, item in value.items()}
                known = {f.name for f in dataclasses.fields(sections[key])}
                unknown = [name for name in value if name not in known]
                if unknown:
                    raise ConfigError(f"unknown setting {key}.{short(str(unknown[0]))}")
                value = sections[key](**value)
            kwargs[key] = value
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> "RunConfig":
        check_types("config", self)
        for section in (self.vq, self.vq_train, self.model, self.train):
            section.validate()
        check_range("data_seed", self.data_seed, 0, 2**32 - 1)
        if self.vq.kind == "scales" and (self.train.documents or self.train.infill_rate or self.train.shifted_reading):
            raise ConfigError("a next-scale run (vq.kind scales) trains on pairs only: train.documents, "
                              "train.infill_rate and train.shifted_reading must be 0")
        if self.model.checkerboard and self.vq.kind != "scales":
            raise ConfigError("model.checkerboard splits a next-scale model's finest scale: it needs vq.kind scales")
        if self.vq.kind == "scales" and self.model.positions != "learned":
            raise ConfigError("a next-scale run (vq.kind scales) has learned scale and position embeddings: "
                              "model.positions must be learned")
        if self.train.documents and self.vq.kind not in ("palette", "patches"):
            raise ConfigError(f"train.documents needs an image tokenizer that keeps color apart from shape (vq.kind "
                              f"palette or patches, got {self.vq.kind}): edits repaint a digit's color tokens")
        if self.model.patch_pixels and self.vq.kind != "patches":
            raise ConfigError(f"model.patch_pixels embeds the `patches` tokenizer's pixels: this run's tokenizer is "
                              f"{self.vq.kind}")
        if self.model.digit_head and not self.train.documents:
            raise ConfigError("model.digit_head reads the digits of documents' images: it needs train.documents")
        if self.train.digit_plan and not self.model.digit_head:
            raise ConfigError("train.digit_plan trains the digit head at each answer's <boi>: it needs model.digit_head")
        if self.train.plan_tokens and not self.train.documents:
            raise ConfigError("train.plan_tokens names the digit of each image documents' answers draw: "
                              "it needs train.documents")
        if self.train.prompt_plans and not self.train.plan_tokens:
            raise ConfigError("train.prompt_plans gives the prompt's images plan tokens: it needs train.plan_tokens")
        return self


# Presets: overrides per section. `seed` is the seed recipe (Adam, lr 1e-3, batch 32, 30 epochs).
PRESETS: dict[str, dict] = {
    "seed": {},
    # Finishes both stages on a 2-core CPU in about 15 minutes.
    "quick": {
        "vq_train": {"epochs": 4, "batch_size": 128, "lr": 2e-3},
        "train": {"epochs": 3, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100},
    },
    # Release 9 in one command from an empty directory (about 100 minutes on a 2-core CPU): the first stage of
    # `best` (below), which trains it first unless told which run to continue:
    # the "patches" image tokenizer (two color tokens + the 2048 most frequent 4x4 shape patches, fitted
    # in seconds), a 6-layer d192 transformer with rotary positions trained for 3 epochs with Muon on its
    # blocks' matrices, a fresh color draw of the training digits each epoch, bf16 matmuls where the CPU has them
    # natively (precision "auto": fp32 elsewhere, where emulated bf16 is ~15x slower), early stopping on
    # validation NLL, and 42 000 task-family documents per epoch beside the 55 000 digits' pairs in both orders
    # (documents/families.py). Rotary positions: in a matched short run (1 epoch, 10k digits, 20k documents)
    # validation nats per document token 1.599 -> 1.488 and per pair 88.2 -> 84.6 against learned ones.
    # Documents close their prompt with <eop> (train.prompt_end; release 6): on validation the mean of the twelve
    # families 60.0 -> 74.0 % against release 5, pairs within a run's noise. Release 7 adds the pointer head
    # (model.copy_head: edits copy the prompt's patches) and text-dropped documents without <eop>
    # (train.unconditional_without_eop): validation mean 73.2 -> 78.8 %. Release 9 trains 42 000 documents (36 000) with
    # the stepping stones in words (train.word_families) and addition, counting and the two color names at 1.5-2x
    # their share, from training seed 1: both color names 91 / 84.5 -> 100 %, addition 11.5 -> 48.5 % (sums drawn
    # evenly), mean 78.8 -> 83.1 %. MODEL_CARD.md has its curve and choices.
    # The causal-masked objective (train.infill_rate) is left out: in a matched small run it cost 1.5 %
    # validation NLL and did not improve infilling (docs/history/release-1-model-card.md).
    "base": {
        "vq": {"kind": "patches", "codebook_size": 2048, "hidden": 96},
        "vq_train": {"epochs": 5, "batch_size": 128, "lr": 2e-3},
        "model": {"n_layer": 6, "n_head": 6, "d_model": 192, "positions": "rope", "copy_head": True},
        "train": {"epochs": 3, "batch_size": 128, "lr": 1.5e-3, "warmup_steps": 300, "colorings": 10,
                  "precision": "auto", "patience": 2, "optimizer": "muon", "documents": 42000,
                  "prompt_end": True, "unconditional_without_eop": True, "word_families": True,
                  "family_shares": {"addition": 2.0, "counting": 1.5, "background name": 2.0,
                                    "digit color name": 2.0},
                  "seed": 1},
    },
    # The iGPT baseline: a token per pixel (784 per image), so a small model on the 15k digits the
    # tokenizer comparison uses (about 23 minutes on a 2-core CPU; scripts/tokenizer_comparison.sh).
    "pixels": {
        "vq": {"kind": "pixels"},
        "model": {"n_layer": 4, "n_head": 4, "d_model": 128},
        "train": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "warmup_steps": 50, "max_train_examples": 15000,
                  "max_validation_examples": 500, "precision": "auto", "optimizer": "muon"},
    },
    # Next-scale prediction (VAR) on the same data, in one command: the "scales" tokenizer (two color tokens +
    # a VQ-VAE on the shape whose 7x7 latent is coded at 1, 2, 3, 4, 5 and 7 per side by one shared codebook)
    # and a next-scale transformer that draws a scale per forward pass and reads images in the same weights
    # (nextscale/). MODEL_CARD in pretrained/var has its curve and choices.
    "var": {
        "vq": {"kind": "scales", "codebook_size": 512, "hidden": 64, "code_dim": 32},
        "vq_train": {"epochs": 3, "batch_size": 128, "lr": 2e-3},
        "model": {"n_layer": 6, "n_head": 6, "d_model": 192},
        "train": {"epochs": 5, "batch_size": 128, "lr": 1.5e-3, "warmup_steps": 300, "colorings": 10,
                  "precision": "auto", "patience": 2, "optimizer": "muon", "caption_loss_weight": 4.0},
    },
    # A few seconds end to end: for tests only.
    "tiny": {
        "vq": {"codebook_size": 32, "code_dim": 8, "hidden": 16, "pixel_channels": 4},
        "vq_train": {"epochs": 1, "batch_size": 64, "lr": 3e-3, "warmup_steps": 5},
        "model": {"n_layer": 1, "n_head": 2, "d_model": 32},
        "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5,
                  "max_train_examples": 512, "max_validation_examples": 128},
    },
}


# Retrieval-augmented (CM3Leon), in one command: `base` (the first stage of `best`) with one to four retrieved
# neighbours (as many as a user may ask for) read before the "draw from memory" and "read from memory" documents, each
# drawn in one random stroke style (train.memory_strokes), at release 2's token budget (26 000 documents of 141 tokens
# on average read what its 28 000 of 130 did; it read two neighbours always). Release 7's pointer and stream included:
# without them the twelve families fell to 41.5 % on validation (edits never copied). It keeps release 8's mixture (no
# stepping stones, the registry's shares, seed 0). It is the first stage of `memory`; memory release 3 was trained so.
PRESETS["memory-base"] = {**PRESETS["base"],
                          "train": {**PRESETS["base"]["train"], "documents": 26000, "retrieve": 4, "retrieve_min": 1,
                                    "memory_strokes": True, "word_families": False, "family_shares": {}, "seed": 0}}


# The shipped recipe, two stages in one command (CM3Leon tunes its pretrained model on a task mixture; nanochat's
# base -> mid -> sft): `base`, then more epochs of its mixture (one until release 16, two since 17) with counting at 6
# instead of 1.5, the three color edits at 1.5 instead of 1, a fresh 20-step warmup and cosine (and since release 13
# more documents, fewer pairs).
# From release 9's weights: counting 1.5 -> 29.5 %, the families' mean 83.1 -> 84.7 % on validation (release 10); the
# edits at 1.5 lifted the edits 1.5-5.7 points at 600 validation documents each in two runs on two CPUs (release 11),
# where the edits at 2 cost drawings' variety and two runs from nothing with counting at 4 lost the color names or
# addition (BENCHMARKS.md).
# Release 12 adds, in this stage only, the answers' words weighed 3x (train.answer_words_only: a sum, the next digit,
# a count's stop are one token in a hundred) and the digit head reading each <eoi> after block 3 of 6
# (model.digit_layer, training only), so the digit is known early enough for the blocks above to combine it: at 600
# validation documents each, addition 47.5 -> 56.8 % and "what comes next" 76.8 -> 88.2 %, the edits within 1.2
# points (BENCHMARKS.md, "Where the addends are known").
# Release 13 spends the stage's steps on documents: a fresh half of the pairs per epoch (train.pairs 28 000 of
# 55 000; the base already draws and reads) and 56 000 documents instead of 42 000 in about the same wall time, with
# addition at 8: at 600 validation documents each, addition 56.8 -> 75.5 %, counting 28.3 -> 27.8 %, "what comes
# next" 88.2 -> 90.2 %, swap 93.8 -> 95.0 %; the mean of twelve at 200, 86.4 -> 88.8 %; pairs read 98.8 -> 98.6 %
# (BENCHMARKS.md, "Spending the tune stage on documents"). With 14 000 pairs and counting at 6, addition reached
# 79.2 % but reading pairs fell 0.7 points and counting 9.5.
# Release 14 adds, in this stage, the pointer's slot bias (model.pointer_slots): release 13's failed copies were the
# pointer splitting its weight between the prompt's patch and the one beside it. At 600 validation documents each,
# edits 95.2 / 96.0 / 95.0 -> 98.7 / 98.0 / 97.2 % (BENCHMARKS.md, "The pointer's slot bias").
# Release 15 is this stage again with Muon's iterations in bf16 (training/optimizers.py): the color names that
# release 14 lost came back (600 validation documents each: 99.2 / 97.3 -> 100 / 99.8 %), the rest within noise
# (BENCHMARKS.md, "Muon in bf16").
# Release 16 is `train --preset best --out D` from nothing (57 min on a 2-core AMD EPYC): the `base` run in D/base,
# then this stage in D. It keeps the swap that session 36's from-nothing run lost, and on validation matches or beats
# release 15 (this stage on release 9's weights; BENCHMARKS.md, "Release 16"). `--init-from RUN` continues RUN instead.
# Release 17 adds, in this stage, plan tokens (train.plan_tokens: each image an answer draws names its digit after its
# two colors, so a count's next digit and its stop read a token instead of a drawing), the word right after each
# answer image at weight 10 (train.decision_loss_weight), the swap at 3 and a second epoch: one epoch of this mixture
# from the base left some family behind (the swap at 2 %, or at 3 "change digit" at 78.5 %), two leave none. From
# nothing, at 600 validation documents each: counting 26.8 -> 86.2 %, addition 76.5 -> 80.8 %, "what comes next"
# 92.3 -> 93.2 %, the edits level or up; image -> text 99.0 -> 98.6 % (BENCHMARKS.md, "Release 17").
# Release 18 is this stage with counting at 6 instead of 4: release 17's counts drew past their stop. From release 17's
# base, at 600 validation documents each: counting 86.2 -> 95.5 %, addition 80.8 -> 83.7 %, the rest level; image ->
# text 98.6 -> 98.4 % at 1000 (on test 98.9 -> 98.0 %; BENCHMARKS.md, "Release 18").
# Release 19 gives the prompt's images their plans too (train.prompt_plans; at inference the pair caption's digit):
# from release 17's base, at 600 validation documents each: addition 83.7 -> 97.3 %, counting 95.5 -> 98.0 %, "what
# comes next" 93.5 -> 98.5 %, the edits level or up; image -> text 98.4 -> 99.0 % at 1000 (BENCHMARKS.md, "Release 19").
PRESETS["best"] = {**PRESETS["base"],
                   "model": {**PRESETS["base"]["model"], "digit_head": True, "digit_layer": 3, "pointer_slots": True},
                   "train": {**PRESETS["base"]["train"], "epochs": 2, "warmup_steps": 20,
                             "answer_loss_weight": 3.0, "answer_words_only": True, "pairs": 28000, "documents": 56000,
                             "family_shares": {**PRESETS["base"]["train"]["family_shares"], "addition": 8.0,
                                               "counting": 6.0, "digit color": 1.5, "background color": 1.5,
                                               "swap": 3.0},
                             "plan_tokens": True, "prompt_plans": True, "decision_loss_weight": 10.0}}


# The shipped retrieval-augmented recipe, two stages the same way as `best`: `memory-base`, then one more epoch with a
# fresh 20-step warmup and the two memory families at 2 and 1 instead of the registry's 4 and 2. From memory release
# 3's weights: the twelve families 53.3 -> 76.2 % on validation with the style targets held (BENCHMARKS.md, "A tune
# epoch for memory"), where the memory families at 1 and 1 drew the asked digit after a thick memory 1 point too rarely.
PRESETS["memory"] = {**PRESETS["memory-base"],
                     "train": {**PRESETS["memory-base"]["train"], "epochs": 1, "warmup_steps": 20,
                               "family_shares": {"draw from memory": 2.0, "read from memory": 1.0}}}

# A preset that continues a run -> the preset of the run it continues (its first stage).
STAGES = {"best": "base", "memory": "memory-base"}


def make_config(preset: str = "seed", validate: bool = True, **overrides) -> RunConfig:
    """Build a RunConfig from a preset name plus `section={field: value}` overrides. validate=False leaves the
    checks to the caller (a fine-tune's tokenizer is only known once its source run is read)."""
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
                setattr(target, key, dict(value) if isinstance(value, dict) else value)   # never the preset's own
    if preset in STAGES and not config.train.init_from:
        raise ValueError(f"the {preset} preset continues a trained run (a `--preset {STAGES[preset]}` run's folder): "
                         f"give it as train.init_from, or train both stages with `tinychameleon train --preset "
                         f"{preset}`")
    try:
        return config.validate() if validate else config
    except ConfigError as error:
        raise ValueError(str(error)) from None


DOCUMENT_SETTINGS = ("temperature", "top_k", "top_p", "guidance", "greedy_above")   # what sampling.documents may set
RETRIEVED_SETTINGS = DOCUMENT_SETTINGS + ("image_candidates", "clip_rerank")   # and sampling.retrieved


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    fine_temperature: float = 1.0  # next-scale: the finest scale's temperature as a multiple of `temperature`, the
                                  # scales between interpolated (coarse scales keep the variety, fine ones the strokes)
    guided_scales: int = 0        # next-scale: guidance on the N coarsest scales only (0 = all); the finer scales,
                                  # most of the tokens, then follow the caption alone at half the work
    caption_temperature: float = 0.0  # image -> text wants the single best caption: greedy by default
    caption_guidance: float = 1.0  # image -> text: guidance of the caption (1 = off; `guidance` is for images)
    top_k: int = 0                # 0 = no top-k filtering
    top_p: float = 1.0            # nucleus sampling: keep the smallest set of tokens with this much mass (1 = off)
    guidance: float = 1.0         # classifier-free guidance scale for conditional modes (1 = off)
    greedy_above: float = 1.0     # a token the model alone gives more than this probability is taken as it stands,
                                  # the others drawn under guidance and temperature: a copy (an edit's strokes) stays
                                  # exact while a fresh drawing keeps its variety (sampling.keep_sure; 1 = off)
    cd_k: int = 0                 # contrastive decoding CD-K instead of guidance: candidates within cd_alpha of the
    cd_alpha: float = 0.1         # k-th likeliest conditional token, scored log p_cond - log p_uncond (0 = off)
    grammar: bool = True          # word slots follow the caption template (False: any word in any slot)
    image_candidates: int = 1     # text -> image: draw this many per prompt, keep the one the model captions best
    mixed_pool: bool = False      # with image_candidates > 1: half of them drawn by CD-K (cd_k, or 5), half guided
    clip_rerank: bool = False     # with image_candidates > 1: keep the one the retriever (a CLIP trained here) finds
                                  # closest to its prompt, instead of the one the model itself captions best
    rerank_captions: bool = False  # image -> text: pick the digit word by Bayes' rule in both orders (reranking.py)
    caption_views: int = 1        # with rerank_captions: sum every reader's digit scores (the model's, CLIP's) over the
                                  # image and views - 1 recolorings of it, each shifted by a pixel
    caption_hypotheses: int = 10  # with rerank_captions: digits (the image-first reading's top ones) given the full score
    caption_clip_weight: float = 0.0  # with rerank_captions: add this times the retriever's (CLIP's) cosine of each
                                  # digit's caption with the image to its Bayes score: a second reader whose errors
                                  # differ from the model's (0 = off)
    batch_size: int = 1024        # rows decoded together; bounds memory
    documents: dict = field(default_factory=dict)  # what images inside documents use instead of the settings above,
                                  # e.g. {"guidance": 1.75, "temperature": 0.0}: edits copy strokes best near greedy,
                                  # while pairs keep their variety (DOCUMENT_SETTINGS; chosen on validation)
    retrieved: dict = field(default_factory=dict)  # what a drawing after retrieved documents uses instead (generate
                                  # --retrieve; RETRIEVED_SETTINGS), e.g. {"guidance": 1.5}

    # The allowed range of each numeric setting: one table for the CLI, the web API and sampling.json.
    RANGES = {"temperature": (0.0, 100.0), "fine_temperature": (0.0, 10.0), "guided_scales": (0, 16),
              "caption_temperature": (0.0, 100.0),
              "top_k": (0, 1 << 20),
              "guidance": (0.0, 100.0), "caption_guidance": (0.0, 100.0), "image_candidates": (1, 64),
              "top_p": (0.01, 1.0), "greedy_above": (0.0, 1.0), "cd_k": (0, 1 << 20), "cd_alpha": (1e-6, 1.0),
              "caption_views": (1, 32),
              "caption_hypotheses": (1, 10), "caption_clip_weight": (0.0, 1000.0),
              "batch_size": (1, 1 << 16)}
    MIN_TEMPERATURE = 0.01        # below this (but above 0, greedy) logits / temperature overflow

    @property
    def streams(self) -> int:
        """Token streams a conditional request decodes: 2 when guidance or CD-K reads the unconditional one."""
        return 2 if self.guidance != 1.0 or self.cd_k or (self.mixed_pool and self.image_candidates > 1) else 1

    @property
    def reranks_captions(self) -> bool:
        """Whether a caption's digit is re-ranked: only greedy captions are (a sampled caption stays a sample)."""
        return self.rerank_captions and self.temperature <= 0

    @classmethod
    def from_dict(cls, data: dict) -> "SamplingConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"sampling settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [key for key in data if key not in known]
        if unknown:
            raise ConfigError(f"unknown sampling setting {short(str(unknown[0]))!r}; known: {', '.join(sorted(known))}")
        return cls(**data).validate()

    def validate(self) -> "SamplingConfig":
        check_types("sampling", self)
        for name, (low, high) in self.RANGES.items():
            check_range(name, getattr(self, name), low, high)
        for name in ("temperature", "caption_temperature"):
            value = getattr(self, name)
            if 0 < value < self.MIN_TEMPERATURE:
                raise ConfigError(f"{name} must be 0 (greedy) or at least {self.MIN_TEMPERATURE}, got {value}")
        for entry, allowed in (("documents", DOCUMENT_SETTINGS), ("retrieved", RETRIEVED_SETTINGS)):
            overrides = getattr(self, entry)
            unknown = [key for key in overrides if key not in allowed]
            if unknown:
                raise ConfigError(f"sampling.{entry} may set {', '.join(allowed)}; not {short(str(unknown[0]))!r}")
            if overrides:   # the same types and ranges as the settings they replace
                try:
                    dataclasses.replace(self, documents={}, retrieved={}, **overrides).validate()
                except ConfigError as error:
                    raise ConfigError(f"sampling.{entry}: {error}") from None
        return self
