"""The pipeline's parts: DetectorLike, transient backend failures (dropped_backend), the gate hook, RunStats'
one definition of dropped."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from edge_detect.detector import Detector, DetectorLike, as_detector_like
from edge_detect.errors import ConfigError, TransientBackendError
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.runstats import RunStats
from edge_detect.stream.sources import open_source
from edge_detect.types import Detections, Frame, Sink


class Fake:
    """Minimal detector: one box per image; batches listed in ``fail`` raise TransientBackendError."""

    names = ("person",)

    def __init__(self, fail=()):
        self.fail, self.calls, self.inferred = set(fail), 0, []

    def preprocess(self, images):
        return np.stack([im[:8, :8] for im in images]), [im.shape[:2] for im in images]

    def infer(self, batch):
        self.calls += 1
        if self.calls in self.fail:
            raise TransientBackendError("server restarting")
        self.inferred.extend(int(v) for v in batch[:, 0, 0, 0])
        return [batch]

    def postprocess(self, outputs, infos):
        return [Detections([[1, 1, 5, 5]], [0.9], [0]) for _ in infos]


class Collect(Sink):
    name = "collect"

    def __init__(self):
        self.results = []

    def write(self, result):
        self.results.append(result)


class Ending:
    """A processor whose finish() says how many frames it saw (shows the chain is finished after drops)."""

    name = "ending"

    def __init__(self):
        self.frames, self.inferred = 0, []

    def update(self, detections, frame):
        self.frames += 1
        self.inferred.append(detections.metadata.get("inferred", True))
        return detections

    def clone(self):
        return Ending()

    def summary(self):
        return {}

    def finish(self, frame):
        return [{"type": "bye", "frames": self.frames}]


@pytest.fixture
def folder(tmp_path):
    for i in range(20):  # frame i is filled with the value i (the fake detector reports what it inferred)
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((16, 16, 3), i, np.uint8))
    return tmp_path


def test_transient_backend_failures_drop_their_batches_and_the_run_goes_on(folder):
    det, sink = Fake(fail=(3, 4, 9)), Collect()
    s = Pipeline([open_source(folder, source_id="imgs")], det, [sink], processors=[Ending()], progress=False).run()
    src = s.sources["imgs"]
    assert (s.processed, src["dropped_backend"], src["dropped"], s.dropped, s.stopped_by) == (17, 3, 3, 3, "end")
    assert [r.frame.index for r in sink.results if not r.final] == [i for i in range(20) if i not in (2, 3, 8)]
    bye = sink.results[-1].events
    assert sink.results[-1].final and [{k: v for k, v in e.items() if k != "id"} for e in bye] == \
        [{"type": "bye", "frames": 17}] and len(bye[0].id) == 32  # published with its id


def test_transient_failure_of_an_async_request_is_dropped_and_released(folder):
    class AsyncFake(Fake):
        max_in_flight = 2

        def __init__(self):
            super().__init__()
            self.live = 0
            self.lock = threading.Lock()

        def infer_async(self, batch):
            fake = self
            with self.lock:
                self.live += 1

            class Handle:
                def wait(self):
                    return fake.infer(batch)

                def release(self):
                    with fake.lock:
                        fake.live -= 1

            return Handle()

    det = AsyncFake()
    det.fail = {5}
    s = Pipeline([open_source(folder, source_id="imgs")], det, [Collect()], progress=False).run()
    assert (s.processed, s.sources["imgs"]["dropped_backend"], det.live) == (19, 1, 0)


def test_gate_hook_skips_the_backend_and_flags_the_frames(folder):
    det, sink, ending = Fake(), Collect(), Ending()
    gate_calls = []

    def even_only(frame: Frame) -> bool:
        gate_calls.append(threading.current_thread().name)
        return frame.index % 2 == 0

    s = Pipeline([open_source(folder, source_id="imgs")], det, [sink], processors=[ending], batch=2,
                 gates={"imgs": even_only}, progress=False).run()
    assert s.processed == 20 and det.inferred == list(range(0, 20, 2))  # odd frames never reached the backend
    frames = [r for r in sink.results if not r.final]
    assert [len(r.detections) for r in frames] == [1, 0] * 10
    assert [r.detections.metadata.get("inferred", True) for r in frames] == [True, False] * 10
    assert all(r.frame.skip_inference == (r.frame.index % 2 == 1) for r in frames)
    assert set(gate_calls) == {"preprocess"} and len(gate_calls) == 20


def test_batches_gated_out_entirely_make_no_backend_call(folder):
    det = Fake()
    s = Pipeline([open_source(folder, source_id="imgs")], det, [Collect()], gates={"imgs": lambda f: False},
                 progress=False).run()
    assert s.processed == 20 and det.calls == 0


def test_a_failing_gate_lets_frames_be_inferred(folder):
    det = Fake()
    s = Pipeline([open_source(folder, source_id="imgs")], det, [Collect()], gates={"imgs": lambda f: 1 / 0},
                 progress=False).run()
    assert s.processed == 20 and det.inferred == list(range(20))


def test_stats_line_and_summary_share_one_dropped():
    class Src:
        source_id, uri, kind, is_live, expected_frames = "cam", "cam", "camera", True, None

        class stats:  # noqa: N801 - stands in for SourceStats
            read, dropped, corrupt, reconnects, empty, decode_cpu_ms = 50, 4, 0, 0, 0, 0.0

            @staticmethod
            def to_dict():
                return {"read": 50, "dropped": 4, "corrupt": 0, "reconnects": 0, "empty": 0, "decode_cpu_ms": 0.0}

    st = RunStats()
    st.start()
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), "cam", i) for i in range(5)]
    st.dropped("dropped_in_pipeline", frames[:2])
    st.dropped("dropped_backend", frames[2:5])
    fig = st.source_figures(Src())
    assert (fig["dropped"], fig["dropped_in_pipeline"], fig["dropped_backend"]) == (9, 2, 3)
    assert "dropped 9," in st.stats_line([Src()])


def test_detector_like_is_what_the_pipeline_takes():
    fake = as_detector_like(Fake())
    assert isinstance(fake, DetectorLike) and (fake.static_batch, fake.max_in_flight, fake.input_device) == (0, 1, "cpu")
    assert fake.buffer_hw((10, 10)) is None and not fake.same_shape_batches
    assert (fake.input_hw, fake.batch_size) == (None, 0)  # unknown: region inference infers whole frames
    assert {"static_batch", "same_shape_batches", "max_in_flight", "buffer_hw", "input_device", "infer_async",
            "batch_size"} <= set(dir(Detector))  # the real Detector is taken as it is (input_hw: set per instance)
    with pytest.raises(ConfigError, match="expected an object with names, preprocess"):
        as_detector_like(object())
