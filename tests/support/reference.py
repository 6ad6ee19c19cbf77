"""Float64 NumPy reference of the S2Attention block, written from docs/DESIGN.md §1, not from the module.

Layouts follow the spec: the block is defined channels-last per pixel; these functions take NCHW
arrays (B, C, H, W) and return NCHW.
"""

from __future__ import annotations

import math

import numpy as np


def _shift_axis(x: np.ndarray, axis: int, forward: bool) -> np.ndarray:
    """forward: out[i] = in[i-1] (down along H / right along W), out[0] = in[0].
    backward: out[i] = in[i+1] (up / left), out[n-1] = in[n-1]."""
    out = x.copy()
    n = x.shape[axis]
    for i in range(n):
        src = (i - 1 if forward else i + 1)
        src = min(max(src, 0), n - 1)
        idx_out = [slice(None)] * x.ndim
        idx_in = [slice(None)] * x.ndim
        idx_out[axis], idx_in[axis] = i, src
        out[tuple(idx_out)] = x[tuple(idx_in)]
    return out


def _shift(x: np.ndarray, plan: list[tuple[str, bool]]) -> np.ndarray:
    c = x.shape[1]
    bounds = [0, c // 4, c // 2, c * 3 // 4, c]
    out = np.empty_like(x)
    for q, (axis_name, forward) in enumerate(plan):
        axis = 2 if axis_name == "H" else 3
        sl = slice(bounds[q], bounds[q + 1])
        out[:, sl] = _shift_axis(x[:, sl], axis, forward)
    return out


def spatial_shift1(x: np.ndarray) -> np.ndarray:
    # q0 down along H, q1 up along H, q2 right along W, q3 left along W
    return _shift(x, [("H", True), ("H", False), ("W", True), ("W", False)])


def spatial_shift2(x: np.ndarray) -> np.ndarray:
    # q0 right along W, q1 left along W, q2 down along H, q3 up along H
    return _shift(x, [("W", True), ("W", False), ("H", True), ("H", False)])


def gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def split_attention(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray, w1: np.ndarray,
                    w2: np.ndarray) -> np.ndarray:
    """x_k: (B, C, H, W); w1: (C, C) and w2: (3C, C) as torch Linear stores them (out, in)."""
    x1, x2, x3 = (np.asarray(t, np.float64) for t in (x1, x2, x3))
    b, c = x1.shape[:2]
    a = (x1 + x2 + x3).sum(axis=(2, 3))  # (B, C)
    hat = gelu(a @ w1.T.astype(np.float64)) @ w2.T.astype(np.float64)  # (B, 3C)
    hat = hat.reshape(b, 3, c)
    e = np.exp(hat - hat.max(axis=1, keepdims=True))
    bar = e / e.sum(axis=1, keepdims=True)  # softmax over the three branches
    return sum(bar[:, k, :, None, None] * x for k, x in enumerate((x1, x2, x3)))


def s2attention(x: np.ndarray, mlp1_w, mlp1_b, sa_w1, sa_w2, mlp2_w, mlp2_b) -> np.ndarray:
    """The whole block on NCHW input, per-pixel Linear layers applied channels-last."""
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    xl = x.transpose(0, 2, 3, 1)  # B, H, W, C
    y = (xl @ np.asarray(mlp1_w, np.float64).T + mlp1_b).transpose(0, 3, 1, 2)
    x1 = spatial_shift1(y[:, :c])
    x2 = spatial_shift2(y[:, c:2 * c])
    x3 = y[:, 2 * c:]
    s = split_attention(x1, x2, x3, sa_w1, sa_w2).transpose(0, 2, 3, 1)
    return (s @ np.asarray(mlp2_w, np.float64).T + mlp2_b).transpose(0, 3, 1, 2)
