"""Where ``device``, ``half`` and ``tf32`` go: one planner from the user's words to each backend's options.

``device`` means two things, by backend:

* torch (``.pt``), ONNX Runtime (``.onnx``), TensorRT (``.engine``): ``cpu`` or ``cuda[:N]`` (N = GPU index);
  TensorRT takes the index only and runs on CUDA alone;
* OpenVINO (``.xml``): an OpenVINO device name (``CPU``, ``GPU``, ``NPU``, ``AUTO``...), passed as it is.

``half`` (FP16 compute) is a torch-on-CUDA option: ONNX and TensorRT models get their precision when they are
exported / built, OpenVINO models through ``precision``. ``tf32`` lets FP32 use TensorFloat-32 on CUDA (torch, ONNX
Runtime's CUDA provider); it is off unless asked for, so CUDA FP32 finds the CPU's detections.

``device_path`` chooses the device-resident path (frames uploaded once; letterbox, inference and NMS on the GPU,
only boxes back; :class:`edge_detect.backends.base.DeviceBackend`): ``None`` keeps each backend's default (on for a
``.pt`` on CUDA, off for ``.onnx`` / ``.engine``), ``True`` / ``False`` force it (torch, ONNX Runtime on CUDA,
TensorRT).

Used by the CLI (``--device``, ``--half``, ``--tf32``, ``--device-path``) and meant for the app config
(``device:`` ...); pure: it imports no backend and checks no hardware (a backend says "CUDA is not available"
itself, in one line).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from edge_detect.errors import ConfigError

__all__ = ["parse_device", "device_options", "CUDA_BACKENDS"]

#: backends whose ``device`` is ``cpu`` / ``cuda[:N]``
CUDA_BACKENDS = ("torch", "onnxruntime", "tensorrt")

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def parse_device(text: Optional[str]) -> Optional[Tuple[str, int]]:
    """``"cpu"`` -> ``("cpu", 0)``; ``"cuda"`` -> ``("cuda", 0)``; ``"cuda:1"`` -> ``("cuda", 1)``; anything else
    (``None``, ``"GPU"``, ``"cpu:1"``) -> ``None``. Case-insensitive."""
    if text is None:
        return None
    m = _DEVICE.fullmatch(str(text).strip().lower())
    if not m or (m.group(1) == "cpu" and m.group(2) is not None):
        return None
    return m.group(1), int(m.group(2) or 0)


def _flags(half: bool, tf32: bool) -> str:
    return " ".join(f for f, on in (("--half", half), ("--tf32", tf32)) if on)


def device_options(backend: str, device: Optional[str] = None, half: bool = False,
                   tf32: bool = False, device_path: Optional[bool] = None) -> Dict[str, Any]:
    """The backend keyword options for ``device`` / ``half`` / ``tf32`` (only those given).

    Args:
        backend: backend name (``torch``, ``onnxruntime``, ``tensorrt``, ``openvino``, or another registered one).
        device: ``cpu`` / ``cuda[:N]`` for torch, ONNX Runtime and TensorRT; an OpenVINO device name for
            OpenVINO; ``None`` = the backend's default.
        half: FP16 compute (torch on CUDA only).
        tf32: TF32 for FP32 on CUDA (torch, ONNX Runtime).
        device_path: the device-resident path on (``True``) or off (``False``); ``None``: the backend's default.

    Returns:
        e.g. ``{"device": "cuda:0", "half": True}`` (torch), ``{"device": 1}`` (TensorRT: the GPU index),
        ``{"device": "GPU"}`` (OpenVINO), ``{}`` when nothing was given.

    Raises:
        ConfigError: one line, expected vs got: a device the backend cannot take, ``half`` / ``tf32`` without a
            CUDA device or for a backend that has no such switch, ``half`` with ``tf32``, ``device_path`` for a
            backend without one or (ONNX Runtime) without a CUDA device.
    """
    opts = _device_options(backend, device, half, tf32)
    if device_path is None:
        return opts
    parsed = parse_device(device)
    if backend not in CUDA_BACKENDS:
        raise ConfigError(f"--{'' if device_path else 'no-'}device-path: expected a torch, onnxruntime or tensorrt "
                          f"model, got the {backend} backend")
    if device_path and backend == "onnxruntime" and (parsed is None or parsed[0] != "cuda"):
        raise ConfigError(f"--device-path: expected --device cuda[:N] for an ONNX model (ONNX Runtime's CUDA "
                          f"provider), got {device or 'the default device (cpu)'}")
    return {**opts, "device_path": bool(device_path)}


def _device_options(backend: str, device: Optional[str], half: bool, tf32: bool) -> Dict[str, Any]:
    opts: Dict[str, Any] = {}
    parsed = parse_device(device)
    if backend == "openvino":
        if half or tf32:
            raise ConfigError(f"{_flags(half, tf32)}: expected a .pt model on a CUDA device, got an OpenVINO model "
                              f"(its precision is --precision fp16|bf16|int8|fp32)")
        return {} if device is None else {"device": str(device)}
    if backend not in CUDA_BACKENDS:
        if device is not None or half or tf32:
            raise ConfigError(f"{_flags(half, tf32) or '--device'}: expected a torch, onnxruntime, tensorrt or "
                              f"openvino model, got the {backend} backend (it runs where its server is)")
        return opts
    if device is not None and parsed is None:
        raise ConfigError(f"--device: expected cpu or cuda[:N] for the {backend} backend, got {device!r} (OpenVINO "
                          f"device names such as GPU or NPU are for .xml models / --backend openvino)")
    on_cuda = parsed is not None and parsed[0] == "cuda"
    if half and tf32:
        raise ConfigError("--half --tf32: expected one of them (TF32 is an FP32 mode), got both")
    if (half or tf32) and not on_cuda:
        raise ConfigError(f"{_flags(half, tf32)}: expected a CUDA device (--device cuda[:N]), got "
                          f"{device or 'the default device (cpu)'}")
    if half and backend != "torch":
        raise ConfigError(f"--half: expected a .pt model (torch backend), got {backend}: an ONNX model or engine "
                          f"gets FP16 when it is exported (edge-detect export --half)")
    if backend == "tensorrt":
        if tf32 or (parsed is not None and not on_cuda):
            raise ConfigError(f"{'--tf32' if tf32 else '--device cpu'}: expected --device cuda[:N] alone for a "
                              f"TensorRT engine (it runs on CUDA only; its precision is fixed when it is built)")
        return {"device": parsed[1]} if parsed else {}
    if parsed is not None:
        opts["device"] = f"{parsed[0]}:{parsed[1]}" if on_cuda else "cpu"
    if half:
        opts["half"] = True
    if tf32:
        opts["tf32"] = True
    return opts
