import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from edge_detect.config import check_thresholds, from_mapping, load_config, override, parse_imgsz
from edge_detect.errors import ConfigError


@dataclass(frozen=True)
class Capture:
    width: int = 640
    fps: Optional[float] = None


@dataclass(frozen=True)
class Cfg:
    conf: float = 0.25
    classes: Tuple[str, ...] = ()
    show: bool = False
    capture: Capture = field(default_factory=Capture)


def test_load_nested_and_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("conf: 0.4\nclasses: [person, car]\ncapture:\n  fps: 30\n")
    cfg = load_config(p, Cfg)
    assert cfg == Cfg(conf=0.4, classes=("person", "car"), capture=Capture(fps=30.0))
    cfg2 = override(cfg, {"conf": 0.5, "show": None, "capture.width": 1280})
    assert cfg2.conf == 0.5 and cfg2.show is False and cfg2.capture.width == 1280
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'conf'"):
        cfg2.conf = 1.0  # frozen
    assert cfg2.conf == 0.5


@pytest.mark.parametrize(
    "data, message",
    [
        ({"cnof": 0.3}, "unknown key 'cnof' (did you mean 'conf'?)"),
        ({"capture": {"widht": 3}}, "config.capture: unknown key 'widht' (did you mean 'width'?)"),
        ({"conf": "high"}, "config.conf: expected a number, got 'high'"),
        ({"show": "yes"}, "config.show: expected true/false, got 'yes'"),
        ({"capture": {"width": 2.5}}, "config.capture.width: expected an integer, got 2.5"),
        ([1, 2], "expected a mapping at the top level"),
    ],
)
def test_rejects_bad_config_with_suggestion(data, message):
    with pytest.raises(ConfigError) as err:
        from_mapping(data, Cfg)
    assert message in str(err.value)


def test_override_unknown_option():
    with pytest.raises(ConfigError, match="did you mean 'conf'"):
        override(Cfg(), {"cof": 1})


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", Cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("conf: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad, Cfg)


@pytest.mark.parametrize("value, expected", [
    (640, (640, 640)), ("640", (640, 640)), ([640], (640, 640)), ("384x640", (384, 640)), ("384,640", (384, 640)),
    (" 320X480 ", (320, 480)), ((256, 320), (256, 320)), (["384", "640"], (384, 640)), ((320.0,), (320, 320)),
])
def test_parse_imgsz(value, expected):
    assert parse_imgsz(value) == expected


@pytest.mark.parametrize("value, shown", [
    ("", "''"), ("640x", "'640x'"), ("1x2x3", "'1x2x3'"), (-640, "-640"), ((0,), "[0]"), ((1, 2, 3), "[1, 2, 3]"),
    (6.4, "6.4"), ((320.5, 320), "[320.5, 320]"), (True, "True"), ("640x0", "'640x0'"),
])
def test_parse_imgsz_rejects(value, shown):
    with pytest.raises(ConfigError) as err:
        parse_imgsz(value, name="--imgsz")
    assert str(err.value) == f"--imgsz: expected 'S' or 'HxW' (one or two positive integers), got {shown}"


@pytest.mark.parametrize("kwargs, message", [
    (dict(conf=1.5), "conf: expected a value in [0, 1], got 1.5"),
    (dict(iou=-0.1), "iou: expected a value in [0, 1], got -0.1"),
    (dict(conf="high"), "conf: expected a value in [0, 1], got 'high'"),
    (dict(max_det=0), "max_det: expected >= 1, got 0"),
    (dict(conf=2, names=("nms_conf", "nms_iou", "k")), "nms_conf: expected a value in [0, 1], got 2"),
])
def test_check_thresholds(kwargs, message):
    with pytest.raises(ConfigError) as err:
        check_thresholds(**kwargs)
    assert str(err.value) == message


def test_check_thresholds_accepts_bounds_and_none():
    check_thresholds(0.0, 1.0, 1)
    check_thresholds(None, None, None)
