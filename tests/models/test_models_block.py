"""S2Attention vs the float64 NumPy reference of DESIGN §1, and the article's in-place bug."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import s2attention as ref_block
from reference import spatial_shift1 as ref_shift1
from reference import spatial_shift2 as ref_shift2
from reference import split_attention as ref_split

from s2trt.models.s2attention import S2Attention, spatial_shift1, spatial_shift2


def _block(c: int, seed: int = 0) -> S2Attention:
    torch.manual_seed(seed)
    m = S2Attention(c).double().eval()
    with torch.no_grad():  # weights large enough that the softmax is not uniform
        m.split_attention.mlp1.weight.normal_(0, 0.3)
        m.split_attention.mlp2.weight.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (3, 12, 1, 4), (1, 10, 6, 1), (2, 16, 9, 9)])
def test_shifts_match_reference(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    np.testing.assert_array_equal(spatial_shift1(x).numpy(), ref_shift1(x.numpy()))
    np.testing.assert_array_equal(spatial_shift2(x).numpy(), ref_shift2(x.numpy()))


def test_shift_moves_one_pixel_and_keeps_border():
    x = torch.arange(4 * 3 * 3, dtype=torch.float64).view(1, 4, 3, 3)
    y = spatial_shift1(x)
    # q0 (channel 0) down along H: row 0 kept, row h takes row h-1
    assert y[0, 0, 0].tolist() == x[0, 0, 0].tolist()
    assert y[0, 0, 1:].tolist() == x[0, 0, :2].tolist()
    # q3 (channel 3) left along W: column w takes w+1, the last column kept
    assert y[0, 3, :, :2].tolist() == x[0, 3, :, 1:].tolist()
    assert y[0, 3, :, 2].tolist() == x[0, 3, :, 2].tolist()


@pytest.mark.parametrize("c,b,h,w", [(8, 2, 5, 7), (16, 3, 4, 6), (32, 1, 3, 3), (24, 4, 7, 5)])
def test_block_matches_reference(c, b, h, w):
    m = _block(c)
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    with torch.no_grad():
        y = m(x).numpy()
    p = {k: v.numpy() for k, v in m.state_dict().items()}
    expected = ref_block(x.numpy(), p["mlp1.weight"], p["mlp1.bias"],
                         p["split_attention.mlp1.weight"], p["split_attention.mlp2.weight"],
                         p["mlp2.weight"], p["mlp2.bias"])
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_split_attention_uses_sum_and_softmax_over_branches():
    m = _block(8).split_attention
    xs = [torch.randn(2, 8, 3, 4, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        y = m(*xs).numpy()
    expected = ref_split(*(t.numpy() for t in xs), m.mlp1.weight.detach().numpy(),
                         m.mlp2.weight.detach().numpy())
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_state_dict_keys_are_yolov5s():
    keys = set(S2Attention(16).state_dict())
    assert keys == {"mlp1.weight", "mlp1.bias", "mlp2.weight", "mlp2.bias",
                    "split_attention.mlp1.weight", "split_attention.mlp2.weight"}


def test_channels_last_input_gives_same_result():
    m = _block(16).float()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        a = m(x)
        b = m(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _seed_shift1(x: torch.Tensor) -> torch.Tensor:
    """The article's in-place shift on (b, h, w, c), kept here only to show its defect."""
    _, w, h, c = x.size()
    x[:, 1:, :, :c // 4] = x[:, :w - 1, :, :c // 4]
    x[:, :w - 1, :, c // 4:c // 2] = x[:, 1:, :, c // 4:c // 2]
    x[:, :, 1:, c // 2:c * 3 // 4] = x[:, :, :h - 1, c // 2:c * 3 // 4]
    x[:, :, :h - 1, 3 * c // 4:] = x[:, :, 1:, 3 * c // 4:]
    return x


def test_article_inplace_shift_is_not_a_shift_on_cpu():
    torch.manual_seed(0)
    x = torch.randn(1, 64, 64, 16)  # (b, h, w, c): large enough for overlapping copies to smear
    expected = ref_shift1(x.permute(0, 3, 1, 2).double().numpy())
    seed = _seed_shift1(x.clone()).permute(0, 3, 1, 2).double().numpy()
    ours = spatial_shift1(x.permute(0, 3, 1, 2).double()).numpy()
    np.testing.assert_array_equal(ours, expected)
    assert np.abs(seed - expected).max() > 0.5, "the in-place copy no longer smears on this torch"
