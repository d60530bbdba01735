"""ONNX graph surgery: in-graph NMS (EfficientNMS_TRT / standard ONNX op) and the uint8 NHWC BGR input.

The NMS tests feed the official YOLOv5 raw outputs (shared/reference) through an identity "model", so the
in-graph NMS is compared with the official implementation's detections without exporting anything; the
uint8-input tests use a tiny conv model (fast) and the real yolov5n export (fixture ``yolov5n_onnx``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

requires_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                  reason="onnxruntime not installed (pip install -e '.[onnx]')")

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx_graphsurgeon")
from onnx import TensorProto, helper  # noqa: E402

from edge_detect.deploy.graph import MAX_WH, NMS_TOP_K, add_nms, add_uint8_input  # noqa: E402
from edge_detect.errors import ConfigError, ModelLoadError  # noqa: E402
from edge_detect.metadata import METADATA_KEY, ModelMetadata  # noqa: E402

NAMES = tuple(f"c{i}" for i in range(80))
SETTINGS = {"display": dict(conf=0.25, iou=0.45, max_det=1000), "val": dict(conf=0.001, iou=0.6, max_det=300)}


def _save(model, path: Path, meta: ModelMetadata | None) -> Path:
    if meta is not None:
        model.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def identity_raw_model(path: Path, n: int = 25200, nc: int = 80, meta: ModelMetadata | None = None,
                       layout: str = "raw") -> Path:
    """A "model" whose input is the raw prediction (B, n, 5+nc) and whose output0 is that input."""
    g = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])], "identity",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", n, 5 + nc])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", n, 5 + nc])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    names = tuple(f"c{i}" for i in range(nc))
    return _save(model, path, meta or ModelMetadata(names=names, output_layout=layout))


def tiny_conv_model(path: Path, fp16: bool = False) -> Path:
    """(1, 3, 8, 8) float input -> 1x1 conv with channel-specific weights -> (1, 2, 8, 8)."""
    rng = np.random.default_rng(0)
    dt, tp = (np.float16, TensorProto.FLOAT16) if fp16 else (np.float32, TensorProto.FLOAT)
    w = onnx.numpy_helper.from_array(rng.normal(size=(2, 3, 1, 1)).astype(dt), "w")
    g = helper.make_graph([helper.make_node("Conv", ["images", "w"], ["out"])], "tiny",
                          [helper.make_tensor_value_info("images", tp, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("out", tp, [1, 2, 8, 8])], initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return _save(model, path, ModelMetadata(names=("a", "b"), imgsz=(8, 8)))


def ort_run(path: Path, feed: np.ndarray) -> list:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: feed})


def rows_of(outputs: list, b: int) -> np.ndarray:
    n = int(outputs[0][b, 0])
    return np.concatenate([outputs[1][b, :n], outputs[2][b, :n, None],
                           outputs[3][b, :n, None].astype(np.float32)], axis=1)


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory) -> Path:
    return identity_raw_model(tmp_path_factory.mktemp("graph") / "raw.onnx")


@pytest.fixture(scope="module")
def refs(reference: Path) -> dict:
    return {name: dict(np.load(reference / f"infer_{name}.npz")) for name in ("bus", "zidane")}


# --------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("plugin", ["efficient", "onnx", "inms"])
def test_nms_graph_passes_checker_and_shape_inference(raw_model: Path, tmp_path: Path, plugin: str) -> None:
    out = add_nms(raw_model, tmp_path / "nms.onnx", conf=0.3, iou=0.5, max_det=50, plugin=plugin)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    outs = {o.name: o.type.tensor_type for o in inferred.graph.output}
    assert list(outs) == ["num_dets", "boxes", "scores", "classes"]
    dims = {k: [d.dim_param or d.dim_value for d in t.shape.dim] for k, t in outs.items()}
    assert dims == {"num_dets": ["batch", 1], "boxes": ["batch", 50, 4], "scores": ["batch", 50],
                    "classes": ["batch", 50]}
    assert [outs[k].elem_type for k in outs] == [TensorProto.INT32, TensorProto.FLOAT, TensorProto.FLOAT,
                                                 TensorProto.INT32]
    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in model.metadata_props})
    assert meta.output_layout == "nms" and meta.names == NAMES
    top_k = {} if plugin == "efficient" else {"top_k": NMS_TOP_K}
    assert dict(meta.nms) == {"conf": 0.3, "iou": 0.5, "max_det": 50, "agnostic": False, "multi_label": False,
                              "plugin": plugin, **top_k}
    ops = [n.op_type for n in model.graph.node]
    if plugin == "efficient":
        node = next(n for n in model.graph.node if n.op_type == "EfficientNMS_TRT")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "TRT" and "NonMaxSuppression" not in ops
        assert attrs["background_class"] == -1 and attrs["box_coding"] == 0 and attrs["score_activation"] == 0
        assert attrs["max_output_boxes"] == 50 and attrs["class_agnostic"] == 0
        assert attrs["plugin_version"] == b"1"
        assert attrs["score_threshold"] == pytest.approx(0.3) and attrs["iou_threshold"] == pytest.approx(0.5)
    else:
        assert ops.count("NonMaxSuppression") == 1 and "EfficientNMS_TRT" not in ops


# --------------------------------------------------------------------------------------------- parity
@requires_ort
@pytest.mark.parametrize("setting", ["display", "val"])
def test_onnx_nms_matches_official_yolov5(raw_model: Path, refs: dict, tmp_path: Path, setting: str) -> None:
    """bus + zidane as one batch of 2: in-graph NMS == official YOLOv5 NMS (conf/IoU/max_det of the ref)."""
    out = add_nms(raw_model, tmp_path / "nms.onnx", plugin="onnx", **SETTINGS[setting])
    batch = np.concatenate([refs["bus"]["raw"], refs["zidane"]["raw"]])
    outputs = ort_run(out, batch)
    assert [o.dtype for o in outputs] == [np.int32, np.float32, np.float32, np.int32]
    for b, name in enumerate(("bus", "zidane")):
        ref = refs[name][f"nms_{setting}_letterbox"]
        got = rows_of(outputs, b)
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        np.testing.assert_allclose(got[:, :5], ref[:, :5], atol=1e-3)
        np.testing.assert_array_equal(got[:, 5], ref[:, 5])
        n = int(outputs[0][b, 0])
        assert not outputs[1][b, n:].any() and not outputs[2][b, n:].any()  # padding is zero
    if setting == "display":  # figures of the official reference
        assert outputs[0][:, 0].tolist() == [4, 3]


@requires_ort
@pytest.mark.parametrize("agnostic", [False, True])
def test_onnx_nms_matches_numpy_nms(raw_model: Path, refs: dict, tmp_path: Path, agnostic: bool) -> None:
    postprocess = pytest.importorskip("edge_detect.postprocess")
    out = add_nms(raw_model, tmp_path / "nms.onnx", conf=0.1, iou=0.45, max_det=100, agnostic=agnostic,
                  plugin="inms")
    batch = np.concatenate([refs["bus"]["raw"], refs["zidane"]["raw"]])
    outputs = ort_run(out, batch)
    expected = postprocess.non_max_suppression(batch, 0.1, 0.45, agnostic=agnostic, max_det=100)
    for b in range(2):
        got = rows_of(outputs, b)
        assert got.shape == expected[b].shape
        np.testing.assert_allclose(got[:, :5], expected[b][:, :5], atol=1e-3)
        np.testing.assert_array_equal(got[:, 5], expected[b][:, 5])


@requires_ort
def test_onnx_nms_max_det_and_empty(raw_model: Path, refs: dict, tmp_path: Path) -> None:
    out = add_nms(raw_model, tmp_path / "nms.onnx", conf=0.001, iou=0.6, max_det=5, plugin="onnx")
    empty = np.zeros_like(refs["bus"]["raw"])  # no candidate above conf
    outputs = ort_run(out, np.concatenate([refs["bus"]["raw"], empty]))
    assert outputs[0][:, 0].tolist() == [5, 0]
    np.testing.assert_allclose(rows_of(outputs, 0), refs["bus"]["nms_val_letterbox"][:5], atol=1e-3)
    assert outputs[1].shape == (2, 5, 4) and not outputs[1][1].any()


@requires_ort
@pytest.mark.parametrize("multi_label", [False, True])
def test_efficient_nms_inputs_have_yolov5_semantics(raw_model: Path, refs: dict, tmp_path: Path,
                                                    multi_label: bool) -> None:
    """Cut the graph before EfficientNMS_TRT (ORT cannot run it) and check the boxes/scores it receives."""
    import onnx_graphsurgeon as gs

    out = add_nms(raw_model, tmp_path / "nms.onnx", plugin="efficient", multi_label=multi_label)
    graph = gs.import_onnx(onnx.load(str(out)))
    node = next(n for n in graph.nodes if n.op == "EfficientNMS_TRT")
    boxes, scores = node.inputs
    boxes.dtype = scores.dtype = np.float32
    graph.outputs = [boxes, scores]
    node.outputs.clear()
    graph.cleanup()
    cut = tmp_path / "cut.onnx"
    onnx.save(gs.export_onnx(graph), str(cut))
    raw = refs["bus"]["raw"]
    got_boxes, got_scores = ort_run(cut, raw)
    xywh = raw[0, :, :4]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    np.testing.assert_allclose(got_boxes[0], xyxy, atol=1e-4)
    full = raw[0, :, 4:5] * raw[0, :, 5:]
    if not multi_label:
        full = np.where(full == full.max(1, keepdims=True), full, 0)
        assert ((got_scores[0] > 0).sum(1) <= 1).mean() > 0.99  # one class per box (ties aside)
    np.testing.assert_allclose(got_scores[0], full, rtol=1e-6, atol=1e-7)


def _many_candidates(n: int = 8000) -> np.ndarray:
    """(1, n, 7) raw output, 2 classes: n disjoint 10x10 boxes on a grid, all class 0, scores 0.9 - i * 1e-4."""
    i = np.arange(n)
    raw = np.zeros((1, n, 7), np.float32)
    raw[0, :, 0], raw[0, :, 1] = (i % 100) * 20 + 10, (i // 100) * 20 + 10
    raw[0, :, 2:4], raw[0, :, 4] = 10, 1.0
    raw[0, :, 5] = 0.9 - i * 1e-4
    return raw


def _candidates_reaching_nms(model: Path, feed: np.ndarray, conf: float) -> int:
    """How many boxes the NonMaxSuppression node receives with a score above ``conf`` (graph cut there)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(onnx.load(str(model)))
    node = next(n for n in graph.nodes if n.op == "NonMaxSuppression")
    scores = node.inputs[1]
    scores.dtype = np.float32
    graph.outputs = [scores]
    graph.cleanup()
    cut = model.with_name("cut.onnx")
    onnx.save(gs.export_onnx(graph), str(cut))
    (got,) = ort_run(cut, feed)
    return int((got > conf).sum())


@requires_ort
def test_candidates_past_tensorrts_nms_limit_are_cut_in_graph(tmp_path: Path) -> None:
    """Finding 4: TensorRT's NMS layer considers only the 5000 best candidates per image and silently drops the
    rest; at conf 0.001 more can pass. The graph keeps the NMS_TOP_K (3840) best first, so ONNX Runtime and the
    engine see the same candidates (before: all 8000 reached NMS and ONNX Runtime returned max_det=5000)."""
    model = identity_raw_model(tmp_path / "raw.onnx", n=8000, nc=2)
    out = add_nms(model, tmp_path / "nms.onnx", plugin="inms", conf=0.001, iou=0.6, max_det=5000)
    raw = _many_candidates()
    assert _candidates_reaching_nms(out, raw, 0.001) == NMS_TOP_K <= 5000
    num, boxes, scores, classes = ort_run(out, raw)
    assert int(num[0, 0]) == NMS_TOP_K  # disjoint boxes: NMS keeps every candidate it is given
    np.testing.assert_allclose(scores[0, :NMS_TOP_K], raw[0, :NMS_TOP_K, 5], rtol=1e-6)  # the best ones, in order
    assert not scores[0, NMS_TOP_K:].any() and not classes[0].any()
    full = add_nms(model, tmp_path / "all.onnx", plugin="onnx", conf=0.001, iou=0.6, max_det=8000, top_k=None)
    assert int(ort_run(full, raw)[0][0, 0]) == 8000  # top_k=None: every candidate (ONNX Runtime only)


def test_class_offset_is_yolov5s() -> None:
    assert MAX_WH == 7680.0


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(plugin="batched"), ConfigError, "expected one of ('efficient', 'onnx', 'inms'), got 'batched'"),
    (dict(conf=1.5), ConfigError, "conf: expected a value in [0, 1], got 1.5"),
    (dict(iou=-0.1), ConfigError, "iou: expected a value in [0, 1], got -0.1"),
    (dict(max_det=0), ConfigError, "max_det: expected >= 1, got 0"),
    (dict(plugin="onnx", multi_label=True), ConfigError, "only the 'efficient' plugin"),
])
def test_add_nms_rejects_bad_settings(raw_model: Path, tmp_path: Path, kwargs, error, message) -> None:
    with pytest.raises(error) as info:
        add_nms(raw_model, tmp_path / "x.onnx", **kwargs)
    assert message in str(info.value)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "ONNX model not found"),
    ("nms_layout", "expected output_layout 'raw', got 'nms'"),
    ("names_mismatch", "metadata names 3 classes but the output has 80"),
    ("not_raw", "expected one output (B, N, 5+nc)"),
])
def test_add_nms_rejects_bad_models(tmp_path: Path, case: str, message: str) -> None:
    src = tmp_path / "in.onnx"
    if case == "nms_layout":
        identity_raw_model(src, layout="nms")
    elif case == "names_mismatch":
        identity_raw_model(src, meta=ModelMetadata(names=("a", "b", "c")))
    elif case == "not_raw":
        tiny_conv_model(src)
    with pytest.raises(ModelLoadError) as info:
        add_nms(src, tmp_path / "out.onnx")
    assert message in str(info.value)


def test_add_uint8_input_rejects_bad_models(tmp_path: Path, raw_model: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"expected a float \(B, 3, H, W\) input, got images float32"):
        add_uint8_input(raw_model, tmp_path / "x.onnx")
    once = add_uint8_input(tiny_conv_model(tmp_path / "t.onnx"), tmp_path / "u8.onnx")
    with pytest.raises(ModelLoadError, match="expected a float .* got images uint8"):
        add_uint8_input(once, tmp_path / "twice.onnx")


# --------------------------------------------------------------------------------------------- uint8 input
@requires_ort
@pytest.mark.parametrize("fp16", [False, True])
def test_uint8_input_equals_float_input_tiny(tmp_path: Path, fp16: bool) -> None:
    src = tiny_conv_model(tmp_path / "tiny.onnx", fp16=fp16)
    out = add_uint8_input(src, tmp_path / "tiny_u8.onnx")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    (inp,) = model.graph.input
    assert inp.name == "images" and inp.type.tensor_type.elem_type == TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 8, 8, 3]
    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in model.metadata_props})
    assert meta.input_format == "uint8_nhwc_bgr" and meta.names == ("a", "b") and meta.imgsz == (8, 8)
    bgr = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    dt = np.float16 if fp16 else np.float32
    as_float = (bgr[..., ::-1].transpose(0, 3, 1, 2) / 255.0).astype(dt)
    (want,) = ort_run(src, np.ascontiguousarray(as_float))
    (got,) = ort_run(out, bgr)
    assert got.dtype == dt and got.shape == (1, 2, 8, 8)
    np.testing.assert_allclose(got, want, atol=1e-3 if fp16 else 1e-6)
    # the conv weights differ per channel, so a wrong channel order would show
    (swapped,) = ort_run(src, np.ascontiguousarray(as_float[:, ::-1]))
    assert np.abs(swapped - want).max() > 0.01


@requires_ort
def test_uint8_yolov5n_same_detections(yolov5n_onnx: Path, refs: dict, tmp_path: Path) -> None:
    """Real yolov5n: uint8 graph == float graph on bus.jpg (raw outputs and detections); then NMS on top."""
    from edge_detect.postprocess import non_max_suppression

    u8 = add_uint8_input(yolov5n_onnx, tmp_path / "u8.onnx")
    model = onnx.load(str(u8))
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    bgr = refs["bus"]["letterboxed_bgr"]
    as_float = np.ascontiguousarray(bgr[None, ..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    (want,) = ort_run(yolov5n_onnx, as_float)
    (got,) = ort_run(u8, bgr[None])
    np.testing.assert_allclose(got, want, atol=1e-3)
    d_want = non_max_suppression(want)[0]
    d_got = non_max_suppression(got)[0]
    assert d_got.shape == d_want.shape == refs["bus"]["nms_display_letterbox"].shape
    np.testing.assert_allclose(d_got, d_want, atol=1e-3)
    both = add_nms(u8, tmp_path / "u8_nms.onnx", plugin="onnx", conf=0.25, iou=0.45, max_det=1000)
    outputs = ort_run(both, bgr[None])
    np.testing.assert_allclose(rows_of(outputs, 0), d_want, atol=1e-3)
    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in onnx.load(str(both)).metadata_props})
    assert (meta.input_format, meta.output_layout) == ("uint8_nhwc_bgr", "nms")


@requires_ort
def test_uint8_yolov5n_through_detector(yolov5n_onnx: Path, shared: Path, tmp_path: Path) -> None:
    """The Detector reads input_format from the metadata and feeds uint8 NHWC BGR: same detections."""
    cv2 = pytest.importorskip("cv2")
    try:
        from edge_detect.detector import Detector
    except ImportError as exc:  # engineer B's module not there yet
        pytest.skip(f"edge_detect.detector not importable: {exc}")
    u8 = add_uint8_input(yolov5n_onnx, tmp_path / "u8.onnx")
    image = cv2.imread(str(shared / "images" / "zidane.jpg"))
    with Detector(yolov5n_onnx) as float_det, Detector(u8) as u8_det:
        assert u8_det.metadata.input_format == "uint8_nhwc_bgr"
        want, got = float_det(image), u8_det(image)
    assert len(got) == len(want) == 3
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=0.05)
    np.testing.assert_allclose(got.score, want.score, atol=1e-4)
    np.testing.assert_array_equal(got.class_id, want.class_id)


def test_efficient_nms_refuses_conf_zero(raw_model: Path, tmp_path: Path) -> None:
    """EfficientNMS_TRT keeps score >= threshold: conf=0 would keep every zeroed class score."""
    with pytest.raises(ConfigError, match=r"nms conf: expected > 0 with the 'efficient' plugin .* got conf=0.0"):
        add_nms(raw_model, tmp_path / "x.onnx", plugin="efficient", conf=0.0)
    add_nms(raw_model, tmp_path / "y.onnx", plugin="onnx", conf=0.0)  # ONNX NMS keeps score > conf: fine


# onnx-tensorrt 8.6 GA operator support matrix (docs/operators.md): the types these ops accept
ONNX_TRT86_TYPES = {"CumSum": {TensorProto.FLOAT, TensorProto.FLOAT16},
                    "ReduceSum": {TensorProto.FLOAT, TensorProto.FLOAT16},
                    "ConstantOfShape": {TensorProto.FLOAT}}


def test_onnx_nms_uses_types_onnx_tensorrt_86_supports(raw_model: Path, tmp_path: Path) -> None:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(add_nms(raw_model, tmp_path / "n.onnx", plugin="onnx"))))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    seen = {}
    for node in model.graph.node:
        if node.op_type in ONNX_TRT86_TYPES:
            dtype = types[node.output[0]] if node.op_type == "ConstantOfShape" else types[node.input[0]]
            seen.setdefault(node.op_type, set()).add(dtype)
    assert set(seen) == set(ONNX_TRT86_TYPES)
    assert all(seen[op] <= ONNX_TRT86_TYPES[op] for op in seen), seen


def test_default_nms_plugin_is_the_standard_op(raw_model: Path, tmp_path: Path) -> None:
    """Finding 6: EfficientNMS_TRT is deprecated from TensorRT 10.12 (no replacement planned): add_nms defaults to
    the standard NonMaxSuppression (INMSLayer in TensorRT >= 8.5, ONNX Runtime on CPU), with the pre-NMS top-K."""
    model = onnx.load(str(add_nms(raw_model, tmp_path / "n.onnx")))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("NonMaxSuppression") == 1 and "EfficientNMS_TRT" not in ops and "TopK" in ops
    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in model.metadata_props})
    assert meta.nms["plugin"] == "inms" and meta.nms["top_k"] == NMS_TOP_K
