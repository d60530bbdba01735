"""The dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

One page over a fake app with two sources, checked in order: both tiles live and the counters equal to
``GET /counts``; a line drawn with the mouse on cam1's snapshot, saved, counts the scripted walker on the page and
in the API; a source added through the API gets a tile and loses it when deleted, while the other sources' frame
counters keep rising. The page's screenshot is the README's ``docs/dashboard.png`` (rewritten when
``EDGE_DETECT_DOCS_SCREENSHOT=1`` or when missing; always saved under the test's tmp folder).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator

import cv2
import httpx
import numpy as np
import pytest
from server_helpers import AUTH, TOKEN, two_sources
from fake_app import FakeApp

from edge_detect.server.api import create_app
from edge_detect.server.runner import HttpServer
from edge_detect.server.settings import ServerSettings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,820")

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="chromium and chromedriver are not installed "
                                       "(Debian: apt-get install chromium chromium-driver)")


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[SimpleNamespace]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    app = FakeApp(two_sources())
    app.start()
    settings = ServerSettings(port=0, api_token=TOKEN)
    server = HttpServer(create_app(app, settings), settings).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    client = httpx.Client(base_url=server.url, timeout=10)
    try:
        driver.get(f"{server.url}/#token={TOKEN}")
        yield SimpleNamespace(app=app, server=server, driver=driver, client=client,
                              tmp=tmp_path_factory.mktemp("browser"))
    finally:
        client.close()
        driver.quit()
        server.stop()
        app.stop()
        shutil.rmtree(profile, ignore_errors=True)


def tile_image(p: SimpleNamespace, source_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return p.driver.find_element(By.CSS_SELECTOR, f'img.live[data-source="{source_id}"]')


def live_png(p: SimpleNamespace, source_id: str) -> np.ndarray:
    wait_for(lambda: p.driver.execute_script(
        "const i = document.querySelector(`img.live[data-source='${arguments[0]}']`);"
        "return i && i.complete && i.naturalWidth > 0;", source_id), what=f"{source_id}'s image")
    png = tile_image(p, source_id).screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def page_counts(p: SimpleNamespace, source_id: str) -> Dict[str, Dict[str, int]]:
    """``{NAME: {field: value}}`` of the counters shown in a tile."""
    return p.driver.execute_script("""
        const out = {};
        for (const li of document.querySelectorAll(`.counters[data-source='${arguments[0]}'] li`)) {
          const v = {};
          for (const s of li.querySelectorAll('.num')) v[s.dataset.field] = Number(s.textContent);
          out[li.dataset.name] = v;
        }
        return out;""", source_id)


def api_counts(p: SimpleNamespace, source_id: str) -> Dict[str, Dict[str, int]]:
    """The same fields from ``GET /counts``."""
    c = p.client.get("/api/v1/counts").json()["sources"][source_id]
    out = {name: {"in": v["in"], "out": v["out"]} for name, v in c["lines"].items()}
    out.update({name: {k: v[k] for k in ("occupancy", "entered", "exited")} for name, v in c["zones"].items()})
    return out


def frames_read(p: SimpleNamespace) -> Dict[str, int]:
    return {s["id"]: s["read"] for s in p.client.get("/api/v1/status").json()["sources"]}


def test_both_cameras_are_live_and_counters_match_the_api(page: SimpleNamespace) -> None:
    first = {sid: live_png(page, sid) for sid in ("cam1", "cam2")}
    time.sleep(0.5)
    for sid, before in first.items():
        after = live_png(page, sid)
        assert after.shape == before.shape and np.abs(after.astype(int) - before.astype(int)).max() > 50, sid
    wait_for(lambda: api_counts(page, "cam2")["walkway"]["in"] + api_counts(page, "cam2")["walkway"]["out"] > 0,
             what="cam2's walker to cross its line")
    # the page follows the feed: equal to the API once no event lands between the two reads
    wait_for(lambda: page_counts(page, "cam2") == api_counts(page, "cam2"), what="page counters == GET /counts")
    assert set(page_counts(page, "cam2")) == {"walkway", "bay"} and page_counts(page, "cam1") == {}


def draw_line(p: SimpleNamespace, source_id: str, a: tuple, b: tuple, name: str) -> None:
    """Open the editor of ``source_id``, drag from ``a`` to ``b`` (source pixels) with the mouse, name it, save."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = p.driver
    d.find_element(By.CSS_SELECTOR, f'.tile[data-source="{source_id}"] button.edit').click()
    canvas = d.find_element(By.ID, "editor-canvas")
    wait_for(lambda: canvas.get_attribute("data-ready") == "1", what="the editor's snapshot")
    w, h, cw, ch = d.execute_script("const c = arguments[0]; const r = c.getBoundingClientRect();"
                                    "return [c.width, c.height, r.width, r.height];", canvas)
    sx, sy = cw / w, ch / h

    def offset(pt: tuple) -> tuple:  # from the element's centre, CSS pixels
        return round((pt[0] - w / 2) * sx), round((pt[1] - h / 2) * sy)

    x0, y0 = offset(a)
    x1, y1 = offset(b)
    ActionChains(d).move_to_element_with_offset(canvas, x0, y0).click_and_hold() \
        .move_by_offset((x1 - x0) // 2, (y1 - y0) // 2).move_by_offset(x1 - x0 - (x1 - x0) // 2,
                                                                       y1 - y0 - (y1 - y0) // 2) \
        .release().perform()
    field = d.find_element(By.ID, "region-name")
    field.clear()
    field.send_keys(name)
    d.find_element(By.ID, "editor-save").click()
    wait_for(lambda: not d.find_element(By.ID, "editor").get_attribute("open"), what="the editor to close")


def test_line_drawn_with_the_mouse_counts_the_scripted_walker(page: SimpleNamespace) -> None:
    draw_line(page, "cam1", (160, 20), (160, 220), "entry")
    line = page.client.get("/api/v1/sources/cam1").json()["lines"]["entry"]["xyxy"]
    assert np.allclose(line, [160, 20, 160, 220], atol=2), line
    wait_for(lambda: page_counts(page, "cam1") == {"entry": {"in": 0, "out": 0}}, what="the new line's counter")
    page.app.walk("cam1", 283)  # left to right across the line drawn top to bottom: "out"
    wait_for(lambda: page_counts(page, "cam1") == {"entry": {"in": 0, "out": 1}}, what="the crossing on the page")
    assert api_counts(page, "cam1") == {"entry": {"in": 0, "out": 1}}
    event = page.client.get("/api/v1/events", params={"source": "cam1", "type": "line_cross"}).json()["events"]
    assert [(e["line"], e["direction"]) for e in event] == [("entry", "out")]
    wait_for(lambda: page.driver.execute_script(
        "return document.querySelector(`#events li[data-id='${arguments[0]}'] img`)?.naturalWidth || 0;",
        event[0]["id"]), what="the event's thumbnail in the list")


def test_added_source_gets_a_tile_and_loses_it_when_deleted(page: SimpleNamespace) -> None:
    from selenium.webdriver.common.by import By

    reads = [frames_read(page)]
    r = page.client.post("/api/v1/sources", json={"uri": "rtsp://ops:pw@cam/3", "id": "cam3"}, headers=AUTH)
    assert r.status_code == 201
    live_png(page, "cam3")
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#grid .tile")) == 3
    reads.append(frames_read(page))
    shot = page.tmp / "dashboard.png"
    page.driver.save_screenshot(str(shot))
    if os.environ.get("EDGE_DETECT_DOCS_SCREENSHOT") == "1" or not DOCS_PNG.exists():
        DOCS_PNG.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_PNG)
    assert page.client.delete("/api/v1/sources/cam3", headers=AUTH).status_code == 204
    wait_for(lambda: not page.driver.find_elements(By.CSS_SELECTOR, '.tile[data-source="cam3"]'),
             what="cam3's tile to go")
    assert [t.get_attribute("data-source") for t in page.driver.find_elements(By.CSS_SELECTOR, "#grid .tile")] == [
        "cam1", "cam2"]
    reads.append(frames_read(page))
    for sid in ("cam1", "cam2"):
        assert reads[0][sid] < reads[1][sid] < reads[2][sid], (sid, reads)


@pytest.mark.perf
def test_page_shows_a_crossing_within_2_s(page: SimpleNamespace) -> None:
    """Latency from the frame of a crossing (its wall_time) to the page's counter (cam2's walker crosses its line
    about every second)."""
    start = wait_for(lambda: page_counts(page, "cam2").get("walkway"), what="cam2's counters on the page")
    wait_for(lambda: page_counts(page, "cam2")["walkway"] != start, timeout=10, what="a crossing on the page")
    seen = time.time()
    newest = page.client.get("/api/v1/events", params={"source": "cam2", "type": "line_cross", "limit": 1}).json()
    latency = seen - newest["events"][-1]["wall_time"]
    print(f"crossing -> page counter: {latency * 1000:.0f} ms")
    assert latency <= 2.0
