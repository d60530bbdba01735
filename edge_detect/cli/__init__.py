"""``edge-detect`` command line: a thin layer of argparse subcommands over the Python API.

Each subcommand lives in its own module of this package and defines::

    def add_parser(subparsers) -> argparse.ArgumentParser   # registers the subcommand and its flags
    def main(args: argparse.Namespace) -> int               # calls the API, returns the exit code

Errors derived from :class:`~edge_detect.errors.EdgeDetectError` (and file/OS errors) are printed as one
line ``edge-detect: error: ...`` with exit code 2; Ctrl-C exits with 130. Tracebacks only with ``--debug``.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from typing import List, NoReturn, Optional

from edge_detect.errors import EdgeDetectError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

# order = order in --help
SUBCOMMANDS = ("run", "serve", "detect", "val", "export", "bench", "train", "weights")

_DESCRIPTION = """\
Real-time YOLO object detection for the edge (YOLOv5, and YOLOv5u / YOLOv8 / YOLO11 checkpoints).

  edge-detect run     --model yolov5n.onnx --source video.mp4 --save-video out.mp4
  edge-detect serve   --config cams.yaml      # dashboard + REST API on http://127.0.0.1:8080/
  edge-detect detect  --model yolov5n.onnx --source images/
  edge-detect val     --model yolov5n.onnx --data coco128.yaml
  edge-detect export  --weights yolov5n.pt --format onnx --output yolov5n.onnx
  edge-detect bench   --model yolov5n.onnx --source video.mp4 --json bench.json
  edge-detect train   --weights yolov5n.pt --data my.yaml --epochs 50
  edge-detect weights fetch yolov5s
"""


class _Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``edge-detect run: error: unrecognized argument --sorce (did you mean
    --source?); see edge-detect run --help`` (exit code 2). Subcommand parsers are of this class too, so an
    unknown flag is reported by the subcommand it was given to, with the closest of that subcommand's flags."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        self._given = list(sys.argv[1:] if args is None else args)
        namespace, extra = super().parse_known_args(args, namespace)
        flags = [x for x in extra if x.startswith("-")]
        if flags and self._subcommand() is None:  # a leaf parser: its unknown flags are errors here
            self.error(f"unrecognized argument {flags[0]}")
        return namespace, extra

    def _subcommand(self) -> "Optional[argparse._SubParsersAction]":
        return next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)

    def _hint(self, message: str) -> str:
        """`` (did you mean --source?)`` for the unknown flag in ``message`` or among the arguments given."""
        import difflib

        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        named = message.rsplit(" ", 1)[-1] if message.startswith("unrecognized argument ") else ""
        for word in [named] + [w for w in getattr(self, "_given", []) if w.startswith("--")]:
            word = word.split("=", 1)[0]
            close = difflib.get_close_matches(word, flags, n=1, cutoff=0.6) if word.startswith("--") \
                and word not in flags else []
            if close:
                return f" (did you mean {close[0]}?)" if word == named else f" ({word}: did you mean {close[0]}?)"
        return ""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}{self._hint(message)}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand whose module is importable."""
    from edge_detect import __version__

    parser = _Parser(
        prog="edge-detect", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edge-detect {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # subcommand not shipped
            raise
        p = module.add_parser(sub)
        p.set_defaults(_main=module.main)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``edge-detect`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: one line and SystemExit(2) (see _Parser)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 1
    _setup_logging(args.verbose, args.quiet)
    if args.quiet:  # -q: no progress bars either (run keeps its tri-state `progress`, the others `no_progress`)
        if hasattr(args, "no_progress"):
            args.no_progress = True
        if getattr(args, "progress", True) is None:
            args.progress = False
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("edge-detect: interrupted", file=sys.stderr)
        return 130
    except (EdgeDetectError, OSError) as exc:
        if args.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _end_progress_bars(exc)
        print(f"edge-detect: error: {msg}", file=sys.stderr)
        return 2


def _end_progress_bars(exc: BaseException) -> None:
    """Release the frames of the failed call, so that progress bars still open in them are closed (tqdm ends
    their line when it is collected) and the one-line error starts on a line of its own."""
    exc.__traceback__ = None
    gc.collect()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
