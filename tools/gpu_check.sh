#!/usr/bin/env bash
# One-command GPU check (no network), under 5 minutes (--budget-s 290; what does not fit is listed as skipped with
# "--only NAME"): torch CUDA parity, CUDA helpers with real cuda-python, the pipeline rows of issue 19 (detection
# parity, device path vs host path, CUDA-graph ceiling, 1- and 16-stream 720p e2e host vs device path with the
# per-stage table, 720p60 glass-to-glass, official detect.py with --yolov5 DIR), the gpu-marked tests, then TensorRT
# build / fresh-process load / FP16+INT8 parity / bench and the round-2 checks of issue 20. Writes gpu_check.json
# and gpu_check.md.
# Usage: tools/gpu_check.sh [--out DIR] [--data ../shared] [--yolov5 DIR] [--budget-s S] [--only A,B] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python tools/gpu_check.py "$@"
