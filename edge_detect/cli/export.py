"""``edge-detect export``: checkpoint (.pt) -> ONNX (fp32 / fp16 / INT8 Q/DQ, optional in-graph NMS and uint8
input) -> optionally a TensorRT engine, an OpenVINO IR or a Triton Inference Server model repository.

Argument parsing over :func:`edge_detect.exporter.export`, which owns the stage order (ONNX export -> INT8
quantization -> uint8 input -> NMS -> engine | OpenVINO IR; NNCF INT8 for OpenVINO) and the temporary folder
for intermediates.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, List

from edge_detect.cli._types import imgsz_option, positive_float, positive_int, unit_float
from edge_detect.exporter import (AUTO, CALIB_METHODS, FORMATS, NMS_PLUGINS, NNCF_PRESETS, NNCF_RANGES,
                                  TRITON_DEVICES, TRITON_MODELS, ExportOptions, default_output, export,
                                  read_quant_report)

__all__ = ["add_parser", "main", "options_from_args", "default_output"]

LOGGER = logging.getLogger(__name__)

_EPILOG = """\
examples:
  edge-detect export --weights yolov5n.pt                                   # -> yolov5n.onnx (fp32, 640x640)
  edge-detect export --weights yolov5n.pt --imgsz 384 640 --dynamic             # -> yolov5n-dynamic.onnx
  edge-detect export --weights yolov5n.pt --half                            # -> yolov5n-fp16.onnx
  edge-detect export --weights yolov5n.pt --int8 --calib coco128.yaml       # -> yolov5n-int8.onnx
  edge-detect export --weights yolov5n.pt --format engine --half --nms      # -> yolov5n-fp16.engine
  edge-detect export --weights yolov5n.pt --format openvino                 # -> yolov5n.xml + .bin
  edge-detect export --weights yolov5n.pt --format openvino --int8 --calib coco128.yaml  # -> yolov5n-int8.xml
  edge-detect export --weights yolov5n --format triton --output model_repository/  # -> model_repository/yolov5n/
  edge-detect export --weights yolov5n --format triton --uint8-input --triton-model engine --half  # TensorRT plan

--format triton writes a Triton Inference Server model repository (<name>/config.pbtxt + <name>/1/model.onnx,
model.plan or model.xml+bin) with a dynamic batch axis and dynamic batching; serve it with NVIDIA's Triton
container (or tools/triton_test_server.py) and run clients with --model grpc://SERVER:8001/<name>.

--weights accepts a file or a manifest name (yolov5n, yolov5s...; see `edge-detect weights list`). ultralytics
checkpoints (YOLOv5u / YOLOv8 / YOLO11 detection) are recognised from their content and exported through the
ultralytics package (pip install 'edge-detect[ultralytics]').
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``export`` and its flags."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX, TensorRT, OpenVINO or a Triton model repository",
        description="Export a .pt checkpoint (YOLOv5; YOLOv5u / YOLOv8 / YOLO11) to ONNX (fp32, fp16 or INT8), a "
                    "TensorRT engine, an OpenVINO model or a Triton Inference Server model repository, with the model "
                    "metadata (class names, input size, layout) embedded.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(p.add_argument_group("model"))
    _int8_args(p.add_argument_group("INT8 quantization"))
    _graph_args(p.add_argument_group("graph options"))
    _engine_args(p.add_argument_group("TensorRT engine"))
    _triton_args(p.add_argument_group("Triton model repository (--format triton)"))
    return p


def _model_args(g: Any) -> None:
    g.add_argument("--weights", required=True, metavar="PT",
                   help="checkpoint file or manifest name (e.g. yolov5n)")
    g.add_argument("--format", choices=FORMATS, default="onnx",
                   help="output format (default: onnx; engine needs TensorRT and a GPU; openvino writes an IR "
                        ".xml + .bin and needs the openvino extra; triton writes a Triton model repository and needs "
                        "the triton extra)")
    g.add_argument("--output", "-o", default=None, metavar="PATH",
                   help="output file (default: <weights stem>[-dynamic][-int8|-fp16].<onnx|engine|xml> in the "
                        "current folder); for --format triton the repository folder (default: model_repository)")
    g.add_argument("--imgsz", nargs="+", default=["640"], metavar="S",
                   help="input size: one side (square), H W or HxW; multiples of 32, at most 4096 (default: 640)")
    g.add_argument("--force-imgsz", action="store_true", help="allow --imgsz sides above 4096")
    g.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="batch size of a static model; the max batch of a dynamic engine (default: 1)")
    g.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width axes")
    g.add_argument("--opset", type=positive_int, default=17, metavar="N", help="ONNX opset (default: 17)")
    g.add_argument("--half", action="store_true",
                   help="FP16: fp16 ONNX weights and I/O, or an FP16 TensorRT engine")
    g.add_argument("--no-simplify", action="store_true", help="skip the onnxslim graph simplification")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="ultralytics checkpoints only: if the restricted unpickler refuses the file, load it with "
                        "ultralytics' own loader, which EXECUTES code pickled in it (only for files you trust)")


def _int8_args(q: Any) -> None:
    q.add_argument("--int8", action="store_true", help="INT8 with Q/DQ nodes calibrated on real images")
    q.add_argument("--calib", default=None, metavar="DATA.yaml|DIR|VIDEO",
                   help="calibration images: dataset yaml, image folder or video (required with --int8)")
    q.add_argument("--calib-images", type=positive_int, default=500, metavar="N",
                   help="number of calibration images (default: 500)")
    q.add_argument("--calib-method", choices=CALIB_METHODS, default="percentile",
                   help="activation range method (default: percentile)")
    q.add_argument("--int8-exclude", nargs="+", default=[], metavar="NAME",
                   help="nodes or blocks to keep in float (in addition to the automatic choice)")
    q.add_argument("--int8-val", default=None, metavar="DATA.yaml",
                   help="measure the INT8 model's mAP on this dataset's val split and record it in the model "
                        "metadata and the report (default: the --calib dataset when it is a yaml; 'none' skips)")
    q.add_argument("--no-fp32-val", action="store_true",
                   help="with --int8-val, skip measuring the FP32 model's mAP for the side-by-side comparison")
    q.add_argument("--no-sensitivity", action="store_true",
                   help="skip the per-block sensitivity analysis that keeps the most sensitive blocks in float")
    q.add_argument("--nncf-preset", choices=NNCF_PRESETS, default="mixed",
                   help="--format openvino --int8: NNCF preset (mixed: asymmetric activations; default mixed)")
    q.add_argument("--nncf-ranges", choices=NNCF_RANGES, default="minmax",
                   help="--format openvino --int8: activation ranges, min/max over all calibration images "
                        "(default) or NNCF's default estimator")


def _graph_args(n: Any) -> None:
    n.add_argument("--nms", action="store_true",
                   help="append NMS to the graph (outputs num_dets, boxes, scores, classes)")
    n.add_argument("--nms-plugin", choices=NMS_PLUGINS, default=None,
                   help="NMS implementation: TensorRT's EfficientNMS_TRT plugin, or the standard ONNX "
                        "NonMaxSuppression op (runs on ONNX Runtime too; TensorRT >= 8.5 maps it to INMSLayer). "
                        "Default: onnx for --format onnx; for --format engine efficient up to TensorRT 10.11, "
                        "inms from 10.12 (EfficientNMS_TRT deprecated)")
    n.add_argument("--nms-conf", type=unit_float, default=0.25, metavar="T",
                   help="score threshold of the in-graph NMS (default: 0.25)")
    n.add_argument("--nms-iou", type=unit_float, default=0.45, metavar="T",
                   help="IoU threshold of the in-graph NMS (default: 0.45)")
    n.add_argument("--max-det", type=positive_int, default=100, metavar="K",
                   help="detections kept per image by the in-graph NMS (default: 100)")
    n.add_argument("--uint8-input", action="store_true",
                   help="take letterboxed uint8 BGR NHWC frames; conversion and /255 happen in the graph")


def _engine_args(e: Any) -> None:
    e.add_argument("--workspace", type=positive_float, default=4.0, metavar="GB",
                   help="builder workspace limit in GiB (default: 4)")
    e.add_argument("--dla", type=int, default=None, metavar="N",
                   help="build for DLA core N (Jetson), with GPU fallback")
    e.add_argument("--timing-cache", default=None, metavar="PATH",
                   help="TensorRT timing cache file, read and updated (speeds up rebuilds)")


def _triton_args(t: Any) -> None:
    t.add_argument("--triton-model", choices=TRITON_MODELS, default="onnx",
                   help="the served model: onnx (ONNX Runtime backend), engine (TensorRT plan, built on this machine: "
                        "use the server's GPU and TensorRT) or openvino (default: onnx)")
    t.add_argument("--triton-name", default=None, metavar="NAME",
                   help="model name on the server, used in the client URL (default: the weights' stem)")
    t.add_argument("--triton-max-batch", type=positive_int, default=8, metavar="N",
                   help="max_batch_size: the largest batch the server forms from clients' requests (default: 8)")
    t.add_argument("--triton-queue-delay-us", type=int, default=2000, metavar="US",
                   help="dynamic batching: longest wait of a request for others to batch with (default: 2000)")
    t.add_argument("--triton-instances", type=positive_int, default=1, metavar="N",
                   help="model instances on the server (instance_group count; default: 1)")
    t.add_argument("--triton-device", choices=TRITON_DEVICES, default="auto",
                   help="instance_group kind: auto (GPU when the server has one), gpu or cpu (default: auto)")


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The :class:`~edge_detect.exporter.ExportOptions` the flags ask for (validated there)."""
    int8_val = getattr(args, "int8_val", None)
    return ExportOptions(
        format=args.format, imgsz=imgsz_option(args.imgsz), force_imgsz=getattr(args, "force_imgsz", False),
        batch=args.batch, dynamic=args.dynamic,
        opset=args.opset, half=args.half, simplify=not args.no_simplify, int8=args.int8, calib=args.calib,
        calib_images=args.calib_images, calib_method=args.calib_method, int8_exclude=tuple(args.int8_exclude),
        int8_val=AUTO if int8_val is None else (None if str(int8_val).lower() == "none" else int8_val),
        compare_fp32=not args.no_fp32_val, sensitivity=not args.no_sensitivity,
        nncf_preset=getattr(args, "nncf_preset", "mixed"), nncf_ranges=getattr(args, "nncf_ranges", "minmax"),
        uint8_input=args.uint8_input,
        nms=args.nms, nms_plugin=args.nms_plugin, nms_conf=args.nms_conf, nms_iou=args.nms_iou,
        max_det=args.max_det, workspace_gb=args.workspace, dla=args.dla, timing_cache=args.timing_cache,
        trust_checkpoint=getattr(args, "trust_checkpoint", False),
        triton_model=getattr(args, "triton_model", "onnx"), triton_name=getattr(args, "triton_name", None),
        triton_max_batch=getattr(args, "triton_max_batch", 8),
        triton_queue_delay_us=getattr(args, "triton_queue_delay_us", 2000),
        triton_instances=getattr(args, "triton_instances", 1), triton_device=getattr(args, "triton_device", "auto"))


def _map_lines(report: Dict[str, Any]) -> List[str]:
    """``FP32 mAP50-95 0.334 mAP50 0.515`` / ``INT8 ...`` lines from a quantization report (none if unmeasured).

    Reads both report shapes: Q/DQ (``map`` = INT8, ``map_fp32``, ``map_data``) and OpenVINO/NNCF
    (``map`` = ``{"fp32": ..., "int8": ...}``).
    """
    measured = report.get("map") or {}
    if "int8" in measured:
        fp32, int8, data = measured.get("fp32"), measured.get("int8"), (measured.get("int8") or {}).get("map_data")
    else:
        fp32, int8, data = report.get("map_fp32"), measured or None, report.get("map_data")
    lines = [f"{tag} mAP50-95 {m['map50_95']:.3f} mAP50 {m['map50']:.3f}" for tag, m in (("FP32", fp32),
                                                                                        ("INT8", int8)) if m]
    if fp32 and int8:
        lines.append(f"INT8 - FP32 mAP50-95 {int8['map50_95'] - fp32['map50_95']:+.3f} (val split of {data or '?'})")
    return lines


def main(args: argparse.Namespace) -> int:
    """Export; with ``--int8`` print FP32 vs INT8 mAP to stderr; print the path of the written file last."""
    out = export(args.weights, args.output, options_from_args(args), progress=not getattr(args, "quiet", False))
    report = read_quant_report(out) if args.int8 else None
    for line in _map_lines(report or {}):
        print(line, file=sys.stderr)
    print(out)
    return 0
