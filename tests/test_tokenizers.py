import warnings

import pytest
import torch

from tinychameleon.config import VQConfig
from tinychameleon.errors import PromptError
from tinychameleon.tokenizers.text import PaletteWarning, WordTokenizer
from tinychameleon.tokenizers.vocab import Vocab
from tinychameleon.tokenizers.vqvae import VQVAE


@pytest.fixture
def tokenizer():
    return WordTokenizer()


def test_round_trip(tokenizer):
    ids = tokenizer.encode("dark green eight on bright cyan")
    assert len(ids) == 6 and tokenizer.decode(ids) == "dark green eight on bright cyan"


def test_case_and_whitespace_are_forgiven(tokenizer):
    assert tokenizer.encode("  Dark GREEN\teight  on bright   cyan ") == tokenizer.encode("dark green eight on bright cyan")


@pytest.mark.parametrize("prompt, fragment", [
    ("dark green eigth on bright cyan", "did you mean eight"),
    ("dark green eight on bright", "has 5 words, expected 6"),
    ("dark green eight on bright cyan now", "unknown word"),
    ("green dark eight on bright cyan", "should be a adjective"),
    ("dark green eight in bright cyan", "unknown word"),
    ("dark green eight bright on cyan", "should be a 'on'"),
    ("", "has 0 words"),
])
def test_errors_name_the_problem_and_the_template(tokenizer, prompt, fragment):
    with pytest.raises(PromptError) as error:
        tokenizer.encode(prompt)
    assert fragment in str(error.value)
    assert "<adjective> <color> <digit> on <adjective> <color>" in str(error.value)


def test_off_palette_color_warns_with_same_hue_colors(tokenizer):
    with pytest.warns(PaletteWarning, match="normal red, dark red"):
        ids = tokenizer.encode("bright red eight on bright cyan")
    assert len(ids) == 6


def test_palette_color_does_not_warn(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenizer.encode("normal red one on plain white")


def test_vocab_ranges_are_disjoint_and_cover_everything():
    vocab = Vocab(256)
    ids = set(vocab.image_range) | set(vocab.word_range) | {vocab.bos, vocab.end_of_text, vocab.end_of_image}
    assert ids == set(range(vocab.size)) and vocab.size == 256 + 31 + 3
    assert vocab.token_name(vocab.bos) == "<bos>" and vocab.token_name(vocab.word_offset) == "bright"
    assert vocab.plain_length == 58 and vocab.text_first_codes == slice(9, 58) and vocab.image_first_words == slice(52, 58)


def test_vqvae_shapes_and_index_range():
    vqvae = VQVAE(VQConfig(codebook_size=16, code_dim=8, hidden=16, pixel_channels=4))
    images = torch.randint(0, 4, (5, 28, 28, 3), dtype=torch.uint8)
    logits, indices, loss = vqvae(images)
    assert logits.shape == (5, 3, 4, 28, 28) and indices.shape == (5, 7, 7, 1) and loss.ndim == 0
    codes = vqvae.encode(images)
    assert codes.shape == (5, 49) and codes.min() >= 0 and codes.max() < 16
    decoded = vqvae.decode(codes)
    assert decoded.shape == (5, 28, 28, 3) and decoded.dtype == torch.uint8 and decoded.max() <= 3


def test_quantizer_returns_quantized_indices_loss_and_straight_through():
    vqvae = VQVAE(VQConfig(codebook_size=8, code_dim=4, hidden=8, pixel_channels=2))
    z = torch.randn(2, 4, 7, 7, requires_grad=True)
    quantized, indices, loss = vqvae.quantizer(z)
    assert quantized.shape == z.shape and indices.shape == (2, 7, 7, 1)
    quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # straight-through: gradient passes unchanged
    expected = vqvae.quantizer.codebook[indices[..., 0]].permute(0, 3, 1, 2)
    assert torch.allclose(quantized.detach(), expected, atol=1e-6)


def test_residual_quantizer_codes_what_the_first_codebook_left():
    torch.manual_seed(0)
    vqvae = VQVAE(VQConfig(kind="rvq", residual_depth=2, codebook_size=16, code_dim=4, hidden=8, pixel_channels=2))
    quantizer = vqvae.quantizer.train()
    z = torch.randn(8, 4, 7, 7)
    for _ in range(5):
        quantizer(z)                                   # EMA updates: codebooks move towards z
    quantized, indices, loss = quantizer.eval()(z)
    assert indices.shape == (8, 7, 7, 2) and loss > 0
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    codes = quantizer.quantize_indices(flat)                                          # (392, 2)
    assert torch.equal(codes, indices.reshape(-1, 2))
    both = quantizer.get_output_from_indices(codes)
    assert torch.allclose(both, quantized.detach().permute(0, 2, 3, 1).reshape(-1, 4), atol=1e-5)
    first = quantizer.layers[0].codebook[codes[:, 0]]
    assert (flat - both).pow(2).sum() < (flat - first).pow(2).sum()                   # the second code helps
    # Token ids: a patch's two codes in a row, the second in the second id range; the sampler knows which.
    ids = vqvae.encode(torch.randint(0, 4, (3, 28, 28, 3), dtype=torch.uint8))
    assert ids.shape == (3, 98) and (ids[:, 0::2] < 16).all() and (ids[:, 1::2] >= 16).all()
    allowed = vqvae.position_tokens()
    assert allowed[0, :16].all() and not allowed[0, 16:].any() and allowed[1, 16:].all() and not allowed[1, :16].any()


def test_fsq_codes_are_the_grid_of_levels():
    from tinychameleon.tokenizers.quantizers import FSQuantizer

    quantizer = FSQuantizer([8, 5, 5, 5])
    assert quantizer.codebook_size == 1000 and quantizer.dim == 4
    every = torch.arange(1000)[:, None]
    values = quantizer.get_output_from_indices(every)                                # (1000, 4) in [-1, 1]
    assert values.abs().max() <= 1 and len(torch.unique(values, dim=0)) == 1000      # one vector per code
    # Any input lands on a grid point; re-quantizing that point's pre-image gives the same index.
    z = (torch.randn(2, 4, 7, 7) * 3).requires_grad_()
    quantized, indices, loss = quantizer(z)
    assert float(loss) == 0.0 and indices.shape == (2, 7, 7, 1)
    rebuilt = quantizer.get_output_from_indices(indices.reshape(-1, 1))
    assert torch.allclose(quantized.detach().permute(0, 2, 3, 1).reshape(-1, 4), rebuilt, atol=1e-6)
    quantized.sum().backward()
    assert z.grad.abs().sum() > 0                                                     # gradients reach the encoder


def test_dead_codes_are_restarted():
    vqvae = VQVAE(VQConfig(codebook_size=64, code_dim=4, hidden=8, pixel_channels=2, dead_code_threshold=0.5))
    quantizer = vqvae.quantizer
    quantizer.train()
    z = torch.randn(4, 4, 7, 7)
    quantizer(z)  # first call initialises the codebook on encoder outputs
    quantizer.codebook[10] = 1e6  # a code nobody will ever pick
    quantizer.cluster_size[10] = 0.0
    quantizer(z)
    assert quantizer.codebook[10].abs().max() < 1e3  # restarted on an encoder output


def test_vqvae_learns_on_real_images(colored):
    train, _ = colored
    torch.manual_seed(0)
    vqvae = VQVAE(VQConfig(codebook_size=32, code_dim=8, hidden=32, pixel_channels=8))
    optimizer = torch.optim.Adam(vqvae.parameters(), lr=3e-3)
    images = torch.from_numpy(train.images[:256])
    first = None
    for _ in range(60):
        _, _, loss = vqvae(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first or loss.item()
    assert loss.item() < 0.7 * first


def test_two_color_decoding_picks_the_likeliest_valid_pair_like_the_brute_force(colored):
    """The fast decode (pair scores from color totals and one L1 distance matrix) paints the same images as scoring
    all 365 pairs pixel by pixel; on noisy logits of real digits it recovers their pixels in one valid pair."""
    import torch.nn.functional as F

    from tinychameleon.data.colored import COLOR_RGB, VALID_PAIRS
    from tinychameleon.tokenizers.vqvae import COLOR_PAIRS, two_color_levels

    def brute_force(logits):
        log_levels = F.log_softmax(logits, dim=2)                                    # (B, 3, 4, H, W)
        rgb = torch.as_tensor(COLOR_RGB, dtype=torch.long)
        flat = sum(log_levels[:, c, rgb[:, c]] for c in range(3)).flatten(2)         # (B, 31, H*W)
        scores = torch.maximum(flat[:, COLOR_PAIRS[:, 0]], flat[:, COLOR_PAIRS[:, 1]]).sum(-1)  # (B, 365)
        a, b = COLOR_PAIRS[scores.argmax(-1)].T
        rows = torch.arange(len(logits))
        colors = torch.where(flat[rows, a] >= flat[rows, b], a[:, None], b[:, None])
        return rgb[colors].view(len(logits), 28, 28, 3).to(torch.uint8)

    train, _ = colored
    images = torch.from_numpy(train.images[:300]).long()                             # (B, 28, 28, 3) levels
    generator = torch.Generator().manual_seed(0)
    real = F.one_hot(images, 4).permute(0, 3, 4, 1, 2).float() * 3                    # (B, 3, 4, 28, 28)
    for logits in (real + torch.randn(real.shape, generator=generator) * 2,
                   torch.randn(real.shape, generator=generator) * 3):
        fast = two_color_levels(logits, chunk=64)
        assert torch.equal(fast, brute_force(logits))
    decoded = two_color_levels(real + torch.randn(real.shape, generator=generator) * 0.5)
    assert torch.equal(decoded, images.to(torch.uint8))
    palette = {tuple(color) for color in COLOR_RGB.tolist()}
    valid = {tuple(sorted(pair)) for pair in VALID_PAIRS.tolist()}
    for image in two_color_levels(torch.randn(real.shape, generator=generator)):
        colors = set(map(tuple, image.view(-1, 3).tolist()))
        assert colors <= palette and len(colors) <= 2
        ids = sorted(COLOR_RGB.tolist().index(list(color)) for color in colors)
        assert len(ids) == 1 or tuple(ids) in valid
