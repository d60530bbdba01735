"""The documented YOLOv5 (v6.x) training loss and its target assignment.

Written from the algorithm described on the Ultralytics "YOLOv5 Architecture" page (loss computation and
build targets):

* **Targets.** A ground-truth box is matched to an anchor of a level when both its width and height ratios to
  that anchor lie within ``[1/anchor_t, anchor_t]``. Each match is assigned to the grid cell holding the box
  centre and to the two neighbouring cells nearest to the centre (left/right and up/down, chosen by which
  half of the cell the centre falls in, offset 0.5), so up to three cells predict one box per anchor.
* **Box.** ``1 - CIoU`` between the decoded prediction (``xy = 2*sigmoid - 0.5`` relative to the cell,
  ``wh = (2*sigmoid)^2 * anchor``, grid units) and the target, averaged over positives.
* **Objectness.** Binary cross-entropy with logits over every cell and anchor against the detached,
  non-negative CIoU of the positive assigned there (0 elsewhere), weighted per level by ``balance``
  (``[4.0, 1.0, 0.4]`` for P3/P4/P5).
* **Classes.** Binary cross-entropy with logits on the positives against label-smoothed one-hot targets
  (``1 - eps/2`` / ``eps/2``); skipped for a single-class model.
* Both BCE terms take ``pos_weight`` (``cls_pw``, ``obj_pw``) and become focal losses (alpha 0.25) when
  ``fl_gamma > 0``. The three terms are multiplied by the gains ``box``, ``obj``, ``cls`` of ``hyp`` and
  ``total = (lbox + lobj + lcls) * batch_size``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Mapping, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from edge_detect.errors import ConfigError

__all__ = ["YOLOv5Loss", "LevelTargets", "bbox_ciou", "smooth_bce_targets", "LOSS_HYP_KEYS", "BALANCE"]

#: hyperparameters read by :class:`YOLOv5Loss`
LOSS_HYP_KEYS = ("box", "obj", "cls", "cls_pw", "obj_pw", "anchor_t", "label_smoothing", "fl_gamma")
#: objectness weight per level for 3-level (P3-P5) models; 4+ levels use the P3-P7 list
BALANCE = {3: (4.0, 1.0, 0.4)}
_BALANCE_P7 = (4.0, 1.0, 0.25, 0.06, 0.02)
_FOCAL_ALPHA = 0.25
_NEIGHBOUR_OFFSET = 0.5
_EPS = 1e-7


def smooth_bce_targets(eps: float = 0.0) -> Tuple[float, float]:
    """Positive and negative class targets for label smoothing ``eps``: ``(1 - eps/2, eps/2)``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = _EPS) -> Tensor:
    """Complete IoU of paired boxes.

    Args:
        box1: ``(n, 4)`` boxes ``[cx, cy, w, h]`` (any common unit, e.g. grid cells), float.
        box2: ``(n, 4)`` boxes in the same format and unit.
        eps: small constant guarding divisions.

    Returns:
        ``(n,)`` CIoU = IoU - (centre distance^2 / enclosing diagonal^2 + alpha * v), in ``[-1.5, 1]``.
        The aspect-ratio trade-off ``alpha`` is treated as a constant (no gradient), as documented.
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    h1, h2 = h1 + eps, h2 + eps
    b1_lo_x, b1_hi_x, b1_lo_y, b1_hi_y = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2_lo_x, b2_hi_x, b2_lo_y, b2_hi_y = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = ((torch.minimum(b1_hi_x, b2_hi_x) - torch.maximum(b1_lo_x, b2_lo_x)).clamp(min=0)
             * (torch.minimum(b1_hi_y, b2_hi_y) - torch.maximum(b1_lo_y, b2_lo_y)).clamp(min=0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclose_w = torch.maximum(b1_hi_x, b2_hi_x) - torch.minimum(b1_lo_x, b2_lo_x)
    enclose_h = torch.maximum(b1_hi_y, b2_hi_y) - torch.minimum(b1_lo_y, b2_lo_y)
    diag2 = enclose_w ** 2 + enclose_h ** 2 + eps
    centre2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre2 / diag2 + v * alpha)


@dataclass
class LevelTargets:
    """Positives assigned to one detection level (``n`` rows, one per (target, anchor, cell) match).

    Attributes:
        image: ``(n,)`` int64 image index in the batch.
        anchor: ``(n,)`` int64 anchor index within the level.
        gy, gx: ``(n,)`` int64 grid cell row / column, clamped to the map.
        box: ``(n, 4)`` float target ``[dx, dy, w, h]`` in grid units, ``dx, dy`` relative to the cell corner
            (in ``[-0.5, 1.5)`` because of the neighbour cells).
        anchor_wh: ``(n, 2)`` float anchor size in grid units.
        cls: ``(n,)`` int64 class index.
    """

    image: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor
    box: Tensor
    anchor_wh: Tensor
    cls: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])


def _bce(logits: Tensor, target: Tensor, pos_weight: Tensor, gamma: float) -> Tensor:
    """Mean BCE-with-logits, turned into a focal loss (alpha 0.25) when ``gamma > 0``."""
    if gamma <= 0:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    prob = logits.sigmoid()
    p_t = target * prob + (1 - target) * (1 - prob)
    alpha = target * _FOCAL_ALPHA + (1 - target) * (1 - _FOCAL_ALPHA)
    return (loss * alpha * (1.0 - p_t) ** gamma).mean()


class YOLOv5Loss:
    """The YOLOv5 loss: CIoU box loss, IoU-targeted objectness and BCE classification.

    Args:
        anchors: ``(nl, na, 2)`` anchor sizes in **grid units** of each level (pixels / stride).
        strides: ``nl`` strides, e.g. ``[8, 16, 32]`` (kept for reference; maps carry their own size).
        num_classes: number of classes ``nc``.
        hyp: mapping with the keys of :data:`LOSS_HYP_KEYS`; gains ``box``, ``obj``, ``cls`` are used as given
            (scale them for layers/classes/image size beforehand).

    Call ``total, (lbox, lobj, lcls) = loss(preds, targets)`` with ``preds`` the ``nl`` raw maps
    ``(B, na, H, W, 5 + nc)`` (logits, before sigmoid) and ``targets`` ``(M, 6)`` rows
    ``[image_index, class, cx, cy, w, h]`` normalized to ``[0, 1]``. ``total`` is a scalar tensor with grad
    ``(lbox + lobj + lcls) * B``; ``lbox, lobj, lcls`` are detached per-image scalars after gains.
    Computation runs in float32 (or float64 when the maps are float64), also under AMP.

    Raises:
        ConfigError: a hyperparameter is missing or the anchors/strides shapes disagree.
    """

    def __init__(self, anchors: Union[Tensor, Sequence], strides: Sequence[float], num_classes: int,
                 hyp: Mapping[str, float]) -> None:
        missing = [k for k in LOSS_HYP_KEYS if k not in hyp]
        if missing:
            raise ConfigError(f"loss hyperparameters missing: expected keys {list(LOSS_HYP_KEYS)}, "
                              f"missing {missing}")
        anchors = torch.as_tensor(anchors, dtype=torch.float32).detach().clone()
        if anchors.ndim != 3 or anchors.shape[-1] != 2:
            raise ConfigError(f"anchors: expected shape (nl, na, 2), got {tuple(anchors.shape)}")
        if len(strides) != anchors.shape[0]:
            raise ConfigError(f"strides: expected {anchors.shape[0]} values (one per level), got {len(strides)}")
        if num_classes < 1:
            raise ConfigError(f"num_classes: expected >= 1, got {num_classes}")
        self.anchors = anchors
        self.strides = [float(s) for s in strides]
        self.nl, self.na = int(anchors.shape[0]), int(anchors.shape[1])
        self.nc = int(num_classes)
        self.hyp = {k: float(hyp[k]) for k in LOSS_HYP_KEYS}
        self.balance = BALANCE.get(self.nl, _BALANCE_P7)[: self.nl]
        self.cp, self.cn = smooth_bce_targets(self.hyp["label_smoothing"])

    # ------------------------------------------------------------------ targets
    def build_targets(self, preds: Sequence[Tensor], targets: Tensor) -> List[LevelTargets]:
        """Assign ``targets`` ``(M, 6)`` ``[img, cls, cx, cy, w, h]`` (normalized) to anchors and cells.

        Returns one :class:`LevelTargets` per level, rows ordered by (neighbour offset, anchor, target).
        """
        device = targets.device
        dtype = torch.float64 if preds[0].dtype == torch.float64 else torch.float32
        targets = targets.to(dtype)
        # candidate offsets: own cell, then left, up, right, down neighbours (in cell units)
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=dtype)
        offsets = offsets * _NEIGHBOUR_OFFSET
        out = []
        for i, p in enumerate(preds):
            h, w = int(p.shape[2]), int(p.shape[3])
            anchors = self.anchors[i].to(device=device, dtype=dtype)
            scale = torch.tensor([w, h, w, h], device=device, dtype=dtype)
            t = targets[:, 2:6] * scale  # (M, 4) in grid units
            # anchor matching: both side ratios within [1/anchor_t, anchor_t]
            ratio = t[None, :, 2:4] / anchors[:, None]  # (na, M, 2)
            match = torch.max(ratio, 1 / ratio).amax(dim=2) < self.hyp["anchor_t"]  # (na, M)
            a_idx, t_idx = match.nonzero(as_tuple=True)
            # nonzero is row-major: ordered by anchor, then target
            gxy = t[t_idx, :2]
            gxy_inv = scale[:2] - gxy
            left_up = (gxy % 1 < _NEIGHBOUR_OFFSET) & (gxy > 1)
            right_down = (gxy_inv % 1 < _NEIGHBOUR_OFFSET) & (gxy_inv > 1)
            use = torch.stack([torch.ones_like(left_up[:, 0]), left_up[:, 0], left_up[:, 1],
                               right_down[:, 0], right_down[:, 1]])  # (5, n)
            o_idx, m_idx = use.nonzero(as_tuple=True)
            a_sel, t_sel = a_idx[m_idx], t_idx[m_idx]
            gxy_sel = gxy[m_idx]
            cell = (gxy_sel - offsets[o_idx]).long()
            gx, gy = cell[:, 0].clamp(0, w - 1), cell[:, 1].clamp(0, h - 1)
            box = torch.cat([gxy_sel - cell, t[t_sel, 2:4]], dim=1)
            out.append(LevelTargets(
                image=targets[t_sel, 0].long(), anchor=a_sel, gy=gy, gx=gx, box=box,
                anchor_wh=anchors[a_sel], cls=targets[t_sel, 1].long()))
        return out

    # ------------------------------------------------------------------ loss
    def __call__(self, preds: Sequence[Tensor], targets: Tensor) -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        if len(preds) != self.nl:
            raise ConfigError(f"loss: expected {self.nl} prediction maps, got {len(preds)}")
        for p in preds:
            if p.ndim != 5 or p.shape[1] != self.na or p.shape[-1] != 5 + self.nc:
                raise ConfigError(f"loss: expected maps (B, {self.na}, H, W, {5 + self.nc}), "
                                  f"got {tuple(p.shape)}")
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ConfigError(f"loss: expected targets (M, 6) [img, cls, cx, cy, w, h], got {tuple(targets.shape)}")
        preds = [p if p.dtype == torch.float64 else p.float() for p in preds]
        dtype, device = preds[0].dtype, preds[0].device
        with torch.autocast(device_type=device.type, enabled=False):
            return self._compute(preds, targets.to(device), dtype, device)

    def _compute(self, preds: List[Tensor], targets: Tensor, dtype: torch.dtype,
                 device: torch.device) -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        cls_pw = torch.tensor([self.hyp["cls_pw"]], device=device, dtype=dtype)
        obj_pw = torch.tensor([self.hyp["obj_pw"]], device=device, dtype=dtype)
        gamma = self.hyp["fl_gamma"]
        lbox = torch.zeros((), device=device, dtype=dtype)
        lobj = torch.zeros((), device=device, dtype=dtype)
        lcls = torch.zeros((), device=device, dtype=dtype)
        for p, tg, balance in zip(preds, self.build_targets(preds, targets), self.balance):
            tobj = torch.zeros(p.shape[:4], device=device, dtype=dtype)
            if len(tg):
                sel = p[tg.image, tg.anchor, tg.gy, tg.gx]  # (n, 5 + nc)
                pxy = sel[:, :2].sigmoid() * 2 - 0.5
                pwh = (sel[:, 2:4].sigmoid() * 2) ** 2 * tg.anchor_wh
                iou = bbox_ciou(torch.cat([pxy, pwh], dim=1), tg.box)
                lbox = lbox + (1.0 - iou).mean()
                _scatter_last(tobj, (tg.image, tg.anchor, tg.gy, tg.gx), iou.detach().clamp(min=0))
                if self.nc > 1:
                    tcls = torch.full_like(sel[:, 5:], self.cn)
                    tcls[torch.arange(len(tg), device=device), tg.cls] = self.cp
                    lcls = lcls + _bce(sel[:, 5:], tcls, cls_pw, gamma)
            lobj = lobj + _bce(p[..., 4], tobj, obj_pw, gamma) * balance
        lbox = lbox * self.hyp["box"]
        lobj = lobj * self.hyp["obj"]
        lcls = lcls * self.hyp["cls"]
        batch = preds[0].shape[0]
        total = (lbox + lobj + lcls) * batch
        return total, (lbox.detach(), lobj.detach(), lcls.detach())


def _scatter_last(dst: Tensor, index: Tuple[Tensor, ...], values: Tensor) -> None:
    """``dst[index] = values`` where, for repeated positions, the last row wins (deterministic on any device)."""
    flat = torch.zeros_like(index[0])
    for idx, size in zip(index, dst.shape):
        flat = flat * size + idx
    order = torch.arange(flat.numel(), device=flat.device)
    last = torch.full((dst.numel(),), -1, device=flat.device, dtype=order.dtype)
    last.scatter_reduce_(0, flat, order, reduce="amax")
    keep = last[flat] == order
    dst.view(-1)[flat[keep]] = values[keep].to(dst.dtype)
