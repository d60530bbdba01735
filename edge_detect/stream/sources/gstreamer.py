"""GStreamer helpers: whether OpenCV has it, and pipelines for Jetson cameras and hardware-decoded RTSP.

A pipeline string (``"... ! appsink"`` or ``"gst:..."``) given to :func:`~edge_detect.stream.sources.open_source`
opens as a ``gstreamer`` source through OpenCV's GStreamer backend.
"""
from __future__ import annotations

import re
from typing import Optional

import cv2

from edge_detect.errors import SourceError

__all__ = ["gstreamer_available", "jetson_csi_pipeline", "jetson_rtsp_pipeline"]


def gstreamer_available() -> bool:
    """Whether this OpenCV build was compiled with GStreamer (``cv2.getBuildInformation()``)."""
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def jetson_csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30,
                        flip: int = 0, out_width: Optional[int] = None, out_height: Optional[int] = None) -> str:
    """GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc``) ending in a BGR ``appsink``.

    Args:
        sensor_id: CSI port of the camera.
        width, height, fps: sensor mode requested from Argus.
        flip: ``nvvidconv flip-method`` (0 none, 2 rotate 180...).
        out_width, out_height: size delivered to the app (default: the sensor mode).
    """
    ow, oh = out_width or width, out_height or height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, format=NV12, framerate={fps}/1 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, width={ow}, height={oh}, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def jetson_rtsp_pipeline(url: str, codec: str = "h264", latency_ms: int = 200,
                         width: Optional[int] = None, height: Optional[int] = None) -> str:
    """GStreamer pipeline decoding an RTSP H.264/H.265 stream with the Jetson hardware decoder (``nvv4l2decoder``).

    Args:
        url: ``rtsp://`` URL (credentials allowed; they are masked in logs).
        codec: ``"h264"`` or ``"h265"``.
        latency_ms: ``rtspsrc`` jitter-buffer latency.
        width, height: optional resize in ``nvvidconv``.

    Raises:
        SourceError: unknown codec.
    """
    if codec not in ("h264", "h265"):
        raise SourceError(f"jetson_rtsp_pipeline codec: expected 'h264' or 'h265', got {codec!r}")
    size = f", width={width}, height={height}" if width and height else ""
    return (
        f"rtspsrc location={url} latency={latency_ms} ! rtp{codec}depay ! {codec}parse ! nvv4l2decoder ! "
        f"nvvidconv ! video/x-raw, format=BGRx{size} ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )
