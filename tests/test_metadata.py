import pytest

from edge_detect.errors import ModelLoadError
from edge_detect.metadata import METADATA_KEY, ModelMetadata


def test_round_trip_json():
    m = ModelMetadata(names=["a", "b"], imgsz=(384, 640), dynamic=True, precision="int8",
                      quantization={"method": "percentile"}, versions={"onnx": "1.0"})
    back = ModelMetadata.from_json(m.to_json())
    assert back == m and back.nc == 2 and back.imgsz == (384, 640)


def test_from_onnx_props_ours_and_ultralytics():
    m = ModelMetadata(names=["x"])
    assert ModelMetadata.from_onnx_props({METADATA_KEY: m.to_json()}) == m
    u = ModelMetadata.from_onnx_props({"names": "{0: 'person', 1: 'car'}", "stride": "32", "imgsz": "[640, 640]"})
    assert u.names == ("person", "car") and u.stride == 32
    assert ModelMetadata.from_onnx_props({}) is None


def test_unknown_keys_kept_in_extra():
    m = ModelMetadata.from_dict({"names": ["a"], "future_field": 3})
    assert m.extra["future_field"] == 3


@pytest.mark.parametrize(
    "d, message",
    [
        ({"names": ["a"], "output_layout": "boxes"}, "output_layout: expected one of"),
        ({"names": ["a"], "precision": "int4"}, "precision: expected one of"),
        ({"names": ["a"], "imgsz": [0, 640]}, "imgsz: expected (h, w) > 0"),
        ({"imgsz": [640, 640]}, "at least 'names'"),
    ],
)
def test_invalid_metadata(d, message):
    with pytest.raises(ModelLoadError) as err:
        ModelMetadata.from_dict(d)
    assert message in str(err.value)


def test_not_json():
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        ModelMetadata.from_json("{names: [")


# ----------------------------------------------------------------------------------- head type / ultralytics ONNX
_ULTRA = {"task": "detect", "names": "{0: 'person', 1: 'car'}", "stride": "32", "imgsz": "[320, 480]",
          "batch": "2", "end2end": "False", "version": "8.4.0",
          "args": "{'batch': 2, 'half': False, 'dynamic': True, 'nms': False}"}


def test_head_defaults_to_yolov5_for_files_without_it():
    old = {k: v for k, v in ModelMetadata(names=["a"]).to_dict().items() if k != "head"}
    assert "head" not in old
    assert ModelMetadata.from_dict(old).head == "yolov5"
    m = ModelMetadata(names=["a"], head="anchor_free")
    assert ModelMetadata.from_json(m.to_json()).head == "anchor_free"


def test_ultralytics_props_give_an_anchor_free_raw_model():
    m = ModelMetadata.from_onnx_props(_ULTRA)
    assert m.head == "anchor_free" and m.output_layout == "raw"
    assert m.names == ("person", "car") and m.imgsz == (320, 480) and m.batch == 2 and m.dynamic
    assert m.precision == "fp32" and m.versions["ultralytics"] == "8.4.0"
    # our own key wins over ultralytics' keys in the same file
    ours = ModelMetadata(names=["x"], head="anchor_free")
    assert ModelMetadata.from_onnx_props({**_ULTRA, METADATA_KEY: ours.to_json()}) == ours


@pytest.mark.parametrize("changes, message", [
    ({"task": "segment"}, "expected 'detect', got 'segment'"),
    ({"task": "pose"}, "expected 'detect', got 'pose'"),
    ({"task": "obb"}, "expected 'detect', got 'obb'"),
    ({"task": "classify"}, "expected 'detect', got 'classify'"),
    ({"end2end": "True"}, "end2end: expected False"),
    ({"args": "{'nms': True}"}, "args.nms: expected False"),
    ({"names": "__import__('os').system('echo pwned')"}, "'names': expected a Python literal"),
    ({"names": "{0: 'a'} if True else 1"}, "'names': expected a Python literal"),
    ({"names": "[]"}, "names: expected a dict or list of class names"),
    ({"imgsz": "open('/etc/passwd')"}, "'imgsz': expected a Python literal"),
])
def test_ultralytics_props_refused(changes, message):
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelMetadata.from_onnx_props({**_ULTRA, **changes})


def test_unknown_head_refused():
    with pytest.raises(ModelLoadError, match="head: expected one of"):
        ModelMetadata(names=["a"], head="yolox")
