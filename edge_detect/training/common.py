"""Building blocks of the YOLOv5 (v6.0+) network: ``Conv``, ``Bottleneck``, ``C3``, ``SPPF``, ``Concat``.

All tensors are float NCHW feature maps ``(B, C, H, W)``. Attribute names (``conv``, ``bn``, ``cv1``...,
``m``) follow the official checkpoints' ``state_dict`` keys so that their weights load one-to-one.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["BN_EPS", "BN_MOMENTUM", "autopad", "make_divisible", "Conv", "Bottleneck", "C3", "SPPF", "Concat"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(kernel: int, padding: Optional[int] = None) -> int:
    """'Same' padding for an odd ``kernel`` at stride 1 (``kernel // 2``) unless ``padding`` is given."""
    return kernel // 2 if padding is None else padding


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is ``>= x`` (channel counts after width scaling)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d (eps 1e-3, momentum 0.03) -> SiLU.

    ``(B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s))``. After :meth:`fuse` the batch norm is folded into
    the convolution (which then has a bias) and replaced by ``nn.Identity``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Optional[int] = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @property
    def fused(self) -> bool:
        return isinstance(self.bn, nn.Identity)

    def fuse(self) -> None:
        """Fold the batch norm into the convolution (inference only; uses the running statistics)."""
        if self.fused:
            return
        self.conv = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
        self.bn = nn.Identity()


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, with a residual add when ``shortcut`` and ``c1 == c2``. ``(B,c1,H,W)->(B,c2,H,W)``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convolutions: ``cv3(cat(m(cv1(x)), cv2(x)))``, ``n`` bottlenecks in ``m``.

    ``(B, c1, H, W) -> (B, c2, H, W)``; the two branches have ``int(c2 * e)`` channels each.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained ``k x k`` stride-1 max-pools, outputs concatenated.

    ``(B, c1, H, W) -> (B, c2, H, W)``; equivalent to parallel pools of sizes k, 2k-1, 3k-2.
    """

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        p1 = self.m(x)
        p2 = self.m(p1)
        return self.cv2(torch.cat((x, p1, p2, self.m(p2)), dim=1))


class Concat(nn.Module):
    """Concatenate a list of feature maps along ``dimension`` (channels by default)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), dim=self.d)
