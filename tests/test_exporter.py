"""edge_detect.export(): option validation at the API boundary, the stage order, and a real INT8 export whose
report points at files that exist (FP32 and INT8 mAP side by side)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import has_module, requires_ort, requires_torch
from edge_detect.errors import ConfigError


@pytest.mark.parametrize("fields, message", [
    (dict(format="tflite"), "format: expected one of ('onnx', 'engine', 'openvino', 'triton'), got 'tflite'"),
    (dict(format="openvino", int8=True, calib="d.yaml", nms=True), "format openvino with int8: expected no half/nms"),
    (dict(nncf_preset="fast"), "nncf_preset: expected one of ('mixed', 'performance'), got 'fast'"),
    (dict(nncf_ranges="p99"), "nncf_ranges: expected one of ('minmax', 'default'), got 'p99'"),
    (dict(format="openvino", timing_cache="t.cache"), "apply to format engine only"),
    (dict(imgsz=100000), "imgsz: expected sides of at most 4096 px (--force-imgsz to go beyond), got 100000x100000"),
    (dict(imgsz=(640, 640, 3)), "imgsz: expected 'S' or 'HxW' (one or two positive integers), got [640, 640, 3]"),
    (dict(imgsz="0"), "imgsz: expected 'S' or 'HxW'"),
    (dict(batch=0), "batch: expected >= 1, got 0"),
    (dict(calib_method="mse"), "calib_method: expected one of ('percentile', 'minmax', 'entropy'), got 'mse'"),
    (dict(nms_plugin="fast"), "nms_plugin: expected one of ('efficient', 'inms', 'onnx'), got 'fast'"),
    (dict(nms_conf=1.5), "nms_conf: expected a value in [0, 1], got 1.5"),
    (dict(nms_iou=-0.1), "nms_iou: expected a value in [0, 1], got -0.1"),
    (dict(max_det=0), "max_det: expected >= 1, got 0"),
    (dict(workspace_gb=0), "workspace_gb: expected > 0, got 0"),
    (dict(int8=True), "int8 needs calibration images"),
    (dict(int8=True, calib="d.yaml", half=True), "int8 and half cannot be combined for ONNX output"),
    (dict(dla=0), "dla and timing_cache (--dla, --timing-cache) apply to format engine only"),
])
def test_options_rejected(fields, message: str) -> None:
    from edge_detect.exporter import ExportOptions

    with pytest.raises(ConfigError) as exc:
        ExportOptions(**fields)
    assert message in str(exc.value)


def test_options_normalized_and_unknown_name() -> None:
    from edge_detect import ExportOptions

    opts = ExportOptions(imgsz="384x640", int8_exclude=["model.9", 24])
    assert opts.imgsz == (384, 640) and opts.int8_exclude == ("model.9", "24")
    assert ExportOptions(imgsz=320).imgsz == (320, 320)
    assert ExportOptions(int8=True, calib="x/d.YML").int8_val_data == "x/d.YML"  # "auto": a yaml calib
    assert ExportOptions(int8=True, calib="frames/").int8_val_data is None
    with pytest.raises(ConfigError, match=r"export option 'imgz' \(did you mean 'imgsz'\?\)"):
        opts.replace(imgz=320)


def test_unknown_field_fails_before_any_work(tmp_path: Path) -> None:
    from edge_detect import export

    with pytest.raises(ConfigError, match="did you mean 'half'"):
        export(tmp_path / "missing.pt", tmp_path / "x.onnx", hafl=True)
    assert not list(tmp_path.iterdir())


def test_openvino_output_must_be_xml(weights_pt: Path, tmp_path: Path) -> None:
    from edge_detect import export
    from edge_detect.exporter import default_output

    with pytest.raises(ConfigError, match=r"output: expected a .xml path for format openvino, got .*m\.onnx"):
        export(weights_pt, tmp_path / "m.onnx", format="openvino")
    assert not list(tmp_path.iterdir())
    assert default_output(weights_pt, "openvino", int8=True).name == "yolov5n-int8.xml"


@requires_torch
@requires_ort
def test_export_by_manifest_name(weights_pt: Path, tmp_path: Path, monkeypatch) -> None:
    """The API resolves a manifest name ($EDGE_DETECT_WEIGHTS) and writes exactly the file asked for."""
    from edge_detect import ModelMetadata, export
    from edge_detect.metadata import read_onnx_metadata

    import onnx

    monkeypatch.setenv("EDGE_DETECT_WEIGHTS", str(weights_pt.parent))
    out = export("yolov5n", tmp_path / "sub" / "a.onnx", imgsz=(64, 96), simplify=False, progress=False)
    assert out == tmp_path / "sub" / "a.onnx" and sorted(p.name for p in out.parent.iterdir()) == ["a.onnx"]
    meta = read_onnx_metadata(onnx.load(str(out)))
    assert isinstance(meta, ModelMetadata) and meta.imgsz == (64, 96) and meta.precision == "fp32"


@pytest.fixture(scope="module")
def tiny_yaml(coco128: Path, tmp_path_factory) -> Path:
    """coco128 with a val split of its first 8 val2017 images (a list file), read in place."""
    import yaml

    root = tmp_path_factory.mktemp("tiny")
    images = sorted((coco128 / "images" / "val2017").glob("*.jpg"))[:8]
    (root / "val.txt").write_text("\n".join(str(p) for p in images) + "\n")
    src = yaml.safe_load((coco128 / "coco128.yaml").read_text())
    out = root / "tiny.yaml"
    out.write_text(yaml.safe_dump({"path": str(coco128), "train": "images/train2017", "val": str(root / "val.txt"),
                                   "names": src["names"]}))
    return out


@requires_torch
@requires_ort
@pytest.mark.skipif(not has_module("onnx"), reason="onnx not installed")
def test_int8_report_points_at_existing_files_and_compares_fp32(weights_pt: Path, tiny_yaml: Path,
                                                                tmp_path: Path, capsys) -> None:
    """export --int8 (CLI over the API): the report names the final model, no temporary file, and holds FP32
    and INT8 mAP on the same val split; the CLI prints them side by side."""
    from edge_detect.cli import main

    out = tmp_path / "m-int8.onnx"
    assert main(["-q", "export", "--weights", str(weights_pt), "--imgsz", "160", "--int8", "--calib",
                 str(tiny_yaml), "--calib-images", "8", "--no-sensitivity", "--output", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-int8.onnx", "m-int8.quant.json"]
    report = json.loads((tmp_path / "m-int8.quant.json").read_text())
    assert report["output"] == str(out.resolve()) and report["fp32_model"] is None
    assert report["weights"] == str(weights_pt.resolve())
    assert "edge-detect-export-" not in json.dumps(report)  # nothing points into the deleted temp folder
    fp32, int8 = report["map_fp32"], report["map"]
    assert 0.0 < int8["map50_95"] <= 1.0 and 0.0 < fp32["map50_95"] <= 1.0
    assert abs(int8["map50_95"] - fp32["map50_95"]) < 0.15  # INT8 keeps most of the accuracy
    lines = cap.err.strip().splitlines()
    assert lines[-3] == f"FP32 mAP50-95 {fp32['map50_95']:.3f} mAP50 {fp32['map50']:.3f}"
    assert lines[-2] == f"INT8 mAP50-95 {int8['map50_95']:.3f} mAP50 {int8['map50']:.3f}"
    assert lines[-1] == (f"INT8 - FP32 mAP50-95 {int8['map50_95'] - fp32['map50_95']:+.3f} "
                         f"(val split of {tiny_yaml})")
    assert report["map_data"] == str(tiny_yaml)
