"""``edge_detect.export()``: checkpoint (``.pt``) -> ONNX (FP32 / FP16 / INT8 Q/DQ, optional uint8 input and
in-graph NMS) -> optionally a TensorRT engine or an OpenVINO IR, in one call that owns the stage order.

Stages, in order (each one reads the previous stage's file)::

    ONNX export (training) -> INT8 Q/DQ (deploy.quantize) -> uint8 NHWC BGR input (deploy.graph)
        -> in-graph NMS (deploy.graph) -> TensorRT engine (deploy.tensorrt_build) | OpenVINO IR (deploy.openvino)
        [-> Triton model repository (deploy.triton_repo)]

``format="openvino"`` with ``int8`` quantizes with NNCF on the FP32 graph instead of the Q/DQ stage
(:func:`edge_detect.deploy.openvino.quantize_openvino`) and takes no uint8 input / NMS stage.

``format="triton"`` writes a Triton Inference Server model repository (``output`` is its folder, default
``model_repository/``): the model of kind ``triton_model`` (``onnx``, ``engine`` or ``openvino``, built by the stages
above with a dynamic batch axis) as ``<name>/1/model.onnx|model.plan|model.xml+bin`` and its ``config.pbtxt``
(:mod:`edge_detect.deploy.triton_repo`).

Intermediate files live in a temporary folder that is removed afterwards; only the final file is written to
``output``. With ``int8=True`` the quantization report is saved beside the output as ``<stem>.quant.json``; it
records the final output path, and ``fp32_model`` is ``null`` because the FP32 ONNX was an intermediate (the
checkpoint it came from is recorded under ``weights``).

This module is top-layer like the CLI: it imports the torch side (:mod:`edge_detect.training`) and the deploy
side lazily, inside :func:`export`, so importing it needs neither torch nor ONNX.

Example::

    from edge_detect import export
    export("yolov5n.pt", "yolov5n-int8.onnx", int8=True, calib="coco128.yaml", imgsz=640)
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edge_detect.config import check_thresholds, parse_imgsz, suggest_key
from edge_detect.paths import YAML_SUFFIXES, PathLike
from edge_detect.errors import ConfigError

__all__ = ["ExportOptions", "export", "default_output", "quant_report_path", "read_quant_report", "FORMATS",
           "NMS_PLUGINS", "CALIB_METHODS", "NNCF_PRESETS", "NNCF_RANGES", "TRITON_MODELS", "TRITON_DEVICES"]

LOGGER = logging.getLogger(__name__)

FORMATS = ("onnx", "engine", "openvino", "triton")
SUFFIXES = {"onnx": ".onnx", "engine": ".engine", "openvino": ".xml"}
TRITON_MODELS = ("onnx", "engine", "openvino")  # what a Triton repository can hold (deploy.triton_repo.KINDS)
TRITON_DEVICES = ("auto", "gpu", "cpu")
DEFAULT_REPOSITORY = "model_repository"
NNCF_PRESETS = ("mixed", "performance")
NNCF_RANGES = ("minmax", "default")  # activation range estimators, see edge_detect.deploy.openvino
NMS_PLUGINS = ("efficient", "inms", "onnx")
CALIB_METHODS = ("percentile", "minmax", "entropy")
AUTO = "auto"
_REPORT = "int8.quant.json"  # the quantization report's name in the temporary folder


@dataclass(frozen=True)
class ExportOptions:
    """Everything :func:`export` can be asked to do; validated on creation (the API boundary).

    Attributes:
        format: ``"onnx"``, ``"engine"`` (TensorRT; needs the ``tensorrt`` extra and a GPU), ``"openvino"``
            (IR ``.xml`` + ``.bin``; needs the ``openvino`` extra) or ``"triton"`` (a Triton model repository
            holding a ``triton_model``; needs the ``triton`` extra; implies ``dynamic``).
        imgsz: input ``(h, w)``, one side (square) or ``"HxW"``; multiples of 32, sides at most
            :data:`~edge_detect.preprocess.MAX_IMGSZ` (4096). Stored as ``(h, w)``.
        force_imgsz: allow sides above 4096.
        batch: batch of a static model; the max batch of a dynamic engine.
        dynamic: dynamic batch, height and width axes.
        opset: ONNX opset.
        half: FP16 ONNX weights and I/O (``format="onnx"``) or an FP16 TensorRT engine.
        simplify: run onnxslim on the exported graph.
        int8: Q/DQ INT8 calibrated on real images (``calib`` required).
        calib: calibration images: dataset yaml, image folder or video.
        calib_images: number of calibration images.
        calib_method: ``"percentile"``, ``"minmax"`` or ``"entropy"``.
        int8_exclude: blocks / nodes kept in float besides the automatic choice.
        int8_val: dataset yaml whose ``val`` split scores the INT8 model; ``"auto"`` = ``calib`` when it is a
            yaml, ``None`` = do not measure.
        compare_fp32: when the INT8 mAP is measured, also measure the FP32 model on the same split so the two
            appear side by side in the report (``map_fp32`` next to ``map``).
        sensitivity: per-block sensitivity analysis keeping the costliest blocks in float.
        nncf_preset: ``format="openvino"`` with ``int8``: NNCF preset, ``"mixed"`` or ``"performance"``.
        nncf_ranges: ``format="openvino"`` with ``int8``: activation ranges, ``"minmax"`` (min/max over every
            calibration image; mAP 0.335 on coco128 val2017 vs 0.327 with NNCF's ``"default"`` estimator).
        uint8_input: letterboxed uint8 BGR NHWC input, converted and scaled inside the graph.
        nms: append NMS to the graph (outputs ``num_dets, boxes, scores, classes``).
        nms_plugin: ``"efficient"`` (TensorRT plugin), ``"onnx"`` / ``"inms"`` (standard ONNX op); ``None`` =
            ``efficient`` for engines, ``onnx`` for ONNX output.
        nms_conf, nms_iou: thresholds of the in-graph NMS, in ``[0, 1]``.
        max_det: detections kept per image by the in-graph NMS.
        workspace_gb: TensorRT builder workspace limit (GiB).
        dla: DLA core (Jetson) for the engine, with GPU fallback.
        timing_cache: TensorRT timing cache file (read and updated).
        trust_checkpoint: ultralytics checkpoints only: when the restricted unpickler refuses the file, load it with
            ultralytics' own loader, which executes code pickled in it (see README, "Trust decision").
        triton_model: ``format="triton"``: the repository's model, ``"onnx"`` (Triton's ONNX Runtime backend),
            ``"engine"`` (TensorRT plan; built here, so on the server's GPU model and TensorRT version) or
            ``"openvino"``.
        triton_name: the model's name on the server (default: the checkpoint's stem).
        triton_max_batch: ``max_batch_size`` of the served model (the largest batch Triton forms from the
            clients' requests; also the max batch of an engine's profile).
        triton_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``: how long a request may wait
            for others to batch with.
        triton_instances: model instances on the server (``instance_group.count``).
        triton_device: ``"auto"``, ``"gpu"`` or ``"cpu"`` (``instance_group.kind``).
    """

    format: str = "onnx"
    imgsz: Tuple[int, int] = (640, 640)
    force_imgsz: bool = False
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    half: bool = False
    simplify: bool = True
    int8: bool = False
    calib: Optional[PathLike] = None
    calib_images: int = 500
    calib_method: str = "percentile"
    int8_exclude: Tuple[str, ...] = ()
    int8_val: Optional[PathLike] = AUTO
    compare_fp32: bool = True
    sensitivity: bool = True
    nncf_preset: str = "mixed"
    nncf_ranges: str = "minmax"
    uint8_input: bool = False
    nms: bool = False
    nms_plugin: Optional[str] = None
    nms_conf: float = 0.25
    nms_iou: float = 0.45
    max_det: int = 100
    workspace_gb: float = 4.0
    dla: Optional[int] = None
    timing_cache: Optional[PathLike] = None
    trust_checkpoint: bool = False
    triton_model: str = "onnx"
    triton_name: Optional[str] = None
    triton_max_batch: int = 8
    triton_queue_delay_us: int = 2000
    triton_instances: int = 1
    triton_device: str = "auto"

    def __post_init__(self) -> None:
        from edge_detect.preprocess import check_imgsz

        # the size cap before any work (the stride is checked against the model during the export)
        object.__setattr__(self, "imgsz", check_imgsz(parse_imgsz(self.imgsz), stride=1, force=self.force_imgsz))
        object.__setattr__(self, "int8_exclude", tuple(str(e) for e in self.int8_exclude))
        checks = [
            (self.format in FORMATS, "format", f"one of {FORMATS}", self.format),
            (self.batch >= 1, "batch", ">= 1", self.batch),
            (self.opset >= 7, "opset", ">= 7", self.opset),
            (self.calib_images >= 1, "calib_images", ">= 1", self.calib_images),
            (self.calib_method in CALIB_METHODS, "calib_method", f"one of {CALIB_METHODS}", self.calib_method),
            (self.nncf_preset in NNCF_PRESETS, "nncf_preset", f"one of {NNCF_PRESETS}", self.nncf_preset),
            (self.nncf_ranges in NNCF_RANGES, "nncf_ranges", f"one of {NNCF_RANGES}", self.nncf_ranges),
            (self.nms_plugin is None or self.nms_plugin in NMS_PLUGINS, "nms_plugin", f"one of {NMS_PLUGINS}",
             self.nms_plugin),
            (self.workspace_gb > 0, "workspace_gb", "> 0", self.workspace_gb),
            (self.dla is None or self.dla >= 0, "dla", "a core index >= 0", self.dla),
            (self.triton_model in TRITON_MODELS, "triton_model", f"one of {TRITON_MODELS}", self.triton_model),
            (self.triton_device in TRITON_DEVICES, "triton_device", f"one of {TRITON_DEVICES}", self.triton_device),
            (self.triton_max_batch >= 1, "triton_max_batch", ">= 1", self.triton_max_batch),
            (self.triton_queue_delay_us >= 0, "triton_queue_delay_us", ">= 0", self.triton_queue_delay_us),
            (self.triton_instances >= 1, "triton_instances", ">= 1", self.triton_instances),
            (self.triton_name is None or (bool(self.triton_name) and "/" not in self.triton_name),
             "triton_name", "a model name without '/'", self.triton_name),
        ]
        for ok, name, expected, actual in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {actual!r}")
        check_thresholds(self.nms_conf, self.nms_iou, self.max_det, names=("nms_conf", "nms_iou", "max_det"))
        if self.int8 and not self.calib:
            raise ConfigError("int8 needs calibration images: expected calib (--calib) DATA.yaml|DIR|VIDEO, "
                              "got none")
        if self.int8 and self.half and self.model_format == "onnx":
            raise ConfigError("int8 and half cannot be combined for ONNX output (use format engine for mixed "
                              "INT8/FP16)")
        if self.model_format != "engine" and (self.dla is not None or self.timing_cache):
            raise ConfigError("dla and timing_cache (--dla, --timing-cache) apply to format engine only")
        if self.format == "triton":  # Triton's dynamic batcher stacks requests along the batch axis
            object.__setattr__(self, "dynamic", True)
        if self.model_format == "openvino" and self.int8 and (self.half or self.nms or self.uint8_input):
            raise ConfigError("format openvino with int8: expected no half/nms/uint8_input (NNCF quantizes the "
                              "FP32 raw-output graph; the OpenVINO backend adds the uint8 input at load time)")

    def replace(self, **changes: Any) -> "ExportOptions":
        """A copy with some fields changed; an unknown field is a :class:`ConfigError` with a suggestion."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in names:
                raise ConfigError(f"export option '{key}'{suggest_key(key, names)}: expected one of "
                                  f"{sorted(names)}")
        return dataclasses.replace(self, **changes)

    @property
    def model_format(self) -> str:
        """The model file the stages build: :attr:`format`, or :attr:`triton_model` for a Triton repository."""
        return self.triton_model if self.format == "triton" else self.format

    @property
    def int8_val_data(self) -> Optional[str]:
        """The dataset that scores the INT8 model, after resolving ``"auto"`` (see :attr:`int8_val`)."""
        if self.int8_val is None:
            return None
        if str(self.int8_val) == AUTO:
            calib = str(self.calib)
            return calib if calib.lower().endswith(YAML_SUFFIXES) else None
        return str(self.int8_val)


def default_output(weights: PathLike, fmt: str = "onnx", half: bool = False, int8: bool = False,
                   dynamic: bool = False) -> Path:
    """``<weights stem>[-dynamic][-int8|-fp16].<onnx|engine|xml>`` in the current folder (a dynamic export never
    takes the static one's name); ``model_repository/`` for ``fmt="triton"``."""
    if fmt == "triton":
        return Path.cwd() / DEFAULT_REPOSITORY
    tag = ("-dynamic" if dynamic else "") + ("-int8" if int8 else ("-fp16" if half else ""))
    return Path.cwd() / f"{Path(weights).stem}{tag}{SUFFIXES.get(fmt, '.onnx')}"


def quant_report_path(output: PathLike) -> Path:
    """Where :func:`export` saves the INT8 quantization report of ``output``: ``<stem>.quant.json`` beside it."""
    from edge_detect.deploy.quantize.report import report_path_for

    return report_path_for(output)


def read_quant_report(output: PathLike) -> Optional[Dict[str, Any]]:
    """The quantization report of the model ``output`` (see :func:`quant_report_path`), ``None`` if there is none.

    Its ``map`` / ``map_fp32`` entries hold the INT8 and FP32 ``map50_95`` / ``map50`` when they were measured.
    """
    from edge_detect.deploy.quantize.report import read_report

    return read_report(quant_report_path(output))


def export(weights: PathLike, output: Optional[PathLike] = None, options: Optional[ExportOptions] = None, *,
           progress: bool = True, **fields: Any) -> Path:
    """Export checkpoint ``weights`` to ONNX or a TensorRT engine, running the stages in the module-doc order.

    Args:
        weights: a ``.pt`` file or a manifest name (``"yolov5n"``; resolved offline, see
            :func:`edge_detect.weights.resolve_weights`).
        output: the file to write (default :func:`default_output`: ``<stem>[-int8|-fp16].<onnx|engine>`` in
            the current folder; ``-dynamic`` added for dynamic exports). Parent folders are created.
        options: an :class:`ExportOptions`; ``fields`` (the same names, e.g. ``int8=True, calib="d.yaml"``)
            override it, so ``export("yolov5n.pt", imgsz=320)`` works without building one.
        progress: tqdm progress bars.

    Returns:
        the path of the written file (for an engine, its metadata sidecar ``<output>.json`` is beside it; for
        OpenVINO the ``.xml``, with its ``.bin`` beside it; for Triton the model's folder ``<output>/<name>``).

    Raises:
        ConfigError: invalid or contradictory options (unknown option names included).
        ModelError / ModelLoadError: missing or unreadable checkpoint; failed engine build.
        MissingDependencyError: the extra a stage needs is not installed (``build`` for the ONNX export,
            ``onnx`` for the graph stages, ``tensorrt`` for engines).
    """
    from edge_detect.weights import resolve_weights

    opts = (options or ExportOptions()).replace(**fields) if fields else (options or ExportOptions())
    src = resolve_weights(weights)
    if output is not None and opts.format == "openvino" and Path(output).suffix.lower() != ".xml":
        raise ConfigError(f"output: expected a .xml path for format openvino, got {output}")
    if output is not None and opts.format == "triton" and Path(output).is_file():
        raise ConfigError(f"output: expected a model repository folder for format triton, got the file {output}")
    out = Path(output) if output is not None else default_output(src, opts.format, opts.half, opts.int8,
                                                                 opts.dynamic)
    with tempfile.TemporaryDirectory(prefix="edge-detect-export-") as tmp:
        final = _run_stages(src, out, opts, Path(tmp), progress)
        report = Path(tmp) / _REPORT
        if report.is_file():  # moved beside the output only once every stage succeeded
            from edge_detect.deploy.quantize.report import update_report

            # the FP32 ONNX it was quantized from and the INT8 ONNX are intermediates, deleted with the folder
            update_report(report, output=str(final.resolve()), fp32_model=None, weights=str(src.resolve()))
            shutil.move(str(report), str(quant_report_path(final)))
    return final


def _onnx_exporter() -> Any:
    """PyTorch's ONNX export when torch is installed (it also exports ultralytics checkpoints), else the torch-free
    one (:func:`edge_detect.deploy.onnx_yolov5.export_onnx_torch_free`, official and edge-detect YOLOv5 .pt)."""
    try:
        from edge_detect.training.export import export_onnx

        return export_onnx
    except ImportError as exc:  # torch (or torchvision) not installed
        LOGGER.info("PyTorch not available (%s): exporting with the torch-free exporter", exc)
    from edge_detect.deploy.onnx_yolov5 import export_onnx_torch_free

    return export_onnx_torch_free


def _run_stages(weights: Path, output: Path, opts: ExportOptions, workdir: Path, progress: bool) -> Path:
    if opts.format != "triton":
        return _model_stages(weights, output, opts, workdir, progress)[0]
    from edge_detect.deploy.triton_repo import write_repository

    fmt = opts.model_format
    model, described_by = _model_stages(weights, workdir / "triton" / f"model{SUFFIXES[fmt]}", opts, workdir,
                                        progress)
    files = [model, model.with_suffix(".bin")] if fmt == "openvino" else [model]
    return write_repository(files, output, io_onnx=described_by, name=opts.triton_name or weights.stem, kind=fmt,
                            max_batch_size=opts.triton_max_batch, queue_delay_us=opts.triton_queue_delay_us,
                            instances=opts.triton_instances, device=opts.triton_device)


def _model_stages(weights: Path, output: Path, opts: ExportOptions, workdir: Path,
                  progress: bool) -> Tuple[Path, Path]:
    """Run the model stages into ``output``; returns it and the last ONNX of the chain (which describes its
    inputs, outputs and metadata)."""
    export_onnx = _onnx_exporter()

    fmt = opts.model_format
    batch = opts.triton_max_batch if opts.format == "triton" else opts.batch
    extra_stages = opts.int8 or opts.uint8_input or opts.nms or fmt != "onnx"
    current = export_onnx(weights, workdir / "fp32.onnx" if extra_stages else output, imgsz=opts.imgsz,
                          batch=batch, dynamic=opts.dynamic, opset=opts.opset,
                          half=opts.half and fmt == "onnx", simplify=opts.simplify, progress=progress,
                          force_imgsz=opts.force_imgsz, trust_checkpoint=opts.trust_checkpoint)
    if fmt == "openvino" and opts.int8:
        from edge_detect.deploy.openvino import quantize_openvino

        output.parent.mkdir(parents=True, exist_ok=True)
        return Path(quantize_openvino(current, output, calib=opts.calib, num_images=opts.calib_images,
                                      exclude=opts.int8_exclude, preset=opts.nncf_preset,
                                      range_estimator=opts.nncf_ranges,
                                      sensitivity=opts.sensitivity, val_data=opts.int8_val_data,
                                      report_path=workdir / _REPORT, progress=progress)), Path(current)
    if opts.int8:
        from edge_detect.deploy.quantize import quantize_int8

        current = quantize_int8(current, workdir / "int8.onnx", calib=opts.calib, num_images=opts.calib_images,
                                method=opts.calib_method, exclude=opts.int8_exclude, sensitivity=opts.sensitivity,
                                val_data=opts.int8_val_data, compare_fp32=opts.compare_fp32,
                                report_path=workdir / _REPORT, progress=progress)
    if opts.uint8_input:
        from edge_detect.deploy.graph import add_uint8_input

        current = add_uint8_input(current, workdir / "uint8.onnx")
    if opts.nms:
        from edge_detect.deploy.graph import add_nms

        from edge_detect.deploy.tensorrt_build import engine_nms_plugin  # inms from TensorRT 10.12 (issue 20)

        plugin = opts.nms_plugin or (engine_nms_plugin() if fmt == "engine" else "onnx")
        current = add_nms(current, workdir / "nms.onnx", conf=opts.nms_conf, iou=opts.nms_iou,
                          max_det=opts.max_det, plugin=plugin)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "engine":
        from edge_detect.deploy.tensorrt_build import build_engine

        return Path(build_engine(current, output, fp16=opts.half, int8=opts.int8, workspace_gb=opts.workspace_gb,
                                 dla=opts.dla, timing_cache=opts.timing_cache,
                                 dynamic=True if opts.dynamic else None, progress=progress)), Path(current)
    if fmt == "openvino":
        from edge_detect.deploy.openvino import convert_to_ir

        return Path(convert_to_ir(current, output, half=opts.half)), Path(current)
    if Path(current) != output:
        shutil.move(str(current), str(output))
    return output, output
