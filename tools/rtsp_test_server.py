#!/usr/bin/env python3
"""A real RTSP server for tests and demos: serves a video file, looped and paced in real time, as H.264 over RTSP.

    python tools/rtsp_test_server.py --source ../shared/videos/vtest.avi --port 8554 [--path /stream] [--gop 10]

Then ``rtsp://127.0.0.1:8554/stream`` plays (OpenCV, PyAV, ffplay, VLC). Several clients share one encoder.
The frames are decoded with OpenCV and pushed into GStreamer's RTSP server (gst-rtsp-server) through an
``appsrc``, encoded with x264 (a keyframe every ``--gop`` frames). Kill the process to simulate an outage and
start it again on the same port to end it.

Needs GStreamer's RTSP server and its Python bindings from Debian (``apt-get install python3-gi
gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly``);
they are found in ``/usr/lib/python3/dist-packages`` when this interpreter is not Debian's own. Prints
``READY rtsp://...`` on stdout once it serves.
"""
from __future__ import annotations

import argparse
import signal
import sys

DIST = "/usr/lib/python3/dist-packages"


def _import_gst():
    try:
        import gi  # noqa: F401
    except ImportError:
        sys.path.append(DIST)
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    return GLib, Gst, GstRtspServer


class _Feeder:
    """Decodes the file with OpenCV (looping) and pushes BGR frames with timestamps into the appsrc."""

    def __init__(self, gst, path: str, fps: float) -> None:
        import cv2

        self.cv2, self.gst, self.path, self.fps = cv2, gst, path, fps
        self.cap = cv2.VideoCapture(path)
        self.n = 0
        self.t0 = None

    def frame(self):
        ok, img = self.cap.read()
        if not ok:  # loop
            self.cap.release()
            self.cap = self.cv2.VideoCapture(self.path)
            ok, img = self.cap.read()
        return img if ok else None

    def need_data(self, src, _length) -> None:
        import time

        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        wait = self.t0 + self.n / self.fps - now
        if wait > 0:  # paced: a frame every 1/fps seconds, like a camera
            time.sleep(wait)
        img = self.frame()
        if img is None:
            src.emit("end-of-stream")
            return
        buf = self.gst.Buffer.new_wrapped(img.tobytes())
        dur = int(self.gst.SECOND / self.fps)
        buf.pts = buf.dts = self.n * dur
        buf.duration = dur
        self.n += 1
        src.emit("push-buffer", buf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="video file to serve (looped)")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--path", default="/stream")
    ap.add_argument("--fps", type=float, default=None, help="frame rate (default: the file's)")
    ap.add_argument("--gop", type=int, default=None, help="frames between keyframes (default: one second)")
    args = ap.parse_args(argv)

    import cv2

    cap = cv2.VideoCapture(args.source)
    if not cap.isOpened():
        print(f"error: cannot open {args.source}", file=sys.stderr)
        return 2
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = args.fps or cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    gop = args.gop or max(int(round(fps)), 1)
    GLib, Gst, GstRtspServer = _import_gst()

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time caps=video/x-raw,format=BGR,width={w},height={h},"
        f"framerate={int(round(fps))}/1 ! videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency "
        f"speed-preset=ultrafast key-int-max={gop} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)

    def configure(_factory, media) -> None:
        src = media.get_element().get_child_by_name("src")
        src.connect("need-data", _Feeder(Gst, args.source, fps).need_data)

    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 2
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.quit())
    print(f"READY rtsp://{args.host}:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
