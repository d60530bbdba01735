"""The NumPy decision and the import check of ``tools/jetson/setup.sh`` (stdlib only; run with the venv's python).

JetPack's OpenCV (``python3-opencv``, the GStreamer-enabled build) is compiled against NumPy 1.x; NumPy 2 breaks
it at import or first use ("_ARRAY_API not found", "numpy.core.multiarray failed to import"). A venv with
``--system-site-packages`` sees JetPack's NumPy, and a plain ``pip install "numpy>=1.23"`` would replace it with
NumPy 2. So:

* ``numpy-requirement`` prints what to ``pip install`` for NumPy: nothing when the NumPy this python sees already
  satisfies edge-detect and JetPack's OpenCV (``>=1.23,<2``, e.g. a NumPy 1.26 already installed), else
  ``numpy>=1.23,<2`` (JetPack 6 ships Ubuntu 22.04's 1.21, older than edge-detect needs; the newest 1.x keeps
  OpenCV working). setup.sh also constrains every pip install to ``numpy<2`` (``PIP_CONSTRAINT``), so no
  dependency pulls NumPy 2 in.
* ``check`` imports ``numpy``, ``cv2`` and ``tensorrt`` with this python, refuses NumPy >= 2, and hands OpenCV a
  NumPy array (``cv2.imencode``), which is where a NumPy-2 mismatch shows; exit status 1 with the reason.
"""
from __future__ import annotations

import sys
from typing import List, Optional, Tuple

NUMPY_SPEC = "numpy>=1.23,<2"
NUMPY_MIN, NUMPY_BELOW = (1, 23), (2, 0)


def _version(text: str) -> Tuple[int, int]:
    parts = []
    for token in str(text).split(".")[:2]:
        digits = "".join(ch for ch in token if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def numpy_requirement() -> str:
    """``""`` when the visible NumPy is within ``>=1.23,<2``, else :data:`NUMPY_SPEC`."""
    try:
        import numpy
    except ImportError:
        return NUMPY_SPEC
    return "" if NUMPY_MIN <= _version(numpy.__version__) < NUMPY_BELOW else NUMPY_SPEC


def check() -> List[str]:
    """Problems with ``import numpy, cv2, tensorrt`` here (empty: all good); prints the versions found."""
    problems: List[str] = []
    try:
        import numpy
    except ImportError as exc:
        return [f"numpy not importable: {exc}"]
    if _version(numpy.__version__) >= NUMPY_BELOW:
        problems.append(f"NumPy {numpy.__version__}: JetPack's OpenCV is built against NumPy 1.x; "
                        f"pip install '{NUMPY_SPEC}' in this venv")
    cv2 = _import("cv2", problems, "OpenCV: sudo apt-get install python3-opencv (JetPack's, with GStreamer)")
    if cv2 is not None and not problems:
        try:
            ok, _ = cv2.imencode(".png", numpy.zeros((4, 4, 3), numpy.uint8))  # OpenCV <-> NumPy C API
            if not ok:
                problems.append("OpenCV could not encode a NumPy image")
        except (ImportError, AttributeError, TypeError, RuntimeError) as exc:
            problems.append(f"OpenCV cannot use NumPy {numpy.__version__}: {exc} (pip install '{NUMPY_SPEC}')")
    trt = _import("tensorrt", problems, "TensorRT: sudo apt-get install python3-libnvinfer (JetPack's)")
    if not problems:
        print(f"  [ok]   numpy {numpy.__version__}, OpenCV {cv2.__version__}, TensorRT {trt.__version__}")
    return problems


def _import(name: str, problems: List[str], hint: str) -> Optional[object]:
    try:
        return __import__(name)
    except ImportError as exc:
        problems.append(f"{name} not importable ({exc}); {hint}")
        return None


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["numpy-requirement"]:
        print(numpy_requirement())
        return 0
    if args == ["check"]:
        problems = check()
        for p in problems:
            print(f"  [fail] {p}")
        return 1 if problems else 0
    print("usage: jetson_env.py numpy-requirement | check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
