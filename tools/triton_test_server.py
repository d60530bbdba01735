#!/usr/bin/env python3
"""A real Triton Inference Server on loopback for tests and benchmarks, in one command::

    python tools/triton_test_server.py --model-repository model_repository/ --grpc-port 8001 [--http-port 8000]

serves every model of an ``edge-detect export --format triton`` repository until it is stopped (SIGINT / SIGTERM
stop the server and remove its workspace). Clients point ``--model`` at ``grpc://127.0.0.1:8001/<name>``.

What runs: PyTriton (``nvidia-pytriton``, which bundles ``tritonserver``) starts a real Triton server (the
gRPC, HTTP and Prometheus metrics endpoints, the dynamic batcher) whose models are Python functions bound in
this process; each function runs the repository's ``model.onnx`` with ONNX Runtime. The bundled server has only
the Python backend, so the repository's own ``platform: "onnxruntime_onnx"`` configuration is not loaded by this
server (an NVIDIA Triton container loads it as is); the bound model takes its name, inputs, outputs, data types,
``max_batch_size``, ``dynamic_batching`` and our ``parameters["edge_detect"]`` metadata from that
``config.pbtxt``, so clients see the same configuration.

Own virtualenv: PyTriton needs ``numpy<2``, so it never goes into the project's interpreter. The first run
creates ``$EDGE_DETECT_TRITON_VENV`` (default ``~/.cache/edge-detect/triton-venv``; ~30 s, ~450 MB) with
:data:`REQUIREMENTS` and re-executes itself there; later runs reuse it. ``--prepare`` only creates it (CI does
that before the tests). Inside the venv, ``LD_LIBRARY_PATH`` is pointed at the venv interpreter's own ``lib/``:
Triton's Python-backend stub otherwise loads the system's ``libpython`` and the model fails to load.

Ports: ``--grpc-port`` is required; ``--http-port`` and ``--metrics-port`` default to free ports chosen here and
printed. The line ``READY grpc=N http=N metrics=N`` on stdout tells that every model is loaded.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import venv
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

VENV_ENV = "EDGE_DETECT_TRITON_VENV"
REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy<2", "onnxruntime>=1.17")
_IN_VENV = "--_in-venv"
_READY_MARK = ".edge-detect-ready"


def venv_dir() -> Path:
    """``$EDGE_DETECT_TRITON_VENV``, else ``~/.cache/edge-detect/triton-venv`` (XDG_CACHE_HOME respected)."""
    env = os.environ.get(VENV_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edge-detect" / "triton-venv"


def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def venv_ready(path: Path) -> bool:
    """Whether ``path`` is a venv this script created with :data:`REQUIREMENTS`."""
    mark = path / _READY_MARK
    return venv_python(path).is_file() and mark.is_file() and \
        mark.read_text(encoding="utf-8").strip() == json.dumps(REQUIREMENTS)


def ensure_venv(path: Optional[Path] = None, quiet: bool = False) -> Path:
    """Create (or reuse) the server's venv and return its Python.

    Concurrent callers wait on a lock file, so the venv is installed once. Raises ``RuntimeError`` (with pip's
    last lines) when the install fails, e.g. without access to the package index.
    """
    path = Path(path or venv_dir())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if venv_ready(path):
            return venv_python(path)
        if not quiet:
            print(f"creating the Triton test-server venv {path} ({', '.join(REQUIREMENTS)}; ~30 s, ~450 MB)",
                  file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
        cmd = [str(venv_python(path)), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"pip install {' '.join(REQUIREMENTS)} into {path} failed: {tail}")
        (path / _READY_MARK).write_text(json.dumps(REQUIREMENTS) + "\n", encoding="utf-8")
        return venv_python(path)


def inference_counts(metrics_port: int, model: str = "yolov5n") -> Dict[str, float]:
    """``nv_inference_count`` (images) and ``nv_inference_exec_count`` (batches run) of ``model`` version 1 from the
    server's Prometheus metrics (parsed with prometheus-client's own parser); 0.0 for one not reported yet."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    out = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name[:-len("_total")] if sample.name.endswith("_total") else sample.name
            if name in out and sample.labels.get("model") == model and sample.labels.get("version") == "1":
                out[name] = float(sample.value)
    return out


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """This script as a child process, for tests and benchmarks: ``start()``, ``wait_ready()``, ``stop()``.

    ``stop()`` sends SIGTERM (the server stops and removes its workspace) and waits for the process to exit, so the
    ports are free again when it returns.
    """

    def __init__(self, repository: Path, grpc_port: int, http_port: Optional[int] = None,
                 metrics_port: Optional[int] = None, log: Optional[Path] = None) -> None:
        self.repository, self.grpc_port = Path(repository), int(grpc_port)
        self.http_port = int(http_port or free_port())
        self.metrics_port = int(metrics_port or free_port())
        self.log = Path(log) if log else None
        self.proc: Optional[subprocess.Popen] = None
        self._drainer: Optional[threading.Thread] = None
        self._ready = threading.Event()

    def start(self) -> "ServerProcess":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--model-repository", str(self.repository),
             "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
             "--metrics-port", str(self.metrics_port)], stdout=subprocess.PIPE, stderr=out)
        # one thread reads stdout from the start (tritonserver logs there too: an unread pipe would block it) and
        # flags the READY mark; a select() on the buffered pipe could miss a mark already read into its buffer
        self._ready = threading.Event()
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stdout, self._ready), daemon=True)
        self._drainer.start()
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> "ServerProcess":
        """Block until the server printed READY; RuntimeError (with the log's tail) if it exited or timed out."""
        import time

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready.wait(0.2):
                return self
            if self.proc.poll() is not None:
                break
        exited = self.proc.poll()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:] if self.log and self.log.exists() else []
        self.stop()
        state = "timed out" if exited is None else f"exit {exited}"
        raise RuntimeError(f"triton test server on port {self.grpc_port} not ready ({state}): " + " | ".join(tail))

    def _log_line(self, line: str) -> None:
        if self.log and line:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(line)

    def _drain(self, stream: Any, ready: threading.Event) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                self._log_line(line)
                if "READY grpc=" in line:  # tritonserver's log shares this stdout: the mark may share a line
                    ready.set()
        except (OSError, ValueError):  # closed by stop()
            pass

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=5)  # ends at the pipe's EOF, now that the server has exited
            self._drainer = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


# --- inside the venv ---------------------------------------------------------------------------------------------

def _np_dtype(data_type: int) -> Any:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as pb

    name = pb.DataType.Name(data_type)
    table = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_UINT8": np.uint8, "TYPE_INT32": np.int32,
             "TYPE_INT64": np.int64, "TYPE_INT8": np.int8, "TYPE_BOOL": np.bool_, "TYPE_FP64": np.float64}
    if name not in table:
        raise SystemExit(f"triton_test_server: data type {name}: expected one of {sorted(table)}")
    return table[name]


def _load_models(repository: Path, names: Sequence[str]) -> List[Dict[str, Any]]:
    """Each model folder with ``config.pbtxt`` and ``1/model.onnx``: its parsed config and an ORT session."""
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    models = []
    for cfg_path in sorted(repository.glob("*/config.pbtxt")):
        cfg = text_format.Parse(cfg_path.read_text(encoding="utf-8"), pb.ModelConfig())
        if names and cfg.name not in names:
            continue
        onnx_path = cfg_path.parent / "1" / "model.onnx"
        if not onnx_path.is_file():
            print(f"triton_test_server: skipping {cfg.name}: this server runs ONNX models only, expected "
                  f"{onnx_path}", file=sys.stderr)
            continue
        so = ort.SessionOptions()
        so.log_severity_level = 3
        threads = int(os.environ.get("EDGE_DETECT_TRITON_THREADS", "0"))
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
        models.append({"config": cfg, "session": session})
    if not models:
        raise SystemExit(f"triton_test_server: no servable model in {repository}: expected <name>/config.pbtxt and "
                         f"<name>/1/model.onnx (edge-detect export --format triton)")
    return models


def _bind(triton: Any, cfg: Any, session: Any) -> None:
    """Bind one repository model: its I/O and batching from ``cfg``, ONNX Runtime inside the function."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    in_names = [i.name for i in cfg.input]
    out_names = [o.name for o in cfg.output]

    @batch
    def infer(**inputs: Any) -> Dict[str, Any]:
        outs = session.run(out_names, {n: inputs[n] for n in in_names})
        return dict(zip(out_names, outs))

    db = cfg.dynamic_batching
    triton.bind(
        model_name=cfg.name, infer_func=infer,
        inputs=[Tensor(name=i.name, dtype=_np_dtype(i.data_type), shape=tuple(i.dims)) for i in cfg.input],
        outputs=[Tensor(name=o.name, dtype=_np_dtype(o.data_type), shape=tuple(o.dims)) for o in cfg.output],
        config=ModelConfig(max_batch_size=cfg.max_batch_size, batching=cfg.max_batch_size > 0,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=db.max_queue_delay_microseconds,
                                                  preferred_batch_size=list(db.preferred_batch_size) or None)),
        strict=False)
    # our metadata (and any other repository parameter) in the served configuration, as the exported one has it
    model = next(m for m in triton._model_manager.models if m.model_name == cfg.name)  # noqa: SLF001
    params = model._get_triton_model_config().backend_parameters  # noqa: SLF001
    for key, value in cfg.parameters.items():
        params[key] = value.string_value


def serve(args: argparse.Namespace) -> int:
    """Run the server in this (venv) process until SIGINT / SIGTERM."""
    libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    models = _load_models(Path(args.model_repository), args.models or ())
    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port, http_address="127.0.0.1",
                          http_port=args.http_port, metrics_address="127.0.0.1", metrics_port=args.metrics_port,
                          allow_metrics=True, allow_gpu_metrics=False, allow_cpu_metrics=False,
                          metrics_interval_ms=500, exit_on_error=True, log_verbose=0)
    # like a stock tritonserver (and unlike PyTriton's default), shared memory and statistics are open to clients;
    # loading models stays token-protected (PyTriton itself loads them). The server listens on loopback only.
    security = TritonSecurityConfig(restricted_endpoints=["model-repository", "trace", "logging"])
    triton = Triton(config=config, security_config=security)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        for m in models:
            _bind(triton, m["config"], m["session"])
        triton.run()
        print(f"\nREADY grpc={args.grpc_port} http={args.http_port} metrics={args.metrics_port} "
              f"models={','.join(m['config'].name for m in models)}", flush=True)
        while not stop.wait(0.5):
            if not triton.is_alive():
                print("triton_test_server: the server died", file=sys.stderr)
                return 1
    finally:
        triton.stop()  # stops tritonserver and removes its workspace (also after a signal)
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, metavar="DIR", help="edge-detect export --format triton output")
    p.add_argument("--grpc-port", type=int, metavar="N", help="gRPC port on 127.0.0.1")
    p.add_argument("--http-port", type=int, default=None, metavar="N", help="HTTP port (default: a free one)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="N",
                   help="Prometheus metrics port (default: a free one)")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME", help="serve only these models")
    p.add_argument("--prepare", action="store_true", help="only create the venv (if needed) and exit")
    p.add_argument(_IN_VENV, dest="in_venv", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.prepare and (args.model_repository is None or args.grpc_port is None):
        p.error("--model-repository and --grpc-port are required (or --prepare)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.in_venv:
        return serve(args)
    try:
        python = ensure_venv()
    except (RuntimeError, OSError) as exc:
        print(f"triton_test_server: cannot prepare the venv: {exc}", file=sys.stderr)
        return 3
    if args.prepare:
        print(python)
        return 0
    if not args.model_repository.is_dir():
        print(f"triton_test_server: --model-repository: expected a folder, got {args.model_repository}",
              file=sys.stderr)
        return 2
    extra = [] if args.http_port is not None else ["--http-port", str(free_port())]
    extra += [] if args.metrics_port is not None else ["--metrics-port", str(free_port())]
    sys.stdout.flush()
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv, *extra, _IN_VENV])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
