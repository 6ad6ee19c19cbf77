"""S2Attention (S2-MLPv2, arXiv 2108.01072) as DESIGN §1 defines it.

The block works on NCHW tensors: the per-pixel Linear layers run as 1x1 convolutions and every
spatial shift is a slice + concat that produces a new tensor. The article's code shifts in place
(`x[:, 1:] = x[:, :-1]`); source and destination overlap, so its result depends on memory order
and exports to ScatterND. Nothing here writes into a tensor it reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _shift(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Move x by one pixel along dim; the border row or column keeps its own value."""
    n = x.shape[dim]
    if step > 0:  # out[i] = in[i-1], out[0] = in[0]
        return torch.cat((x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)), dim)
    return torch.cat((x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)), dim)


def _quarters(c: int) -> list[tuple[int, int]]:
    """Channel ranges of the four shift groups, with the article's integer boundaries."""
    b = [0, c // 4, c // 2, c * 3 // 4, c]
    return [(b[i], b[i + 1] - b[i]) for i in range(4)]


# (dim, step) per quarter on NCHW: H is dim 2, W is dim 3; +1 = down/right, -1 = up/left.
_SHIFT1 = ((2, 1), (2, -1), (3, 1), (3, -1))
_SHIFT2 = ((3, 1), (3, -1), (2, 1), (2, -1))


def _spatial_shift(x: torch.Tensor, plan: tuple[tuple[int, int], ...]) -> torch.Tensor:
    parts = [_shift(x.narrow(1, start, size), dim, step)
             for (start, size), (dim, step) in zip(_quarters(x.shape[1]), plan, strict=True)]
    return torch.cat(parts, 1)


def spatial_shift1(x: torch.Tensor) -> torch.Tensor:
    """q0 down along H, q1 up along H, q2 right along W, q3 left along W (NCHW)."""
    return _spatial_shift(x, _SHIFT1)


def spatial_shift2(x: torch.Tensor) -> torch.Tensor:
    """q0 right along W, q1 left along W, q2 down along H, q3 up along H (NCHW)."""
    return _spatial_shift(x, _SHIFT2)


def _pointwise(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """A per-pixel Linear on NCHW, written as the 1x1 convolution it is."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class SplitAttention(nn.Module):
    """Weights k branches per channel with a softmax over k, from their global sum."""

    def __init__(self, channel: int = 512, k: int = 3):
        super().__init__()
        self.channel = channel
        self.k = k
        self.mlp1 = nn.Linear(channel, channel, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = nn.Linear(channel, channel * k, bias=False)
        self.softmax = nn.Softmax(1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        b, c = x1.shape[:2]
        a = (x1 + x2 + x3).sum(dim=(2, 3))  # a sum over branches and pixels, not a mean
        hat = self.mlp2(self.gelu(self.mlp1(a)))
        bar = self.softmax(hat.reshape(b, self.k, c))[..., None, None]
        return bar[:, 0] * x1 + bar[:, 1] * x2 + bar[:, 2] * x3


class S2Attention(nn.Module):
    """C -> C: expand to 3C, shift two thirds, fuse the three with split attention, project."""

    def __init__(self, channels: int = 512):
        super().__init__()
        self.mlp1 = nn.Linear(channels, channels * 3)
        self.mlp2 = nn.Linear(channels, channels)
        self.split_attention = SplitAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = _pointwise(x, self.mlp1)
        x1 = spatial_shift1(y[:, :c])
        x2 = spatial_shift2(y[:, c:2 * c])
        x3 = y[:, 2 * c:]
        return _pointwise(self.split_attention(x1, x2, x3), self.mlp2)
