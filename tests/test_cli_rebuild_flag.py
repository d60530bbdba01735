"""--rebuild-on-mismatch reaches the TensorRT backend from detect/val/run, and is refused for other models."""
import pytest

from edge_detect import cli
from edge_detect.app_config import AppConfig, build_detector


def test_flag_refused_for_onnx(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used")
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    rc = cli.main(["detect", "--model", str(model), "--source", str(tmp_path), "--rebuild-on-mismatch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--rebuild-on-mismatch: expected a TensorRT engine" in err[0]


@pytest.mark.parametrize("flag, expected", [(True, {"rebuild_on_mismatch": True}), (False, {})])
def test_run_config_passes_flag_to_backend(monkeypatch, flag, expected):
    seen = {}

    class FakeDetector:
        names = ("person",)

        def __init__(self, model, **kwargs):
            seen.update(kwargs)

    import edge_detect.detector as detector_mod

    monkeypatch.setattr(detector_mod, "Detector", FakeDetector)
    build_detector(AppConfig.from_flat(model="m.engine", rebuild_on_mismatch=flag))
    assert {k: v for k, v in seen.items() if k == "rebuild_on_mismatch"} == expected
