import pytest
import torch

from tinychameleon.config import POSITIONS, ConfigError, ModelConfig
from tinychameleon.model import (KVCache, Rotary, Transformer, causal_mask, fused_attention, hidden_states,
                                 image_slots, manual_attention, rotate)


def small_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, n_layer=2, n_head=4, d_model=32, **overrides)
    return Transformer(config).eval()


def test_logits_shape_and_target_log_probs():
    model = small_model()
    ids, targets = torch.randint(0, 50, (3, 58)), torch.randint(0, 50, (3, 58))
    logits = model(ids)
    assert logits.shape == (3, 58, 50)
    torch.testing.assert_close(model(ids, targets=targets),
                               torch.log_softmax(logits, -1).gather(2, targets[..., None])[..., 0])


@pytest.mark.parametrize("positions", POSITIONS)
def test_manual_and_fused_attention_agree(positions):
    model = small_model(positions=positions)
    ids = torch.randint(0, 50, (4, 58))
    fused = model(ids)
    model.set_fused_attention(False)
    manual = model(ids)
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_bf16_attention_runs_in_fp32(masked):
    """Under bf16 autocast on the CPU the fused kernel runs in fp32 (torch's bf16 CPU kernel is the slow one): its
    output is fp32 attention on the bf16 inputs, rounded once to bf16, and gradients reach q, k, v in bf16."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8).bfloat16().requires_grad_() for _ in range(3))
    mask = causal_mask(17, 0, "cpu")
    options = {"attn_mask": mask} if masked else {"is_causal": True}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_attention(q, k, v, **options)
    reference = manual_attention(q.float(), k.float(), v.float(), mask)
    assert out.dtype == torch.bfloat16
    # One rounding of fp32 results: bit-equal but where two fp32 sums round apart (torch's bf16 kernel: 27 %)
    assert (out != reference.bfloat16()).float().mean() < 0.02
    (out.float() * reference).sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 and t.grad.abs().sum() > 0 for t in (q, k, v))


@pytest.mark.parametrize("positions", POSITIONS)
def test_attention_is_causal(positions):
    model = small_model(positions=positions)
    ids = torch.randint(0, 50, (2, 58))
    changed = ids.clone()
    changed[:, 30:] = (changed[:, 30:] + 1) % 50
    torch.testing.assert_close(model(ids)[:, :30], model(changed)[:, :30])


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_kv_cache_decoding_equals_full_forward(fused, positions):
    model = small_model(positions=positions)
    model.set_fused_attention(fused)
    ids = torch.randint(0, 50, (3, 58))
    full = model(ids)
    cache = KVCache(model.config, batch_size=3)
    chunks = [model(ids[:, :9], kv_cache=cache)]  # prefill a prompt, then one token at a time
    for position in range(9, 58):
        chunks.append(model(ids[:, position:position + 1], kv_cache=cache))
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.position == 58


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_left_padded_rows_read_as_they_would_alone(fused, positions):
    """Prompts of different lengths in one cached batch (the guidance streams): each row's logits at every
    step equal a full forward of that row alone, and padding slots never change them."""
    model = small_model(positions=positions)
    model.set_fused_attention(fused)
    long, short = torch.randint(0, 50, (2, 40)), torch.randint(0, 50, (2, 33))
    padding = torch.tensor([0, 0, 7, 7])
    rows = torch.cat([long[:, :9], torch.cat([torch.full((2, 7), 49), short[:, :2]], dim=1)])  # (4, 9)
    cache = KVCache(model.config, batch_size=4, max_length=58 + 7, padding=padding)
    chunks = [model(rows, kv_cache=cache)[:, -1:]]
    for step in range(31):
        chunks.append(model(torch.cat([long[:, 9 + step], short[:, 2 + step]])[:, None], kv_cache=cache))
    padded = torch.cat(chunks, dim=1)                                                   # (4, 32, vocab)
    torch.testing.assert_close(padded[:2], model(long)[:, 8:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[2:], model(short)[:, 1:], atol=1e-5, rtol=1e-5)


def test_cache_is_preallocated_once():
    model = small_model()
    cache = KVCache(model.config, batch_size=2)
    storage = cache.keys.data_ptr()
    model(torch.randint(0, 50, (2, 5)), kv_cache=cache)
    model(torch.randint(0, 50, (2, 1)), kv_cache=cache)
    assert cache.keys.data_ptr() == storage and cache.keys.shape[3] == 58


def test_causal_mask_with_past():
    mask = causal_mask(2, 3, "cpu")
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_no_torch_transformer_modules_used():
    model = small_model()
    banned = (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)
    assert not any(isinstance(module, banned) for module in model.modules())


def test_rotary_attention_scores_depend_only_on_the_offset():
    """What RoPE is for: a query at position p and a key at p - d score the same at every p."""
    torch.manual_seed(0)
    rotary = Rotary(head_dim=8)
    query, key = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    scores = [(rotate(query, *rotary.angles(torch.tensor([p + 5]))) *
               rotate(key, *rotary.angles(torch.tensor([p])))).sum() for p in (0, 17, 90)]
    torch.testing.assert_close(torch.stack(scores), scores[0].expand(3))
    unrotated = (query * key).sum()
    assert not torch.isclose(scores[0], unrotated)       # the offset of 5 does change the score


def test_rope_model_has_no_position_table_and_learned_one_keeps_its_weights():
    assert not hasattr(small_model(positions="rope"), "position_embedding")
    assert small_model().position_embedding.weight.shape == (58, 32)


def test_positions_setting_is_checked():
    from tinychameleon.config import make_config
    from tinychameleon.errors import ConfigError
    with pytest.raises(ConfigError, match="model.positions must be one of learned, rope"):
        ModelConfig(vocab_size=50, positions="alibi").validate()
    with pytest.raises(ConfigError, match="even head dimension"):
        ModelConfig(vocab_size=50, n_head=2, d_model=34, positions="rope").validate()
    with pytest.raises(ValueError, match="must be learned"):        # make_config re-raises it as ValueError
        make_config("var", model={"positions": "rope"})


def test_image_slots_count_image_tokens_since_the_last_other_token():
    """ids below 50 are image tokens (images of 4 here): a token's slot is its place in its image, text gets 4;
    read in two chunks with the carried count, the slots equal one read."""
    ids = torch.tensor([[60, 61, 1, 2, 3, 62, 4, 5, 63],
                        [1, 1, 60, 2, 2, 2, 2, 2, 2]])        # row 2: an image cut off, then one past its length
    slots, run = image_slots(ids, image_tokens=50, image_length=4)
    assert slots.tolist() == [[4, 4, 0, 1, 2, 4, 0, 1, 4], [0, 1, 4, 0, 1, 2, 3, 3, 3]]
    assert run.tolist() == [0, 4]
    first, carried = image_slots(ids[:, :4], 50, 4)
    second, run_after = image_slots(ids[:, 4:], 50, 4, carried)
    assert torch.equal(torch.cat([first, second], dim=1), slots) and torch.equal(run_after, run)


def test_a_plan_token_keeps_the_shape_in_the_places_it_has_without_one():
    """Plan ids (70..79 here) sit after an image's two colors: the shape tokens after a plan get the slots they get
    in the same image without it (the pointer copies a prompt image's shape by slot), the plan the slot before it;
    read in chunks split before or after the plan, the slots equal one read."""
    planned = torch.tensor([[60, 1, 2, 73, 3, 4, 61, 5]])
    plain = torch.tensor([[60, 1, 2, 3, 4, 61, 5]])
    slots, _ = image_slots(planned, 50, 6, first_plan=70)
    assert slots.tolist() == [[6, 0, 1, 1, 2, 3, 6, 0]]
    assert image_slots(plain, 50, 6)[0].tolist() == [[6, 0, 1, 2, 3, 6, 0]]
    assert image_slots(planned, 50, 6)[0].tolist() == [[6, 0, 1, 6, 0, 1, 6, 0]]   # unknown, a plan restarts it
    for split in (3, 4):
        first, carried = image_slots(planned[:, :split], 50, 6, first_plan=70)
        second, _ = image_slots(planned[:, split:], 50, 6, carried, first_plan=70)
        assert torch.equal(torch.cat([first, second], dim=1), slots)


@pytest.mark.parametrize("positions, first_plan", [(positions, 0) for positions in POSITIONS] + [("rope", 42)])
def test_image_slots_change_the_logits_and_the_cache_reads_them_as_a_full_forward(positions, first_plan):
    """With first_plan 42, ids 42..49 are plan tokens among the random ids: the cache carries their runs too."""
    model = small_model(positions=positions, image_slots=True, image_tokens=40, image_length=6, first_plan=first_plan)
    ids = torch.randint(0, 50, (3, 58))
    ids[:, 0] = 45                                                  # a text token first, as <bos> is
    full = model(ids)
    shifted = model.slot_embedding.weight.detach().clone()
    with torch.no_grad():
        model.slot_embedding.weight[:6] = shifted[:6].roll(1, dims=0)    # other embeddings for image slots only
    changed = model(ids)
    with torch.no_grad():
        model.slot_embedding.weight.copy_(shifted)
    image = ids < 40
    assert not torch.allclose(full[image], changed[image], atol=1e-4)    # each image token's slot is read
    cache = KVCache(model.config, batch_size=3)
    chunks = [model(ids[:, :9], kv_cache=cache)]
    for position in range(9, 58):
        chunks.append(model(ids[:, position:position + 1], kv_cache=cache))
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)


def test_copy_head_mixes_two_distributions_and_the_cache_reads_it_as_a_full_forward():
    model = small_model(positions="rope", copy_head=True)
    ids = torch.randint(0, 50, (3, 40))
    with torch.no_grad():
        model.copy.gate.bias.fill_(0.0)                                   # half generated, half copied
        log_probs = model(ids)
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 40))
        cache = KVCache(model.config, batch_size=3)
        chunks = [model(ids[:, :9], kv_cache=cache)] + [model(ids[:, p:p + 1], kv_cache=cache) for p in range(9, 40)]
        torch.testing.assert_close(torch.cat(chunks, dim=1), log_probs, atol=1e-5, rtol=1e-5)
        model.copy.gate.bias.fill_(60.0)                                  # all copied: only ids seen so far
        copied = model(ids).exp()
        seen = torch.zeros(3, 40, 50, dtype=torch.bool)
        for t in range(40):
            seen[torch.arange(3), t:, ids[:, t]] = True
        assert copied[~seen].max() < 1e-6 and torch.allclose(copied[seen].view(-1).sum(), torch.tensor(120.0))
        targets = torch.randint(0, 50, (3, 40))
        targets[:, 20:] = ids[:, :20]                                     # half of them copies of earlier ids
        model.copy.gate.bias.fill_(0.5)
        torch.testing.assert_close(model(ids, targets=targets), model(ids).gather(2, targets[..., None])[..., 0],
                                   atol=1e-5, rtol=1e-5)                  # training's path: the dense one's entries
        model.copy.gate.bias.fill_(-60.0)                                 # all generated: the plain head
        shut = model(ids)
        model.config.copy_head = False                                    # the same weights without the pointer
        plain = torch.log_softmax(model(ids), -1)
        model.config.copy_head = True
        torch.testing.assert_close(shut, plain, atol=1e-5, rtol=1e-5)


def test_pointer_slots_bias_where_the_pointer_looks_by_image_slot_and_the_cache_reads_it_as_a_full_forward():
    """model.pointer_slots: zero bias is the plain pointer; a bias on (slot s, slot s + 1) makes an all-copying
    pointer write, at each image slot, the token an earlier image has at the next slot; a cached decode (token
    by token, the slots carried across steps) equals the full read."""
    parts = dict(positions="rope", copy_head=True, image_tokens=40, image_length=4)
    plain, slotted = small_model(**parts), small_model(**parts, pointer_slots=True)
    assert slotted.copy.slot_bias.shape == (5, 5)
    # <bos>-like 45, an image (marker 41, four image tokens), words, a second image: slots 4 4 0 1 2 3 4 4 4 0 1 2 3
    ids = torch.tensor([[45, 41, 3, 17, 29, 8, 46, 47, 41, 30, 31, 32, 33]])
    with torch.no_grad():
        for model in (plain, slotted):
            model.copy.gate.bias.fill_(0.0)                                 # half generated, half copied
        torch.testing.assert_close(slotted(ids), plain(ids), atol=1e-6, rtol=1e-6)   # the same weights, bias zero
        slotted.copy.gate.bias.fill_(60.0)                                  # every token copied
        slotted.copy.slot_bias[4, 0] = 5.0                                 # the marker looks at slot 0
        for slot in range(3):
            slotted.copy.slot_bias[slot, slot + 1] = 5.0                   # slot s looks at slot s + 1
        copied = slotted(ids).exp()                                        # (1, T, V)
        second_image = range(8, 12)                                        # its marker and its first three slots
        for position, expected in zip(second_image, [3, 17, 29, 8]):
            assert copied[0, position, expected] > 0.99                    # the first image's token at the next slot
        cache = KVCache(slotted.config, batch_size=1)
        chunks = [slotted(ids[:, :5], kv_cache=cache)] + [slotted(ids[:, p:p + 1], kv_cache=cache) for p in range(5, 13)]
        torch.testing.assert_close(torch.cat(chunks, dim=1), slotted(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("copy_head", [False, True])
def test_reading_out_only_the_last_positions_equals_the_full_output(copy_head):
    """`last=k` (a prefill reads one) gives the full forward's last k positions, padded cached rows and the pointer
    included, and the cache continues from it exactly as from a full read."""
    model = small_model(positions="rope", copy_head=copy_head)
    ids = torch.randint(0, 50, (4, 30))
    with torch.no_grad():
        if copy_head:
            model.copy.gate.bias.fill_(0.0)                               # both distributions matter
        full = model(ids)
        assert model(ids, last=3).shape == (4, 3, 50)
        torch.testing.assert_close(model(ids, last=3), full[:, -3:], atol=1e-5, rtol=1e-5)
        padding = torch.tensor([0, 0, 5, 5])
        rows = torch.cat([ids[:2, :20], torch.cat([torch.full((2, 5), 49), ids[2:, :15]], dim=1)])   # (4, 20)
        outputs = []
        for last in (0, 1):
            cache = KVCache(model.config, batch_size=4, max_length=40, padding=padding)
            first = model(rows, kv_cache=cache, last=last)[:, -1]
            outputs.append((first, model(ids[:, 20:21], kv_cache=cache)[:, -1]))
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(outputs[1][0][:2], full[:2, 19], atol=1e-5, rtol=1e-5)
        with pytest.raises(AssertionError):
            model(ids, targets=ids, last=1)


def test_digit_head_reads_the_labelled_positions_and_leaves_the_token_output_alone():
    """model.digit_head: its loss is the cross-entropy of the head on the final hidden states at exactly the
    labelled positions; the targets' log-probabilities are those of the plain forward; no label, no loss."""
    model = small_model(positions="rope", digit_head=True)
    ids, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    digits = torch.full((2, 12), -1)
    digits[0, 3], digits[1, 7], digits[1, 10] = 4, 0, 9
    final = {}
    model.norm.register_forward_hook(lambda module, inputs, output: final.__setitem__("hidden", output))
    log_probs, loss = model(ids, targets=targets, digits=digits)
    hidden = final["hidden"]
    expected = torch.nn.functional.cross_entropy(
        model.digit_head(torch.stack([hidden[0, 3], hidden[1, 7], hidden[1, 10]])), torch.tensor([4, 0, 9]))
    assert torch.allclose(loss, expected) and loss > 0.5
    assert torch.equal(log_probs, model(ids, targets=targets))
    _, none = model(ids, targets=targets, digits=torch.full((2, 12), -1))
    none.backward()
    assert none.item() == 0.0 and model.digit_head.weight.grad is not None and model.digit_head.bias.grad is not None


def test_digit_layer_reads_the_stream_after_its_block_and_trains_nothing_above_it():
    """model.digit_layer k: the head reads block k's output (normalised without parameters), so the digit loss
    sends no gradient to the blocks above k, the final LayerNorm or the output head; hidden_states(model, k) sees
    the same states, and the token outputs do not change."""
    model = small_model(positions="rope", digit_head=True, digit_layer=1)
    ids, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    digits = torch.full((2, 12), -1)
    digits[0, 3], digits[1, 9] = 7, 2
    with hidden_states(model, 1) as seen:
        log_probs, loss = model(ids, targets=targets, digits=digits)
    stream = seen["hidden"]
    read = torch.nn.functional.layer_norm(torch.stack([stream[0, 3], stream[1, 9]]), (32,))
    expected = torch.nn.functional.cross_entropy(model.digit_head(read), torch.tensor([7, 2]))
    assert torch.allclose(loss, expected) and torch.equal(log_probs, model(ids, targets=targets))
    loss.backward()
    assert model.blocks[0].attention.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in (*model.blocks[1].parameters(), *model.norm.parameters(), model.head.weight))
    for wrong in ({"digit_layer": 2}, {"digit_layer": -1}, {"digit_layer": 1, "digit_head": False}):
        config = ModelConfig(vocab_size=50, n_layer=2, n_head=4, d_model=32, **{"digit_head": True, **wrong})
        with pytest.raises(ConfigError, match="digit"):
            config.validate()


def test_tied_digit_head_scores_digits_by_their_words_embeddings():
    """model.digit_head_tied: the head's logits are a learned scale times the stream's product with the ten
    digit words' embeddings (ids digit_words..+9), so its loss moves those rows of the embedding and no others."""
    model = small_model(positions="rope", digit_head=True, digit_layer=1, digit_head_tied=True, digit_words=20)
    assert not hasattr(model, "digit_head")
    with torch.no_grad():
        model.digit_scale.fill_(1.5)
    ids, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    digits = torch.full((2, 12), -1)
    digits[0, 3], digits[1, 9] = 7, 2
    with hidden_states(model, 1) as seen:
        _, loss = model(ids, targets=targets, digits=digits)
    read = torch.nn.functional.layer_norm(torch.stack([seen["hidden"][0, 3], seen["hidden"][1, 9]]), (32,))
    logits = 1.5 * read @ model.token_embedding.weight[20:30].t()
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([7, 2])))
    model.zero_grad()
    loss.backward()
    moved = model.token_embedding.weight.grad.abs().sum(dim=1) > 0
    assert moved[20:30].all() and model.digit_scale.grad.abs() > 0
    # rows outside the digit words move only where the input ids read them (the blocks below the head)
    outside = set(moved.nonzero().flatten().tolist()) - set(range(20, 30))
    assert outside <= set(ids.flatten().tolist())
    with pytest.raises(ConfigError, match="digit_head_tied"):
        ModelConfig(vocab_size=50, digit_head_tied=True).validate()


def test_patch_pixels_embed_shape_tokens_by_their_pixels_and_start_as_the_model_without_them(tmp_path):
    """model.patch_pixels: a shape token's embedding is its own row plus a learned map of its 16 pixels (-1 / +1); ids
    past the shape tokens (colors, words) keep their row alone. The map starts at zero, so adding the part to a
    trained model (a fine-tune) changes no output; the patterns are saved with the weights."""
    from tinychameleon.checkpoint import load_weights, save_weights

    plain = small_model(positions="rope", image_tokens=40, image_length=6)
    model = small_model(positions="rope", image_tokens=40, image_length=6, patch_pixels=True)
    model.load_state_dict(plain.state_dict(), strict=False)
    patterns = torch.randint(0, 2, (36, 16), dtype=torch.uint8)        # 36 shape tokens; ids 36..39 are colors
    model.set_patch_pixels(patterns)
    ids = torch.randint(0, 50, (2, 20))
    torch.testing.assert_close(model(ids), plain(ids))                   # a zero map: the model it was added to
    with torch.no_grad():
        model.pixel_embedding.weight.normal_()
    embedded = model.embed(ids)
    rows = model.token_embedding(ids)
    shape = ids < 36
    expected = rows[shape] + (2 * patterns[ids[shape]].float() - 1) @ model.pixel_embedding.weight.t()
    torch.testing.assert_close(embedded[shape], expected)
    torch.testing.assert_close(embedded[~shape], rows[~shape])
    assert not torch.allclose(model(ids), plain(ids))
    save_weights(model, tmp_path / "model.safetensors")
    reloaded = small_model(positions="rope", image_tokens=40, image_length=6, patch_pixels=True)
    load_weights(reloaded, tmp_path / "model.safetensors")
    torch.testing.assert_close(reloaded.patch_pixels, model.patch_pixels)
    torch.testing.assert_close(reloaded(ids), model(ids))


def test_patch_pixels_need_the_patches_tokenizer():
    from tinychameleon.config import make_config

    make_config("base", model={"patch_pixels": True})
    with pytest.raises(ValueError, match="patch_pixels embeds the `patches` tokenizer's pixels: this run's tokenizer is scales"):
        make_config("var", model={"patch_pixels": True})
