"""ONNX export: parity with the official outputs on ONNX Runtime, metadata round trip, and the export CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, requires_ort, requires_torch

pytestmark = [requires_torch, requires_ort]

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edge_detect.errors import ConfigError, ModelError  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402

BOX_TOL_PX = 1e-2
PROB_TOL = 1e-3
SHA = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"


def _session(path: Path) -> "ort.InferenceSession":
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _input(reference: Path, image: str, dtype=np.float32) -> np.ndarray:
    bgr = np.load(reference / f"infer_{image}.npz")["letterboxed_bgr"]
    return (np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))[None] / 255.0).astype(dtype)


def _max_err(pred: np.ndarray, raw: np.ndarray) -> "tuple[float, float]":
    pred = pred.astype(np.float32)
    return float(np.abs(pred[..., :4] - raw[..., :4]).max()), float(np.abs(pred[..., 4:] - raw[..., 4:]).max())


@pytest.mark.parametrize("image", ["bus", "zidane"])
@pytest.mark.parametrize("fixture", ["yolov5n_onnx", "yolov5n_onnx_dynamic"])
def test_onnx_parity(request, reference: Path, fixture: str, image: str) -> None:
    sess = _session(request.getfixturevalue(fixture))
    pred = sess.run(None, {"images": _input(reference, image)})[0]
    raw = np.load(reference / f"infer_{image}.npz")["raw"]
    assert pred.shape == raw.shape == (1, 25200, 85)
    box_err, prob_err = _max_err(pred, raw)
    assert box_err <= BOX_TOL_PX and prob_err <= PROB_TOL


def test_static_io(yolov5n_onnx: Path) -> None:
    sess = _session(yolov5n_onnx)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("images", [1, 3, 640, 640], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("output0", [1, 25200, 85], "tensor(float)")


def test_dynamic_shapes(yolov5n_onnx_dynamic: Path, weights_pt: Path) -> None:
    import torch

    from edge_detect.training.checkpoint import load_model

    sess = _session(yolov5n_onnx_dynamic)
    assert sess.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    x = np.random.default_rng(0).random((2, 3, 320, 480), dtype=np.float32)
    pred = sess.run(None, {"images": x})[0]
    assert pred.shape == (2, 3 * (40 * 60 + 20 * 30 + 10 * 15), 85) == (2, 9450, 85)
    model, _ = load_model(weights_pt)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    box_err, prob_err = _max_err(pred, expected)
    assert box_err <= BOX_TOL_PX and prob_err <= PROB_TOL


@pytest.mark.parametrize("fixture, dynamic", [("yolov5n_onnx", False), ("yolov5n_onnx_dynamic", True)])
def test_metadata_round_trip(request, weights_pt: Path, fixture: str, dynamic: bool) -> None:
    path = request.getfixturevalue(fixture)
    onnx.checker.check_model(str(path))
    props = _session(path).get_modelmeta().custom_metadata_map
    meta = ModelMetadata.from_onnx_props(props)
    assert json.loads(props["edge_detect"])["names"][0] == "person"
    assert meta.nc == 80 and meta.names[79] == "toothbrush"
    assert (meta.imgsz, meta.stride, meta.batch, meta.dynamic) == ((640, 640), 32, 1, dynamic)
    assert (meta.output_layout, meta.input_format, meta.precision) == ("raw", "float32_nchw_rgb", "fp32")
    assert meta.source_sha256 == SHA and Path(meta.source_path) == weights_pt.resolve()
    assert set(meta.versions) >= {"torch", "onnx", "onnxslim", "edge_detect", "opset"}
    assert meta.versions["opset"] == "17"
    assert max(op.version for op in onnx.load(str(path)).opset_import if op.domain in ("", "ai.onnx")) == 17


def test_half_export(weights_pt: Path, reference: Path, tmp_path: Path) -> None:
    from edge_detect.training.export import export_onnx

    path = export_onnx(weights_pt, tmp_path / "yolov5n-fp16.onnx", half=True, progress=False)
    onnx.checker.check_model(str(path))
    sess = _session(path)
    assert sess.get_inputs()[0].type == sess.get_outputs()[0].type == "tensor(float16)"
    meta = ModelMetadata.from_onnx_props(sess.get_modelmeta().custom_metadata_map)
    assert meta.precision == "fp16"
    pred = sess.run(None, {"images": _input(reference, "bus", np.float16)})[0]
    box_err, prob_err = _max_err(pred, np.load(reference / "infer_bus.npz")["raw"])
    # fp16 spacing is 0.5 px near 640 px: a few px on boxes, ~1e-2 on probabilities
    assert box_err <= 6.4 and prob_err <= 0.02


def test_batch_and_size(weights_pt: Path, tmp_path: Path) -> None:
    from edge_detect.training.export import export_onnx

    path = export_onnx(weights_pt, tmp_path / "b2.onnx", imgsz=(256, 320), batch=2, simplify=False,
                       progress=False)
    sess = _session(path)
    assert sess.get_inputs()[0].shape == [2, 3, 256, 320]
    assert sess.run(None, {"images": np.zeros((2, 3, 256, 320), np.float32)})[0].shape == (2, 5040, 85)
    meta = ModelMetadata.from_onnx_props(sess.get_modelmeta().custom_metadata_map)
    assert (meta.imgsz, meta.batch) == ((256, 320), 2)


@pytest.mark.parametrize("imgsz, batch, message", [
    (641, 1, "imgsz: expected positive multiples of the model stride 32, got 641x641"),
    ((320, 330), 1, "imgsz: expected positive multiples of the model stride 32, got 320x330"),
    ((0,), 1, "got [0]"),
    ((320, 320, 3), 1, "got [320, 320, 3]"),
    (640, 0, "batch: expected >= 1, got 0"),
    (100000, 1, "expected sides of at most 4096 px (--force-imgsz to go beyond), got 100000x100000"),
    ((640, 4128), 1, "got 640x4128"),
])
def test_bad_arguments(weights_pt: Path, tmp_path: Path, imgsz, batch: int, message: str) -> None:
    from edge_detect.training.export import export_onnx

    with pytest.raises(ConfigError) as exc:
        export_onnx(weights_pt, tmp_path / "x.onnx", imgsz=imgsz, batch=batch, progress=False)
    assert message in str(exc.value)
    assert not (tmp_path / "x.onnx").exists()


def test_missing_weights(tmp_path: Path) -> None:
    from edge_detect.training.export import export_onnx

    with pytest.raises(ModelError, match="checkpoint not found"):
        export_onnx(tmp_path / "none.pt", tmp_path / "x.onnx", progress=False)


# ---------------------------------------------------------------------------------------------------- CLI
def _cli(*argv: str) -> int:
    from edge_detect.cli import main

    return main(["-q", "export", *argv])


def test_cli_export_default_name(weights_pt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert _cli("--weights", str(weights_pt), "--imgsz", "256", "320", "--no-simplify") == 0
    out = tmp_path / "yolov5n.onnx"
    assert capsys.readouterr().out.strip() == str(out)
    meta = ModelMetadata.from_onnx_props(_session(out).get_modelmeta().custom_metadata_map)
    assert meta.imgsz == (256, 320)


@pytest.mark.parametrize("argv, message", [
    (["--int8"], "int8 needs calibration images: expected calib (--calib)"),
    (["--int8", "--calib", "x.yaml", "--half"], "int8 and half cannot be combined"),
    (["--dla", "0"], "dla and timing_cache (--dla, --timing-cache) apply to format engine only"),
    (["--imgsz", "640", "640", "3"], "--imgsz: expected 'S' or 'HxW' (one or two positive integers), got ['640', "
                                     "'640', '3']"),
    (["--imgsz", "640x"], "--imgsz: expected 'S' or 'HxW'"),
    (["--nms", "--nms-conf", "1.5"], "argument --nms-conf: expected a number in [0, 1], got 1.5"),
    (["--imgsz", "100000"], "imgsz: expected sides of at most 4096 px (--force-imgsz to go beyond), got "
                            "100000x100000"),
])
def test_cli_export_errors(weights_pt: Path, tmp_path: Path, capsys, argv, message: str) -> None:
    try:
        rc = _cli("--weights", str(weights_pt), "--output", str(tmp_path / "x.onnx"), *argv)
    except SystemExit as exc:  # argparse type errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err  # one error line, last
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("content", [b"", b"e", b"hello, this is a text file\n", b"PK\x03\x04 not a zip"])
def test_cli_export_non_checkpoint_is_one_line_after_the_bar(tmp_path: Path, capsys, content: bytes,
                                                             monkeypatch) -> None:
    """A text file as --weights: one error line, on its own line after the progress bar, no traceback."""
    from edge_detect import progress
    from edge_detect.cli import main

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)  # a tqdm bar, as on a terminal

    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert main(["export", "--weights", str(bad), "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "export bad.pt" in err  # the progress bar was shown...
    err_lines = [line for line in re.split(r"[\r\n]", err) if "edge-detect: error:" in line]
    assert len(err_lines) == 1 and err_lines[0].startswith("edge-detect: error: "), err  # ...and ended first
    assert "is not a YOLOv5 checkpoint: expected a PyTorch checkpoint (a zip archive or a pickle)" in err_lines[0]
    assert "Traceback" not in err and not (tmp_path / "x.onnx").exists()


def test_cli_engine_without_tensorrt(weights_pt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """--format engine where TensorRT cannot be imported: one line naming the extra, no output file."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    assert _cli("--weights", str(weights_pt), "--format", "engine", "--imgsz", "64", "--no-simplify",
                "--output", str(tmp_path / "x.engine")) == 2
    err = capsys.readouterr().err
    assert "pip install 'edge-detect[tensorrt]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.engine").exists()


def _fake_stages(monkeypatch) -> list:
    """Replace the deploy stages by recorders that write a placeholder file; returns the call list."""
    import edge_detect.deploy.graph as graph
    import edge_detect.deploy.quantize as quantize
    import edge_detect.deploy.tensorrt_build as trt_build

    calls = []

    def stage(name):
        def run(src, dst=None, **kw):
            calls.append((name, Path(src).name, kw))
            out = Path(dst) if dst is not None else Path(src)
            out.write_bytes(b"x")
            return out
        return run

    for module, attr in ((quantize, "quantize_int8"), (graph, "add_uint8_input"), (graph, "add_nms"),
                         (trt_build, "build_engine")):
        monkeypatch.setattr(module, attr, stage(attr))
    return calls


def test_cli_dispatch_order(weights_pt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """--int8 --uint8-input --nms --format engine: each stage gets the previous stage's file."""
    calls = _fake_stages(monkeypatch)
    argv = ["--weights", str(weights_pt), "--imgsz", "64", "--no-simplify", "--int8", "--calib", "c.yaml",
            "--calib-images", "8", "--calib-method", "minmax", "--int8-exclude", "model.24", "--no-sensitivity",
            "--uint8-input", "--nms", "--nms-conf", "0.3", "--max-det", "50", "--format", "engine", "--half",
            "--workspace", "2", "--output", str(tmp_path / "m.engine")]
    assert _cli(*argv) == 0
    assert [c[:2] for c in calls] == [("quantize_int8", "fp32.onnx"), ("add_uint8_input", "int8.onnx"),
                                      ("add_nms", "uint8.onnx"), ("build_engine", "nms.onnx")]
    assert calls[0][2] == {"calib": "c.yaml", "num_images": 8, "method": "minmax", "exclude": ("model.24",),
                           "sensitivity": False, "val_data": "c.yaml", "compare_fp32": True, "progress": False,
                           "report_path": calls[0][2]["report_path"]}
    assert calls[0][2]["report_path"].name == "int8.quant.json"  # in the temporary folder until the end
    assert not calls[0][2]["report_path"].parent.exists()  # removed with it
    assert calls[2][2] == {"conf": 0.3, "iou": 0.45, "max_det": 50, "plugin": "efficient"}
    assert calls[3][2] == {"fp16": True, "int8": True, "workspace_gb": 2.0, "dla": None, "timing_cache": None,
                           "dynamic": None, "progress": False}
    assert capsys.readouterr().out.strip() == str(tmp_path / "m.engine")
    assert not list(tmp_path.glob("*.onnx"))  # intermediates stayed in the temporary folder


def test_failed_stage_leaves_nothing_behind(weights_pt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A stage failing after quantization: no output and no report beside it (both stay in the temp folder)."""
    import edge_detect.deploy.graph as graph
    import edge_detect.deploy.quantize as quantize
    from edge_detect.errors import ModelLoadError

    def fake_quantize(src, dst, report_path=None, **kw):
        Path(dst).write_bytes(b"x")
        Path(report_path).write_text('{"output": "%s"}' % dst)
        return Path(dst)

    def broken_nms(src, dst, **kw):
        raise ModelLoadError(f"{src}: expected one output (B, N, 5+nc), got 2")

    monkeypatch.setattr(quantize, "quantize_int8", fake_quantize)
    monkeypatch.setattr(graph, "add_nms", broken_nms)
    assert _cli("--weights", str(weights_pt), "--imgsz", "64", "--no-simplify", "--int8", "--calib", "c.yaml",
                "--nms", "--output", str(tmp_path / "m.onnx")) == 2
    assert "expected one output (B, N, 5+nc), got 2" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, val_data, compare", [
    (["--calib", "d.yml"], "d.yml", True),
    (["--calib", "frames/"], None, True),
    (["--calib", "d.yaml", "--int8-val", "none"], None, True),
    (["--calib", "frames/", "--int8-val", "v.yaml", "--no-fp32-val"], "v.yaml", False),
])
def test_cli_int8_val_choice(argv, val_data, compare) -> None:
    """Which dataset scores the INT8 model (and whether FP32 is scored beside it), from the flags alone."""
    from edge_detect.cli import build_parser
    from edge_detect.cli.export import options_from_args

    opts = options_from_args(build_parser().parse_args(["export", "--weights", "w.pt", "--int8", *argv]))
    assert (opts.int8_val_data, opts.compare_fp32) == (val_data, compare)


@pytest.mark.parametrize("half, int8, fmt, name", [
    (False, False, "onnx", "yolov5n.onnx"), (True, False, "onnx", "yolov5n-fp16.onnx"),
    (False, True, "onnx", "yolov5n-int8.onnx"), (True, False, "engine", "yolov5n-fp16.engine"),
    (False, False, "engine", "yolov5n.engine"),
])
def test_default_output_names(half: bool, int8: bool, fmt: str, name: str) -> None:
    from edge_detect.exporter import default_output

    assert default_output(Path("/w/yolov5n.pt"), fmt, half, int8).name == name
    dyn = default_output(Path("/w/yolov5n.pt"), fmt, half, int8, dynamic=True).name
    assert dyn == name.replace("yolov5n", "yolov5n-dynamic")  # never the static export's name


def test_readme_export_lines_write_different_files() -> None:
    """The README's static and --dynamic export lines must not write the same file."""
    from edge_detect.cli import build_parser
    from edge_detect.exporter import default_output

    text = (REPO / "README.md").read_text()
    block = text[text.index("### Export: `edge-detect export`"):]
    lines = [line.split("#")[0].split() for line in block.splitlines()
             if line.startswith("edge-detect export") and "--format onnx" in line and "--int8" not in line]
    assert len(lines) == 2, lines
    outs = []
    for argv in lines:
        args = build_parser().parse_args(argv[1:])
        outs.append(Path(args.output) if args.output else
                    default_output(Path(args.weights), args.format, args.half, args.int8, args.dynamic))
    assert outs[0] != outs[1], outs


def test_cli_onnx_with_nms_and_uint8_input_runs_on_onnxruntime(weights_pt: Path, tmp_path: Path, shared) -> None:
    """export --format onnx --nms --uint8-input: the ONNX-op NMS graph runs on ORT and finds what the raw model finds."""
    import cv2

    from edge_detect.detector import Detector

    raw, nms = tmp_path / "raw.onnx", tmp_path / "nms.onnx"
    assert _cli("--weights", str(weights_pt), "--imgsz", "320", "--output", str(raw)) == 0
    assert _cli("--weights", str(weights_pt), "--imgsz", "320", "--nms", "--nms-conf", "0.25", "--uint8-input",
                "--max-det", "100", "--output", str(nms)) == 0
    image = cv2.imread(str(shared / "images" / "bus.jpg"))
    with Detector(raw, conf=0.25, iou=0.45, max_det=100) as a, Detector(nms) as b:
        assert b.metadata.output_layout == "nms" and b.metadata.input_format == "uint8_nhwc_bgr"
        da, db = a(image), b(image)
    assert len(da) == len(db) >= 3
    assert db.class_id.tolist() == da.class_id.tolist()
    np.testing.assert_allclose(db.xyxy, da.xyxy, atol=1.5)
    np.testing.assert_allclose(db.score, da.score, atol=1e-3)


def test_cli_error_while_any_bar_is_open_gets_its_own_line(weights_pt: Path, tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    """Not only export_onnx's bar: an error raised while any stage holds an open bar (a `bar = tqdm(...)` local,
    as in calibration) still gets a line of its own."""
    import edge_detect.training.export as export_mod
    from edge_detect.cli import main
    from tqdm import tqdm

    def failing(*args, **kwargs):
        bar = tqdm(total=4, desc="stage")
        bar.update(2)
        raise ModelError("stage exploded: expected 4 steps, got 2")

    monkeypatch.setattr(export_mod, "export_onnx", failing)
    assert main(["export", "--weights", str(weights_pt), "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if "edge-detect: error:" in line]
    assert "stage:" in err and lines == ["edge-detect: error: stage exploded: expected 4 steps, got 2"], err
