"""Server settings and security checks, config persistence, and the `serve` command line."""
from __future__ import annotations

import configparser
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from server_helpers import AUTH, TOKEN, two_sources
from fake_app import FakeApp

from edge_detect.cli import main as cli_main
from edge_detect.cli.serve import http_settings
from edge_detect.errors import ConfigError
from edge_detect.server.api import STATIC_DIR, create_app
from edge_detect.server.persist import write_config
from edge_detect.server.runner import HttpServer
from edge_detect.server.settings import (TOKEN_ENV, ServerSettings, is_loopback, parse_http, resolve_token,
                                         server_settings)

REPO = Path(__file__).resolve().parents[2]


def test_default_bind_is_loopback_8080() -> None:
    settings, generated = http_settings(None)
    assert (settings.host, settings.port) == ("127.0.0.1", 8080) and generated


def test_server_binds_loopback_by_default() -> None:
    app = FakeApp(two_sources())
    settings = ServerSettings(port=0, api_token=TOKEN)  # host left at its default
    server = HttpServer(create_app(app, settings), settings)
    try:
        assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}"
        server.start()
        assert httpx.get(f"{server.url}/api/v1/status", timeout=5).status_code == 200
    finally:
        server.stop()
        app.stop()


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{port}: .*pick another port"):
            HttpServer(create_app(FakeApp([]), ServerSettings(api_token=TOKEN)),
                       ServerSettings(port=port, api_token=TOKEN))


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True), ("::1", True),
                                       ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
                                       ("cam-server.lan", False)])
def test_loopback_addresses(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


@pytest.mark.parametrize("text,expected", [("0.0.0.0:9000", ("0.0.0.0", 9000)), (":8081", ("127.0.0.1", 8081)),
                                           ("8082", ("127.0.0.1", 8082)), ("[::1]:8083", ("::1", 8083))])
def test_http_flag_parses_host_and_port(text: str, expected: tuple) -> None:
    assert parse_http(text) == expected


@pytest.mark.parametrize("text", ["localhost:http", "1.2.3.4:70000", "host:"])
def test_http_flag_rejects_bad_values(text: str) -> None:
    with pytest.raises(ConfigError, match="--http: expected HOST:PORT"):
        parse_http(text)


def test_token_comes_from_flag_then_config_then_environment() -> None:
    cfg = ServerSettings(host="0.0.0.0", api_token="config-token-0123456789")
    env = {TOKEN_ENV: "env-token-0123456789abc"}
    assert resolve_token(cfg, "flag-token-0123456789abc", env)[0].api_token == "flag-token-0123456789abc"
    assert resolve_token(cfg, None, env)[0].api_token == "config-token-0123456789"
    assert resolve_token(ServerSettings(host="0.0.0.0"), None, env) == (
        ServerSettings(host="0.0.0.0", api_token="env-token-0123456789abc"), False)


def test_loopback_without_token_generates_one_per_start() -> None:
    (a, gen_a), (b, gen_b) = resolve_token(ServerSettings(), None, {}), resolve_token(ServerSettings(), None, {})
    assert gen_a and gen_b and len(a.api_token) >= 32 and a.api_token != b.api_token


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_non_loopback_without_token_is_refused(host: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_token(ServerSettings(host=host), None, {})
    msg = str(err.value)
    assert "\n" not in msg and f"refusing to serve on {host}:8080 without an API token" in msg
    assert "--api-token" in msg and TOKEN_ENV in msg


def test_short_token_and_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="server.api_token: expected at least 16 characters, got 5"):
        ServerSettings(api_token="short")
    with pytest.raises(ConfigError, match="unknown key 'prot'.*'port'"):
        server_settings({"prot": 80})


def test_config_server_section_is_the_servers_settings(tmp_path: Path) -> None:
    from edge_detect.app_config import ServerConfig, load_app_config

    cfg = tmp_path / "cams.yaml"
    cfg.write_text("sources: [a.mp4]\nserver: {port: 9000, stream_fps: 5, cors_origins: [https://ops.example], "
                   "max_frames: 10}\n")
    settings, generated = http_settings(load_app_config(cfg).server, None, TOKEN)
    assert ServerSettings is ServerConfig and not generated
    assert (settings.host, settings.port, settings.stream_fps, settings.cors_origins, settings.max_frames,
            settings.api_token) == ("127.0.0.1", 9000, 5.0, ("https://ops.example",), 10, TOKEN)
    assert http_settings(load_app_config(cfg).server, ":8090", TOKEN)[0].port == 8090  # the flag wins


def test_dashboard_demo_config_is_valid_and_loops_its_samples() -> None:
    from edge_detect.app_config import load_app_config

    cfg = load_app_config(REPO / "configs" / "app" / "dashboard.yaml")
    assert cfg.capture.loop and cfg.capture.realtime and [s.id for s in cfg.sources] == ["street", "stills"]
    assert [s.uri for s in cfg.sources] == ["../shared/videos/vtest.avi", "../shared/images"]
    assert "edge-detect serve --config configs/app/dashboard.yaml" in (REPO / "README.md").read_text()


def test_cli_refuses_non_loopback_without_token_with_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    cfg = tmp_path / "cams.yaml"
    cfg.write_text("sources: [video.mp4]\n")
    assert cli_main(["serve", "--config", str(cfg), "--http", "0.0.0.0:8080"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge-detect: error: refusing to serve on 0.0.0.0:8080")
    cfg.write_text("sources: [video.mp4]\nserver: {host: 0.0.0.0}\n")  # the config's server section, same check
    assert cli_main(["serve", "--config", str(cfg)]) == 2
    assert "refusing to serve on 0.0.0.0:8080" in capsys.readouterr().err


def test_write_config_is_atomic_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "cams.yaml"
    path.write_text("# hand-written\nsources: [a.mp4]\n")
    path.chmod(0o640)
    write_config(path, {"sources": [{"uri": "a.mp4", "id": "a", "lines": {"g": {"xyxy": (1, 2, 3, 4)}}}]})
    assert yaml.safe_load(path.read_text())["sources"][0]["lines"]["g"]["xyxy"] == [1, 2, 3, 4]
    assert (tmp_path / "cams.yaml.bak").read_text() == "# hand-written\nsources: [a.mp4]\n"
    assert (path.stat().st_mode & 0o777) == 0o640
    before = path.read_text()
    with pytest.raises(yaml.YAMLError):
        write_config(path, {"bad": object()})
    assert path.read_text() == before  # a failed write changes nothing and leaves no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.yaml", "cams.yaml.bak"]


def test_static_files_are_package_data() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["edge_detect"].split(",")]
    for f in STATIC_DIR.iterdir():
        rel = f.relative_to(STATIC_DIR.parent.parent).as_posix()
        assert any(Path(rel).match(p) for p in patterns), f"{rel} is not in setup.cfg package_data"


# ------------------------------------------------------------------------------------------------ the commands

@pytest.fixture
def replay_run(tmp_path: Path, onnx_builder, reference: Path) -> SimpleNamespace:
    """A replay model (bus.jpg's raw output whatever the input: no inference cost) and a 30-frame video."""
    import cv2
    import numpy as np

    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    model = onnx_builder(tmp_path / "replay.onnx", [raw], metadata=ModelMetadata(
        names=[f"c{i}" for i in range(80)]).to_dict())
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(30):
        writer.write(np.full((120, 160, 3), 8 * i, np.uint8))
    writer.release()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return SimpleNamespace(model=model, video=video, tmp=tmp_path, url=f"http://127.0.0.1:{port}",
                           http=f"127.0.0.1:{port}")


def start_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), TOKEN_ENV: TOKEN}
    return subprocess.Popen([sys.executable, "-m", "edge_detect", *args], env=env, stderr=subprocess.PIPE, text=True)


def wait_status(proc: subprocess.Popen, url: str, done) -> dict:
    """``GET /status`` until ``done(status)`` (generous deadline; the process must stay up)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = httpx.get(f"{url}/api/v1/status", timeout=2).json()
            if done(status):
                return status
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no such status (exit code {proc.poll()})")


def ended(status: dict, count: int = 1) -> bool:
    return len(status["sources"]) == count and all(s["state"] == "ended" for s in status["sources"])


def test_serve_keeps_the_app_up_after_its_sources_end_and_stops_on_ctrl_c(replay_run: SimpleNamespace) -> None:
    r = replay_run
    cfg = r.tmp / "cams.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"path": str(r.model)}, "sources": [{"uri": str(r.video), "id": "walk"}]}))
    proc = start_cli("serve", "--config", str(cfg), "--http", r.http)
    try:
        status = wait_status(proc, r.url, ended)
        assert status["running"] and status["sources"][0]["processed"] == 30  # the file ended, the app did not
        body = {"uri": str(r.video), "id": "again"}
        assert httpx.post(f"{r.url}/api/v1/sources", json=body).status_code == 401
        added = httpx.post(f"{r.url}/api/v1/sources", json=body, headers=AUTH, timeout=30)
        assert added.status_code == 201 and added.json()["id"] == "again"
        status = wait_status(proc, r.url, lambda st: ended(st, 2))
        assert [s["processed"] for s in status["sources"]] == [30, 30]
        assert "<script" in httpx.get(r.url).text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"dashboard: {r.url}/" in err


def test_serve_without_a_config_starts_empty_and_takes_cameras_from_the_api(replay_run: SimpleNamespace) -> None:
    r = replay_run
    proc = start_cli("serve", "--model", str(r.model), "--http", r.http)
    try:
        status = wait_status(proc, r.url, lambda st: st["running"])
        assert status["sources"] == [] and status["model"] == str(r.model)
        added = httpx.post(f"{r.url}/api/v1/sources", json={"uri": str(r.video), "id": "door"}, headers=AUTH,
                           timeout=30)
        assert added.status_code == 201, added.text
        status = wait_status(proc, r.url, ended)
        assert [(s["id"], s["processed"]) for s in status["sources"]] == [("door", 30)]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err


def test_serve_save_config_needs_a_config(capsys) -> None:
    assert cli_main(["serve", "--save-config"]) == 2
    assert capsys.readouterr().err.strip() == ("edge-detect: error: --save-config: expected --config FILE to write "
                                               "the changes to, got none")


def test_run_with_http_serves_the_run_until_sigterm(replay_run: SimpleNamespace) -> None:
    r = replay_run
    summary = r.tmp / "summary.json"
    proc = start_cli("run", "--model", str(r.model), "--source", str(r.video), "--http", r.http, "--summary-json",
                     str(summary), "--no-progress", "--no-show")
    try:
        wait_status(proc, r.url, ended)
        time.sleep(0.5)
        assert proc.poll() is None  # without --http the run would have ended with its source
        added = httpx.post(f"{r.url}/api/v1/sources", json={"uri": str(r.video)}, headers=AUTH, timeout=30)
        assert added.status_code == 201 and added.json()["id"] == "walk-1"
        wait_status(proc, r.url, lambda st: ended(st, 2))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    result = json.loads(summary.read_text())
    assert result["stopped_by"] == "SIGTERM" and result["processed"] == 60


def test_run_refuses_a_token_without_http_and_a_public_bind_without_token(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert cli_main(["run", "--source", "v.mp4", "--api-token", TOKEN]) == 2
    assert capsys.readouterr().err.strip() == ("edge-detect: error: --api-token: expected --http HOST:PORT (or "
                                               "server.port in the config) too, got none")
    assert cli_main(["run", "--source", "v.mp4", "--http", "0.0.0.0:8080"]) == 2
    assert "refusing to serve on 0.0.0.0:8080 without an API token" in capsys.readouterr().err


def test_server_sits_on_top_and_settings_import_no_web_framework() -> None:
    import ast

    below = [p for p in (REPO / "edge_detect").rglob("*.py")
             if not p.relative_to(REPO / "edge_detect").parts[0] in ("server", "cli")]
    for path in below:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("edge_detect.server") for n in names), f"{path} imports the server"
    code = "import sys, edge_detect.server.settings, edge_detect.cli.serve; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
