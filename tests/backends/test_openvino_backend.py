"""OpenVINO backend: parity with the reference, IR metadata, explicit precision, options, async requests."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import has_module

pytestmark = pytest.mark.skipif(not has_module("openvino"), reason="openvino not installed (pip install -e '.[openvino]')")

from edge_detect.backends.base import backend_for_path, load_backend  # noqa: E402
from edge_detect.backends.openvino import shared_core  # noqa: E402
from edge_detect.errors import BackendUnavailableError, ConfigError  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402

NAMES = [f"n{i}" for i in range(80)]


@pytest.fixture(scope="module")
def ref_bus(reference):
    return np.load(reference / "infer_bus.npz")


@pytest.fixture(scope="module")
def replay(onnx_builder, ref_bus, tmp_path_factory):
    meta = ModelMetadata(names=NAMES, imgsz=(640, 640)).to_dict()
    return onnx_builder(tmp_path_factory.mktemp("ov") / "replay.onnx", [ref_bus["raw"]], metadata=meta)


def _hint(backend) -> str:
    compiled = next(iter(backend._by_shape.values())).compiled
    value = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
    return value.to_string() if hasattr(value, "to_string") else str(value)


def test_xml_suffix_picks_openvino():
    assert backend_for_path("model.xml") == "openvino"


def test_replay_metadata_outputs_and_default_precision(replay, ref_bus):
    with load_backend(replay, backend="openvino", threads=1) as b:
        assert b.name == "openvino" and b.device == "CPU"
        assert b.metadata.names == tuple(NAMES) and b.metadata.output_layout == "raw"
        # the PrePostProcessor front: letterboxed BGR uint8 NHWC in, conversion inside the graph
        assert b.input_spec.format == "uint8_nhwc_bgr" and b.metadata.input_format == "uint8_nhwc_bgr"
        assert b.input_spec.shape == (1, 640, 640, 3) and b.input_spec.dtype == np.uint8
        # never OpenVINO's own default: f32 asked explicitly for a float model
        assert b.precision == "fp32" and _hint(b) == "f32"
        out = b.infer(np.zeros((1, 640, 640, 3), np.uint8))
        assert len(out) == 1
        np.testing.assert_array_equal(out[0], ref_bus["raw"])


def test_float_input_kept_when_asked(replay):
    with load_backend(replay, backend="openvino", uint8_input=False) as b:
        assert b.input_spec.format == "float32_nchw_rgb" and b.input_spec.shape == (1, 3, 640, 640)


@pytest.mark.parametrize("options, error, match", [
    ({"precision": "fp64"}, ConfigError, "expected one of"),
    ({"precision": "int8"}, ConfigError, "expected a quantized model"),
    ({"hint": "fast"}, ConfigError, "expected one of"),
    ({"threads": -1}, ConfigError, "expected >= 0"),
    ({"device": "NPU.7"}, BackendUnavailableError, "not available here"),
    ({"nonsense": 1}, ConfigError, "nonsense"),
])
def test_bad_options(replay, options, error, match):
    with pytest.raises(error, match=match):
        load_backend(replay, backend="openvino", **options)


def test_bf16_is_explicit(replay):
    caps = list(shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in caps:
        with load_backend(replay, backend="openvino", precision="bf16") as b:
            assert b.precision == "bf16" and _hint(b) == "bf16"
    else:
        with pytest.raises(BackendUnavailableError, match="expected BF16 in its capabilities"):
            load_backend(replay, backend="openvino", precision="bf16")


def test_async_requests_in_flight(replay, ref_bus):
    with load_backend(replay, backend="openvino", requests=3) as b:
        assert b.num_requests == 3
        frames = [np.full((1, 640, 640, 3), v, np.uint8) for v in (0, 100, 200)]
        handles = [b.infer_async(f) for f in frames]  # three in flight, none waited for yet
        for h in handles:
            with h as outputs:
                np.testing.assert_array_equal(outputs[0], ref_bus["raw"])
        pool = next(iter(b._by_shape.values())).pool
        assert pool.qsize() == 3  # every request back in the pool
        with pytest.raises(RuntimeError, match="after release"):
            handles[0].wait()


def test_shape_mismatch_is_rejected(replay):
    with load_backend(replay, backend="openvino") as b:
        with pytest.raises(ValueError, match=r"expected shape \(1, 640, 640, 3\)"):
            b.infer(np.zeros((1, 320, 320, 3), np.uint8))


# --- the real model (exported with torch) ----------------------------------------------------------------------

@pytest.mark.parametrize("uint8_input", [True, False])
def test_yolov5n_parity_with_reference(yolov5n_onnx, ref_bus, uint8_input):
    from edge_detect.detector import Detector

    with Detector(yolov5n_onnx, backend="openvino", uint8_input=uint8_input) as det:
        batch, _ = det.preprocess([ref_bus["letterboxed_bgr"]])
        raw = det.infer(batch)[0]
        assert raw.shape == (1, 25200, 85)
        # f32 hint: within 0.01 px of the official implementation (a bf16 default moved boxes by ~7 px)
        assert np.abs(raw[..., :4] - ref_bus["raw"][..., :4]).max() < 0.01
        assert np.abs(raw[..., 4:] - ref_bus["raw"][..., 4:]).max() < 1e-3
        rows = det.postprocess([raw], [_identity_info()], conf_thres=0.25, iou_thres=0.45)[0]
    want = ref_bus["nms_display_letterbox"]
    assert len(rows) == len(want)
    np.testing.assert_allclose(rows.xyxy, want[:, :4], atol=0.01)
    np.testing.assert_array_equal(rows.class_id, want[:, 5].astype(np.int32))


def _identity_info():
    from edge_detect.types import LetterboxInfo

    return LetterboxInfo(orig_shape=(640, 640), input_shape=(640, 640), ratio=1.0, pad=(0.0, 0.0))


def test_ir_keeps_metadata_and_dynamic_shapes(yolov5n_onnx_dynamic, tmp_path, ref_bus):
    from edge_detect.deploy.openvino import convert_to_ir
    from edge_detect.detector import Detector

    xml = convert_to_ir(yolov5n_onnx_dynamic, tmp_path / "dyn.xml")
    assert xml.with_suffix(".bin").is_file()
    with load_backend(xml) as b:  # by suffix
        assert b.name == "openvino"
        assert b.metadata.names[0] == "person" and b.metadata.nc == 80 and b.metadata.dynamic
        assert b.metadata.versions["openvino"]
        assert b.input_spec.shape == (-1, -1, -1, 3)
    with Detector(xml, imgsz=(384, 640)) as det:
        img = ref_bus["letterboxed_bgr"][128:512]  # 384x640: no padding needed at this size
        out = det.infer(det.preprocess([img])[0])[0]
        assert out.shape == (1, 15120, 85)
        assert list(det.backend._by_shape) == [(1, 384, 640, 3)]  # compiled once for the stream's shape


def test_fp16_ir_runs_in_f32(yolov5n_onnx, tmp_path, ref_bus):
    from edge_detect.deploy.openvino import convert_to_ir

    xml = convert_to_ir(yolov5n_onnx, tmp_path / "half.xml", half=True)
    assert xml.with_suffix(".bin").stat().st_size < 0.6 * yolov5n_onnx.stat().st_size
    with load_backend(xml) as b:
        assert b.metadata.precision == "fp16" and b.precision == "fp32" and _hint(b) == "f32"
        raw = b.infer(ref_bus["letterboxed_bgr"][None])[0]
    sure = ref_bus["raw"][0, :, 4] > 0.25
    assert np.abs(raw[0, sure, :4] - ref_bus["raw"][0, sure, :4]).max() < 0.5  # fp16 weights only


def test_backends_closed_in_opening_order_leave_signal_handlers_working(replay):
    """OpenVINO's CPU plugin swaps the creating thread's signal alternate stack and puts back the one it found
    when its Core goes. With one Core per backend, closing two backends in the order they were opened left the
    thread on an unmapped alternate stack and the next Python signal handler crashed the process (SIGSEGV, the
    crash that took down the full test suite). One shared Core per process: the handler runs."""
    import subprocess
    import sys
    import textwrap

    from conftest import REPO

    code = textwrap.dedent(f"""
        import gc, os, signal
        from edge_detect.backends.base import load_backend
        first = load_backend({str(replay)!r}, backend="openvino")
        second = load_backend({str(replay)!r}, backend="openvino")
        first.close(); del first; gc.collect()
        second.close(); del second; gc.collect()
        handled = []
        signal.signal(signal.SIGUSR1, lambda *_: handled.append(1))
        os.kill(os.getpid(), signal.SIGUSR1)
        print("handled", len(handled))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert (proc.returncode, proc.stdout.split()) == (0, ["handled", "1"]), proc.stderr[-2000:]
