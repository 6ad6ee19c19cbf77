"""What differs between the YOLOv5 releases s2trt loads, as data: one record per release.

One model implementation serves them all (docs/DESIGN.md §1-§2). A checkpoint is matched to the
release whose train.py wrote it (its top-level keys, the pickled model class, v5.x's anchor_grid
buffer); the record then says how to build the blocks and how to migrate the state dict before it
is loaded. Nothing here is consulted inside a forward.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from s2trt.models.common import BlockStyle

# The state dict and the model's Detect stride, from which a migration derives buffers.
Migration = Callable[[OrderedDict, int, list[float]], OrderedDict]


def anchor_grid_to_anchors(state: OrderedDict, detect: int, stride: list[float]) -> OrderedDict:
    """v5.0 decodes box sizes with the `anchor_grid` buffer (pixels), not with `anchors` (cells):
    the anchors are rebuilt from it, exactly (strides are powers of two), and it is dropped."""
    key = f"model.{detect}.anchor_grid"
    grid = state.pop(key, None)
    if grid is None:
        return state
    anchors = state.get(f"model.{detect}.anchors")
    nl = len(stride)
    if anchors is not None and grid.numel() == anchors.numel() and grid.shape[0] == nl:
        import torch

        pixels = grid.float().reshape(anchors.shape)
        state[f"model.{detect}.anchors"] = (pixels / torch.tensor(stride).view(-1, 1, 1)
                                            ).to(anchors.dtype)
    return state


@dataclass(frozen=True)
class Release:
    tag: str
    stem: str  # the first layer of its yolov5s.yaml
    model_classes: frozenset[str]  # what its train.py pickles as the model, e.g. 'Model'
    keys: frozenset[str]  # the top-level keys of its train.py checkpoint
    anchor_grid_buffer: bool  # Detect keeps `anchor_grid` in the state dict
    grid: str  # how its Detect caches cell offsets (never reused: the model rebuilds them)
    csp_act: Callable[[], nn.Module]  # BottleneckCSP's activation
    yaml_activation: bool  # its parse_model reads a yaml `activation:` for Conv
    heads: frozenset[str]  # the head classes its yamls end in
    unsupported: Mapping[str, str] = field(default_factory=dict)  # model class -> what it is
    migrations: tuple[Migration, ...] = ()

    def style(self, activation: Any = None) -> BlockStyle:
        from s2trt.models.common import parse_activation

        conv_act = (parse_activation(activation) if activation and self.yaml_activation
                    else nn.SiLU)
        return BlockStyle(conv_act=conv_act, csp_act=self.csp_act)


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


_V6_KEYS = frozenset({"epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id"})
_CLASSIFY = {"ClassificationModel": "a classification model (classify/train.py)"}

RELEASES: tuple[Release, ...] = (
    Release("v5.0", "Focus", frozenset({"Model"}), _V6_KEYS | {"training_results"},
            anchor_grid_buffer=True, grid="integer cells, decode adds -0.5", csp_act=_leaky,
            yaml_activation=False, heads=frozenset({"Detect"}),
            migrations=(anchor_grid_to_anchors,)),
    Release("v6.0", "Conv 6x6 s2", frozenset({"Model"}), _V6_KEYS,
            anchor_grid_buffer=False, grid="integer cells, decode adds -0.5", csp_act=_leaky,
            yaml_activation=False, heads=frozenset({"Detect"})),
    Release("v6.1", "Conv 6x6 s2", frozenset({"Model"}), _V6_KEYS | {"date"},
            anchor_grid_buffer=False, grid="integer cells, decode adds -0.5", csp_act=nn.SiLU,
            yaml_activation=False, heads=frozenset({"Detect"})),
    Release("v6.2", "Conv 6x6 s2", frozenset({"DetectionModel"}),
            _V6_KEYS | {"opt", "date"}, anchor_grid_buffer=False, grid="cells - 0.5",
            csp_act=nn.SiLU, yaml_activation=False, heads=frozenset({"Detect"}),
            unsupported=_CLASSIFY),
    Release("v7.0", "Conv 6x6 s2", frozenset({"DetectionModel", "SegmentationModel"}),
            (_V6_KEYS - {"wandb_id"}) | {"opt", "git", "date"}, anchor_grid_buffer=False,
            grid="cells - 0.5", csp_act=nn.SiLU, yaml_activation=True,
            heads=frozenset({"Detect", "Segment"}), unsupported=_CLASSIFY),
)
BY_TAG = {r.tag: r for r in RELEASES}
LATEST = RELEASES[-1]
# Keys strip_optimizer() adds: v5.0-v6.0 set `training_results` to None even where it was absent.
_STRIP_ADDS = frozenset({"training_results"})


def identify(keys: Collection[str] | None, model_class: str | None,
             state_keys: Collection[str]) -> Release:
    """The release that wrote a checkpoint; the newest one that fits when the layout is not a
    release's own (a plain state dict, a custom train.py, s2trt's demo)."""
    has_grid = any(k.endswith(".anchor_grid") for k in state_keys)
    fits = [r for r in RELEASES if r.anchor_grid_buffer == has_grid
            and (model_class is None or model_class in r.model_classes
                 or model_class in r.unsupported)]
    exact = [r for r in fits if keys is not None and r.keys <= set(keys) <= r.keys | _STRIP_ADDS]
    if exact:
        return exact[-1]
    return fits[-1] if fits else (RELEASES[0] if has_grid else LATEST)
