#!/usr/bin/env bash
# Set up edge-detect on an NVIDIA Jetson (JetPack 5.1+ / 6.x) using JetPack's own TensorRT, CUDA and
# GStreamer-enabled OpenCV. Never installs TensorRT or OpenCV from pip: those wheels would shadow JetPack's
# (pip TensorRT does not support Jetson; pip OpenCV has no GStreamer, so CSI cameras and nvv4l2 decode break).
# Never lets pip install NumPy 2: JetPack's OpenCV is built against NumPy 1.x and fails with NumPy 2
# ("_ARRAY_API not found"); JetPack's NumPy is kept when edge-detect can use it (jetson_env.py).
#
# Usage: tools/jetson/setup.sh [--venv DIR] [--check-only] [--no-apt]
#   --venv DIR     virtual environment to create/use (default: .venv-jetson), with system site packages
#   --check-only   only report what is installed and the power/clock state; change nothing
#   --no-apt       do not apt-get install missing JetPack Python packages (just report them)
set -euo pipefail

VENV=".venv-jetson"
CHECK_ONLY=0
USE_APT=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --check-only) CHECK_ONLY=1; shift ;;
    --no-apt) USE_APT=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ok()   { printf '  [ok]   %s\n' "$*"; }
warn() { printf '  [warn] %s\n' "$*"; }
fail() { printf '  [fail] %s\n' "$*"; }

echo "== Platform"
if [[ ! -f /etc/nv_tegra_release ]]; then
  fail "not a Jetson (/etc/nv_tegra_release missing); on a desktop GPU use: pip install -e '.[tensorrt]'"
  exit 1
fi
L4T="$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' /etc/nv_tegra_release)"
MODEL="$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || echo unknown)"
ok "$MODEL, L4T $L4T"
case "$L4T" in
  35.*) ok "JetPack 5.x (TensorRT 8.5, CUDA 11.4): cuda-python 11.x" ; CUDA_PY="cuda-python>=11.4,<12" ;;
  36.*) ok "JetPack 6.x (TensorRT 8.6 / 10.x, CUDA 12.x): cuda-python 12.x"; CUDA_PY="cuda-python>=12.2,<13" ;;
  *)    warn "L4T $L4T is not tested (expected 35.x or 36.x)"; CUDA_PY="cuda-python" ;;
esac

echo "== JetPack Python packages (system python3)"
MISSING=()
if python3 -c "import tensorrt" 2>/dev/null; then
  ok "tensorrt $(python3 -c 'import tensorrt; print(tensorrt.__version__)')"
else
  fail "tensorrt not importable"; MISSING+=(python3-libnvinfer)
fi
if python3 -c "import cv2" 2>/dev/null; then
  if python3 -c "import cv2,sys; sys.exit(0 if 'GStreamer:                   YES' in cv2.getBuildInformation() else 1)" 2>/dev/null; then
    ok "OpenCV $(python3 -c 'import cv2; print(cv2.__version__)') with GStreamer"
  else
    warn "OpenCV has no GStreamer (a pip opencv wheel is shadowing JetPack's? pip uninstall opencv-python opencv-python-headless)"
  fi
else
  fail "OpenCV not importable"; MISSING+=(python3-opencv)
fi
if (( ${#MISSING[@]} )); then
  if (( CHECK_ONLY || ! USE_APT )); then
    warn "install with: sudo apt-get install ${MISSING[*]}  (or: sudo apt-get install nvidia-jetpack)"
  else
    sudo apt-get update && sudo apt-get install -y "${MISSING[@]}"
  fi
fi

echo "== Power mode and clocks (benchmarks report these)"
if command -v nvpmodel >/dev/null; then
  ok "$(nvpmodel -q 2>/dev/null | tr '\n' ' ')"
  echo "         max performance: sudo nvpmodel -m 0 (MAXN; mode ids differ per board, see /etc/nvpmodel.conf)"
else
  warn "nvpmodel not found"
fi
MIN="$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq 2>/dev/null || echo ?)"
MAX="$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq 2>/dev/null || echo ?)"
if [[ "$MIN" == "$MAX" && "$MIN" != "?" ]]; then ok "clocks pinned (jetson_clocks active)"
else warn "clocks not pinned (CPU0 $MIN..$MAX kHz): sudo jetson_clocks for stable benchmark figures"; fi
DLA=$(ls /dev/nvhost-nvdla[0-9]* 2>/dev/null | wc -l || true)
ok "DLA cores: $DLA (build with dla=N / --dla N; layers DLA cannot run fall back to the GPU)"

(( CHECK_ONLY )) && exit 0

echo "== Virtual environment $VENV (sees JetPack's tensorrt and cv2)"
python3 -m venv --system-site-packages "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
# Every pip install below is constrained to NumPy 1.x, so no dependency pulls NumPy 2 in over JetPack's OpenCV.
echo "numpy<2" > "$VENV/numpy-constraint.txt"
export PIP_CONSTRAINT="$VENV/numpy-constraint.txt"
python -m pip install --upgrade pip >/dev/null
# edge-detect without its pip OpenCV dependency; the rest of the runtime deps explicitly.
python -m pip install --no-deps -e "$REPO"
NUMPY_REQ="$(python "$REPO/tools/jetson/jetson_env.py" numpy-requirement)"
if [[ -z "$NUMPY_REQ" ]]; then
  ok "NumPy $(python -c 'import numpy; print(numpy.__version__)') kept (JetPack's OpenCV needs NumPy 1.x)"
else
  warn "NumPy $(python -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo none) does not fit edge-detect + JetPack's OpenCV: installing $NUMPY_REQ"
  python -m pip install "$NUMPY_REQ"
fi
python -m pip install "PyYAML>=6.0" "tqdm>=4.64" "psutil>=5.9" "$CUDA_PY"
echo "== import cv2, tensorrt with the venv's NumPy"
python "$REPO/tools/jetson/jetson_env.py" check || { fail "see above"; exit 1; }
python - <<'PY'
from edge_detect import jetson
print("  [ok]   edge-detect importable;", jetson.status())
PY
echo "Done. Activate with: source $VENV/bin/activate"
