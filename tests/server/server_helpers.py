"""Fixtures and constants of the server tests: a fake app (``fake_app.py``) served by the real ASGI app and uvicorn.

Not a ``conftest.py``: a second rootless conftest would replace ``tests/conftest.py`` as the module ``conftest``
that other test folders import helpers from. Test modules import what they use from here (fixtures included)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'edge-detect[server]'")
pytest.importorskip("uvicorn", reason="the server extra is not installed: pip install 'edge-detect[server]'")

sys.path.insert(0, str(Path(__file__).parent))

from fake_app import FakeApp  # noqa: E402

from edge_detect.server.settings import ServerSettings  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def two_sources() -> list:
    """cam1: no regions; cam2: a line and a zone that its idle walker keeps crossing."""
    return [{"uri": "fake://cam1", "id": "cam1"},
            {"uri": "rtsp://admin:hunter2@10.0.0.7/stream", "id": "cam2",
             "lines": {"walkway": [0, 150, 100, 150]}, "zones": {"bay": [0, 0, 100, 0, 100, 140, 0, 140]}}]


@pytest.fixture
def fake() -> Iterator[FakeApp]:
    app = FakeApp(two_sources())
    app.start()
    yield app
    app.stop()


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(port=0, api_token=TOKEN)
