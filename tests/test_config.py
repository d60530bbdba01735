from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from edge_detect.config import from_mapping, load_config, override
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
    with pytest.raises(Exception):
        cfg2.conf = 1.0  # frozen


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
