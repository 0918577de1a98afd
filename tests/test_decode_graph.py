"""The static-shape decode step (decode_graph.py): on the CPU it must read exactly as the growing `KVCache` does;
on a GPU, replayed as a recorded CUDA graph, exactly as the eager step, also when a recorded step is reused."""

import pytest
import torch

from tinychameleon import decode_graph
from tinychameleon.config import ModelConfig
from tinychameleon.decode_graph import StaticKVCache, captured_step
from tinychameleon.model import Transformer
from tinychameleon.sampling import ModalityRules, Stream, generate
from tinychameleon.sequences import image_prefix, text_prefix
from tinychameleon.tokenizers.text import WordTokenizer
from tinychameleon.tokenizers.vocab import Vocab

VOCAB = Vocab(16)
PROMPTS = torch.tensor([WordTokenizer().encode(caption) for caption in
                        ("dark green eight on bright cyan", "plain white one on plain black", "normal red two on plain white")])
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def make_model(device="cpu", **parts) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB.size, n_layer=2, n_head=2, d_model=32, block_size=VOCAB.plain_length, **parts)
    model = Transformer(config)
    if config.pointer_slots:
        with torch.no_grad():
            model.copy.slot_bias.normal_(0.0, 0.3)        # zero at init: drawn here so that the slots matter
    return model.to(device).eval()


# Every part of the model that keeps state in the cache: rotary positions, each image token's slot, the pointer.
PARTS = [{}, {"positions": "rope", "copy_head": True, "image_slots": True, "image_tokens": VOCAB.image_tokens,
              "image_length": VOCAB.image_length},
         {"positions": "rope", "copy_head": True, "pointer_slots": True, "image_tokens": VOCAB.image_tokens,
          "image_length": VOCAB.image_length}]


def step_logits(model, prefixes, static: bool, steps: int = 12) -> list[torch.Tensor]:
    """Prefill left-padded prompt groups, then feed `steps` fixed tokens; every step's logits."""
    stream = Stream(model, prefixes, length=VOCAB.plain_length, static=static)
    assert isinstance(stream.cache, StaticKVCache) == static
    out = [torch.cat(stream.prefill())]
    tokens = torch.arange(steps) % VOCAB.image_tokens
    for token in tokens:
        out.append(torch.cat(stream.decode_one_token(token.repeat(len(prefixes[0])).to(prefixes[0].device))).clone())
    return out


@pytest.mark.parametrize("parts", PARTS)
def test_the_static_cache_reads_as_the_growing_cache_does(parts):
    model = make_model(**parts)
    # Two groups of different lengths, as guidance runs them: the shorter is left-padded.
    prefixes = [text_prefix(VOCAB, PROMPTS), text_prefix(VOCAB, PROMPTS)[:, [0, -1]]]
    with torch.no_grad():
        growing, static = step_logits(model, prefixes, static=False), step_logits(model, prefixes, static=True)
    for expected, got in zip(growing, static):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parts", PARTS)
def test_sampling_through_the_static_cache_draws_the_same_tokens(parts):
    model, rules = make_model(**parts), ModalityRules(VOCAB)
    for prefix, guidance in ((text_prefix(VOCAB, PROMPTS), 2.0), (image_prefix(VOCAB, torch.randint(0, 16, (3, 49))), 1.0)):
        drawn = [generate(model, prefix, rules, temperature=1.0, guidance=guidance, static=static,
                          generator=torch.Generator().manual_seed(5)) for static in (False, True)]
        assert torch.equal(drawn[0], drawn[1])


def test_a_restarted_static_cache_reads_as_a_fresh_one():
    model = make_model(positions="rope", copy_head=True)
    first, second = text_prefix(VOCAB, PROMPTS), text_prefix(VOCAB, PROMPTS.flip(0))
    cache = StaticKVCache(model.config, 3, VOCAB.plain_length)
    with torch.no_grad():
        cache.start(torch.tensor([[True] * 9, [False] * 2 + [True] * 7, [True] * 9]))
        model(first, kv_cache=cache)
        model(torch.zeros(3, 1, dtype=torch.long), kv_cache=cache)
        cache.start(torch.ones(3, 9, dtype=torch.bool))
        reused = model(second, kv_cache=cache)[:, -1]
        fresh_cache = StaticKVCache(model.config, 3, VOCAB.plain_length)
        fresh_cache.start(torch.ones(3, 9, dtype=torch.bool))
        fresh = model(second, kv_cache=fresh_cache)[:, -1]
    assert cache.position == second.shape[1] and int(cache.slot) == second.shape[1]
    torch.testing.assert_close(reused, fresh, rtol=0, atol=0)


def test_recorded_steps_are_kept_per_shape_and_dropped_when_the_weights_move():
    model = make_model()
    step = captured_step(model, 2, 40)
    assert captured_step(model, 2, 40) is step and captured_step(model, 3, 40) is not step
    model.to(torch.float64)         # new weight tensors: graphs recorded on the old ones would read freed memory
    assert captured_step(model, 2, 40) is not step


@GPU
@pytest.mark.parametrize("parts", PARTS)
def test_a_replayed_cuda_graph_draws_what_the_eager_step_draws(parts):
    model, rules = make_model("cuda", **parts), ModalityRules(VOCAB)
    prefix = text_prefix(VOCAB, PROMPTS).cuda()
    with torch.no_grad():
        eager = step_logits(model, [prefix, prefix[:, [0, -1]]], static=False)
        replayed = step_logits(model, [prefix, prefix[:, [0, -1]]], static=True)
    for expected, got in zip(eager, replayed):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # Twice: the second decode of this shape replays the step the first one recorded, emptied.
    for _ in range(2):
        drawn = [generate(model, prefix, rules, temperature=1.0, guidance=2.0, static=static,
                          generator=torch.Generator("cuda").manual_seed(5)) for static in (False, True)]
        assert torch.equal(drawn[0], drawn[1])
    assert any(key[2] == "step" for key in decode_graph._pool[model])       # the default decode recorded one
    slots = VOCAB.plain_length + VOCAB.text_first_codes.start - 2
    assert captured_step(model, 6, slots) is captured_step(model, 6, slots + 1)    # lengths round up together


@GPU
def test_a_step_recorded_under_autocast_stays_right_after_that_autocast_ends():
    # Each decode opens its own autocast: a replay must not read cast weights cached by the one that recorded.
    model, rules = make_model("cuda", positions="rope", copy_head=True), ModalityRules(VOCAB)
    prefix = text_prefix(VOCAB, PROMPTS).cuda()
    for _ in range(2):
        drawn = []
        for static in (False, True):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                drawn.append(generate(model, prefix, rules, temperature=1.0, guidance=2.0, static=static,
                                      generator=torch.Generator("cuda").manual_seed(7)))
        assert torch.equal(drawn[0], drawn[1])
