"""Triton model repository: config.pbtxt written from and parsed with Triton's own protobuf (tritonclient's
``model_config_pb2``), the repository's ONNX equal to the exported one, uint8 NHWC inputs, and the export options
and flags of ``--format triton``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed "
                                                                   "(pip install -e '.[triton]')")
from google.protobuf import text_format  # noqa: E402

from edge_detect.deploy.triton_repo import (metadata_from_config, parse_config, read_config,  # noqa: E402
                                            write_repository)
from edge_detect.errors import ConfigError, ModelError, ModelLoadError  # noqa: E402
from edge_detect.metadata import read_onnx_metadata  # noqa: E402


def _parse(path: Path):
    """config.pbtxt parsed by protobuf's text format into Triton's ModelConfig (no edge-detect code involved)."""
    return text_format.Parse(path.read_text(encoding="utf-8"), pb.ModelConfig())


def test_onnx_repository_config_parses_and_model_equals_source(yolov5n_onnx_dynamic: Path, tmp_path: Path) -> None:
    model_dir = write_repository([yolov5n_onnx_dynamic], tmp_path / "repo", name="yolov5n", max_batch_size=8,
                                 queue_delay_us=1500, instances=2, device="cpu")
    assert model_dir == tmp_path / "repo" / "yolov5n"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == \
        ["1", "1/model.onnx", "config.pbtxt"]
    cfg = _parse(model_dir / "config.pbtxt")
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("yolov5n", "onnxruntime_onnx", 8)
    (inp,) = cfg.input
    assert (inp.name, pb.DataType.Name(inp.data_type), list(inp.dims)) == ("images", "TYPE_FP32", [3, 640, 640])
    assert pb.ModelInput.Format.Name(inp.format) == "FORMAT_NCHW"
    (out,) = cfg.output
    assert (out.name, pb.DataType.Name(out.data_type), list(out.dims)) == ("output0", "TYPE_FP32", [-1, 85])
    assert cfg.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 1500
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    (group,) = cfg.instance_group
    assert (group.count, pb.ModelInstanceGroup.Kind.Name(group.kind)) == (2, "KIND_CPU")

    # the repository's model is the exported one, byte for byte, and our metadata travels in the config
    source, served = onnx.load(str(yolov5n_onnx_dynamic)), onnx.load(str(model_dir / "1" / "model.onnx"))
    assert served.SerializeToString() == source.SerializeToString()
    meta = metadata_from_config(cfg)
    assert meta == read_onnx_metadata(source).replace(batch=8)
    assert json.loads(cfg.parameters["edge_detect"].string_value)["names"][:2] == ["person", "bicycle"]
    assert read_config(model_dir / "config.pbtxt") == cfg  # the module's reader agrees with protobuf's


def test_uint8_repository_declares_nhwc_uint8(yolov5n_onnx_dynamic: Path, tmp_path: Path) -> None:
    from edge_detect.deploy.graph import add_uint8_input

    u8 = add_uint8_input(yolov5n_onnx_dynamic, tmp_path / "u8.onnx")
    model_dir = write_repository([u8], tmp_path / "repo", name="yolov5n-u8")
    (inp,) = _parse(model_dir / "config.pbtxt").input
    assert (pb.DataType.Name(inp.data_type), pb.ModelInput.Format.Name(inp.format), list(inp.dims)) == \
        ("TYPE_UINT8", "FORMAT_NHWC", [640, 640, 3])


def test_openvino_and_engine_repositories_name_their_backend(yolov5n_onnx_dynamic: Path, tmp_path: Path) -> None:
    """IR -> model.xml + model.bin with backend "openvino"; an engine -> model.plan with platform "tensorrt_plan"
    (the plan's bytes are opaque here: its inputs and outputs come from the ONNX it was built from)."""
    pytest.importorskip("openvino")
    from edge_detect.deploy.openvino import convert_to_ir

    xml = convert_to_ir(yolov5n_onnx_dynamic, tmp_path / "m.xml")
    ov_dir = write_repository([xml, xml.with_suffix(".bin")], tmp_path / "repo", io_onnx=yolov5n_onnx_dynamic,
                              name="yolov5n-ov", kind="openvino")
    assert (ov_dir / "1" / "model.bin").read_bytes() == xml.with_suffix(".bin").read_bytes()
    assert (ov_dir / "1" / "model.xml").read_bytes() == xml.read_bytes()
    ov = _parse(ov_dir / "config.pbtxt")
    assert (ov.backend, ov.platform, [i.name for i in ov.input]) == ("openvino", "", ["images"])
    plan = tmp_path / "m.engine"
    plan.write_bytes(b"opaque engine bytes")
    trt_dir = write_repository([plan], tmp_path / "repo", io_onnx=yolov5n_onnx_dynamic, name="yolov5n-trt",
                               kind="engine", device="gpu")
    trt = _parse(trt_dir / "config.pbtxt")
    assert (trt.platform, pb.ModelInstanceGroup.Kind.Name(trt.instance_group[0].kind)) == ("tensorrt_plan", "KIND_GPU")
    assert (trt_dir / "1" / "model.plan").read_bytes() == b"opaque engine bytes"
    with pytest.raises(ModelError, match=r"kind openvino: expected 2 model file\(s\) \['model.xml', 'model.bin'\]"):
        write_repository([xml], tmp_path / "repo", io_onnx=yolov5n_onnx_dynamic, kind="openvino")


def test_static_batch_model_is_refused(yolov5n_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"expected a dynamic batch axis on every tensor .*got a static one on "
                                             r"\['images', 'output0'\]"):
        write_repository([yolov5n_onnx], tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="tflite"), "triton repository kind: expected one of ['engine', 'onnx', 'openvino'], got 'tflite'"),
    (dict(name="a/b"), "triton repository name: expected a folder name, got 'a/b'"),
    (dict(max_batch_size=0), "triton repository max_batch_size: expected >= 1, got 0"),
    (dict(device="tpu"), "triton repository device: expected one of ['auto', 'cpu', 'gpu'], got 'tpu'"),
])
def test_bad_repository_options(yolov5n_onnx_dynamic: Path, tmp_path: Path, kwargs, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        write_repository([yolov5n_onnx_dynamic], tmp_path / "repo", **kwargs)
    assert message in str(exc.value)


def test_invalid_config_text_is_an_error() -> None:
    with pytest.raises(ModelError, match=r"config.pbtxt: not a valid Triton model configuration .*max_batch_sise"):
        parse_config('name: "m"\nmax_batch_sise: 8\n')


def test_export_options_and_flags_for_triton() -> None:
    import argparse

    from edge_detect.cli import export as cli_export
    from edge_detect.exporter import ExportOptions, default_output

    parser = argparse.ArgumentParser()
    cli_export.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", "--weights", "yolov5n", "--format", "triton", "--triton-model", "openvino",
                              "--triton-name", "det", "--triton-max-batch", "16", "--triton-queue-delay-us", "500",
                              "--triton-instances", "2", "--triton-device", "cpu"])
    opts = cli_export.options_from_args(args)
    assert (opts.format, opts.model_format, opts.dynamic, opts.triton_name, opts.triton_max_batch,
            opts.triton_queue_delay_us, opts.triton_instances, opts.triton_device) == \
        ("triton", "openvino", True, "det", 16, 500, 2, "cpu")
    assert default_output("yolov5n.pt", "triton").name == "model_repository"
    with pytest.raises(ConfigError, match="triton_model: expected one of \\('onnx', 'engine', 'openvino'\\), "
                                          "got 'plan'"):
        ExportOptions(format="triton", triton_model="plan")
    with pytest.raises(ConfigError, match="triton_name: expected a model name without '/', got 'a/b'"):
        ExportOptions(format="triton", triton_name="a/b")


def test_export_to_a_file_path_is_refused(weights_pt: Path, tmp_path: Path) -> None:
    from edge_detect import export

    target = tmp_path / "repo.txt"
    target.write_text("x")
    with pytest.raises(ConfigError, match="expected a model repository folder for format triton, got the file"):
        export(weights_pt, target, format="triton")
    assert [p.name for p in tmp_path.iterdir()] == ["repo.txt"]
