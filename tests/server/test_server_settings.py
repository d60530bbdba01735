"""Server settings and security checks, config persistence, and the `serve` command line."""
from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


# ------------------------------------------------------------------------------------------------ with the App

def _app_available() -> bool:
    try:
        import edge_detect.app  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _app_available(), reason="needs edge_detect.app (the App service of issue 18)")
def test_serve_command_runs_the_app_and_stops_on_ctrl_c(tmp_path: Path, onnx_builder, reference: Path) -> None:
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
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(model), "sources": [{"uri": str(video), "id": "walk"}]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), TOKEN_ENV: TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "edge_detect", "serve", "--config", str(cfg), "--http",
                             f"127.0.0.1:{port}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"{url}/api/v1/status", timeout=2).json()
                if status["sources"] and status["sources"][0]["processed"] > 0:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert status is not None and status["sources"][0]["id"] == "walk", proc.stderr
        assert httpx.post(f"{url}/api/v1/sources", json={"uri": str(video), "id": "again"}).status_code == 401
        r = httpx.post(f"{url}/api/v1/sources", json={"uri": str(video), "id": "again"}, headers=AUTH, timeout=30)
        assert r.status_code == 201
        assert "<script" in httpx.get(url).text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"dashboard: {url}/" in err


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
