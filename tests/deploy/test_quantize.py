"""INT8 Q/DQ quantization: streaming statistics vs NumPy, bounded memory, graph helpers, sensitivity, acceptance."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_detect.deploy.quantize import (StreamingHistogram, calibration_tensors, collect_statistics,  # noqa: E402
                                        compute_ranges, find_detect_head, group_blocks, output_error,
                                        quantize_int8, resolve_exclude, select_float_blocks)
from edge_detect.errors import ConfigError, ModelError  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402


# ------------------------------------------------------------------------------------------ streaming histogram
def _feed(h: StreamingHistogram, x: np.ndarray, chunks: int) -> None:
    for part in np.array_split(x, chunks):
        h.update(part)


@pytest.mark.parametrize("q", [50.0, 99.0, 99.9, 99.99, 99.999])
def test_percentile_within_one_bin_of_numpy(q):
    rng = np.random.default_rng(0)
    # the scale grows batch after batch, so the range doubles several times while streaming
    x = np.concatenate([rng.standard_normal(200_000) * s for s in (0.05, 0.5, 1.0, 3.0, 20.0)]).astype(np.float32)
    h = StreamingHistogram(2048)
    _feed(h, x, 10)
    assert h.count == x.size and h.counts.sum() == x.size
    assert h.min == float(x.min()) and h.max == float(x.max())
    expected = float(np.percentile(np.abs(x), q))
    assert abs(h.percentile(q) - expected) <= h.width + 1e-6
    assert h.upper > float(np.abs(x).max()) >= h.upper / 2 - h.width  # grown by doubling, still >= half used


def test_range_growth_merges_bins_exactly():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(300_000) * np.repeat([0.1, 1.0, 8.0], 100_000)).astype(np.float32)
    h = StreamingHistogram(512)
    _feed(h, x, 3)
    direct, _ = np.histogram(np.abs(x), bins=512, range=(0.0, h.upper))
    # merging bin pairs is exact up to float rounding of values sitting on a bin edge
    assert np.abs(h.counts - direct).sum() <= 10
    assert h.counts.sum() == direct.sum() == x.size


def test_minmax_zero_and_nonfinite():
    h = StreamingHistogram(128)
    h.update(np.zeros((4, 4), np.float32))
    assert h.percentile(99.0) == 0.0 and h.absmax == 0.0
    h.update(np.array([np.nan, np.inf, -3.0, 1.0], np.float32))  # non-finite values are ignored
    assert (h.min, h.max, h.count) == (-3.0, 1.0, 18)
    assert compute_ranges({"z": StreamingHistogram(128)}, "minmax")["z"] == (-1e-8, 1e-8)


def test_entropy_clips_outliers_but_keeps_the_bulk():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(500_000), [60.0, -55.0]]).astype(np.float32)
    h = StreamingHistogram(2048)
    h.update(x)
    t = h.entropy_threshold()
    assert h.percentile(99.0) < t < 0.5 * h.absmax
    u = StreamingHistogram(2048)
    u.update(rng.uniform(-1, 1, 200_000).astype(np.float32))  # nothing to clip on a uniform distribution
    assert u.entropy_threshold() >= 0.9 * u.absmax


def test_compute_ranges_methods_are_symmetric_and_ordered():
    rng = np.random.default_rng(3)
    h = StreamingHistogram(2048)
    h.update(np.concatenate([rng.standard_normal(100_000), [40.0]]).astype(np.float32))
    r = {m: compute_ranges({"t": h}, m, percentile=99.9)["t"] for m in ("minmax", "percentile", "entropy")}
    assert all(lo == -hi for lo, hi in r.values())
    assert r["minmax"][1] == 40.0
    assert r["percentile"][1] == pytest.approx(np.percentile(np.abs(rng.standard_normal(1_000_000)), 99.9),
                                               abs=0.1)
    assert r["entropy"][1] < r["minmax"][1]


@pytest.mark.parametrize("call,match", [
    (lambda: StreamingHistogram(100), "even number >= 128, got 100"),
    (lambda: StreamingHistogram(129), "even number >= 128, got 129"),
    (lambda: StreamingHistogram(128).percentile(101), r"\[0, 100\], got 101"),
    (lambda: compute_ranges({}, "kl"), "expected one of .*'kl'"),
])
def test_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# ------------------------------------------------------------------------------------------ synthetic graph
def _tiny_model(path: Path, hw: int = 128, named: bool = True) -> Path:
    """input -> [Conv+SiLU] x2 -> head Conv -> Sigmoid -> Reshape to (1, N, 6): a YOLO-shaped toy."""
    rng = np.random.default_rng(0)
    nm = (lambda s: s) if named else (lambda s: "")
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w0"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w1"),
             numpy_helper.from_array(rng.standard_normal((6, 8, 1, 1)).astype(np.float32) * 0.3, "wh"),
             numpy_helper.from_array(np.array([1, -1, 6], np.int64), "shape")]
    nodes = [
        helper.make_node("Conv", ["images", "w0"], ["c0"], name=nm("/model.0/conv/Conv"), pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c0"], ["s0"], name=nm("/model.0/act/Sigmoid")),
        helper.make_node("Mul", ["c0", "s0"], ["a0"], name=nm("/model.0/act/Mul")),
        helper.make_node("Conv", ["a0", "w1"], ["c1"], name=nm("/model.1/conv/Conv"), pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name=nm("/model.1/act/Sigmoid")),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], name=nm("/model.1/act/Mul")),
        helper.make_node("Conv", ["a1", "wh"], ["h"], name=nm("/model.2/m.0/Conv")),
        helper.make_node("Sigmoid", ["h"], ["hs"], name=nm("/model.2/Sigmoid")),
        helper.make_node("Transpose", ["hs"], ["ht"], name=nm("/model.2/Transpose"), perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["ht", "shape"], ["output0"], name=nm("/model.2/Reshape")),
    ]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, hw * hw, 6])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_detect_head_blocks_and_exclude(tmp_path):
    model = onnx.load(str(_tiny_model(tmp_path / "toy.onnx")))
    head, decode = find_detect_head(model)
    assert head == ["/model.2/m.0/Conv"]
    assert decode == ["/model.2/Sigmoid", "/model.2/Transpose", "/model.2/Reshape"]
    blocks = group_blocks(model, skip=head + decode)
    assert {k: len(v) for k, v in blocks.items()} == {"model.0": 3, "model.1": 3}
    assert resolve_exclude(model, ["1"], blocks) == ["/model.1/conv/Conv", "/model.1/act/Sigmoid",
                                                      "/model.1/act/Mul"]
    assert resolve_exclude(model, ["/model.0/act"], blocks) == ["/model.0/act/Sigmoid", "/model.0/act/Mul"]
    with pytest.raises(ConfigError, match="matched nothing.*did you mean 'model.1'"):
        resolve_exclude(model, ["model.11"], blocks)
    assert calibration_tensors(model, skip_nodes=decode) == ["images", "c0", "s0", "a0", "c1", "s1", "a1", "h"]
    assert calibration_tensors(model, inputs_of=("Conv",)) == ["images", "a0", "a1"]


def test_blocks_without_layer_names_fall_back_to_convs(tmp_path):
    model = onnx.load(str(_tiny_model(tmp_path / "toy.onnx", named=False)))
    for i, n in enumerate(model.graph.node):  # unique but index-free names
        n.name = f"{n.op_type}_{i}"
    blocks = group_blocks(model)
    assert list(blocks) == ["Conv_0", "Conv_3", "Conv_6"]
    assert blocks["Conv_0"] == ["Conv_0", "Sigmoid_1", "Mul_2"]


def test_statistics_match_numpy_and_memory_is_bounded(tmp_path):
    psutil = pytest.importorskip("psutil")
    path = _tiny_model(tmp_path / "toy.onnx", hw=256)
    model = onnx.load(str(path))
    tensors = calibration_tensors(model, skip_nodes=find_detect_head(model)[1])
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 3, 256, 256), dtype=np.float32) for _ in range(3)]
    stats = collect_statistics(path, batches, tensors, threads=1)
    import onnxruntime as ort

    exposed = onnx.load(str(path))
    exposed.graph.output.append(helper.make_empty_tensor_value_info("a1"))
    sess = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    a1 = np.concatenate([sess.run(["a1"], {"images": b})[0].ravel() for b in batches])
    assert stats["images"].min == float(min(b.min() for b in batches))
    assert stats["images"].count == 3 * 3 * 256 * 256
    assert stats["a1"].count == a1.size and stats["a1"].max == pytest.approx(float(a1.max()), rel=1e-6)
    assert abs(stats["a1"].percentile(99.9) - np.percentile(np.abs(a1), 99.9)) <= stats["a1"].width + 1e-6
    del sess
    proc = psutil.Process()

    def stream(n):
        for i in range(n):
            yield np.random.default_rng(i).random((1, 3, 256, 256), dtype=np.float32)
            if i == 10:
                stream.rss_10 = proc.memory_info().rss

    stats = collect_statistics(path, stream(80), tensors, threads=1)
    growth_mb = (proc.memory_info().rss - stream.rss_10) / 2**20
    per_batch_mb = sum(8 * 256 * 256 * 4 for _ in range(6)) / 2**20  # the observed activations of one batch
    assert stats["images"].count == 80 * 3 * 256 * 256
    # keeping activations (what ONNX Runtime's histogram calibrators do) would add ~70 x 12 MB here
    assert growth_mb < 3 * per_batch_mb, f"RSS grew by {growth_mb:.1f} MB over 70 batches"


# ------------------------------------------------------------------------------------------ sensitivity metric
def _pred(n: int = 50, nc: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.zeros((1, n, 5 + nc), np.float32)
    p[0, :, :2] = rng.uniform(50, 500, (n, 2))
    p[0, :, 2:4] = rng.uniform(10, 80, (n, 2))
    p[0, :, 4] = rng.uniform(0, 1, n)
    p[0, :, 5:] = rng.uniform(0, 1, (n, nc))
    return p


def test_output_error_figures():
    ref = _pred()
    assert output_error([ref], [ref.copy()]) == 0.0
    scaled = ref.copy()
    scaled[..., 4] *= 0.9  # every score drops by 10 %
    w = (ref[0, :, 4:5] * ref[0, :, 5:]).max(1)
    w = w[w > 0.001]
    assert output_error([ref], [scaled]) == pytest.approx(float((w * 0.1 * w).sum() / w.sum()), rel=1e-4)
    shifted = ref.copy()
    shifted[..., 0] += shifted[..., 2]  # shift by one box width: IoU 0 for every box, scores unchanged
    assert output_error([ref], [shifted]) == pytest.approx(1.0)
    empty = ref.copy()
    empty[..., 4] = 0.0  # no FP32 detection above the confidence floor: nothing to compare
    assert output_error([empty], [ref]) == 0.0


@pytest.mark.parametrize("costs,baseline,max_blocks,min_share,expected", [
    ({"a": 0.02, "b": 0.001, "c": 0.01}, 0.1, 4, 0.05, ["a", "c"]),  # b is under 5 %
    ({"a": 0.02, "b": 0.03, "c": 0.01}, 0.1, 2, 0.05, ["b", "a"]),   # capped at 2, costliest first
    ({"a": -0.01, "b": 0.001}, 0.1, 4, 0.05, []),                   # nothing worth keeping
    ({"a": 0.5}, 0.0, 4, 0.05, []),                                 # a perfect baseline keeps nothing
    ({"a": 0.022, "b": 0.019}, 0.1, 3, 0.25, []),                   # default rule: none dominates
    ({"a": 0.022, "b": 0.019}, 0.1, 3, 0.2, ["a"]),
])
def test_select_float_blocks(costs, baseline, max_blocks, min_share, expected):
    chosen = select_float_blocks(costs, baseline, max_blocks=max_blocks, min_share=min_share)
    assert [b for b, _ in chosen] == expected
    assert all("% of the baseline" in why for _, why in chosen)


# ------------------------------------------------------------------------------------------ end to end
def test_quantize_toy_model_end_to_end(tmp_path, coco128):
    path = _tiny_model(tmp_path / "toy.onnx")
    meta = ModelMetadata(names=("a",), imgsz=(128, 128))
    model = onnx.load(str(path))
    model.metadata_props.add(key="edge_detect", value=meta.to_json())
    onnx.save(model, str(path))
    val = sorted((coco128 / "images" / "val2017").iterdir())[:3]
    (tmp_path / "val.txt").write_text("\n".join(map(str, val)))
    names = ", ".join(f"c{i}" for i in range(80))  # the labels use COCO's 80 class ids
    (tmp_path / "tiny.yaml").write_text(f"path: {tmp_path}\nval: val.txt\nnames: [{names}]\n")
    out = quantize_int8(path, tmp_path / "toy-int8.onnx", coco128 / "images" / "val2017", num_images=6,
                        sensitivity_images=2, threads=1, progress=False, exclude=["model.0"],
                        max_float_blocks=0, val_data=tmp_path / "tiny.yaml")
    q = onnx.load(str(out))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") >= 1 and ops.count("DequantizeLinear") >= 2
    producers = {o: n for n in q.graph.node for o in n.output}
    convs = {n.name: n for n in q.graph.node if n.op_type == "Conv"}
    dq = lambda t: t in producers and producers[t].op_type == "DequantizeLinear"  # noqa: E731
    assert dq(convs["/model.1/conv/Conv"].input[0]) and dq(convs["/model.1/conv/Conv"].input[1])
    assert not dq(convs["/model.0/conv/Conv"].input[1])      # forced to float
    assert not dq(convs["/model.2/m.0/Conv"].input[1])       # Detect head stays float
    got = ModelMetadata.from_onnx_props({p.key: p.value for p in q.metadata_props})
    assert got.precision == "int8" and got.names == ("a",)
    assert got.quantization["method"] == "percentile" and got.quantization["calibration_images"] == 6
    assert "/model.0/conv/Conv" in got.quantization["excluded_nodes"]
    assert 0.0 <= got.quantization["map50_95"] <= got.quantization["map50"] <= 1.0  # measured on val_data
    assert got.quantization["map_data"] == str(tmp_path / "tiny.yaml")
    report = json.loads((tmp_path / "toy-int8.quant.json").read_text())
    assert report["sensitivity"]["holdout_images"] == 2
    assert [r["block"] for r in report["sensitivity"]["blocks"]] == ["model.1"]
    assert report["speed_ms_per_image"]["fp32"] > 0 and report["speed_ms_per_image"]["int8_qdq"] > 0


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"method": "kl"}, ConfigError, "expected one of"),
    ({"scheme": "everything"}, ConfigError, "scheme: expected one of"),
    ({"exclude": ["model.7"]}, ConfigError, "matched nothing"),
])
def test_quantize_int8_argument_errors(tmp_path, coco128, kwargs, exc, match):
    path = _tiny_model(tmp_path / "toy.onnx")
    with pytest.raises(exc, match=match):
        quantize_int8(path, tmp_path / "o.onnx", coco128 / "images" / "val2017", num_images=2, progress=False,
                      sensitivity=False, **kwargs)


def test_quantize_int8_rejects_nms_layout_and_missing_file(tmp_path, coco128):
    path = _tiny_model(tmp_path / "toy.onnx")
    model = onnx.load(str(path))
    model.metadata_props.add(key="edge_detect", value=ModelMetadata(names=("a",), output_layout="nms").to_json())
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="expected an fp32 model with raw output"):
        quantize_int8(path, tmp_path / "o.onnx", coco128, progress=False)
    with pytest.raises(ModelError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "o.onnx", coco128, progress=False)


# ------------------------------------------------------------------------------------------ acceptance
@pytest.fixture(scope="module")
def yolov5n_int8(yolov5n_onnx, coco128_yaml, tmp_path_factory):
    """yolov5n quantized once with the defaults (calibration on coco128 train2017, sensitivity analysis)."""
    return quantize_int8(yolov5n_onnx, tmp_path_factory.mktemp("int8") / "yolov5n-int8.onnx", coco128_yaml,
                         threads=2, progress=False)


@pytest.fixture(scope="module")
def int8_map_ort(yolov5n_int8, coco128_yaml):
    """mAP of the INT8 model with ONNX Runtime on coco128 val2017."""
    from edge_detect.backends.base import load_backend
    from edge_detect.evaluate import evaluate

    with load_backend(yolov5n_int8, threads=2) as backend:
        assert backend.metadata.precision == "int8"
        return evaluate(backend, coco128_yaml, progress=False)


@pytest.fixture(scope="module")
def fp32_map_ort(yolov5n_onnx, coco128_yaml):
    """mAP of the FP32 model with ONNX Runtime on coco128 val2017."""
    from edge_detect.backends.base import load_backend
    from edge_detect.evaluate import evaluate

    with load_backend(yolov5n_onnx, threads=2) as backend:
        return evaluate(backend, coco128_yaml, progress=False)


@pytest.mark.timeout(900)
def test_acceptance_yolov5n_int8_within_half_a_point(yolov5n_int8, fp32_map_ort, int8_map_ort):
    """Issue #5: Q/DQ INT8 yolov5n calibrated on coco128 train2017 keeps mAP50-95 on val2017 within 0.005.

    Defaults throughout (500 requested -> the 120 train images left after 8 are held out for the sensitivity
    analysis, percentile 99.999, Conv-input Q/DQ); ~1 min calibration + analysis and ~1 min of evaluation on 2
    threads. Measured here: FP32 0.334, INT8 0.341.
    """
    out, fp32, int8 = yolov5n_int8, fp32_map_ort, int8_map_ort
    assert fp32["map50_95"] == pytest.approx(0.334, abs=0.002)
    assert int8["map50_95"] >= fp32["map50_95"] - 0.005, (fp32, int8)
    assert int8["map50"] >= fp32["map50"] - 0.01

    q = onnx.load(str(out))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("DequantizeLinear") >= 100  # inputs and weights of the 57 backbone/neck convs
    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in q.metadata_props})
    qz = meta.quantization
    assert (qz["method"], qz["percentile"], qz["calibration_images"], qz["scheme"]) == ("percentile", 99.999, 120,
                                                                                         "conv")
    assert {"/model.24/m.0/Conv", "/model.24/m.1/Conv", "/model.24/m.2/Conv"} <= set(qz["excluded_nodes"])
    report = json.loads(out.with_name("yolov5n-int8.quant.json").read_text())
    sens = report["sensitivity"]
    assert sens["holdout_images"] == 8 and len(sens["blocks"]) == 18  # blocks holding a Conv, head excluded
    assert [k["block"] for k in sens["kept_float"]] == report["float_blocks"] == qz["float_blocks"]
    assert sens["final_error"] <= sens["baseline_error"] + 1e-6
    assert report["rss_mb"]["after_calibration"] - report["rss_mb"]["before_calibration"] < 1024


@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="openvino not installed (pip install -e '.[openvino]')")
def test_qdq_int8_val_on_openvino_keeps_the_accuracy(yolov5n_int8, fp32_map_ort, int8_map_ort, coco128_yaml, capsys):
    """Issue 26 item 0: ``edge-detect val --model q.onnx --backend openvino`` scored mAP50-95 0.022 (ONNX Runtime
    0.341). Read through edge_detect.backends.openvino_qdq it keeps the FP32 accuracy like ONNX Runtime does
    (measured here: OpenVINO 0.336 with AVX-512 VNNI, 0.337 with oneDNN limited to AVX2; ONNX Runtime 0.341, FP32
    0.334). The two round values within ~1e-6 of a step boundary differently (0.0250001 at scale 0.05: ONNX
    Runtime 1, OpenVINO 0); over 50 quantizers that moves a 128-image mAP as much as changing every activation
    scale by 1e-6 does with ONNX Runtime alone (0.341 -> 0.336 / 0.339; detections agree 84 % OpenVINO vs ONNX
    Runtime, 85 % perturbed vs not): hence 1 point against ONNX Runtime, plus the INT8 criterion of issue 5 (within
    half a point of FP32). Full val2017 (128 images, ~15 s)."""
    from edge_detect import cli

    rc = cli.main(["val", "--model", str(yolov5n_int8), "--backend", "openvino", "--data", str(coco128_yaml),
                   "--threads", "2", "--no-progress"])
    assert rc == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[0] == "mAP50-95"
    got = float(first[1])
    assert abs(got - int8_map_ort["map50_95"]) <= 0.01, (first, int8_map_ort)
    assert got >= fp32_map_ort["map50_95"] - 0.005, (first, fp32_map_ort)
