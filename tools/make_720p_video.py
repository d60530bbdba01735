#!/usr/bin/env python3
"""Make a 1280x720 test video from the shared 480x360 vtest.avi (every frame upscaled, 16:9 stretch).

    python tools/make_720p_video.py OUT.mp4 [--source ../shared/videos/vtest.avi] [--fps 10] [--frames N]

Writes H.264 (yuv420p) with PyAV when it is installed (like most real 720p files), else MPEG-4 part 2 with
OpenCV. The output goes wherever you say (a temp or runs/ folder): never into the repository or shared/.
Used by tools/bench_all.sh for the 720p end-to-end rows of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    default_src = Path(os.environ.get("EDGE_DETECT_DATA", repo.parent / "shared")) / "videos" / "vtest.avi"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", type=Path)
    p.add_argument("--source", type=Path, default=default_src)
    p.add_argument("--size", default="1280x720", help="WxH (default 1280x720)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the source's)")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames (default: all of the source)")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    cap = cv2.VideoCapture(str(args.source))
    if not cap.isOpened():
        print(f"cannot open {args.source}", file=sys.stderr)
        return 2
    fps = args.fps or cap.get(cv2.CAP_PROP_FPS) or 10.0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    frames = 0
    try:
        import av  # PyAV: H.264
    except ImportError:
        av = None
    if av is not None:
        from fractions import Fraction

        container = av.open(str(args.output), "w")
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # a keyframe every 2 s, as IP cameras send (x264's default, 250 frames, is 25 s at 10 fps: a recorder would
        # have to encode such a file rather than copy it, record.max_gop_s)
        stream.options = {"crf": "23", "preset": "veryfast", "g": str(max(1, round(2 * fps)))}
        while args.frames is None or frames < args.frames:
            ok, img = cap.read()
            if not ok:
                break
            big = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="bgr24")):
                container.mux(packet)
            frames += 1
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    else:
        writer = cv2.VideoWriter(str(args.output), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        while args.frames is None or frames < args.frames:
            ok, img = cap.read()
            if not ok:
                break
            writer.write(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))
            frames += 1
        writer.release()
    cap.release()
    print(f"{args.output}: {frames} frames {w}x{h} at {fps:g} fps")
    return 0 if frames else 1


if __name__ == "__main__":
    sys.exit(main())
