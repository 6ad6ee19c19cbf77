"""NumPy implementation of the `s2trt::S2SplitAttention` custom op (the TensorRT plugin's math).

Used to check the TensorRT-flavour ONNX graph under `onnx.reference` (the plugin node has no
ONNX Runtime kernel) and as the reference the CUDA kernel is compared with.

Attributes, as the ONNX node and the plugin fields carry them:
  plugin_namespace, plugin_version  how TensorRT's ONNX parser finds the creator (it looks up
               op type + these two attributes, never the ONNX domain); not plugin fields
  channels     int C
  mlp1_weight  C*C floats, row-major (out, in), like torch.nn.Linear.weight
  mlp2_weight  3C*C floats, row-major (out, in); output row k*C + c is branch k, channel c
Inputs x1, x2, x3: (B, C, H, W), float32 or float16; output like x1. Accumulates in float32.
"""

from __future__ import annotations

import math

import numpy as np

# The op is the plugin: one definition of its name, namespace and version (the creator's).
from s2trt.trt.plugin_lib import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

OP_TYPE = PLUGIN_NAME
OP_DOMAIN = "s2trt"
OP_VERSION = 1


def split_attention(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray, channels: int,
                    mlp1_weight: np.ndarray, mlp2_weight: np.ndarray,
                    plugin_namespace: str = PLUGIN_NAMESPACE,
                    plugin_version: str = PLUGIN_VERSION) -> np.ndarray:
    dtype = x1.dtype
    xs = [np.asarray(x, np.float32) for x in (x1, x2, x3)]
    b, c = xs[0].shape[:2]
    if c != channels:
        raise ValueError(f"S2SplitAttention: input has {c} channels, the node says {channels}")
    w1 = np.asarray(mlp1_weight, np.float32).reshape(c, c)
    w2 = np.asarray(mlp2_weight, np.float32).reshape(3 * c, c)
    a = (xs[0] + xs[1] + xs[2]).sum(axis=(2, 3), dtype=np.float32)
    h = a @ w1.T
    h = 0.5 * h * (1.0 + np.vectorize(math.erf, otypes=[np.float32])(h / np.float32(math.sqrt(2.0))))
    hat = (h @ w2.T).reshape(b, 3, c)
    e = np.exp(hat - hat.max(axis=1, keepdims=True))
    bar = e / e.sum(axis=1, keepdims=True)
    out = sum(bar[:, k, :, None, None] * xs[k] for k in range(3))
    return out.astype(dtype)


def reference_op():
    """An onnx.reference OpRun class for the custom domain, to pass as `new_ops=[...]`."""
    from onnx.reference.op_run import OpRun

    class S2SplitAttention(OpRun):
        op_domain = OP_DOMAIN

        def _run(self, x1, x2, x3, channels=None, mlp1_weight=None, mlp2_weight=None,
                 plugin_namespace=None, plugin_version=None):
            return (split_attention(x1, x2, x3, channels, mlp1_weight, mlp2_weight),)

    return S2SplitAttention
