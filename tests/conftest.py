"""Shared fixtures: the data in ``../shared`` (read in place, never copied) and models built once per session.

``EDGE_DETECT_DATA`` points at the shared folder (``.ci/run`` sets it); by default ``../shared`` beside the
repository. Tests that need a piece of it skip with the reason when it is missing; tests that need torch skip
when the ``build`` extra is not installed.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    env = os.environ.get("EDGE_DETECT_DATA")
    return Path(env).resolve() if env else (REPO.parent / "shared").resolve()


SHARED = _shared()


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set EDGE_DETECT_DATA to the shared folder)")
    return path


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def count_frames(path) -> int:
    """Frames a video file decodes to (OpenCV), i.e. what a player would show."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


requires_torch = pytest.mark.skipif(not has_module("torch"), reason="torch not installed (pip install -e '.[build]')")
requires_matplotlib = pytest.mark.skipif(not has_module("matplotlib"),
                                         reason="matplotlib not installed (pip install -e '.[bench]')")
requires_ort = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime not installed (pip install -e '.[onnx]')")


@pytest.fixture(autouse=True)
def _private_user_cache(tmp_path_factory, monkeypatch) -> None:
    """Every test gets an empty user cache (EDGE_DETECT_CACHE): nothing is read from or written to ~/.cache."""
    monkeypatch.setenv("EDGE_DETECT_CACHE", str(tmp_path_factory.mktemp("user_cache")))


@pytest.fixture(scope="session")
def shared() -> Path:
    return need(SHARED)


@pytest.fixture(scope="session")
def weights_pt(shared: Path) -> Path:
    return need(shared / "weights" / "yolov5n.pt")


@pytest.fixture(scope="session")
def coco128(shared: Path) -> Path:
    return need(shared / "datasets" / "coco128")


@pytest.fixture(scope="session")
def coco128_yaml(coco128: Path, tmp_path_factory) -> Path:
    """A dataset yaml pointing at the shared coco128 in place (path made absolute)."""
    import yaml

    src = yaml.safe_load((coco128 / "coco128.yaml").read_text())
    src["path"] = str(coco128)
    out = tmp_path_factory.mktemp("data") / "coco128.yaml"
    out.write_text(yaml.safe_dump(src))
    return out


@pytest.fixture(scope="session")
def video(shared: Path) -> Path:
    return need(shared / "videos" / "vtest.avi")


@pytest.fixture(scope="session")
def reference(shared: Path) -> Path:
    return need(shared / "reference")


@pytest.fixture(scope="session")
def yolov5n_onnx(weights_pt: Path, tmp_path_factory) -> Path:
    """yolov5n exported once per session to a static 1x3x640x640 ONNX (fp32, raw output layout)."""
    if not has_module("torch"):
        pytest.skip("torch not installed: cannot export the ONNX model (pip install -e '.[build]')")
    from edge_detect.training.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "yolov5n.onnx"
    export_onnx(weights_pt, out, imgsz=(640, 640))
    return out


@pytest.fixture(scope="session")
def yolov5n_onnx_dynamic(weights_pt: Path, tmp_path_factory) -> Path:
    """yolov5n exported once per session with dynamic batch/height/width."""
    if not has_module("torch"):
        pytest.skip("torch not installed: cannot export the ONNX model (pip install -e '.[build]')")
    from edge_detect.training.export import export_onnx

    out = tmp_path_factory.mktemp("onnx_dyn") / "yolov5n-dynamic.onnx"
    export_onnx(weights_pt, out, imgsz=(640, 640), dynamic=True)
    return out


@pytest.fixture(scope="session")
def yolov5n_onnx_320(weights_pt: Path, tmp_path_factory) -> Path:
    """yolov5n exported once per session to a static 1x3x320x320 ONNX with the torch-free exporter (no torch
    needed; about 4x less inference than 640: for tests that run the real model on live-paced streams)."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
    from edge_detect.deploy.onnx_yolov5 import export_onnx_torch_free

    out = tmp_path_factory.mktemp("onnx_320") / "yolov5n-320.onnx"
    return export_onnx_torch_free(weights_pt, out, imgsz=320, progress=False)


def make_onnx_model(path: Path, outputs, input_shape=(1, 3, 640, 640), input_dtype="float32",
                    metadata=None, output_names=None) -> Path:
    """Write a tiny ONNX that ignores its image input and returns fixed arrays (one per output).

    Each output is the given array (leading batch axis 1) tiled along the batch axis of the input, so the model
    "replays" e.g. a reference ``raw`` prediction for any batch. ``input_shape`` entries that are strings or
    ``None`` become dynamic axes; ``metadata`` (a dict) is stored as JSON under ``edge_detect``.
    """
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}[input_dtype]
    nodes = [helper.make_node("Shape", ["images"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["batch"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    names = output_names or [f"output{i}" for i in range(len(outputs))]
    graph_outputs = []
    for i, (arr, name) in enumerate(zip(outputs, names)):
        arr = np.asarray(arr)
        inits += [numpy_helper.from_array(arr, f"const{i}"),
                  numpy_helper.from_array(np.ones(arr.ndim - 1, np.int64), f"ones{i}")]
        nodes += [helper.make_node("Concat", ["batch", f"ones{i}"], [f"reps{i}"], axis=0),
                  helper.make_node("Tile", [f"const{i}", f"reps{i}"], [name])]
        dtype = helper.np_dtype_to_tensor_dtype(arr.dtype)
        graph_outputs.append(helper.make_tensor_value_info(name, dtype, ["batch", *arr.shape[1:]]))
    graph = helper.make_graph(nodes, "replay", [helper.make_tensor_value_info("images", elem, list(input_shape))],
                              graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {"edge_detect": json.dumps(metadata)})
    onnx.save(model, str(path))
    return Path(path)


@pytest.fixture(scope="session")
def onnx_builder():
    """:func:`make_onnx_model`, for tests that need a small ONNX with chosen outputs and input shape."""
    return make_onnx_model


@pytest.fixture
def torch_one_thread():
    """One torch intra-op thread for the test: on a shared 2-core machine, 2 spinning threads can slow training 10x."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------- MQTT broker


MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                               if os.path.exists(p)), None)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A real mosquitto broker on 127.0.0.1:``port`` (anonymous; persistence only when asked), restartable."""

    def __init__(self, workdir: Path, port: int = 0, persistence: bool = False) -> None:
        self.workdir, self.port = Path(workdir), port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        import getpass

        # "user": when run as root, mosquitto would switch to user "mosquitto", who cannot write here
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0",
                 f"user {getpass.getuser()}",
                 f"persistence {'true' if persistence else 'false'}"]
        if persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 0"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        import socket
        import subprocess
        import time

        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=(self.workdir / "mosquitto.log").open("ab"))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: "
                                   f"{(self.workdir / 'mosquitto.log').read_text()[-1000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001 - still kill it
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def mosquitto(tmp_path_factory):
    """A fresh mosquitto on a free loopback port (skipped with the reason when the binary is missing)."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (Debian/Ubuntu: apt-get install -y mosquitto; .ci/run does it)")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_bin() -> str:
    """The mosquitto binary (skips with the reason when missing)."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (Debian/Ubuntu: apt-get install -y mosquitto; .ci/run does it)")
    return MOSQUITTO



class _StackT(ctypes.Structure):
    """``stack_t`` of Linux (``sigaltstack``)."""
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def dangling_altstack() -> "str | None":
    """A description of this thread's signal alternate stack when it points at unmapped memory, else None.

    A native library that restores alternate stacks out of order (OpenVINO's CPU plugin did, with one Core per
    model) leaves the thread on memory it has unmapped; the next Python signal handler then kills the process
    with SIGSEGV, tests later. Linux only (None elsewhere)."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    stack = _StackT()
    if libc.sigaltstack(None, ctypes.byref(stack)) != 0 or not stack.ss_sp or stack.ss_flags & 2:  # SS_DISABLE
        return None
    start, end = stack.ss_sp, stack.ss_sp + stack.ss_size
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if lo <= start and end <= hi:
                return None
    return f"sigaltstack {start:#x}+{stack.ss_size} is not mapped"


@pytest.fixture(autouse=True)
def _signal_stack_guard():
    """Fail the test that leaves the main thread on an unmapped signal alternate stack (and disable that stack so
    the rest of the suite can still take signals): the full suite once died of SIGSEGV several tests later."""
    yield
    problem = dangling_altstack()
    if problem:
        off = _StackT(None, 2, 0)  # SS_DISABLE
        ctypes.CDLL(None).sigaltstack(ctypes.byref(off), None)
        pytest.fail(f"this test left the thread on a dangling signal alternate stack ({problem}); a native "
                    f"library restored alternate stacks out of order (see backends/openvino.shared_core)")
