"""The dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium), over the real
``App`` with the real yolov5n (exported at 320 once per session) on two looping files.

``walker``: a scripted scene (``tests/stream/synthetic_world.py``: a person cut from bus.jpg walks left to right
across a 320x240 picture in 40 frames, then the street is empty for 10; 10 fps, looping). ``street``: vtest.avi,
looping, with a counting line. One page, checked in order: both tiles live (pixels change) and the counters equal to
``GET /counts``; a line drawn with the mouse across the walker's path, saved, counts each pass of the walker (one
``out`` per pass, at the pass's crossing frame) on the page and in the API; a source added through the API gets a
tile and loses it when deleted, while the other sources' frame counters keep rising. The page's screenshot is the
README's ``docs/dashboard.png`` (rewritten when ``EDGE_DETECT_DOCS_SCREENSHOT=1``; always saved under the test's
tmp folder).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator

import cv2
import httpx
import numpy as np
import pytest
import yaml
from server_helpers import AUTH, TOKEN

from edge_detect.app import App
from edge_detect.app_config import load_app_config
from edge_detect.server.api import create_app
from edge_detect.server.runner import HttpServer
from edge_detect.server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stream"))
from synthetic_world import Actor, World, render_video  # noqa: E402
from polling import wait_for  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,720")
PASS = 50  # frames of one pass of the walker scene (walk 0..39, empty 40..49)
# the frame of a pass whose line_cross event counts it: the walker's anchor crosses x = 160 at frame 21
# (x = 30 + 260 * f / 39), and a side change counts once a second observation beyond the band confirms it
# (lines' confirm_frames: 2), so the event comes with frame 22
CROSSING = 22
MIDDLE = [384, 0, 384, 576]  # street: a line down the middle of vtest, crossed every few seconds

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="chromium and chromedriver are not installed "
                                       "(Debian: apt-get install chromium chromium-driver)")


def walker_scene() -> World:
    return World([Actor("walker", [(0, 30, 225), (39, 290, 225)], height=110, crop=0)], PASS, size=(240, 320))


@pytest.fixture(scope="module")
def page(tmp_path_factory, shared: Path, yolov5n_onnx_320: Path) -> Iterator[SimpleNamespace]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("browser")
    walker = render_video(walker_scene(), tmp / "walker.mp4", shared)
    config = tmp / "cams.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(yolov5n_onnx_320), "threads": 1, "classes": ["person"]},
        "capture": {"loop": True, "realtime": True},
        "sources": [{"uri": str(walker), "id": "walker"},
                    {"uri": str(shared / "videos" / "vtest.avi"), "id": "street", "lines": {"middle": MIDDLE}}],
        "server": {"progress": False}}))
    app = App(load_app_config(config), keep_alive=True).start()  # what `edge-detect serve --config` builds
    settings = ServerSettings(port=0, api_token=TOKEN)
    server = HttpServer(create_app(app, settings), settings).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    client = httpx.Client(base_url=server.url, timeout=30)
    try:
        driver.get(f"{server.url}/#token={TOKEN}")
        yield SimpleNamespace(app=app, server=server, driver=driver, client=client, tmp=tmp, walker=walker)
    finally:
        client.close()
        driver.quit()
        server.stop()
        app.stop("test").wait(30)
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
    c = p.client.get("/api/v1/counts").json()["sources"].get(source_id, {"lines": {}, "zones": {}})
    out = {name: {"in": v["in"], "out": v["out"]} for name, v in c["lines"].items()}
    out.update({name: {k: v[k] for k in ("occupancy", "entered", "exited")} for name, v in c["zones"].items()})
    return out


def dropped(p: SimpleNamespace, source_id: str) -> int:
    return next(s["dropped"] for s in p.client.get("/api/v1/status").json()["sources"] if s["id"] == source_id)


def frames_read(p: SimpleNamespace) -> Dict[str, int]:
    return {s["id"]: s["read"] for s in p.client.get("/api/v1/status").json()["sources"]}


def test_both_cameras_are_live_and_counters_match_the_api(page: SimpleNamespace) -> None:
    first = {sid: live_png(page, sid) for sid in ("walker", "street")}
    for sid, before in first.items():
        wait_for(lambda: np.abs(live_png(page, sid).astype(int) - before.astype(int)).max() > 50,
                 what=f"{sid}'s picture to change")
    wait_for(lambda: sum(api_counts(page, "street")["middle"].values()) > 0, what="people crossing the street")
    # the page follows the feed: equal to the API once no event lands between the two reads
    wait_for(lambda: page_counts(page, "street") == api_counts(page, "street"), what="page counters == GET /counts")
    assert set(page_counts(page, "street")) == {"middle"} and page_counts(page, "walker") == {}


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
    assert (w, h) == (320, 240)  # the editor draws on the source's own pixels
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


def crossings(p: SimpleNamespace) -> list:
    found = p.client.get("/api/v1/events", params={"source": "walker", "type": "line_cross"}).json()["events"]
    return [(e["line"], e["direction"], e["frame"] % PASS) for e in found], found


def test_line_drawn_with_the_mouse_counts_the_walker(page: SimpleNamespace) -> None:
    draw_line(page, "walker", (160, 20), (160, 230), "entry")
    line = page.client.get("/api/v1/sources/walker").json()["lines"]["entry"]["xyxy"]
    assert np.allclose(line, [160, 20, 160, 230], atol=2), line
    wait_for(lambda: "entry" in page_counts(page, "walker"), what="the new line's counter")
    # left to right across a line drawn top to bottom: "out", once per pass, at the pass's crossing frame
    wait_for(lambda: page_counts(page, "walker")["entry"]["out"] >= 1, timeout=45, what="the crossing on the page")
    wait_for(lambda: page_counts(page, "walker") == api_counts(page, "walker"), what="page == GET /counts")
    counted, events = crossings(page)
    final = api_counts(page, "walker")["entry"]
    if final["out"] != len(counted):  # a crossing between the two reads
        counted, events = crossings(page)
    assert final["in"] == 0 and [c[:2] for c in counted] == [("entry", "out")] * final["out"]
    if dropped(page, "walker") == 0:  # every frame processed: the confirming frame exactly
        assert [c[2] for c in counted] == [CROSSING] * final["out"]
    else:  # a busy machine dropped live frames: the first processed one from there on
        assert all(CROSSING <= c[2] < 40 for c in counted), counted
    assert len({e["track_id"] for e in events}) == len(events)  # one walker per pass, a new track each time
    wait_for(lambda: page.driver.execute_script(
        "return document.querySelector(`#events li[data-id='${arguments[0]}'] img`)?.naturalWidth || 0;",
        events[0]["id"]), what="the event's thumbnail in the list")


def write_docs_png(shot: Path, bottom: int) -> None:
    """The README's screenshot: the page down to ``bottom`` (device pixels), 6 bits per channel (the same to the
    eye, a third smaller as PNG), under 300 kB."""
    image = cv2.imread(str(shot))[:bottom]
    DOCS_PNG.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(DOCS_PNG), image // 4 * 4 + 2, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert DOCS_PNG.stat().st_size < 300_000, DOCS_PNG.stat().st_size


def test_added_source_gets_a_tile_and_loses_it_when_deleted(page: SimpleNamespace) -> None:
    from selenium.webdriver.common.by import By

    reads = [frames_read(page)]
    r = page.client.post("/api/v1/sources", json={"uri": str(page.walker), "id": "lobby",
                                                  "options": {"loop": True, "realtime": True}}, headers=AUTH)
    assert r.status_code == 201, r.text
    live_png(page, "lobby")
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#grid .tile")) == 3
    reads.append(frames_read(page))
    shot = page.tmp / "dashboard.png"
    page.driver.execute_script("document.getElementById('toast').hidden = true;")
    page.driver.save_screenshot(str(shot))
    if os.environ.get("EDGE_DETECT_DOCS_SCREENSHOT") == "1":
        bottom = page.driver.execute_script("return Math.ceil(document.querySelector('main').getBoundingClientRect()"
                                            ".bottom * window.devicePixelRatio);")
        write_docs_png(shot, bottom)
    assert page.client.delete("/api/v1/sources/lobby", headers=AUTH).status_code == 204
    wait_for(lambda: not page.driver.find_elements(By.CSS_SELECTOR, '.tile[data-source="lobby"]'),
             what="the lobby tile to go")
    assert [t.get_attribute("data-source") for t in page.driver.find_elements(By.CSS_SELECTOR, "#grid .tile")] == [
        "walker", "street"]
    wait_for(lambda: all(frames_read(page)[sid] > reads[-1][sid] for sid in ("walker", "street")),
             what="the other sources to read on")
    reads.append(frames_read(page))
    for sid in ("walker", "street"):
        assert reads[0][sid] < reads[1][sid] < reads[2][sid], (sid, reads)


@pytest.mark.perf
def test_page_shows_a_crossing_within_2_s(page: SimpleNamespace) -> None:
    """Latency from the frame of a crossing (its wall_time) to the page's counter (one crossing every 5 s)."""
    if "entry" not in api_counts(page, "walker"):  # run alone (-m perf)
        page.client.patch("/api/v1/sources/walker", json={"lines": {"entry": [160, 20, 160, 230]}}, headers=AUTH)
    start = wait_for(lambda: page_counts(page, "walker").get("entry"), what="walker's counter on the page")
    wait_for(lambda: page_counts(page, "walker")["entry"] != start, timeout=15, what="a crossing on the page")
    seen = time.time()
    newest = page.client.get("/api/v1/events", params={"source": "walker", "type": "line_cross", "limit": 1}).json()
    latency = seen - newest["events"][-1]["wall_time"]
    print(f"crossing -> page counter: {latency * 1000:.0f} ms")
    assert latency <= 2.0
