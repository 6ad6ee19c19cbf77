"""Train a YOLOv5 model (default yolov5n-s2) on a YOLO-format dataset; writes a train.py-style checkpoint.

The checkpoint is what YOLOv5's `strip_optimizer` leaves (`best.pt`): a dict whose `model` is the whole
EMA DetectionModel pickled in FP16 and train mode, `ema` / `optimizer` None, so s2trt's safe loader is
exercised on a real file. Training is for the demo assets; it is never part of CI.

`--cfg yolov5n-seg-s2` trains a segmentation model (v7.0's Segment head: 32 mask coefficients per box
and prototypes at stride 4) on polygon labels (`s2trt.demo.synth --segments`), with YOLOv5's mask loss.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from s2trt.demo.augment import augment_segments
from s2trt.detect.evaluate import label_path, read_data_yaml, split_images
from s2trt.errors import S2Error

log = logging.getLogger("s2trt.demo.train")  # not __name__: it is __main__ under -m

MASK_STRIDE = 4  # Segment's prototypes are at 1/4 of the input


def seg_config(base: str = "yolov5n-s2") -> dict[str, Any]:
    """A detection config with v7.0's Segment head in place of Detect: 32 masks, 256 prototype
    channels before width scaling (yolov5's yolov5n-seg.yaml is yolov5n.yaml so changed)."""
    from s2trt.models.yolo import load_config

    d = load_config(base)
    *head, last = d["head"]
    d["head"] = [*head, [last[0], last[1], "Segment", ["nc", "anchors", 32, 256]]]
    return d


# Configs the trainer builds from a bundled one (no yaml of their own to ship).
DERIVED_CONFIGS = {"yolov5n-seg-s2": lambda: seg_config("yolov5n-s2")}


def read_label_file(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """YOLO rows -> (n, 5) [class, cx, cy, w, h] and per row its polygon (k, 2), normalised; a box row's
    polygon is its rectangle, a polygon row's box its bounds (as yolov5's segments2boxes)."""
    labels, segments = [], []
    if path.is_file():
        for line in path.read_text().splitlines():
            v = np.array(line.split(), np.float32)
            if len(v) == 5:
                _, cx, cy, w, h = v
                segments.append(np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2],
                                          [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]], np.float32))
                labels.append(v)
            elif len(v) >= 7 and len(v) % 2:
                pts = v[1:].reshape(-1, 2)
                lo, hi = pts.min(0), pts.max(0)
                segments.append(pts)
                labels.append(np.array([v[0], *(lo + hi) / 2, *(hi - lo)], np.float32))
            elif len(v):
                raise S2Error(f"{path}: a row of {len(v)} numbers is neither a box nor a polygon")
    return np.array(labels, np.float32).reshape(-1, 5), segments


def load_split(data: dict[str, Any], split: str
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[list[np.ndarray]]]:
    """All images of a split in memory (the demo sets are small), their YOLO labels (n, 5) and
    polygons."""
    images, labels, segments = [], [], []
    for p in split_images(data, split):
        img = cv2.imread(str(p))
        if img is None:
            raise S2Error(f"cannot read image {p}")
        lab, seg = read_label_file(label_path(p))
        images.append(img)
        labels.append(lab)
        segments.append(seg)
    if not images:
        raise S2Error(f"the '{split}' split is empty")
    return images, labels, segments


def rasterize(segments: list[np.ndarray], imgsz: int, stride: int = MASK_STRIDE) -> np.ndarray:
    """Canvas-normalised polygons -> (n, imgsz/stride, imgsz/stride) float32 coverage in 0..1, filled at
    8 samples per mask pixel and area-averaged down (OpenCV fills every pixel an edge touches: at
    this density that adds 1/16 of a mask pixel around each shape)."""
    shift, n = 4, imgsz // stride
    fine = n * 8
    out = np.zeros((len(segments), n, n), np.float32)
    for k, seg in enumerate(segments):
        full = np.zeros((fine, fine), np.uint8)
        # Pixel-edge coordinates (pixel x spans x..x+1) to OpenCV's pixel centres.
        pts = np.round((seg * fine - 0.5) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(full, [pts], 1, cv2.LINE_8, shift)
        out[k] = cv2.resize(full.astype(np.float32), (n, n), interpolation=cv2.INTER_AREA)
    return out


def make_batch(images: list[np.ndarray], labels: list[np.ndarray], idx: np.ndarray, imgsz: int,
               rng: np.random.Generator, segments: list[list[np.ndarray]] | None = None
               ) -> tuple[Any, Any, Any]:
    """Augmented (B, 3, imgsz, imgsz) float RGB 0..1, (n, 6) targets [image, class, cx, cy, w, h] and,
    given polygons, each target's (n, imgsz/4, imgsz/4) mask (else None)."""
    import torch

    xs, ts, ms = [], [], []
    for k, i in enumerate(idx):
        img, lab, seg = augment_segments(images[i], labels[i], None if segments is None else segments[i],
                                         imgsz, rng)
        xs.append(img[..., ::-1].transpose(2, 0, 1))
        ts.append(np.concatenate((np.full((len(lab), 1), k, np.float32), lab), 1))
        if seg is not None:
            ms.append(rasterize(seg, imgsz))
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).float().div_(255)
    masks = torch.from_numpy(np.concatenate(ms)) if segments is not None else None
    return x, torch.from_numpy(np.concatenate(ts).astype(np.float32)), masks


class ModelEMA:
    """Exponential moving average of the weights, with YOLOv5's ramp (short memory early on)."""

    def __init__(self, model: Any, decay: float = 0.9999, tau: float = 2000.0):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model: Any) -> None:
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            msd = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


def build_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    """AdamW; decay on conv / linear weights only, not on biases or BatchNorm."""
    import torch

    decay, no_decay = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            is_norm = isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
            (decay if name == "weight" and not is_norm else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.937, 0.999))


def lr_at(it: int, progress: float, warmup: int, lr: float, final: float) -> float:
    """Linear warmup over the first iterations, then cosine decay to lr * final as progress goes 0 -> 1."""
    if it < warmup:
        return lr * (it + 1) / warmup
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(path: Path, ema: ModelEMA, epoch: int, fitness: float, opt: dict[str, Any]) -> None:
    import torch

    from s2trt.meta import write_bytes_atomic

    model = copy.deepcopy(ema.ema).half().train()  # as yolov5 stores it: FP16, train mode
    ckpt = {"epoch": epoch, "best_fitness": np.array([fitness]), "model": model, "ema": None,
            "updates": None, "optimizer": None, "opt": opt, "git": None,
            "date": datetime.now(timezone.utc).isoformat()}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    write_bytes_atomic(path, buf.getvalue())


def init_from(model: Any, path: str) -> int:
    """Start from a checkpoint's weights (yolov5's --weights): every tensor whose name and shape match,
    and of a Detect head feeding a Segment head the box, objectness and class rows of each anchor.
    Returns the number of tensors copied."""
    import torch

    from s2trt.models import load_checkpoint

    src = load_checkpoint(path).model.state_dict()
    dst = model.state_dict()
    na, k = model.detect.na, 5 + model.detect.nc
    n = 0
    with torch.no_grad():
        for name, v in dst.items():
            w = src.get(name)
            if w is None:
                continue
            if w.shape == v.shape:
                v.copy_(w)
            elif name.startswith(f"model.{len(model.model) - 1}.m.") and w.shape[0] == na * k \
                    and w.shape[1:] == v.shape[1:]:
                v.view(na, -1, *v.shape[1:])[:, :k] = w.view(na, k, *w.shape[1:])
            else:
                continue
            n += 1
    return n


def fitness(r: dict[str, float]) -> float:
    """YOLOv5's weighting: 0.1 mAP50 + 0.9 mAP50-95, and for a seg model the same of the masks added."""
    f = 0.1 * r["mAP50"] + 0.9 * r["mAP50-95"]
    return f + 0.1 * r.get("mask_mAP50", 0.0) + 0.9 * r.get("mask_mAP50-95", 0.0)


def validate(ema: ModelEMA, data_yaml: str, imgsz: int, device: str, limit: int | None) -> dict[str, float]:
    from s2trt.demo.torch_backend import torch_predictor
    from s2trt.detect.evaluate import evaluate

    model = copy.deepcopy(ema.ema)
    return evaluate(torch_predictor(model, device), data_yaml, "val", imgsz, batch=16, limit=limit)


def train(args: argparse.Namespace) -> dict[str, float]:
    import torch
    from tqdm import tqdm

    from s2trt.demo.loss import SegmentLoss, YoloLoss
    from s2trt.models.yolo import DetectionModel, Segment

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise S2Error("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = read_data_yaml(args.data)
    names = data["names"]
    t0 = time.time()
    images, labels, segments = load_split(data, "train")
    log.info("loaded %d training images in %.1f s", len(images), time.time() - t0)

    cfg = DERIVED_CONFIGS[args.cfg]() if args.cfg in DERIVED_CONFIGS else args.cfg
    model = DetectionModel(cfg, nc=len(names))
    if args.weights:
        log.info("%d tensors initialised from %s", init_from(model, args.weights), args.weights)
    model = model.to(args.device)
    model.names = dict(enumerate(names))  # v7.0 stores names as a dict on the model
    model.train()
    seg = isinstance(model.detect, Segment)
    compute_loss = (SegmentLoss if seg else YoloLoss)(model, args.imgsz)
    ema = ModelEMA(model)
    optimizer = build_optimizer(model, args.lr, args.weight_decay)
    cuda = args.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    nb = math.ceil(len(images) / args.batch)
    total = nb * args.epochs
    warmup = max(round(args.warmup_epochs * nb), 100)
    best, result, it = -1.0, {"mAP50": 0.0, "mAP50-95": 0.0}, 0
    opt = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    budget = args.time_budget * 60 if args.time_budget else math.inf
    t_start, progress = time.time(), 0.0
    for epoch in range(args.epochs):
        order = rng.permutation(len(images))
        mean = torch.zeros(4 if seg else 3)
        bar = tqdm(range(nb), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                   disable=args.quiet, dynamic_ncols=True)
        for bi in bar:
            x, targets, masks = make_batch(images, labels, order[bi * args.batch:(bi + 1) * args.batch],
                                           args.imgsz, rng, segments if seg else None)
            x, targets = x.to(args.device, non_blocking=True), targets.to(args.device)
            # On a shared or slow machine the wall-time budget, not the epoch count, ends the schedule.
            progress = max(it / total, (time.time() - t_start) / budget)
            if progress >= 1:
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(it, progress, warmup, args.lr, args.lrf)
            with torch.autocast("cuda", enabled=cuda):
                loss, parts = (compute_loss(model(x), targets, masks.to(args.device)) if seg
                               else compute_loss(model(x), targets))
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
            it += 1
            mean = (mean * bi + parts.cpu()) / (bi + 1)
            names = ("box", "obj", "cls", "mask")[:len(mean)]
            shown = {k: f"{v:.4f}" for k, v in zip(names, mean.tolist(), strict=True)}
            bar.set_postfix(**shown, lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        last = epoch + 1 == args.epochs or progress >= 1
        if last or (args.val_every and (epoch + 1) % args.val_every == 0):
            result = validate(ema, args.data, args.imgsz, args.device, args.val_limit)
            fit = fitness(result)
            log.info("epoch %d: val mAP50 %.4f mAP50-95 %.4f, masks %.4f %.4f (%d images), %.0f s "
                     "elapsed", epoch + 1, result["mAP50"], result["mAP50-95"],
                     result.get("mask_mAP50", float("nan")), result.get("mask_mAP50-95", float("nan")),
                     result["images"], time.time() - t0)
            if fit > best:
                best = fit
                save_checkpoint(Path(args.out), ema, epoch, fit, opt)
                log.info("saved %s", args.out)
        if last:
            break
    log.info("done: %d iterations (%d epochs started) in %.1f min", it, epoch + 1, (time.time() - t0) / 60)
    return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from s2trt.cli import add_verbosity

    p = argparse.ArgumentParser(prog="python -m s2trt.demo.train", description=__doc__)
    p.add_argument("--data", required=True, help="YOLO data yaml (from s2trt.demo.synth)")
    p.add_argument("--cfg", default="yolov5n-s2",
                   help="model config name or yaml; yolov5n-seg-s2: yolov5n-s2 with v7.0's Segment head")
    p.add_argument("--weights", default=None,
                   help="start from this checkpoint's weights where names and shapes match")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--lrf", type=float, default=0.02, help="final learning rate as a fraction of --lr")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="minutes of training: the LR schedule runs over this wall time and training "
                        "stops when it is spent, even before --epochs (0: no limit)")
    p.add_argument("--val-every", type=int, default=5, help="validate (and checkpoint the best) every N")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N val images")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (0: its default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="demo.pt", help="checkpoint path (the best validation fitness)")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    if args.imgsz % 32:
        raise S2Error("--imgsz must be a multiple of 32")
    train(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from s2trt.cli import run_main

    return run_main("s2trt.demo.train", _parse, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
