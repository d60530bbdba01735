"""``edge-detect export``: checkpoint (.pt) -> ONNX (fp32 / fp16 / INT8 Q/DQ, optional in-graph NMS and uint8
input) -> optionally a TensorRT engine or an OpenVINO IR.

Stages, in order: ONNX export -> INT8 quantization (``--int8``) -> uint8 NHWC BGR input (``--uint8-input``) ->
in-graph NMS (``--nms``) -> TensorRT engine (``--format engine``) or OpenVINO IR (``--format openvino``; with
``--int8`` the quantization is NNCF's on the FP32 graph instead of our Q/DQ, see
:mod:`edge_detect.deploy.openvino`). Intermediate files go to a temporary folder; only the final file is written
to ``--output``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from edge_detect.errors import BackendUnavailableError, ConfigError
from edge_detect.cli._types import positive_float, positive_int, unit_float
from edge_detect.preprocess import check_imgsz

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

--weights accepts a file or a manifest name (yolov5n, yolov5s...; see `edge-detect weights list`).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``export`` and its flags."""
    p = subparsers.add_parser(
        "export", help="export a YOLOv5 checkpoint to ONNX or a TensorRT engine",
        description="Export a YOLOv5 .pt checkpoint to ONNX (fp32, fp16 or INT8) or to a TensorRT engine, "
                    "with the model metadata (class names, input size, layout) embedded.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--weights", required=True, metavar="PT",
                   help="checkpoint file or manifest name (e.g. yolov5n)")
    g.add_argument("--format", choices=("onnx", "engine", "openvino"), default="onnx",
                   help="output format (default: onnx; engine needs TensorRT and a GPU; openvino writes an IR "
                        ".xml + .bin and needs the openvino extra)")
    g.add_argument("--output", "-o", default=None, metavar="PATH",
                   help="output file (default: <weights stem>[-dynamic][-int8|-fp16].<onnx|engine|xml> in the "
                        "current folder)")
    g.add_argument("--imgsz", nargs="+", type=positive_int, default=[640], metavar="S",
                   help="input size: one side (square) or H W; multiples of 32, at most 4096 (default: 640)")
    g.add_argument("--force-imgsz", action="store_true", help="allow --imgsz sides above 4096")
    g.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="batch size of a static model; the max batch of a dynamic engine (default: 1)")
    g.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width axes")
    g.add_argument("--opset", type=positive_int, default=17, metavar="N", help="ONNX opset (default: 17)")
    g.add_argument("--half", action="store_true",
                   help="FP16: fp16 ONNX weights and I/O, or an FP16 TensorRT engine")
    g.add_argument("--no-simplify", action="store_true", help="skip the onnxslim graph simplification")

    q = p.add_argument_group("INT8 quantization")
    q.add_argument("--int8", action="store_true", help="INT8 with Q/DQ nodes calibrated on real images")
    q.add_argument("--calib", default=None, metavar="DATA.yaml|DIR|VIDEO",
                   help="calibration images: dataset yaml, image folder or video (required with --int8)")
    q.add_argument("--calib-images", type=positive_int, default=500, metavar="N",
                   help="number of calibration images (default: 500)")
    q.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="percentile",
                   help="activation range method (default: percentile)")
    q.add_argument("--int8-exclude", nargs="+", default=[], metavar="NAME",
                   help="nodes or blocks to keep in float (in addition to the automatic choice)")
    q.add_argument("--int8-val", default=None, metavar="DATA.yaml",
                   help="measure the INT8 model's mAP on this dataset's val split and record it in the model "
                        "metadata and the report (default: the --calib dataset when it is a yaml; 'none' skips)")
    q.add_argument("--no-sensitivity", action="store_true",
                   help="skip the per-block sensitivity analysis that keeps the most sensitive blocks in float")
    q.add_argument("--nncf-preset", choices=("mixed", "performance"), default="mixed",
                   help="--format openvino --int8: NNCF preset (mixed: asymmetric activations; default mixed)")

    n = p.add_argument_group("graph options")
    n.add_argument("--nms", action="store_true",
                   help="append NMS to the graph (outputs num_dets, boxes, scores, classes)")
    n.add_argument("--nms-plugin", choices=("efficient", "inms", "onnx"), default=None,
                   help="NMS implementation: TensorRT's EfficientNMS_TRT plugin, or the standard ONNX "
                        "NonMaxSuppression op (runs on ONNX Runtime too; TensorRT >= 8.6 maps it to INMSLayer). "
                        "Default: efficient for --format engine, onnx for --format onnx")
    n.add_argument("--nms-conf", type=unit_float, default=0.25, metavar="T",
                   help="score threshold of the in-graph NMS (default: 0.25)")
    n.add_argument("--nms-iou", type=unit_float, default=0.45, metavar="T",
                   help="IoU threshold of the in-graph NMS (default: 0.45)")
    n.add_argument("--max-det", type=positive_int, default=100, metavar="K",
                   help="detections kept per image by the in-graph NMS (default: 100)")
    n.add_argument("--uint8-input", action="store_true",
                   help="take letterboxed uint8 BGR NHWC frames; conversion and /255 happen in the graph")

    e = p.add_argument_group("TensorRT engine")
    e.add_argument("--workspace", type=positive_float, default=4.0, metavar="GB",
                   help="builder workspace limit in GiB (default: 4)")
    e.add_argument("--dla", type=int, default=None, metavar="N",
                   help="build for DLA core N (Jetson), with GPU fallback")
    e.add_argument("--timing-cache", default=None, metavar="PATH",
                   help="TensorRT timing cache file, read and updated (speeds up rebuilds)")
    return p


def default_output(weights: Path, fmt: str, half: bool, int8: bool, dynamic: bool = False) -> Path:
    """``<stem>[-dynamic][-int8|-fp16].<onnx|engine|xml>`` in the current folder (a dynamic export never takes
    the static one's name)."""
    tag = ("-dynamic" if dynamic else "") + ("-int8" if int8 else ("-fp16" if half else ""))
    suffix = {"engine": "engine", "openvino": "xml"}.get(fmt, "onnx")
    return Path.cwd() / f"{weights.stem}{tag}.{suffix}"


def _stage(module: str, attr: str, flag: str) -> Callable[..., Any]:
    """``edge_detect.<module>.<attr>``, or BackendUnavailableError saying which flag needs it."""
    full = f"edge_detect.{module}"
    try:
        return getattr(importlib.import_module(full), attr)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
        raise BackendUnavailableError(f"{flag} needs {full}, which is not part of this installation") from exc
    except AttributeError as exc:
        raise BackendUnavailableError(f"{flag} needs {full}.{attr}, which this installation lacks") from exc


def _validate(args: argparse.Namespace) -> None:
    if len(args.imgsz) > 2:
        raise ConfigError(f"--imgsz: expected one side or H W, got {len(args.imgsz)} values")
    check_imgsz((args.imgsz[0], args.imgsz[-1]), stride=1, force=getattr(args, "force_imgsz", False))
    if args.int8 and not args.calib:
        raise ConfigError("--int8 needs calibration images: add --calib DATA.yaml|DIR|VIDEO")
    if args.int8 and args.half and args.format == "onnx":
        raise ConfigError("--int8 and --half cannot be combined for ONNX output (use --format engine for "
                          "mixed INT8/FP16)")
    if args.format != "engine" and (args.dla is not None or args.timing_cache):
        raise ConfigError("--dla and --timing-cache apply to --format engine only")
    if args.format == "openvino" and args.int8 and (args.half or args.nms or args.uint8_input):
        raise ConfigError("--format openvino --int8: expected no --half/--nms/--uint8-input (NNCF quantizes the "
                          "FP32 raw-output graph; the OpenVINO backend adds the uint8 input at load time)")
    if args.format == "openvino" and args.output and Path(args.output).suffix.lower() != ".xml":
        raise ConfigError(f"--output: expected a .xml path for --format openvino, got {args.output}")


def _int8_val(args: argparse.Namespace) -> Optional[str]:
    """Dataset whose val split scores the INT8 model: --int8-val, else a yaml --calib, 'none' = skip."""
    val = getattr(args, "int8_val", None)
    if val is not None:
        return None if str(val).lower() == "none" else str(val)
    calib = str(args.calib)
    return calib if calib.lower().endswith((".yaml", ".yml")) else None


def run_export(args: argparse.Namespace, workdir: Path) -> Path:
    """Run the stages (see module doc) with intermediates in ``workdir``; returns the final file."""
    from edge_detect.training.export import export_onnx
    from edge_detect.weights import resolve_weights

    weights = resolve_weights(args.weights)
    output = Path(args.output) if args.output else default_output(weights, args.format, args.half, args.int8,
                                                                  args.dynamic)
    progress = not getattr(args, "quiet", False)
    extra_stages = args.int8 or args.uint8_input or args.nms or args.format != "onnx"
    onnx_half = args.half and args.format == "onnx"
    ov_int8 = args.format == "openvino" and args.int8
    current = export_onnx(weights, workdir / "fp32.onnx" if extra_stages else output, imgsz=args.imgsz,
                          batch=args.batch, dynamic=args.dynamic, opset=args.opset, half=onnx_half,
                          simplify=not args.no_simplify, progress=progress,
                          force_imgsz=getattr(args, "force_imgsz", False))
    if ov_int8:
        quantize_openvino = _stage("deploy.openvino", "quantize_openvino", "--format openvino --int8")
        return Path(quantize_openvino(current, output, calib=args.calib, num_images=args.calib_images,
                                      exclude=tuple(args.int8_exclude), preset=args.nncf_preset,
                                      sensitivity=not args.no_sensitivity, val_data=_int8_val(args),
                                      report_path=output.with_name(output.stem + ".quant.json"),
                                      progress=progress))
    if args.int8:
        quantize_int8 = _stage("deploy.quantize", "quantize_int8", "--int8")
        report = output.with_name(output.stem + ".quant.json")
        current = quantize_int8(current, workdir / "int8.onnx", calib=args.calib, num_images=args.calib_images,
                                method=args.calib_method, exclude=tuple(args.int8_exclude),
                                sensitivity=not args.no_sensitivity, val_data=_int8_val(args),
                                report_path=report, progress=progress)
    if args.uint8_input:
        add_uint8_input = _stage("deploy.graph", "add_uint8_input", "--uint8-input")
        current = add_uint8_input(current, workdir / "uint8.onnx")
    if args.nms:
        add_nms = _stage("deploy.graph", "add_nms", "--nms")
        plugin = args.nms_plugin or ("efficient" if args.format == "engine" else "onnx")
        current = add_nms(current, workdir / "nms.onnx", conf=args.nms_conf, iou=args.nms_iou,
                          max_det=args.max_det, plugin=plugin)
    if args.format == "engine":
        build_engine = _stage("deploy.tensorrt_build", "build_engine", "--format engine")
        output.parent.mkdir(parents=True, exist_ok=True)
        return Path(build_engine(current, output, fp16=args.half, int8=args.int8, workspace_gb=args.workspace,
                                 dla=args.dla, timing_cache=args.timing_cache,
                                 dynamic=True if args.dynamic else None))
    if args.format == "openvino":
        convert_to_ir = _stage("deploy.openvino", "convert_to_ir", "--format openvino")
        return Path(convert_to_ir(current, output, half=args.half))
    if Path(current) != output:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(current), str(output))
    return output


def main(args: argparse.Namespace) -> int:
    """Export and print the path of the written file."""
    _validate(args)
    with tempfile.TemporaryDirectory(prefix="edge-detect-export-") as tmp:
        out = run_export(args, Path(tmp))
    print(out)
    return 0
