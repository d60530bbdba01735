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
