"""YOLOv5's training loss: anchor matching with neighbour cells, CIoU box loss, IoU-target objectness,
and for v7.0's Segment head its mask loss.

Targets are an (n, 6) tensor of rows [image index, class, cx, cy, w, h] with coordinates normalised
to the network input. Predictions are Detect's train-mode maps (B, na, ny, nx, 5 + nc), whose boxes
decode as xy = 2 sigmoid - 0.5 (cell units, relative to the cell), wh = (2 sigmoid)^2 * anchor;
Segment's maps have nm mask coefficients after the class scores, and come with the prototypes.
"""

from __future__ import annotations

import math
from typing import Any


def bbox_ciou(a: Any, b: Any, eps: float = 1e-7) -> Any:
    """Complete IoU of paired (n, 4) cx, cy, w, h boxes (Zheng et al. 2020)."""
    import torch

    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(1)
    wa, ha = a[:, 2], a[:, 3] + eps
    wb, hb = b[:, 2], b[:, 3] + eps
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union
    enclose = torch.max(a2, b2) - torch.min(a1, b1)
    c2 = enclose.pow(2).sum(1) + eps  # squared diagonal of the smallest enclosing box
    rho2 = (a[:, :2] - b[:, :2]).pow(2).sum(1)  # squared centre distance
    v = (4 / math.pi ** 2) * (torch.atan(wb / hb) - torch.atan(wa / ha)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    """Loss of a DetectionModel in train mode; call with (maps, targets) -> (total * B, parts)."""

    # Neighbour cells that may also predict a target whose centre lies near their shared edge.
    _NEIGHBOURS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1))

    def __init__(self, model: Any, imgsz: int, box: float = 0.05, obj: float = 1.0, cls: float = 0.5,
                 anchor_t: float = 4.0, balance: tuple[float, ...] = (4.0, 1.0, 0.4)):
        det = model.detect
        self.na, self.nc, self.nl = det.na, det.nc, det.nl
        self.anchors = det.anchors  # (nl, na, 2) in grid units
        self.anchor_t = anchor_t
        self.balance = balance
        # YOLOv5 rescales the gains for the number of layers, classes and the image size.
        scale = 3 / self.nl
        self.w_box = box * scale
        self.w_cls = cls * self.nc / 80 * scale
        self.w_obj = obj * (imgsz / 640) ** 2 * scale

    def __call__(self, preds: list[Any], targets: Any) -> tuple[Any, Any]:
        import torch
        from torch.nn.functional import binary_cross_entropy_with_logits as bce

        dev = preds[0].device
        lbox = torch.zeros(1, device=dev)
        lobj = torch.zeros(1, device=dev)
        lcls = torch.zeros(1, device=dev)
        for i, p in enumerate(preds):
            p = p.float()
            b, a, gj, gi, tbox, tcls, anchors = self.match(i, p.shape, targets)
            tobj = torch.zeros(p.shape[:4], device=dev)
            if len(b):
                ps = p[b, a, gj, gi][:, :5 + self.nc]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox)
                lbox = lbox + (1 - iou).mean()
                # Objectness learns the box quality (IoU), not a hard 1.
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.zeros_like(ps[:, 5:])
                    t[torch.arange(len(b), device=dev), tcls] = 1.0
                    lcls = lcls + bce(ps[:, 5:], t)
            lobj = lobj + bce(p[..., 4], tobj) * self.balance[i]
        lbox, lobj, lcls = lbox * self.w_box, lobj * self.w_obj, lcls * self.w_cls
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def match(self, i: int, shape: Any, targets: Any) -> tuple[Any, ...]:
        """Targets assigned to layer i: indices (b, a, gj, gi), box relative to its cell, class, anchor.
        """
        return self.assign(i, shape, targets)[:7]

    def assign(self, i: int, shape: Any, targets: Any) -> tuple[Any, ...]:
        """match()'s tuple and, last, the row of `targets` each assignment comes from.

        A target goes to every anchor whose width and height ratios to it are within anchor_t, in its
        own cell and in the two neighbouring cells closest to its centre (YOLOv5's rule), which
        triples the positives and lets xy predictions cover -0.5..1.5.
        """
        import torch

        dev = targets.device
        ny, nx = shape[2], shape[3]
        anchors = self.anchors[i].to(dev)
        t = targets[:, 2:6] * torch.tensor([nx, ny, nx, ny], device=dev, dtype=targets.dtype)
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        if len(t) == 0:
            z = torch.zeros(0, 2, device=dev)
            return empty, empty, empty, empty, torch.zeros(0, 4, device=dev), empty, z, empty
        ratio = t[None, :, 2:4] / anchors[:, None]  # (na, nt, 2)
        ok = torch.max(ratio, 1 / ratio).amax(2) < self.anchor_t
        ai, ti = ok.nonzero(as_tuple=True)
        gxy, gwh = t[ti, :2], t[ti, 2:4]
        inv = torch.tensor([nx, ny], device=dev) - gxy
        frac, frac_inv = gxy % 1, inv % 1
        use = torch.stack((
            torch.ones_like(gxy[:, 0], dtype=torch.bool),
            (frac[:, 0] < 0.5) & (gxy[:, 0] > 1),  # left neighbour
            (frac[:, 1] < 0.5) & (gxy[:, 1] > 1),  # upper neighbour
            (frac_inv[:, 0] < 0.5) & (inv[:, 0] > 1),  # right neighbour
            (frac_inv[:, 1] < 0.5) & (inv[:, 1] > 1),  # lower neighbour
        ))  # (5, m)
        # Offsets point from the target's cell to the neighbour: +0.5 moves left/up a cell after floor.
        off = torch.tensor(self._NEIGHBOURS, device=dev, dtype=gxy.dtype) * 0.5
        k, m = use.nonzero(as_tuple=True)
        cell = (gxy[m] - off[k]).long()
        gi = cell[:, 0].clamp(0, nx - 1)
        gj = cell[:, 1].clamp(0, ny - 1)
        rows = ti[m]
        b = targets[rows, 0].long()
        cls = targets[rows, 1].long()
        a = ai[m]
        tbox = torch.cat((gxy[m] - cell, gwh[m]), 1)
        return b, a, gj, gi, tbox, cls, anchors[a], rows


def crop_to_boxes(maps: Any, boxes: Any) -> Any:
    """(n, h, w) maps with everything outside each (n, 4) x1y1x2y2 box (in map pixels) set to 0."""
    import torch

    h, w = maps.shape[1:]
    xs = torch.arange(w, device=maps.device, dtype=boxes.dtype)[None, None, :]
    ys = torch.arange(h, device=maps.device, dtype=boxes.dtype)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, k, None, None] for k in range(4))
    return maps * ((xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2))


class SegmentLoss(YoloLoss):
    """YoloLoss of a Segment model and YOLOv5's mask loss; call with ((maps, prototypes), targets,
    masks) -> (total * B, parts box, obj, cls, mask), where masks (n, H/4, W/4) in 0..1 are each
    target's mask at the prototypes' resolution.

    Per positive, its mask is sigmoid(coefficients . prototypes); the per-pixel BCE against the
    target's mask counts inside the target's box only, is averaged over the whole map and divided by
    the box's area (a fraction of the image), so small and large objects weigh alike. The mask gain
    is the box gain over the batch size (both applied to the mean over positives).
    """

    def __init__(self, model: Any, imgsz: int, **kw: Any):
        super().__init__(model, imgsz, **kw)
        self.nm = model.detect.nm

    def __call__(self, preds: Any, targets: Any, masks: Any = None) -> tuple[Any, Any]:  # type: ignore[override]
        import torch
        from torch.nn.functional import binary_cross_entropy_with_logits as bce

        maps, proto = preds
        total, parts = super().__call__(maps, targets)
        proto = proto.float()
        bs, nm, mh, mw = proto.shape
        lseg = torch.zeros(1, device=proto.device)
        scale = torch.tensor([mw, mh, mw, mh], device=proto.device, dtype=proto.dtype)
        for i, p in enumerate(maps):
            b, a, gj, gi, *_, rows = self.assign(i, p.shape, targets)
            if not len(b):
                continue
            coef = p.float()[b, a, gj, gi][:, 5 + self.nc:]
            xywh = targets[rows, 2:6].float()
            area = xywh[:, 2] * xywh[:, 3]
            xyxy = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1) * scale
            for bi in b.unique():
                j = b == bi
                logits = (coef[j] @ proto[bi].reshape(nm, -1)).view(-1, mh, mw)
                err = bce(logits, masks[rows[j]].to(logits.dtype), reduction="none")
                lseg = lseg + (crop_to_boxes(err, xyxy[j]).mean((1, 2)) / area[j]).mean()
        lseg = lseg * self.w_box / bs
        return total + lseg * bs, torch.cat((parts, lseg.detach()))
