"""The YOLOv5 (v6.0+) detection model, built from a ``configs/models/yolov5*.yaml`` description.

Input: float ``(B, 3, H, W)`` RGB in ``[0, 1]`` with ``H`` and ``W`` multiples of the largest stride (32).

Output of :meth:`YOLOv5.forward`:

* eval mode: the decoded tensor ``(B, N, 5 + nc)`` with ``N = na * sum(H_i * W_i)`` over the 3 levels,
  columns ``[cx, cy, w, h, obj, p_0 .. p_{nc-1}]``: box centre and size in **input pixels**, objectness and
  class probabilities after the sigmoid (``xy = (2*sig - 0.5 + grid) * stride``,
  ``wh = (2*sig)**2 * anchor_px``).
* training mode: the list of the 3 raw head maps ``(B, na, H_i, W_i, 5 + nc)`` (before the sigmoid), as the
  loss expects; ``model.detect.anchors`` are the anchors ``(nl, na, 2)`` in grid units of each level.

The YAML layout is the usual YOLOv5 one: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` (pixels,
one ``[w0,h0, w1,h1, w2,h2]`` row per level), and ``backbone`` / ``head`` lists of
``[from, repeats, module, args]``. Strings in ``args`` are resolved from a fixed table (``nc``, ``anchors``,
``None``), never evaluated.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from edge_detect.config import load_yaml
from edge_detect.errors import ConfigError, ModelError
from edge_detect.paths import resource_path
from edge_detect.training.common import C3, SPPF, Bottleneck, Concat, Conv, make_divisible

__all__ = ["CONFIG_DIR", "Detect", "YOLOv5", "load_cfg", "model_config_path"]

LOGGER = logging.getLogger(__name__)

CONFIG_DIR = resource_path("configs", "models")

# module name in the yaml -> class; the "args" of these get (c_in, c_out scaled by width) prepended
_CHANNEL_MODULES = {"Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPPF": SPPF}
_REPEAT_ARG_MODULES = {"C3"}  # the repeat count is passed as an argument instead of stacking modules
_SYMBOLS = {"None": None, "True": True, "False": False}
_PROBE_SIZE = 256  # input side used to measure the strides at construction


class Detect(nn.Module):
    """YOLOv5 head: one 1x1 convolution per level and the box decoding.

    Attributes:
        nc: number of classes; ``no = nc + 5`` outputs per anchor.
        nl, na: number of levels (3) and of anchors per level (3).
        anchors: float32 buffer ``(nl, na, 2)`` anchor ``(w, h)`` in **grid units** of each level
            (pixels / stride), as in the official checkpoints.
        stride: float32 buffer ``(nl,)`` strides of the levels in input pixels (8, 16, 32), not saved in the
            ``state_dict`` (it is recomputed at construction).
    """

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int]) -> None:
        super().__init__()
        self.nc = int(nc)
        self.no = self.nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs: Sequence[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        """``xs``: the ``nl`` feature maps ``(B, C_i, H_i, W_i)`` -> raw maps (training) or decoded (eval)."""
        raw = []
        for conv, x in zip(self.m, xs):
            p = conv(x)
            bs, _, ny, nx = p.shape
            raw.append(p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        return torch.cat([self.decode(i, p) for i, p in enumerate(raw)], dim=1)

    def decode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        """Decode the raw map ``p`` ``(B, na, H, W, no)`` of level ``i`` to ``(B, na*H*W, no)`` input pixels.

        The grid is built from ``p``'s own shape, so a traced / exported graph keeps dynamic H and W.
        """
        bs, na, ny, nx, _ = p.shape
        y = p.sigmoid()
        xy, wh, conf = y.split((2, 2, self.no - 4), dim=4)
        gy, gx = torch.meshgrid(torch.arange(ny, device=p.device, dtype=p.dtype),
                                torch.arange(nx, device=p.device, dtype=p.dtype), indexing="ij")
        grid = torch.stack((gx, gy), dim=2).view(1, 1, ny, nx, 2)
        anchor_px = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(p.dtype)
        xy = (xy * 2 - 0.5 + grid) * self.stride[i].to(p.dtype)
        wh = (wh * 2) ** 2 * anchor_px
        return torch.cat((xy, wh, conf), dim=4).view(bs, -1, self.no)

    def initialize_biases(self) -> None:
        """YOLOv5's priors for training from scratch: objectness ~8 objects per 640x640 image, classes 0.6/nc."""
        with torch.no_grad():
            for conv, s in zip(self.m, self.stride.tolist()):
                b = conv.bias.view(self.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99))

    def reset_outputs(self, nc: int) -> None:
        """Replace the output convolutions by fresh ones for ``nc`` classes (keeps anchors and strides)."""
        self.nc, self.no = int(nc), int(nc) + 5
        device = self.anchors.device
        self.m = nn.ModuleList(nn.Conv2d(conv.in_channels, self.no * self.na, 1) for conv in self.m).to(device)
        self.initialize_biases()


def model_config_path(name: str) -> Path:
    """``configs/models/<name>.yaml`` for a model name such as ``"yolov5s"``."""
    return CONFIG_DIR / f"{name}.yaml"


def load_cfg(cfg: Union[str, os.PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """A model description as a dict: a mapping (deep-copied), a yaml path, or a name like ``"yolov5n"``."""
    if isinstance(cfg, Mapping):
        return copy.deepcopy(dict(cfg))
    path = Path(cfg)
    if not path.suffix and not path.exists():
        path = model_config_path(str(cfg))
        if not path.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown model config '{cfg}': expected a yaml path or one of {known}")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with backbone/head, got {type(data).__name__}")
    return data


def _resolve(arg: Any, d: Mapping[str, Any]) -> Any:
    if isinstance(arg, str):
        if arg in ("nc", "anchors"):
            return d[arg]
        if arg in _SYMBOLS:
            return _SYMBOLS[arg]
    return arg


def _build_layer(module: str, args: List[Any], c_in: List[int], f: Any, n: int,
                 gw: float) -> "tuple[nn.Module, int]":
    """One yaml row -> (module, output channels)."""
    if module in _CHANNEL_MODULES:
        c1, c2 = c_in[f], make_divisible(args[0] * gw, 8)
        args = [c1, c2, *args[1:]]
        if module in _REPEAT_ARG_MODULES:
            args.insert(2, n)
            n = 1
        cls = _CHANNEL_MODULES[module]
        layer = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
        return layer, c2
    if module == "Concat":
        return Concat(*args), sum(c_in[j] for j in f)
    if module in ("nn.Upsample", "Upsample"):
        size, scale, mode = (list(args) + [None, None, "nearest"])[:3]
        return nn.Upsample(size=size, scale_factor=scale, mode=mode), c_in[f]
    if module == "Detect":
        nc, anchors = args[0], args[1]
        if isinstance(anchors, int):
            raise ConfigError(f"Detect anchors: expected a list of per-level pixel anchors, got {anchors}")
        return Detect(nc, anchors, [c_in[j] for j in f]), 0
    raise ConfigError(f"unsupported module '{module}' in model config: expected one of "
                      f"{sorted([*_CHANNEL_MODULES, 'Concat', 'nn.Upsample', 'Detect'])}")


def _parse(d: Mapping[str, Any], ch: int) -> "tuple[nn.Sequential, List[int]]":
    gd, gw = float(d.get("depth_multiple", 1.0)), float(d.get("width_multiple", 1.0))
    channels: List[int] = [ch]
    layers: List[nn.Module] = []
    save: List[int] = []
    rows = list(d.get("backbone", [])) + list(d.get("head", []))
    if not rows:
        raise ConfigError("model config: expected non-empty 'backbone' and 'head' lists")
    for i, row in enumerate(rows):
        try:
            f, n, module, args = row
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model config row {i}: expected [from, repeats, module, args], got {row}") from exc
        args = [_resolve(a, d) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        layer, c2 = _build_layer(module, args, channels, f, n, gw)
        layer.i, layer.f, layer.type = i, f, module  # type: ignore[assignment]
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(layer)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class YOLOv5(nn.Module):
    """YOLOv5 detection model (see module doc for inputs and outputs).

    Args:
        cfg: a model description (mapping), a yaml path or a name in ``configs/models`` (``"yolov5s"``).
        ch: input channels (3).
        nc: number of classes, overriding the config's ``nc``.
        names: class names (default ``class0..``); length must equal ``nc``.

    Attributes:
        yaml: the resolved description dict (saved in checkpoints).
        names, nc: class names and count.
        stride: float32 buffer ``(nl,)`` = ``[8, 16, 32]`` for P3-P5 models.
        detect: the :class:`Detect` head (``detect.anchors`` in grid units).
    """

    def __init__(self, cfg: Union[str, os.PathLike, Mapping[str, Any]] = "yolov5s", ch: int = 3,
                 nc: Optional[int] = None, names: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.yaml = load_cfg(cfg)
        if nc is not None:
            self.yaml["nc"] = int(nc)
        self.yaml.setdefault("ch", ch)
        self.model, self.save = _parse(self.yaml, int(self.yaml["ch"]))
        self.nc = int(self.yaml["nc"])
        self.names = self._check_names(names, self.nc)
        self.fused = False
        self.register_buffer("stride", self._probe_strides(int(self.yaml["ch"])), persistent=False)
        self.detect.stride = self.stride.clone()
        self.detect.anchors /= self.stride.view(-1, 1, 1)
        self._check_anchor_order()
        self.detect.initialize_biases()

    @staticmethod
    def _check_names(names: Optional[Sequence[str]], nc: int) -> List[str]:
        if names is None:
            return [f"class{i}" for i in range(nc)]
        names = [str(n) for n in names]
        if len(names) != nc:
            raise ModelError(f"class names: expected {nc} names for nc={nc}, got {len(names)}")
        return names

    @property
    def detect(self) -> Detect:
        """The detection head (last layer)."""
        return self.model[-1]  # type: ignore[return-value]

    def _probe_strides(self, ch: int) -> torch.Tensor:
        """Strides from one forward pass at 256x256 (batch norms in eval: their statistics stay untouched)."""
        was_training = self.training
        self.eval()
        self.detect.train()
        with torch.no_grad():
            maps = self.forward(torch.zeros(1, ch, _PROBE_SIZE, _PROBE_SIZE))
        self.train(was_training)
        return torch.tensor([_PROBE_SIZE / m.shape[-2] for m in maps], dtype=torch.float32)

    def _check_anchor_order(self) -> None:
        """Make anchor sizes increase with the stride, as the levels expect (flip them otherwise)."""
        area = self.detect.anchors.prod(-1).mean(-1).view(-1)
        if (area[-1] - area[0]).sign() != (self.stride[-1] - self.stride[0]).sign():
            LOGGER.info("reversing anchor order to match the strides")
            self.detect.anchors[:] = self.detect.anchors.flip(0)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """``x``: float ``(B, 3, H, W)`` RGB in [0, 1] -> decoded ``(B, N, 5+nc)`` (eval) or raw maps (train)."""
        kept: List[Optional[torch.Tensor]] = []
        y: Any = x
        for layer in self.model:
            if layer.f != -1:
                y = kept[layer.f] if isinstance(layer.f, int) else [y if j == -1 else kept[j] for j in layer.f]
            y = layer(y)
            kept.append(y if layer.i in self.save else None)
        return y

    def fuse(self) -> "YOLOv5":
        """Fold every batch norm into its convolution (for inference/export); puts the model in eval mode."""
        self.eval()
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        self.fused = True
        return self

    def reset_head(self, nc: int, names: Optional[Sequence[str]] = None) -> "YOLOv5":
        """Transfer learning: new Detect output convs for ``nc`` classes; every other weight is kept."""
        self.detect.reset_outputs(nc)
        self.nc = int(nc)
        self.yaml["nc"] = int(nc)
        self.names = self._check_names(names, self.nc)
        return self

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())
