#!/usr/bin/env bash
# One-command GPU check (no network): gpu-marked tests, torch CUDA parity, CUDA helpers with real cuda-python,
# TensorRT build / fresh-process load / FP16+INT8 parity / bench, and the pipeline rows (detection parity, device
# path, CUDA-graph ceiling, 1- and 16-stream 720p e2e, official detect.py with --yolov5 DIR). Writes gpu_check.json/.md.
# Usage: tools/gpu_check.sh [--out DIR] [--data ../shared] [--yolov5 DIR] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python tools/gpu_check.py "$@"
