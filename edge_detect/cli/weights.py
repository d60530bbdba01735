"""``edge-detect weights``: list, fetch (with sha256 check) and locate the official YOLOv5 checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List

from edge_detect.errors import ModelError

_EPILOG = """\
examples:
  edge-detect weights list
  edge-detect weights fetch yolov5s --dir ~/models
  edge-detect weights path yolov5n

Downloads go to --dir, else $EDGE_DETECT_WEIGHTS, else the repository's weights/ folder. A checkpoint whose
sha256 is not in the manifest is downloaded with a warning showing the computed hash.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``weights`` and its actions."""
    p = subparsers.add_parser(
        "weights", help="list, download and locate official YOLOv5 checkpoints",
        description="Manage the official YOLOv5 checkpoints listed in weights/manifest.yaml.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="show the manifest and which checkpoints are present locally",
                       description="Show every checkpoint of the manifest and where it is found locally.")
    f = actions.add_parser("fetch", help="download a checkpoint and verify its sha256",
                           description="Download a checkpoint from the manifest and verify its sha256.")
    f.add_argument("name", metavar="NAME", help="model name from the manifest, e.g. yolov5s")
    f.add_argument("--dir", default=None, metavar="DIR",
                   help="destination folder (default: $EDGE_DETECT_WEIGHTS or the repository's weights/)")
    f.add_argument("--no-verify", action="store_true", help="do not check the sha256 (not recommended)")
    f.add_argument("--force", action="store_true", help="download again even if the file is present")
    w = actions.add_parser("path", help="print the local file a name resolves to (no network)",
                           description="Print the checkpoint file a name or path resolves to, without network.")
    w.add_argument("name", metavar="NAME", help="model name (e.g. yolov5n) or a path")
    return p


def _list_rows() -> List[str]:
    from edge_detect.weights import load_manifest, resolve_weights

    rows = [f"{'name':<10} {'release':<8} {'params':>8} {'size':>9}  {'sha256':<14} local"]
    for name, e in load_manifest().items():
        try:
            local = str(resolve_weights(name))
        except ModelError:
            local = "-"
        size = f"{e.size / 1e6:.1f} MB" if e.size else "?"
        params = f"{e.params:.2f}M" if e.params else "?"
        sha = e.sha256[:12] + ".." if e.sha256 else "unverified"
        rows.append(f"{name:<10} {e.release:<8} {params:>8} {size:>9}  {sha:<14} {local}")
    return rows


def main(args: argparse.Namespace) -> int:
    """Dispatch to list / fetch / path."""
    from edge_detect.weights import fetch, resolve_weights

    if args.weights_action == "list":
        print("\n".join(_list_rows()))
    elif args.weights_action == "fetch":
        path = fetch(args.name, Path(args.dir) if args.dir else None, verify=not args.no_verify,
                     progress=not getattr(args, "quiet", False), force=args.force)
        print(path)
    else:
        print(resolve_weights(args.name))
    return 0
