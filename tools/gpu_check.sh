#!/usr/bin/env bash
# One-command GPU check (no network): gpu-marked tests, torch CUDA parity, CUDA helpers with real cuda-python,
# TensorRT build / fresh-process load / FP16+INT8 parity / bench. Writes gpu_check.json and gpu_check.md.
# Usage: tools/gpu_check.sh [--out DIR] [--data ../shared] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python tools/gpu_check.py "$@"
