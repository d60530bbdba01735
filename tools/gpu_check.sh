#!/usr/bin/env bash
# One-command GPU check (no network): gpu-marked tests, torch CUDA parity, CUDA helpers with real cuda-python,
# TensorRT build / fresh-process load / FP16+INT8 parity / bench, the TensorRT round-2 checks of issue 20 (FP16 NMS
# layer precision, timing-cache refusal, NMS candidates at conf 0.001, hardware-compat refusal), and the pipeline
# rows of issue 19 (detection parity, device path, CUDA-graph ceiling, 1- and 16-stream 720p e2e, official
# detect.py with --yolov5 DIR). Writes gpu_check.json and gpu_check.md.
# Usage: tools/gpu_check.sh [--out DIR] [--data ../shared] [--yolov5 DIR] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python tools/gpu_check.py "$@"
