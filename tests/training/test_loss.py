"""The YOLOv5 loss: parity with the official implementation's figures and target-assignment behaviour."""
from __future__ import annotations

import json
import numpy as np
import pytest

from conftest import requires_torch

pytestmark = [requires_torch, pytest.mark.usefixtures("torch_one_thread")]

VARIANTS = ("default", "smooth0.1", "focal1.5")
DEFAULT_HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0,
               "label_smoothing": 0.0, "fl_gamma": 0.0}
ANCHORS_GRID = [[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]],
                [[1.875, 3.8125], [3.875, 2.8125], [3.6875, 7.4375]],
                [[3.625, 2.8125], [4.875, 6.1875], [11.65625, 10.1875]]]


@pytest.fixture(scope="module")
def case(reference):
    ref = json.loads((reference / "reference.json").read_text())["loss"]
    return ref, np.load(reference / "loss_case.npz")


def _maps(shapes=((8, 8), (4, 4), (2, 2)), batch=2, nc=3, seed=0, dtype=None):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, h, w, 5 + nc, generator=g, dtype=dtype or torch.float32).requires_grad_()
            for h, w in shapes]


def _loss(nc=3, **hyp):
    from edge_detect.training.loss import YOLOv5Loss

    return YOLOv5Loss(ANCHORS_GRID, [8, 16, 32], nc, {**DEFAULT_HYP, **hyp})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_with_reference(case, variant, dtype):
    import torch
    from edge_detect.training.loss import YOLOv5Loss

    ref, arrays = case
    v = ref["variants"][variant]
    loss = YOLOv5Loss(ref["anchors_grid_units"], ref["strides"], ref["nc"], v["hyp"])
    preds = [torch.tensor(arrays[f"pred_{i}"], dtype=getattr(torch, dtype), requires_grad=True) for i in range(3)]
    total, (lbox, lobj, lcls) = loss(preds, torch.from_numpy(arrays["targets"]))
    assert not lbox.requires_grad and not lobj.requires_grad and not lcls.requires_grad
    for got, key in ((total.detach(), "total"), (lbox, "lbox"), (lobj, "lobj"), (lcls, "lcls")):
        assert float(got) == pytest.approx(v[key], rel=1e-4), key
    assert float(total.detach()) == pytest.approx((float(lbox) + float(lobj) + float(lcls)) * ref["batch"], rel=1e-6)
    total.backward()
    for i, p in enumerate(preds):
        expected = arrays[f"grad_{variant}_{i}"].astype(np.float64)
        got = p.grad.double().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # the gradients themselves are ~1e-3: require agreement far below their scale too
        assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()


def test_float32_equals_float64(case):
    import torch
    from edge_detect.training.loss import YOLOv5Loss

    ref, arrays = case
    loss = YOLOv5Loss(ref["anchors_grid_units"], ref["strides"], ref["nc"], ref["variants"]["default"]["hyp"])
    t = torch.from_numpy(arrays["targets"])
    f32 = loss([torch.tensor(arrays[f"pred_{i}"]) for i in range(3)], t)[0]
    f64 = loss([torch.tensor(arrays[f"pred_{i}"], dtype=torch.float64) for i in range(3)], t)[0]
    assert f32.dtype == torch.float32 and f64.dtype == torch.float64
    assert float(f32) == pytest.approx(float(f64), rel=1e-6)


def test_half_inputs_are_computed_in_float32():
    import torch

    maps = [m.detach() for m in _maps()]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.2, 0.7, 0.1, 0.2]])
    full = _loss()(maps, targets)[0]
    half = _loss()([m.to(torch.bfloat16) for m in maps], targets)[0]
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(full), rel=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = _loss()(maps, targets)[0]
    assert amp.dtype == torch.float32 and float(amp) == pytest.approx(float(full), rel=1e-6)


def test_build_targets_centre_cell_and_two_neighbours():
    import torch

    # one box on the P3 map (8x8): centre at (2.3, 5.8) cells, size 1.3 x 1.6 cells (matches anchors 0 and 1)
    t = torch.tensor([[1, 2, 2.3 / 8, 5.8 / 8, 1.3 / 8, 1.6 / 8]])
    levels = _loss().build_targets(_maps(), t)
    p3 = levels[0]
    anchors = sorted(set(p3.anchor.tolist()))
    # ratios to anchor 0 (1.25,1.625): ~1.04; anchor 1 (2,3.75): 2.34 < 4; anchor 2 (4.125, 2.875): 3.17 < 4
    assert anchors == [0, 1, 2]
    cells = {(a, y, x) for a, y, x in zip(p3.anchor.tolist(), p3.gy.tolist(), p3.gx.tolist())}
    # x=2.3 is in the left half -> left neighbour x=1; y=5.8 in the lower half -> neighbour y=6
    assert cells == {(a, y, x) for a in (0, 1, 2) for y, x in ((5, 2), (5, 1), (6, 2))}
    assert len(p3) == 9
    assert set(p3.image.tolist()) == {1} and set(p3.cls.tolist()) == {2}
    # offsets relative to the assigned cell corner stay in [-0.5, 1.5)
    assert float(p3.box[:, :2].min()) >= -0.5 and float(p3.box[:, :2].max()) < 1.5
    np.testing.assert_allclose(p3.box[:, 2:].numpy(), np.tile([[1.3, 1.6]], (9, 1)), rtol=1e-5)


@pytest.mark.parametrize("wh_cells, expected_anchors", [
    ((1.25, 1.625), [0, 1, 2]),  # worst ratios 1, 2.31, 3.3
    ((0.4, 0.5), [0]),           # 3.25 to anchor 0; 5.0 to anchor 1
    ((0.25, 0.3), []),           # 5.0 to anchor 0: matches nothing on P3
    ((10.0, 8.0), [2]),          # 2.78 to anchor 2; 5.0 to anchor 1
    ((6.0, 12.0), [1]),          # 3.2 to anchor 1; 4.17 to anchor 2
])
def test_anchor_ratio_threshold(wh_cells, expected_anchors):
    import torch

    t = torch.tensor([[0, 0, 0.5, 0.5, wh_cells[0] / 8, wh_cells[1] / 8]])
    got = sorted(set(_loss().build_targets(_maps(), t)[0].anchor.tolist()))
    assert got == expected_anchors


def test_border_box_gets_no_out_of_map_neighbour():
    import torch

    # centre in the first cell: x, y < 1 -> no left/up neighbour; in the left half -> no right/down neighbour
    t = torch.tensor([[0, 0, 0.3 / 8, 0.3 / 8, 1.25 / 8, 1.625 / 8]])
    p3 = _loss().build_targets(_maps(), t)[0]
    assert set(zip(p3.gy.tolist(), p3.gx.tolist())) == {(0, 0)}


def test_no_targets_only_objectness():
    import torch

    maps = _maps()
    total, (lbox, lobj, lcls) = _loss()(maps, torch.zeros((0, 6)))
    assert float(lbox) == 0 and float(lcls) == 0
    # every objectness target is 0: lobj = sum_l balance_l * mean BCE(x, 0) = mean softplus(x)
    expected = sum(b * float(torch.nn.functional.softplus(m[..., 4].detach()).mean())
                   for b, m in zip((4.0, 1.0, 0.4), maps))
    assert float(lobj) == pytest.approx(expected, rel=1e-6)
    assert float(total.detach()) == pytest.approx(expected * 2, rel=1e-6)
    total.backward()
    assert all(float(m.grad[..., :4].abs().sum()) == 0 for m in maps)


def test_single_class_has_no_class_loss():
    import torch

    total, (lbox, lobj, lcls) = _loss(nc=1)(_maps(nc=1), torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2]]))
    assert float(lcls) == 0 and float(lbox) > 0 and float(lobj) > 0


def test_perfect_prediction_has_near_zero_box_loss():
    import torch

    # one target exactly the size of anchor 0 of P3 in cell (4, 4); set the 3 predictions to decode to it
    t = torch.tensor([[0, 0, 4.3 / 8, 4.7 / 8, 1.25 / 8, 1.625 / 8]])
    maps = [m.detach().clone() for m in _maps(batch=1)]
    loss = _loss(anchor_t=1.01)  # only the exact anchor matches
    p3 = loss.build_targets(maps, t)[0]
    assert len(p3) == 3  # own cell + 2 neighbours
    for a, y, x, box in zip(p3.anchor, p3.gy, p3.gx, p3.box):
        sxy = (box[:2] + 0.5) / 2
        maps[0][0, a, y, x, :2] = torch.log(sxy / (1 - sxy))
        maps[0][0, a, y, x, 2:4] = 0.0  # (2*0.5)^2 * anchor = anchor = the target size
    _, (lbox, _, _) = loss(maps, t)
    assert float(lbox) == pytest.approx(0.0, abs=1e-6)


def test_duplicate_cell_last_assignment_wins():
    import torch
    from edge_detect.training.loss import _scatter_last

    dst = torch.zeros(2, 3)
    idx = (torch.tensor([0, 1, 0, 0]), torch.tensor([1, 2, 1, 0]))
    _scatter_last(dst, idx, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_allclose(dst.numpy(), [[0.4, 0.3, 0.0], [0.0, 0.0, 0.2]])


def test_label_smoothing_and_focal_change_only_their_terms():
    import torch

    maps = [m.detach() for m in _maps()]
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.2, 0.7, 0.1, 0.2]])
    base = _loss()(maps, t)[1]
    smooth = _loss(label_smoothing=0.2)(maps, t)[1]
    focal = _loss(fl_gamma=1.5)(maps, t)[1]
    assert float(smooth[0]) == float(base[0]) and float(smooth[1]) == float(base[1])
    assert float(smooth[2]) != pytest.approx(float(base[2]), rel=1e-4)
    assert float(focal[0]) == float(base[0])
    assert float(focal[1]) < float(base[1]) and float(focal[2]) < float(base[2])  # focal down-weights


@pytest.mark.parametrize("kwargs, message", [
    ({"hyp": {"box": 0.05}}, "missing"),
    ({"anchors": [[1.0, 2.0]]}, "expected shape (nl, na, 2)"),
    ({"strides": [8, 16]}, "expected 3 values"),
    ({"num_classes": 0}, "expected >= 1"),
])
def test_constructor_errors(kwargs, message):
    from edge_detect.training.loss import YOLOv5Loss
    from edge_detect.errors import ConfigError

    args = {"anchors": ANCHORS_GRID, "strides": [8, 16, 32], "num_classes": 3, "hyp": DEFAULT_HYP, **kwargs}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        YOLOv5Loss(**args)


@pytest.mark.parametrize("maps_fn, targets, message", [
    (lambda: _maps()[:2], [[0, 0, 0.5, 0.5, 0.1, 0.1]], "expected 3 prediction maps, got 2"),
    (lambda: _maps(nc=4), [[0, 0, 0.5, 0.5, 0.1, 0.1]], "expected maps"),
    (lambda: _maps(), [[0, 0.5, 0.5, 0.1, 0.1]], "expected targets"),
])
def test_call_errors(maps_fn, targets, message):
    import torch
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _loss()(maps_fn(), torch.tensor(targets))
