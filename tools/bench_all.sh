#!/usr/bin/env bash
# Reproduce the measured section of BENCHMARKS.md on this machine.
#
#   tools/bench_all.sh                 # CPU rows (ONNX Runtime, FP32 and INT8, 640x640 and 384x640)
#   GPU=1 tools/bench_all.sh           # also GPU rows (TensorRT FP32/FP16/INT8 engines; needs TensorRT + CUDA)
#   RUNS="openvino openvino-stream live" tools/bench_all.sh   # only the OpenVINO rows + live latency (extra `openvino`)
#
# Environment:
#   EDGE_DETECT_DATA  shared data folder (default: ../shared beside the repository), read in place
#   OUT               work folder for models and results (default: runs/bench, git-ignored)
#   ITERS / WARMUP    inference-only timed / warm-up calls (default: 200 / 20)
#   THREADS           ONNX Runtime intra-op threads (default: unset = one per core)
#   UPDATE            1 (default) rewrites the block between the bench markers in BENCHMARKS.md
#   RUNS              which measurements to (re)run: any of "640 384x640 batch4 openvino openvino-stream live gpu"
#                     (default: all but gpu, plus gpu with GPU=1; the openvino ones when openvino imports);
#                     the results block is rebuilt from every JSON present in $OUT,
#                     so a run spoiled by a busy machine can be repeated alone, e.g. RUNS=640
#   QUIET_LOAD        wait (up to QUIET_WAIT s, default 600) until the 1-min load average is below this
#                     before measuring, e.g. QUIET_LOAD=0.5 on a shared machine (default: do not wait)
#
# Steps: export yolov5n to a static 640x640 ONNX and to a dynamic one; quantize both to Q/DQ INT8 calibrated on
# coco128 train2017 (128 images); then one `edge-detect bench` run per input size with the end-to-end video
# (vtest.avi, whole file) and the accuracy on coco128 val2017. Results: $OUT/bench-*.{json,md,png}.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${EDGE_DETECT_DATA:-$REPO/../shared}"
DATA="$(cd "$DATA" && pwd)"
OUT="${OUT:-$REPO/runs/bench}"
ITERS="${ITERS:-200}"
WARMUP="${WARMUP:-20}"
UPDATE="${UPDATE:-1}"
PY="${PYTHON:-python}"
ED=("$PY" -m edge_detect)

WEIGHTS="$DATA/weights/yolov5n.pt"
VIDEO="$DATA/videos/vtest.avi"
COCO="$DATA/datasets/coco128/coco128.yaml"
for f in "$WEIGHTS" "$VIDEO" "$COCO"; do
  [[ -f "$f" ]] || { echo "bench_all.sh: missing $f (set EDGE_DETECT_DATA to the shared folder)" >&2; exit 2; }
done
mkdir -p "$OUT"
cd "$REPO"

export_if_missing() {  # output, then export flags
  local out="$1"; shift
  if [[ ! -f "$out" ]]; then
    "${ED[@]}" export --weights "$WEIGHTS" --output "$out" "$@"
  fi
}

echo "== export ($OUT)"
export_if_missing "$OUT/yolov5n.onnx"
export_if_missing "$OUT/yolov5n-dyn.onnx" --dynamic
OV_RUNS=""
"$PY" -c "import openvino, nncf" 2>/dev/null && OV_RUNS=" openvino openvino-stream live"
RUNS="${RUNS:-640 384x640 batch4${OV_RUNS}${GPU:+ gpu}}"
[[ "${GPU:-0}" == "1" ]] || RUNS="${RUNS// gpu/}"
want() { [[ " $RUNS " == *" $1 "* ]]; }

COMMON=(--warmup "$WARMUP" --iters "$ITERS" --source "$VIDEO" --data "$COCO")
[[ -n "${THREADS:-}" ]] && COMMON+=(--threads "$THREADS")

wait_quiet() {  # shared machines: measure when other jobs are idle
  [[ -n "${QUIET_LOAD:-}" ]] || return 0
  local deadline=$(( SECONDS + ${QUIET_WAIT:-600} ))
  until "$PY" -c "import os, sys; sys.exit(os.getloadavg()[0] >= float(sys.argv[1]))" "$QUIET_LOAD"; do
    if (( SECONDS >= deadline )); then
      echo "== still busy after ${QUIET_WAIT:-600} s ($(cut -d' ' -f1-3 /proc/loadavg)); measuring anyway" >&2
      return 0
    fi
    sleep 10
  done
}

echo "== runs: $RUNS"
if want 640 || want 384x640; then
  export_if_missing "$OUT/yolov5n-int8.onnx" --int8 --calib "$COCO" --calib-images 128
  export_if_missing "$OUT/yolov5n-dyn-int8.onnx" --dynamic --int8 --calib "$COCO" --calib-images 128
fi
if want 640; then
  wait_quiet
  echo "== bench 640x640 (static models, batch 1), $(uptime)"
  "${ED[@]}" bench --model "$OUT/yolov5n.onnx" --model "$OUT/yolov5n-int8.onnx" "${COMMON[@]}" \
    --json "$OUT/bench-640.json" --markdown "$OUT/bench-640.md" --plot "$OUT/bench-640.png"
fi

if want 384x640; then
  wait_quiet
  echo "== bench 384x640, minimum rectangle for 16:9 (dynamic models, batch 1), $(uptime)"
  "${ED[@]}" bench --model "$OUT/yolov5n-dyn.onnx" --model "$OUT/yolov5n-dyn-int8.onnx" --imgsz 384x640 \
    "${COMMON[@]}" --json "$OUT/bench-384x640.json" --markdown "$OUT/bench-384x640.md" \
    --plot "$OUT/bench-384x640.png"
fi

if want batch4; then
  wait_quiet
  echo "== bench batch 4 throughput, inference only (dynamic FP32 model), $(uptime)"
  "${ED[@]}" bench --model "$OUT/yolov5n-dyn.onnx" --imgsz 640 384x640 --batch 4 --warmup "$WARMUP" \
    --iters "$(( ITERS / 4 > 10 ? ITERS / 4 : 10 ))" ${THREADS:+--threads "$THREADS"} \
    --json "$OUT/bench-batch4.json" --markdown "$OUT/bench-batch4.md"
fi

# OpenVINO rows: ONNX Runtime FP32 vs OpenVINO FP32 (f32 hint) vs OpenVINO INT8 (NNCF) in one bench run each, on
# a 1280x720 video made from vtest.avi (tools/make_720p_video.py): static 640x640 models with mAP, then the
# stream-shaped dynamic models (384x640 for 720p: bench follows the stream's shape like `run` does).
if want openvino || want openvino-stream; then
  VIDEO720="$OUT/vtest-720p.mp4"
  [[ -f "$VIDEO720" ]] || "$PY" "$REPO/tools/make_720p_video.py" "$VIDEO720" --source "$VIDEO"
  export_if_missing "$OUT/yolov5n-int8.xml" --format openvino --int8 --calib "$COCO" --calib-images 128
  export_if_missing "$OUT/yolov5n-dyn-int8.xml" --format openvino --dynamic --int8 --calib "$COCO" \
    --calib-images 128 --int8-val none
  # one bench run per table: every model on both backends (the .xml on onnxruntime is skipped with a note);
  # no --precision: the openvino backend asks for f32 on float models and int8 on quantized ones explicitly
  OV_COMMON=(--warmup "$WARMUP" --iters "$ITERS" --source "$VIDEO720" --backend onnxruntime --backend openvino
             ${THREADS:+--threads "$THREADS"})
fi
if want openvino; then
  wait_quiet
  echo "== bench OpenVINO 640x640 (ORT FP32, OpenVINO FP32 and NNCF INT8), 720p video, $(uptime)"
  "${ED[@]}" bench --model "$OUT/yolov5n.onnx" --model "$OUT/yolov5n-int8.xml" "${OV_COMMON[@]}" --data "$COCO" \
    --json "$OUT/bench-openvino-640.json" --markdown "$OUT/bench-openvino-640.md"
  # the same three inference-only, interleaved call by call (ratios robust to load bursts)
  "$PY" "$REPO/tools/interleaved_inference.py" --rounds "$ITERS" onnxruntime="$OUT/yolov5n.onnx" \
    openvino="$OUT/yolov5n.onnx" openvino="$OUT/yolov5n-int8.xml" | tee "$OUT/interleaved-640.txt"
fi
if want openvino-stream; then
  wait_quiet
  echo "== bench OpenVINO stream-shaped (dynamic models, 384x640 for the 720p video), $(uptime)"
  "${ED[@]}" bench --model "$OUT/yolov5n-dyn.onnx" --model "$OUT/yolov5n-dyn-int8.xml" "${OV_COMMON[@]}" \
    --json "$OUT/bench-openvino-stream.json" --markdown "$OUT/bench-openvino-stream.md"
  # the OpenVINO models again with the throughput hint: two single-thread streams, two frames in flight in the
  # pipeline (its inference-only figure is one synchronous request, i.e. one stream, so e2e/inf > 1 there)
  "${ED[@]}" bench --model "$OUT/yolov5n-dyn.onnx" --model "$OUT/yolov5n-dyn-int8.xml" --backend openvino \
    --hint throughput --warmup "$WARMUP" --iters "$ITERS" --source "$VIDEO720" ${THREADS:+--threads "$THREADS"} \
    --json "$OUT/bench-openvino-stream-throughput.json" --markdown "$OUT/bench-openvino-stream-throughput.md"
  "$PY" "$REPO/tools/interleaved_inference.py" --imgsz 384x640 --rounds "$ITERS" \
    onnxruntime="$OUT/yolov5n-dyn.onnx" openvino="$OUT/yolov5n-dyn.onnx" openvino="$OUT/yolov5n-dyn-int8.xml" \
    | tee "$OUT/interleaved-384x640.txt"
fi

# Live glass-to-glass: the 720p video served as a 60 FPS "camera" (a live, real-time paced source: faster than
# the pipeline) through `run` with the OpenVINO INT8 stream-shaped model and a JSONL sink, 30 s; the summary gives
# p50 latency and the stage means (issue target: p50 <= 1.2x their sum).
if want live; then
  VIDEO60="$OUT/vtest-720p-60fps.mp4"
  [[ -f "$VIDEO60" ]] || "$PY" "$REPO/tools/make_720p_video.py" "$VIDEO60" --source "$VIDEO" --fps 60
  export_if_missing "$OUT/yolov5n-dyn-int8.xml" --format openvino --dynamic --int8 --calib "$COCO" \
    --calib-images 128 --int8-val none
  cat > "$OUT/live.yaml" <<YAML
model: $OUT/yolov5n-dyn-int8.xml
sources: [{uri: $VIDEO60, options: {live: true, realtime: true}}]
YAML
  wait_quiet
  echo "== live glass-to-glass (60 FPS paced 720p source, OpenVINO INT8, 30 s), $(uptime)"
  "${ED[@]}" run --config "$OUT/live.yaml" --save-jsonl "$OUT/live.jsonl" --duration 30 --no-progress \
    --summary-json "$OUT/live-summary.json"
  "$PY" - "$OUT/live-summary.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
stage_sum = sum(v["mean_ms"] for v in s["stages"].values() if v["mean_ms"] is not None)
p50 = s["latency_ms"]["p50"]
print(f"live: {s['processed']} processed, {s['dropped']} dropped, {s['fps']:.1f} FPS; glass-to-glass p50 {p50:.1f} ms, "
      f"sum of stage means {stage_sum:.1f} ms, ratio {p50 / stage_sum:.2f}; CPU ms/frame {s.get('cpu_ms_per_frame')}")
PYEOF
fi

if want gpu; then
  echo "== GPU: TensorRT engines"
  export_if_missing "$OUT/yolov5n.engine" --format engine
  export_if_missing "$OUT/yolov5n-fp16.engine" --format engine --half
  export_if_missing "$OUT/yolov5n-int8.engine" --format engine --int8 --calib "$COCO" --calib-images 128
  "${ED[@]}" bench --model "$OUT/yolov5n.engine" --model "$OUT/yolov5n-fp16.engine" \
    --model "$OUT/yolov5n-int8.engine" "${COMMON[@]}" \
    --json "$OUT/bench-gpu.json" --markdown "$OUT/bench-gpu.md" --plot "$OUT/bench-gpu.png"
fi

JSONS=()
for pair in "640x640 square, batch 1=bench-640.json" "384x640 (minimum 16:9 rectangle), batch 1=bench-384x640.json" \
            "batch 4, inference only=bench-batch4.json" \
            "OpenVINO vs ONNX Runtime, 640x640, 720p video=bench-openvino-640.json" \
            "OpenVINO vs ONNX Runtime, stream-shaped dynamic models (384x640), 720p video=bench-openvino-stream.json" \
            "OpenVINO throughput hint, stream-shaped (384x640), 720p video=bench-openvino-stream-throughput.json" \
            "GPU: TensorRT engines, 640x640=bench-gpu.json"; do
  [[ -f "$OUT/${pair#*=}" ]] && JSONS+=("${pair%%=*}=$OUT/${pair#*=}")
done
echo "== load after: $(uptime)"

# one combined Markdown block (system, exact command, tables) from the JSON files
"$PY" - "$OUT/results.md" "${JSONS[@]}" <<'EOF'
import json, sys
from edge_detect.bench import to_markdown

out, pairs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]  # "title=path"
parts = [to_markdown(json.load(open(path)), title=title) for title, path in pairs]
open(out, "w").write("\n".join(parts))
EOF
echo "== wrote $OUT/results.md"

if [[ "$UPDATE" == "1" ]]; then
  "$PY" - "$REPO/BENCHMARKS.md" "$OUT/results.md" <<'EOF'
import re, sys
doc_path, block_path = sys.argv[1], sys.argv[2]
doc, block = open(doc_path).read(), open(block_path).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if begin not in doc or end not in doc:
    sys.exit(f"{doc_path}: expected the markers {begin} / {end}")
head, rest = doc.split(begin, 1)
open(doc_path, "w").write(head + begin + "\n" + block + end + rest.split(end, 1)[1])
EOF
  echo "== updated BENCHMARKS.md"
fi
