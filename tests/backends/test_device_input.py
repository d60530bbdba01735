"""The torch-free device path of TensorRT and ONNX Runtime, on the CUDA runtime double (deferred streams over host
memory, ``tests/cuda_double.py``) with the letterbox kernel's arithmetic in NumPy as its launch
(``tests/letterbox_double.py``): device batches hold the host letterbox's bytes, streams are ordered (a buffer is
rewritten only after its consumer read it), device frames are read in place, and the TensorRT / ONNX Runtime
device paths give the host path's detections with only the outputs coming back. The kernel itself runs in
``pytest -m gpu`` (tests/backends/test_gpu_letterbox.py and the gpu test at the end)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.backends import _cuda
from edge_detect.backends.base import DeviceBackend
from edge_detect.errors import ConfigError, DataError
from edge_detect.preprocess import preprocess
from letterbox_double import NumpyLetterbox
from trt_doubles import install


@pytest.fixture(scope="module")
def frames(shared: Path) -> list:
    """bus (portrait), zidane (landscape) and one vtest frame (upscaled at 640)."""
    out = [cv2.imread(str(shared / "images" / n)) for n in ("bus.jpg", "zidane.jpg")]
    cap = cv2.VideoCapture(str(shared / "videos" / "vtest.avi"))
    out.append(cap.read()[1])
    cap.release()
    return out


@pytest.fixture
def fakes(monkeypatch):
    fakes = install(monkeypatch)
    from edge_detect.backends import gpu_letterbox

    monkeypatch.setattr(gpu_letterbox, "GpuLetterbox", lambda device=0: NumpyLetterbox(fakes.rt))
    return fakes


def _read(data, stream: _cuda.Stream, inputs) -> np.ndarray:
    """The batch as the consumer sees it: ``stream`` waits for it, copies it device to device and back."""
    with _cuda.DeviceBuffer(data.nbytes) as dst, _cuda.HostBuffer(data.nbytes) as host:
        inputs.consume(data, stream, dst)
        stream.copy_dtoh(host, dst, data.nbytes)
        stream.synchronize()
        return host.array[:data.nbytes].view(data.dtype).reshape(data.shape).copy()


@pytest.mark.parametrize("fmt, dtype", [("float32_nchw_rgb", np.float32), ("uint8_nhwc_bgr", np.uint8)])
def test_device_batches_hold_the_host_letterbox(fakes, frames, fmt, dtype) -> None:
    from edge_detect.backends.device_input import DeviceInput

    inputs = DeviceInput(0, fmt, dtype)
    with _cuda.Stream() as stream:
        for group, hw, auto in ((frames, (640, 640), False), (frames[1:2], (640, 640), True),
                                (frames[:1], (320, 320), False)):
            want, infos = preprocess(group, hw, auto=auto, fmt=fmt)
            batch = inputs.prepare(group, hw, 32, auto)
            assert batch.device == "cuda:0" and batch.infos == infos
            assert fakes.rt.pending(inputs.stream.handle) > 0  # queued, not run: nothing waited on the host
            np.testing.assert_array_equal(_read(batch.data, stream, inputs), want)
    # each frame went up once (H2D of its own size) and the batches were only read on the device
    assert fakes.rt.copies.count("H2D") == 5 and all(c in ("H2D", "D2D", "D2H") for c in fakes.rt.copies)
    inputs.close()
    assert fakes.rt.device == {} and fakes.rt.host == {} and inputs.launcher is None


def test_a_buffer_is_rewritten_only_after_its_consumer_read_it(fakes, frames) -> None:
    """Five batches into a ring of four: the fifth waits on the device for the consumer of the first (run the
    input stream first, as a GPU may, and the consumer still copies the first batch's pixels)."""
    from edge_detect.backends.device_input import DeviceInput

    inputs = DeviceInput(0, "uint8_nhwc_bgr", np.uint8)
    small = [cv2.resize(f, (64, 48)) for f in frames]
    with _cuda.Stream() as stream, _cuda.DeviceBuffer(64 * 64 * 3) as dst, _cuda.HostBuffer(64 * 64 * 3) as host:
        first = inputs.prepare(small[:1], (64, 64), 32, False)
        inputs.consume(first.data, stream, dst)
        others = [inputs.prepare(small[k % 3:k % 3 + 1], (64, 64), 32, False) for k in range(1, 5)]
        assert len({b.data.ptr for b in [first] + others}) == 4 and others[-1].data.ptr == first.data.ptr
        inputs.stream.synchronize()  # the input stream runs ahead...
        stream.copy_dtoh(host, dst, dst.nbytes)
        stream.synchronize()
        want, _ = preprocess(small[:1], (64, 64), fmt="uint8_nhwc_bgr")
        np.testing.assert_array_equal(host.array.reshape(want.shape), want)  # ...but not over the first batch
    inputs.close()


class DeviceFrame:
    """A frame in (double) device memory with padded rows, described by the CUDA array interface (what a GPU
    decoder, CuPy or torch hand over)."""

    def __init__(self, image: np.ndarray, pad: int = 64) -> None:
        h, w, _ = image.shape
        self.pitch = w * 3 + pad
        host = np.zeros((h, self.pitch), np.uint8)
        host[:, :w * 3] = image.reshape(h, w * 3)
        self.buffer = _cuda.DeviceBuffer(host.nbytes)
        self.buffer.upload(host)
        self.__cuda_array_interface__ = {"shape": (h, w, 3), "typestr": "|u1", "data": (self.buffer.ptr, False),
                                         "strides": (self.pitch, 3, 1), "version": 3}


def test_device_frames_are_read_in_place(fakes, frames) -> None:
    from edge_detect.backends.device_input import DeviceInput, device_frame

    inputs = DeviceInput(0, "float32_nchw_rgb", np.float32)
    on_device = DeviceFrame(frames[1])
    assert device_frame(on_device) == (on_device.buffer.ptr, (720, 1280), 1280 * 3 + 64)
    assert device_frame(frames[1]) is None
    uploads = fakes.rt.copies.count("H2D")
    with _cuda.Stream() as stream:
        batch = inputs.prepare([on_device, frames[0]], (640, 640), 32, False)
        assert fakes.rt.copies.count("H2D") == uploads + 1  # only the host frame went up
        want, _ = preprocess([frames[1], frames[0]], (640, 640))
        np.testing.assert_array_equal(_read(batch.data, stream, inputs), want)
    bad = DeviceFrame(frames[0])
    bad.__cuda_array_interface__ = dict(bad.__cuda_array_interface__, typestr="<f4")
    with pytest.raises(DataError, match="expected a BGR uint8 .* got typestr '<f4'"):
        inputs.prepare([bad], (640, 640), 32, False)
    with pytest.raises(ConfigError, match="expected a float32_nchw_rgb float32 or uint8_nhwc_bgr uint8 input, got "
                                          "float32_nchw_rgb float16"):
        DeviceInput(0, "float32_nchw_rgb", np.float16)
    inputs.close()
    on_device.buffer.close()
    bad.buffer.close()


# ------------------------------------------------------------------------------------------------ TensorRT, ORT
def _assert_same(want, got) -> None:
    assert [len(d) for d in got] == [len(d) for d in want] and sum(map(len, want)) > 3
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g.class_id, w.class_id)
        np.testing.assert_array_equal(g.xyxy, w.xyxy)
        np.testing.assert_array_equal(g.score, w.score)


@pytest.fixture(scope="module")
def engines_onnx(yolov5n_onnx: Path, tmp_path_factory) -> dict:
    """yolov5n with a uint8 input and in-graph ONNX NMS (``inms``): what the builder double builds and the engine
    double runs with ONNX Runtime."""
    pytest.importorskip("onnx_graphsurgeon")
    from edge_detect.deploy.graph import add_nms, add_uint8_input

    out = tmp_path_factory.mktemp("trt_dev")
    u8 = add_uint8_input(yolov5n_onnx, out / "u8.onnx")
    return {"raw": yolov5n_onnx, "nms": add_nms(u8, out / "nms.onnx", plugin="inms", conf=0.25, iou=0.45,
                                                 max_det=100)}


@pytest.mark.parametrize("layout", ["raw", "nms"])
def test_tensorrt_device_path_equals_the_host_path(fakes, engines_onnx, frames, tmp_path: Path, layout) -> None:
    """Raw float32 engine (NMS on the host after the raw output came back) and a uint8 engine with in-graph NMS
    (only num_dets / boxes / scores / classes come back): the host path's detections, frames uploaded once."""
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.detector import Detector

    engine = build_engine(engines_onnx[layout], tmp_path / "m.engine", progress=False)
    with Detector(engine) as host:
        want = host(frames)
    with Detector(engine, device_path=True) as det:
        assert isinstance(det.backend, DeviceBackend) and det.device_path and det.input_device == "cuda:0"
        fakes.rt.copies.clear()
        got = det(frames[:1]) + det(frames[1:2]) + det(frames[2:])  # the engine's static batch of 1
    _assert_same(want, got)
    per_frame = ["H2D", "D2D"] + ["D2H"] * (1 if layout == "raw" else 4)
    assert fakes.rt.copies == per_frame * 3
    assert fakes.rt.host == {} and fakes.rt.device == {}  # close() freed the device path's buffers too


def test_tensorrt_device_path_is_opt_in(fakes, tmp_path: Path) -> None:
    from trt_doubles import make_engine

    from edge_detect.detector import Detector

    with Detector(make_engine(tmp_path / "m.engine")) as det:
        assert not det.device_path and det.input_device == "cpu"
        with pytest.raises(ConfigError, match="the device path is off; expected device_path=True"):
            det.backend.preprocess_device([np.zeros((8, 8, 3), np.uint8)], (64, 64), 32, False)


def test_onnxruntime_device_path_equals_the_host_path(fakes, engines_onnx, frames) -> None:
    """The session reads the device batch through IO binding (here the CPU provider reads the double's memory,
    which is host memory; with the CUDA provider it is CUDA memory): the host path's detections."""
    pytest.importorskip("onnxruntime")
    from edge_detect.backends.device_input import DeviceInput
    from edge_detect.detector import Detector

    with Detector(engines_onnx["nms"]) as host:
        want = host(frames)
    with pytest.raises(ConfigError, match=r"device_path: expected the CUDA provider \(device='cuda\[:N\]'\), got "
                                          r"\['CPUExecutionProvider'\]"):
        Detector(engines_onnx["nms"], device_path=True)
    with Detector(engines_onnx["nms"]) as det:
        det.backend._use_device_input(DeviceInput(0, "uint8_nhwc_bgr", np.uint8))
        assert det.device_path and det.input_device == "cuda:0"
        got = [det(f) for f in frames]
    _assert_same(want, got)


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_onnxruntime_cuda_device_path_equals_the_host_path(request, frames) -> None:
    """onnxruntime-gpu: the NVRTC kernel's batch bound to the CUDA provider gives the CPU host path's detections
    (>= 99% matched at IoU 0.95, no extra box)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("cuda.bindings.driver")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (pip install onnxruntime-gpu)")
    from edge_detect.bench.parity import match_detections
    from edge_detect.detector import Detector

    engines_onnx = request.getfixturevalue("engines_onnx")  # exported only when the test can run
    with Detector(engines_onnx["raw"]) as cpu:
        want = cpu(frames)
    with Detector(engines_onnx["raw"], device="cuda:0", device_path=True) as det:
        got = [det(f) for f in frames]
    report = match_detections(want, got, iou=0.95, score_tol=0.01)
    assert report.fraction >= 0.99 and report.extra == 0, report.to_dict()


def _real_cuda() -> None:
    pytest.importorskip("cuda.bindings.driver")
    try:
        _cuda.device_info(0)
    except Exception as exc:  # noqa: BLE001 - no GPU / driver: skip with the reason
        pytest.skip(f"no CUDA device: {exc}")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt, dtype", [("float32_nchw_rgb", np.float32), ("uint8_nhwc_bgr", np.uint8)])
def test_device_input_on_the_gpu_gives_the_host_batch(frames, fmt, dtype) -> None:
    """Real cuda-python and the NVRTC kernel: pinned upload, the kernel into a ring batch, the event between the
    streams, a device-to-device copy: the host preprocess's bytes (a device frame read in place included)."""
    _real_cuda()
    from edge_detect.backends.device_input import DeviceInput

    inputs = DeviceInput(0, fmt, dtype)
    on_device = DeviceFrame(frames[1])
    try:
        with _cuda.Stream() as stream:
            for _ in range(6):  # around the ring of 4 and back
                batch = inputs.prepare([frames[0], on_device, frames[2]], (640, 640), 32, False)
                want, _ = preprocess([frames[0], frames[1], frames[2]], (640, 640), fmt=fmt)
                np.testing.assert_array_equal(_read(batch.data, stream, inputs), want)
    finally:
        on_device.buffer.close()
        inputs.close()


@pytest.mark.gpu
def test_tensorrt_device_path_on_the_gpu_equals_the_host_path(request, frames, tmp_path: Path) -> None:
    """A uint8 engine with EfficientNMS: the device path (kernel, D2D into the bound input, only the boxes back)
    gives the host path's detections of the same engine."""
    from edge_detect.backends.trt_common import tensorrt_available

    if not tensorrt_available():
        pytest.skip("TensorRT not installed (pip install 'edge-detect[tensorrt]')")
    _real_cuda()
    from edge_detect.bench.parity import match_detections
    from edge_detect.deploy.graph import add_nms, add_uint8_input
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.detector import Detector

    yolov5n_onnx = request.getfixturevalue("yolov5n_onnx")  # exported only when the test can run
    src = add_nms(add_uint8_input(yolov5n_onnx, tmp_path / "u8.onnx"), tmp_path / "nms.onnx", plugin="efficient",
                  conf=0.25, iou=0.45, max_det=100)
    engine = build_engine(src, tmp_path / "m.engine", progress=False)
    with Detector(engine) as host:
        want = [host(f) for f in frames]
    with Detector(engine, device_path=True) as det:
        assert det.device_path
        got = [det(f) for f in frames]
    report = match_detections(want, got, iou=0.95, score_tol=0.01)
    assert report.fraction >= 0.99 and report.extra == 0, report.to_dict()
