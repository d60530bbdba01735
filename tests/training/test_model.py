"""YOLOv5 model: architecture figures, decoding, fusing, head reset and parity with the official outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import requires_torch

pytestmark = requires_torch

torch = pytest.importorskip("torch")
torch.set_num_threads(2)

from edge_detect.training.model import YOLOv5, load_cfg  # noqa: E402
from edge_detect.errors import ConfigError  # noqa: E402

BOX_TOL_PX = 1e-2
PROB_TOL = 1e-3


def _to_input(letterboxed_bgr: np.ndarray) -> "torch.Tensor":
    """BGR uint8 (H, W, 3) -> RGB float32 (1, 3, H, W) in [0, 1]."""
    rgb = np.ascontiguousarray(letterboxed_bgr[..., ::-1].transpose(2, 0, 1))
    return torch.from_numpy(rgb)[None].float() / 255.0


@pytest.fixture(scope="module")
def yolov5n() -> YOLOv5:
    torch.manual_seed(0)
    return YOLOv5("yolov5n")


# official parameter counts of the unfused models (facts of the architecture)
@pytest.mark.parametrize("name, params", [
    ("yolov5n", 1_872_157),
    ("yolov5s", 7_235_389),
    ("yolov5m", 21_190_557),
])
def test_parameter_count(name: str, params: int) -> None:
    assert YOLOv5(name).num_params() == params


def test_strides_and_anchors_in_grid_units(yolov5n: YOLOv5) -> None:
    assert yolov5n.stride.tolist() == [8.0, 16.0, 32.0]
    pixels = torch.tensor(load_cfg("yolov5n")["anchors"], dtype=torch.float32).view(3, 3, 2)
    assert torch.allclose(yolov5n.detect.anchors * yolov5n.stride.view(3, 1, 1), pixels)
    assert yolov5n.detect.anchors[0, 0].tolist() == [1.25, 1.625]


@pytest.mark.parametrize("h, w, n", [(256, 256, 4032), (320, 256, 5040), (384, 640, 15120)])
def test_eval_output_shape(yolov5n: YOLOv5, h: int, w: int, n: int) -> None:
    yolov5n.eval()
    with torch.no_grad():
        y = yolov5n(torch.rand(2, 3, h, w))
    assert tuple(y.shape) == (2, n, 85)
    assert float(y[..., 4:].min()) >= 0.0 and float(y[..., 4:].max()) <= 1.0


def test_train_output_is_three_raw_maps(yolov5n: YOLOv5) -> None:
    yolov5n.train()
    try:
        maps = yolov5n(torch.rand(1, 3, 256, 320))
    finally:
        yolov5n.eval()
    assert [tuple(m.shape) for m in maps] == [(1, 3, 32, 40, 85), (1, 3, 16, 20, 85), (1, 3, 8, 10, 85)]


def test_decoding_formula() -> None:
    """With zero head outputs, sigmoid = 0.5: centre = (grid + 0.5) * stride, size = anchor pixels."""
    model = YOLOv5("yolov5n").eval()
    with torch.no_grad():
        for conv in model.detect.m:
            conv.weight.zero_()
            conv.bias.zero_()
        y = model(torch.rand(1, 3, 64, 64))[0]
    # level 0: 8x8 grid, 3 anchors; level 1: 4x4; level 2: 2x2 -> 3 * (64 + 16 + 4) rows
    assert y.shape == (252, 85)
    assert y[0, :4].tolist() == [4.0, 4.0, 10.0, 13.0]          # anchor 0, cell (0, 0), stride 8
    assert y[1, :4].tolist() == [12.0, 4.0, 10.0, 13.0]         # next cell in x
    assert y[64, :4].tolist() == [4.0, 4.0, 16.0, 30.0]         # anchor 1 of level 0
    assert y[192, :4].tolist() == [8.0, 8.0, 30.0, 61.0]        # level 1, anchor 0, cell (0, 0), stride 16
    assert y[-1, :4].tolist() == [48.0, 48.0, 373.0, 326.0]     # level 2, last anchor, cell (1, 1)
    assert torch.all(y[:, 4:] == 0.5)


def test_bias_priors() -> None:
    model = YOLOv5("yolov5n")
    for conv, s in zip(model.detect.m, (8, 16, 32)):
        b = conv.bias.view(3, 85).detach()
        # prior plus PyTorch's default uniform(+-1/sqrt(fan_in)) init, fan_in >= 64 -> |noise| <= 0.125
        assert torch.allclose(b[:, 4], torch.full((3,), math.log(8 / (640 / s) ** 2)), atol=0.13)
        assert torch.allclose(b[:, 5:], torch.full((3, 80), math.log(0.6 / 79.01)), atol=0.13)


def test_fuse_keeps_outputs() -> None:
    torch.manual_seed(1)
    model = YOLOv5("yolov5n")
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        before = model(x)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        model.fuse()
        after = model(x)
    assert n_bn == 57 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.fused and not model.training
    assert torch.allclose(before, after, atol=1e-3, rtol=1e-4)


def test_reset_head_keeps_other_weights() -> None:
    model = YOLOv5("yolov5n")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_head(3, names=["cat", "dog", "bird"])
    after = model.state_dict()
    assert model.nc == 3 and model.names == ["cat", "dog", "bird"] and model.yaml["nc"] == 3
    head = {k for k in before if k.startswith("model.24.m.")}
    assert len(head) == 6
    assert all(torch.equal(before[k], after[k]) for k in before if k not in head)
    assert [tuple(after[f"model.24.m.{i}.weight"].shape) for i in range(3)] == [(24, 64, 1, 1), (24, 128, 1, 1),
                                                                                (24, 256, 1, 1)]
    with torch.no_grad():
        assert tuple(model.eval()(torch.rand(1, 3, 64, 64)).shape) == (1, 252, 8)


@pytest.mark.parametrize("cfg, message", [
    ("yolov5q", "unknown model config 'yolov5q'"),
    ({**load_cfg("yolov5n"), "backbone": [[-1, 1, "Focus", [64, 3]]]}, "unsupported module 'Focus'"),
    ({**load_cfg("yolov5n"), "backbone": [[-1, 1, "Conv"]]}, "expected [from, repeats, module, args]"),
    ({"nc": 80, "backbone": [], "head": []}, "expected non-empty 'backbone' and 'head'"),
])
def test_bad_config(cfg, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        YOLOv5(cfg)
    assert message in str(exc.value)


def test_names_must_match_nc() -> None:
    from edge_detect.errors import ModelError

    with pytest.raises(ModelError, match="expected 2 names for nc=2, got 1"):
        YOLOv5("yolov5n", nc=2, names=["a"])


@pytest.mark.parametrize("image", ["bus", "zidane"])
def test_parity_with_official_outputs(weights_pt, reference, image: str) -> None:
    from edge_detect.training.checkpoint import load_model

    model, names = load_model(weights_pt, fuse=True)
    ref = np.load(reference / f"infer_{image}.npz")
    with torch.inference_mode():
        pred = model(_to_input(ref["letterboxed_bgr"])).numpy()
    raw = ref["raw"]
    assert pred.shape == raw.shape == (1, 25200, 85)
    assert np.abs(pred[..., :4] - raw[..., :4]).max() <= BOX_TOL_PX
    assert np.abs(pred[..., 4:] - raw[..., 4:]).max() <= PROB_TOL
    assert len(names) == 80 and names[0] == "person" and names[5] == "bus"
