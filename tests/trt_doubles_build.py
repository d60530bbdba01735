"""Build side of the TensorRT double (see :mod:`trt_doubles`): ONNX parser, network, builder config, builder.

* :class:`OnnxParser` imports an ONNX file the way onnx-tensorrt does for the operators edge-detect's graphs use:
  each operator is checked against the support matrix of the release (``tests/trt_surfaces.json``,
  ``onnx_operators``: supported types, initializer-only inputs, TopK's K limit, the UINT8 Cast rule, INT64 cast
  down to INT32 before TensorRT 10); layers are named after their node (``node_of_<output>`` for an unnamed one),
  made unique with ``_<n>``, and helper layers the importer adds have its names (``ONNXTRT_castHelper``...) or
  TensorRT's default ones (``(Unnamed Layer* 12) [Shuffle]``); ``NonMaxSuppression`` becomes a transpose, an NMS
  layer with INT32 indices and, from TensorRT 10, a cast helper to INT64; plugin ops need registered plugins;
  TensorRT < 10 needs an explicit-batch network.
* :class:`Builder` validates what TensorRT validates before building: precision flags or per-layer precisions on
  a strongly typed network, an optimization profile for every dynamic input, the DLA core against the device's
  DLA cores, hardware compatibility (not on integrated GPUs, Ampere+ only), INT8 without a calibrator or Q/DQ
  layers. It runs INT8 calibrators the way TensorRT's Python wrapper does (exceptions raised in ``get_batch`` /
  the cache callbacks are printed and treated as "no more data") and records each layer's effective precision
  (FP16 where allowed unless pinned by a precision constraint), so FP16 pinning is testable.
* :class:`IBuilderConfig` timing caches: ``create_timing_cache`` returns ``None`` for bytes that are no timing
  cache (as the C++ API's ``nullptr``); ``set_timing_cache(None, ...)`` raises like pybind11; a cache of another
  TensorRT version is refused (``False``) unless ``ignore_mismatch``.
"""
from __future__ import annotations

import json
import sys
import warnings
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from trt_doubles import PLUGIN_OPS, _vkey, log, nearest_release, surfaces

__all__ = ["builder_classes", "onnx_support", "LAYER_TYPES"]

_FLOAT_TYPES = {"FLOAT", "HALF", "BF16"}
# ONNX elem type -> TensorRT DataType name; matrix type names -> DataType names
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 7: "INT64", 6: "INT32", 9: "BOOL", 2: "UINT8", 3: "INT8"}
_MATRIX = {"FP32": "FLOAT", "FP16": "HALF", "BF16": "BF16", "INT32": "INT32", "INT64": "INT64", "INT8": "INT8",
           "UINT8": "UINT8", "BOOL": "BOOL", "FP8": "FP8", "INT4": "INT4"}
# onnx op -> TensorRT layer type (the main layer of the importer)
LAYER_TYPES = {"Conv": "CONVOLUTION", "Identity": "IDENTITY", "Cast": "CAST", "Add": "ELEMENTWISE",
               "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Equal": "ELEMENTWISE",
               "Min": "ELEMENTWISE", "Max": "ELEMENTWISE", "Pow": "ELEMENTWISE", "Less": "ELEMENTWISE",
               "Greater": "ELEMENTWISE", "Where": "SELECT", "ReduceMax": "REDUCE", "ReduceSum": "REDUCE",
               "ArgMax": "TOPK", "TopK": "TOPK", "Transpose": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Squeeze": "SHUFFLE",
               "Reshape": "SHUFFLE", "Slice": "SLICE", "Split": "SLICE", "Expand": "SLICE", "Tile": "SLICE",
               "Concat": "CONCATENATION", "Gather": "GATHER", "GatherND": "GATHER", "GatherElements": "GATHER",
               "Shape": "SHAPE", "Range": "FILL", "ConstantOfShape": "FILL", "CumSum": "CUMULATIVE",
               "ScatterND": "SCATTER", "NonMaxSuppression": "NMS", "QuantizeLinear": "QUANTIZE",
               "DequantizeLinear": "DEQUANTIZE", "Sigmoid": "ACTIVATION", "Resize": "RESIZE", "MaxPool": "POOLING",
               "Softmax": "SOFTMAX", "Not": "UNARY"}
_WEIGHT_INPUTS = {"Conv": (1, 2)}  # inputs consumed as weights (no constant layer)


def onnx_support(version: str) -> Tuple[str, Dict[str, Any]]:
    """``(matrix release, {op: {"supported", "types", "restrictions"}})`` for TensorRT ``version``."""
    data = surfaces()["onnx_operators"]["versions"]
    release = nearest_release(version, list(data))
    return release, data[release]


class _ParseError(Exception):
    pass


class ParserError:
    """What ``OnnxParser.get_error`` returns (``str()`` is the message, as the real IParserError prints)."""

    def __init__(self, node: int, op: str, msg: str) -> None:
        self._node, self._op, self._msg = node, op, msg

    def desc(self) -> str:
        return self._msg

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return f"In node {self._node} with name: {self._op}: {self._msg}"


# ------------------------------------------------------------------------------------------------ importer
class _Importer:
    """Turns the nodes of an ONNX model into layers of a network double, onnx-tensorrt style."""

    def __init__(self, trt: Any, state: Any, network: Any, model: Any) -> None:
        import onnx

        self.trt, self.state, self.net, self.onnx = trt, state, network, onnx
        self.v10 = _vkey(trt.__version__) >= (10,)
        self.release, self.matrix = onnx_support(trt.__version__)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input,
                                                                     *model.graph.output]}
        self.types.update({i.name: i.data_type for i in model.graph.initializer})
        self.tensors: Dict[str, Any] = {}
        self.names: Set[str] = set()
        self.suffix = 0

    # -- naming, tensors, layers
    def unique(self, base: str) -> str:
        name = base
        while name in self.names:
            name = f"{base}_{self.suffix}"
            self.suffix += 1
        self.names.add(name)
        return name

    def dtype(self, onnx_name: str) -> str:
        t = _ONNX_TO_TRT.get(self.types.get(onnx_name, 1), "FLOAT")
        return "INT32" if t == "INT64" and not self.v10 else t  # TensorRT 8 casts INT64 down to INT32

    def tensor(self, name: str) -> Any:
        if name not in self.tensors:
            if name not in self.inits:
                raise _ParseError(f"tensor '{name}' is used before it is produced")
            self.add_layer(name, "CONSTANT", [], [name])  # IConstantLayer named after the weights
        return self.tensors[name]

    def new_tensor(self, name: str, dtype: str) -> Any:
        t = self.trt.ITensor(name, self.trt.DataType[dtype])
        self.tensors[name] = t
        return t

    def add_layer(self, base: Optional[str], kind: str, inputs: List[Any], outputs: List[Optional[str]],
                  dtypes: Optional[List[str]] = None, op: str = "") -> Any:
        """A layer named ``base`` (made unique), or TensorRT's default name when ``base`` is ``None``."""
        kind = kind if kind in self.trt.LayerType.__members__ else "PLUGIN_V2" if kind == "PLUGIN" else "IDENTITY"
        index = len(self.net._d_layers)
        default = f"(Unnamed Layer* {index}) [{kind.title().replace('_', '')}]"  # TensorRT's own naming
        name = default if base is None else self.unique(base)
        outs = [self.new_tensor(o if o is not None else f"{default}_output" + (f"_{i}" if i else ""),
                                (dtypes or [None] * len(outputs))[i] or self.dtype(o or ""))
                for i, o in enumerate(outputs)]
        layer = self.trt.ILayer(name, self.trt.LayerType[kind], list(inputs), outs, self.net)
        layer._d_op = op
        self.net._d_layers.append(layer)
        return layer

    # -- support matrix
    def check_types(self, node: Any) -> None:
        row = self.matrix.get(node.op_type)
        if row is None or not row["supported"]:
            raise _ParseError(f"No importer registered for op: {node.op_type}. Attempting to import as plugin. "
                              "... Plugin not found, are the plugin name, version, and namespace correct?")
        allowed = {_MATRIX.get(t, t) for t in row["types"]}
        data = [n for n in node.input[:1] if n]
        got = self.dtype(data[0]) if data else None
        if node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            got = _ONNX_TO_TRT.get(value.data_type, "FLOAT") if value is not None else "FLOAT"
        if node.op_type == "Cast":
            self.check_cast(node, got)
            allowed.add("UINT8")  # the importer's UINT8 rule decides (check_cast)
        if got is not None and got not in allowed:
            raise _ParseError(f"{node.op_type}: input type {got} is not supported (expected one of "
                              f"{sorted(allowed)}; onnx-tensorrt {self.release} support matrix)")
        self.check_restrictions(node, row["restrictions"])

    def check_cast(self, node: Any, src: Optional[str]) -> None:
        to = _ONNX_TO_TRT.get(next(a.i for a in node.attribute if a.name == "to"), "FLOAT")
        if "UINT8" in (src, to) and ({src, to} - {"UINT8"}) - {"FLOAT", "HALF"}:
            raise _ParseError(f"Cast: UINT8 can only be cast to or from FP32/FP16, got {src} -> {to}")

    def check_restrictions(self, node: Any, restrictions: str) -> None:
        text = restrictions.lower()
        if node.op_type == "CumSum" and "initializer" in text and node.input[1] not in self.inits:
            raise _ParseError("CumSum: `axis` must be an initializer")
        if node.op_type == "TopK" and len(node.input) > 1:
            k = self.inits.get(node.input[1])
            if "k` input must be an initializer" in text and k is None:
                raise _ParseError("TopK: `K` input must be an initializer")
            if k is not None and int(self.onnx.numpy_helper.to_array(k).reshape(-1)[0]) > 3840:
                raise _ParseError("TopK: K must be at most 3840 (ITopKLayer)")

    # -- nodes
    def import_node(self, node: Any) -> None:
        name = node.name or f"node_of_{node.output[0]}"
        if node.op_type in PLUGIN_OPS or node.domain == "TRT":
            if not self.state.plugins_registered:
                raise _ParseError(f"No importer registered for op: {node.op_type}. Attempting to import as plugin. "
                                  "... Plugin not found, are the plugin name, version, and namespace correct?")
            self.add_layer(name, "PLUGIN_V2", [self.tensor(n) for n in node.input if n], list(node.output),
                           op=node.op_type)
            return
        self.check_types(node)
        skip = _WEIGHT_INPUTS.get(node.op_type, ())
        ins = [self.tensor(n) for i, n in enumerate(node.input) if n and i not in skip]
        if node.op_type == "NonMaxSuppression":
            self.import_nms(name, node, ins)
            return
        kind = "IDENTITY" if node.op_type == "Cast" and "CAST" not in self.trt.LayerType.__members__ \
            else LAYER_TYPES.get(node.op_type, "IDENTITY")
        if kind == "CUMULATIVE" and kind not in self.trt.LayerType.__members__:
            kind = "LOOP"  # onnx-tensorrt before ICumulativeLayer: a loop
        self.add_layer(name, kind, ins, list(node.output), op=node.op_type)

    def import_nms(self, name: str, node: Any, ins: List[Any]) -> None:
        scores = self.add_layer(name, "SHUFFLE", [ins[1]], [None], ["FLOAT"])  # transpose of the scores
        limit = self.add_layer("ONNXTRT_convertToScalar", "SHUFFLE", ins[2:3], [None], ["INT32"])
        nms_ins = [ins[0], scores.get_output(0), limit.get_output(0), *ins[3:]]
        out = node.output[0]
        if not self.v10:
            self.add_layer(name, "NMS", nms_ins, [out], ["INT32"], op="NonMaxSuppression")
            return
        nms = self.add_layer(name, "NMS", nms_ins, [None], ["INT32"], op="NonMaxSuppression")
        self.add_layer("ONNXTRT_castHelper", "CAST", [nms.get_output(0)], [out], ["INT64"])


# ------------------------------------------------------------------------------------------------ classes
def builder_classes(trt: Any, state: Any) -> Dict[str, type]:
    """The build-side double classes of ``trt`` (a generated module), keyed by TensorRT class name."""
    classes = _graph_classes(trt, state)
    classes.update(_config_classes(trt, state))
    classes["OnnxParser"] = _parser_class(trt, state)
    classes["Builder"] = _builder_class(trt, state)
    return classes


def _deprecated(trt: Any, since: Tuple[int, int], what: str) -> None:
    if _vkey(trt.__version__) >= since:
        warnings.warn(f"{what}: Deprecated in TensorRT {since[0]}.{since[1]}. Superseded by strong typing.",
                      DeprecationWarning, stacklevel=3)


def _graph_classes(trt: Any, state: Any) -> Dict[str, type]:
    class ITensor(trt.ITensor):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, name: str, dtype: Any, shape: Tuple[int, ...] = ()) -> None:
            self.name, self._d_dtype, self._d_shape = name, dtype, tuple(shape)

        @property
        def dtype(self) -> Any:
            return self._d_dtype

        @property
        def shape(self) -> Tuple[int, ...]:
            return self._d_shape

    class ILayer(trt.ILayer):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, name: str, kind: Any, inputs: List[Any], outputs: List[Any], network: Any) -> None:
            self._d_type, self._d_inputs, self._d_outputs, self._d_net = kind, inputs, outputs, network
            self._d_output_types: Dict[int, Any] = {}
            self._d_precision: Optional[Any] = None
            self.name = name

        @property
        def type(self) -> Any:
            return self._d_type

        @property
        def num_inputs(self) -> int:
            return len(self._d_inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._d_outputs)

        def get_input(self, index: int) -> Any:
            return self._d_inputs[index]

        def get_output(self, index: int) -> Any:
            return self._d_outputs[index]

        def _d_check_weak(self, what: str) -> None:
            _deprecated(trt, (10, 12), f"ILayer.{what}")
            if self._d_net._d_strongly_typed:
                self._d_net._d_misuse.append(f"{self.name}: {what} on a strongly typed network")
                log(trt, None, "ERROR", f"Error Code 3: API Usage Error ({self.name}: setting {what} is not allowed "
                                        "on a strongly typed network)")

        @property
        def precision(self) -> Any:
            return self._d_precision if self._d_precision is not None else trt.float32

        @precision.setter
        def precision(self, dtype: Any) -> None:
            self._d_check_weak("precision")
            self._d_precision = dtype

        @property
        def precision_is_set(self) -> bool:
            return self._d_precision is not None

        def set_output_type(self, index: int, dtype: Any) -> None:
            self._d_check_weak("set_output_type")
            self._d_output_types[index] = dtype

        def get_output_type(self, index: int) -> Any:
            return self._d_output_types.get(index, self._d_outputs[index].dtype)

        def output_type_is_set(self, index: int) -> bool:
            return index in self._d_output_types

    return {"ITensor": ITensor, "ILayer": ILayer, "INetworkDefinition": _network_class(trt)}


def _network_class(trt: Any) -> type:
    class INetworkDefinition(trt.INetworkDefinition):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, flags: int) -> None:
            kinds = trt.NetworkDefinitionCreationFlag
            self._d_flags, self._d_layers, self._d_inputs, self._d_outputs = flags, [], [], []
            strong = "STRONGLY_TYPED" in kinds.__members__ and flags & (1 << int(kinds.STRONGLY_TYPED))
            self._d_strongly_typed = bool(strong) or _vkey(trt.__version__) >= (11,)
            self._d_explicit_batch = _vkey(trt.__version__) >= (10,) or bool(
                flags & (1 << int(kinds.EXPLICIT_BATCH)))
            self._d_misuse: List[str] = []
            self._d_source: Optional[str] = None  # the ONNX file parsed into it

        @property
        def flags(self) -> int:
            return self._d_flags

        def get_flag(self, flag: Any) -> bool:
            return bool(self._d_flags & (1 << int(flag)))

        @property
        def num_layers(self) -> int:
            return len(self._d_layers)

        def get_layer(self, index: int) -> Any:
            return self._d_layers[index]

        @property
        def num_inputs(self) -> int:
            return len(self._d_inputs)

        def get_input(self, index: int) -> Any:
            return self._d_inputs[index]

        @property
        def num_outputs(self) -> int:
            return len(self._d_outputs)

        def get_output(self, index: int) -> Any:
            return self._d_outputs[index]

        def mark_output(self, tensor: Any) -> None:
            self._d_outputs.append(tensor)

    return INetworkDefinition


def _parser_class(trt: Any, state: Any) -> type:
    class OnnxParser(trt.OnnxParser):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, network: Any, logger: Any) -> None:
            self._d_network, self._d_logger, self._d_errors = network, logger, []

        @property
        def num_errors(self) -> int:
            return len(self._d_errors)

        def get_error(self, index: int) -> Any:
            return self._d_errors[index]

        def clear_errors(self) -> None:
            self._d_errors.clear()

        def parse_from_file(self, model: str) -> bool:
            import onnx

            net = self._d_network
            if not net._d_explicit_batch:
                self._d_errors.append(ParserError(-1, "", "Network must have the explicit batch flag set "
                                                          "(onnx-tensorrt needs an explicit-batch network)"))
                return False
            m = onnx.shape_inference.infer_shapes(onnx.load(model))
            net._d_source = str(model)
            imp = _Importer(trt, state, net, m)
            for inp in m.graph.input:
                if inp.name in imp.inits:
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim)
                tensor = trt.ITensor(inp.name, trt.DataType[imp.dtype(inp.name)], dims)
                imp.tensors[inp.name] = tensor
                net._d_inputs.append(tensor)
            for i, node in enumerate(m.graph.node):
                try:
                    imp.import_node(node)
                except _ParseError as exc:
                    self._d_errors.append(ParserError(i, node.name or node.op_type, str(exc)))
                    log(trt, self._d_logger, "ERROR", f"ModelImporter.cpp: {exc}")
                    return False
            for out in m.graph.output:
                tensor = imp.tensors[out.name]
                tensor._d_shape = tuple(d.dim_value if d.HasField("dim_value") else -1
                                        for d in out.type.tensor_type.shape.dim)
                net.mark_output(tensor)
            return True

    return OnnxParser


# ------------------------------------------------------------------------------------------------ config
def _config_classes(trt: Any, state: Any) -> Dict[str, type]:
    version = trt.__version__

    class ITimingCache(trt.ITimingCache):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, data: bytes) -> None:
            self._d_data = data or f"TRT-{version}-timing".encode()

        def serialize(self) -> Any:
            return self._d_data

    class IOptimizationProfile(trt.IOptimizationProfile):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self) -> None:
            self._d_shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
            shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
            for which, shape in zip(("min", "opt", "max"), shapes):
                if len(shape) != len(shapes[0]) or any(d < 0 for d in shape) or not all(
                        a <= b <= c for a, b, c in zip(*shapes)):
                    raise RuntimeError(f"Shape provided for {which} is inconsistent with other shapes.")
            self._d_shapes[input] = shapes

        def get_shape(self, input: str) -> List[Tuple[int, ...]]:  # noqa: A002
            return list(self._d_shapes.get(input, ()))

        def __bool__(self) -> bool:
            return bool(self._d_shapes)

    return {"ITimingCache": ITimingCache, "IOptimizationProfile": IOptimizationProfile,
            "IBuilderConfig": _builder_config_class(trt, state)}


def _builder_config_class(trt: Any, state: Any) -> type:
    version = trt.__version__

    class IBuilderConfig(trt.IBuilderConfig):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self) -> None:
            self._d_flags: Set[str] = set()
            self._d_pools: Dict[str, int] = {}
            self._d_timing, self._d_profiles, self._d_calibration_profile = None, [], None
            self._d_calibrator = None
            self._d_init(progress_monitor=None, DLA_core=-1, default_device_type=trt.DeviceType.GPU)
            if "hardware_compatibility_level" in type(self)._stub_members:
                self._d_init(hardware_compatibility_level=trt.HardwareCompatibilityLevel.NONE)

        def set_flag(self, flag: Any) -> None:
            self._d_flags.add(trt.BuilderFlag(int(flag)).name)

        def clear_flag(self, flag: Any) -> None:
            self._d_flags.discard(trt.BuilderFlag(int(flag)).name)

        def get_flag(self, flag: Any) -> bool:
            return trt.BuilderFlag(int(flag)).name in self._d_flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self._d_pools[trt.MemoryPoolType(int(pool)).name] = int(pool_size)

        @property
        def int8_calibrator(self) -> Any:
            _calibrator_deprecated(trt)
            return self._d_calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, calibrator: Any) -> None:
            _calibrator_deprecated(trt)
            self._d_calibrator = calibrator

        def set_calibration_profile(self, profile: Any) -> bool:
            _calibrator_deprecated(trt)
            self._d_calibration_profile = profile
            return bool(profile)

        def add_optimization_profile(self, profile: Any) -> int:
            if not profile:
                return -1
            self._d_profiles.append(profile)
            return len(self._d_profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._d_profiles)

        def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
            data = bytes(serialized_timing_cache)
            if data and not data.startswith(b"TRT-"):  # not a timing cache: the C++ API returns nullptr
                log(trt, None, "ERROR", "Error Code 2: Internal Error (Failed to deserialize the timing cache)")
                return None
            return trt.ITimingCache(data)

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            if cache is None:  # pybind11: None for an `ITimingCache const&` argument (reference_cast_error)
                raise RuntimeError("Unable to cast Python instance of type <class 'NoneType'> to C++ type "
                                   "'nvinfer1::ITimingCache'")
            if not cache._d_data.startswith(f"TRT-{version}".encode()) and not ignore_mismatch:
                log(trt, None, "WARNING", "Timing cache was created by another TensorRT version or device")
                return False
            self._d_timing = cache
            return True

        def get_timing_cache(self) -> Any:
            return self._d_timing

    return IBuilderConfig


def _calibrator_deprecated(trt: Any) -> None:
    if _vkey(trt.__version__) >= (10, 1):
        warnings.warn("Deprecated in TensorRT 10.1. Superseded by explicit quantization.", DeprecationWarning,
                      stacklevel=3)


# ------------------------------------------------------------------------------------------------ builder
def _swallowing(state: Any, call: Callable[[], Any], default: Any) -> Any:
    """What TensorRT's Python wrapper does around calibrator callbacks: print and carry on."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - this IS the behaviour being modelled
        state.printed.append(f"{type(exc).__name__}: {exc}")
        print(f"[TensorRT] calibrator callback raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return default


def build_problems(trt: Any, state: Any, network: Any, config: Any) -> List[str]:
    """What TensorRT would refuse about ``network`` + ``config`` before building (empty: it builds)."""
    problems = list(network._d_misuse)
    flags = config._d_flags
    if not network._d_outputs:
        problems.append("Network must have at least one output")
    if network._d_strongly_typed and flags & {"FP16", "INT8", "BF16", "FP8", "INT4"}:
        problems.append(f"Error Code 4: API Usage Error (BuilderFlag {sorted(flags & {'FP16', 'INT8', 'BF16'})} "
                        "is not allowed with a strongly typed network)")
    problems += _profile_problems(network, config)
    device = trt.DeviceType.GPU if not hasattr(config, "default_device_type") else config.default_device_type
    if device == trt.DeviceType.DLA and not 0 <= config.DLA_core < state.dla_cores:
        problems.append(f"Error Code 2: Internal Error (DLA core {config.DLA_core} requested, but the device has "
                        f"{state.dla_cores} DLA cores)")
    level = getattr(config, "hardware_compatibility_level", None)
    if level is not None and level != trt.HardwareCompatibilityLevel.NONE:
        gpu = state.cudart.gpus[state.cudart.current()]
        if gpu["integrated"] or gpu["major"] < 8:
            problems.append(f"Error Code 3: API Usage Error (hardware compatibility level {level.name} is not "
                            f"supported on {gpu['name']} (compute {gpu['major']}.{gpu['minor']}, "
                            f"{'integrated' if gpu['integrated'] else 'discrete'}))")
    qdq = any(layer.type.name in ("QUANTIZE", "DEQUANTIZE") for layer in network._d_layers)
    if "INT8" in flags and config._d_calibrator is None and not qdq:
        problems.append("Error Code 4: Internal Error (Calibration failure occurred with no scaling factors "
                        "detected: INT8 needs a calibrator or Q/DQ layers)")
    return problems


def _profile_problems(network: Any, config: Any) -> List[str]:
    out = []
    for tensor in network._d_inputs:
        if all(d >= 0 for d in tensor.shape):
            continue
        shapes = [p._d_shapes.get(tensor.name) for p in config._d_profiles]
        if not any(shapes):
            out.append(f"Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no optimization "
                       f"profile has been defined for '{tensor.name}')")
            continue
        for s in filter(None, shapes):
            if any(len(x) != len(tensor.shape) or any(t >= 0 and d != t for d, t in zip(x, tensor.shape))
                   for x in s):
                out.append(f"Error Code 4: API Usage Error (optimization profile {s} does not match input "
                           f"'{tensor.name}' {tensor.shape})")
    return out


def effective_precisions(trt: Any, network: Any, config: Any) -> Dict[str, str]:
    """The precision each layer would run in: strong typing = the tensor types; weak typing = FP16 for float
    layers when the FP16 flag is set, unless the layer's precision is set and a precision-constraints flag is."""
    flags = config._d_flags
    constrained = bool(flags & {"PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"})
    out = {}
    for layer in network._d_layers:
        io = [t.dtype.name for t in [*layer._d_inputs, *layer._d_outputs] if t is not None]
        floats = [t for t in io if t in _FLOAT_TYPES]
        if network._d_strongly_typed or not floats:
            out[layer.name] = floats[0] if floats else (io[-1] if io else "FLOAT")
        elif layer._d_precision is not None and constrained:
            out[layer.name] = layer._d_precision.name
        elif "FP16" in flags:
            out[layer.name] = "HALF"
        else:
            out[layer.name] = "FLOAT"
    return out


def _calibrate(trt: Any, state: Any, config: Any) -> int:
    cal, batches = config._d_calibrator, 0
    if cal is None or "INT8" not in config._d_flags:
        return 0
    cache = _swallowing(state, cal.read_calibration_cache, None)
    if not cache:
        while _swallowing(state, lambda: cal.get_batch(["images"]), None) is not None:
            batches += 1
        text = f"TRT-{trt.__version__}-EntropyCalibration2\nbatches: {batches}\n".encode()
        _swallowing(state, lambda: cal.write_calibration_cache(text), None)
    return batches


def _builder_class(trt: Any, state: Any) -> type:
    class Builder(trt.Builder):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, logger: Any) -> None:
            self._d_logger = logger

        @property
        def logger(self) -> Any:
            return self._d_logger

        @property
        def num_DLA_cores(self) -> int:  # noqa: N802
            return state.dla_cores

        def create_network(self, flags: int = 0) -> Any:
            kinds = trt.NetworkDefinitionCreationFlag
            valid = sum(1 << int(f) for f in kinds)
            if int(flags) & ~valid:
                raise ValueError(f"create_network: unknown NetworkDefinitionCreationFlag bits in {flags:#x}")
            deprecated = [name for name, since in (("EXPLICIT_BATCH", (10,)), ("STRONGLY_TYPED", (11,)))
                          if name in kinds.__members__ and flags & (1 << int(kinds[name]))
                          and _vkey(trt.__version__) >= since]
            for name in deprecated:  # NvInfer.h: deprecated and ignored from that release
                log(trt, self._d_logger, "WARNING", f"NetworkDefinitionCreationFlag::k{name} is deprecated and "
                                                    "has no effect")
            return trt.INetworkDefinition(int(flags))

        def create_builder_config(self) -> Any:
            return trt.IBuilderConfig()

        def create_optimization_profile(self) -> Any:
            return trt.IOptimizationProfile()

        def build_serialized_network(self, network: Any, config: Any) -> Any:
            problems = build_problems(trt, state, network, config)
            record = SimpleNamespace(flags=set(config._d_flags), calibration_batches=0, network=network,
                                     config=config, problems=problems, precisions={}, pinned={})
            state.builds.append(record)
            if problems:
                for p in problems:
                    log(trt, self._d_logger, "ERROR", p)
                return None
            record.calibration_batches = _calibrate(trt, state, config)
            record.precisions = effective_precisions(trt, network, config)
            record.pinned = {layer.name: (layer._d_precision, dict(layer._d_output_types))
                             for layer in network._d_layers
                             if layer._d_precision is not None or layer._d_output_types}
            return _engine_desc(trt, state, network, config)

    return Builder


def _engine_desc(trt: Any, state: Any, network: Any, config: Any) -> bytes:
    """The serialized fake engine of a build (what :mod:`trt_doubles`' runtime deserializes)."""
    gpu = state.cudart.gpus[state.cudart.current()] if state.cudart is not None else {"major": 8, "minor": 6}
    inp = network._d_inputs[0]
    profile = [list(inp.shape)] * 3
    for p in config._d_profiles:
        if inp.name in p._d_shapes:
            profile = [list(s) for s in p._d_shapes[inp.name]]
    level = getattr(config, "hardware_compatibility_level", None)
    names = [t.name for t in network._d_outputs]
    desc = {"input": {"name": inp.name, "shape": list(inp.shape), "dtype": {"UINT8": "uint8", "HALF": "float16"}.get(
                inp.dtype.name, "float32"), "profile": profile},
            "layout": "nms" if "num_dets" in names else "raw", "nhwc": inp.dtype.name == "UINT8",
            "tensorrt": trt.__version__, "cc": f"{gpu['major']}.{gpu['minor']}",
            "plugins": sorted({layer._d_op for layer in network._d_layers} & PLUGIN_OPS),
            "version_compatible": "VERSION_COMPATIBLE" in config._d_flags,
            "hardware_compatible": level is not None and level != trt.HardwareCompatibilityLevel.NONE,
            "dla_core": config.DLA_core if getattr(config, "default_device_type", None) == trt.DeviceType.DLA
            else None,
            "onnx": network._d_source,  # the runtime double runs it with ONNX Runtime
            "outputs_spec": [[t.name, t.dtype.name, list(t.shape)] for t in network._d_outputs]}
    return json.dumps(desc).encode()
