#!/usr/bin/env python3
"""Tracking benchmark: identities (MOTA, IDF1, ID switches, fragmentations) and line count errors of every
tracker on seeded synthetic scenes with exact ground truth (no video, no model).

Scenes (:mod:`edge_detect.stream.trackbench.scenes`): ten scenario families, ``--seeds`` scenes each; every
tracker gets the same noisy detections frame by frame. Count error = ``|in - truth| + |out - truth|`` per line,
with both rules of the ``lines`` processor (``LineCounter(count="crossing")``, the default: every crossing of a
track's path; ``count="once"``: once per track and line). Needs ``motmetrics``
(``pip install -e '.[track]'``); the ``trackers`` package (roboflow) adds its ByteTrack, SORT, OC-SORT and
BoT-SORT (installed with ``--no-deps``, see BENCHMARKS.md). The sprite images are only read for trackers that
look at the frame.

    python tools/track_bench.py                                  # 100 seeds per family, every tracker
    python tools/track_bench.py --seeds 20 --trackers bytetrack iou --families occlusion fast
    python tools/track_bench.py --json track.json --markdown track.md --failures bytetrack
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from edge_detect.stream.trackbench.evaluate import (TRACKERS, aggregate, available_trackers,  # noqa: E402
                                                    default_data, run_task)
from edge_detect.stream.trackbench.scenes import FAMILIES  # noqa: E402

COLUMNS = "| tracker | MOTA | IDF1 | IDsw | Frag | count error, per crossing (scenes exact) | " \
          "count error, once per track (scenes exact) |\n|---|---:|---:|---:|---:|---:|---:|"


def _row(name: str, a: Dict[str, Any]) -> str:
    return (f"| {name} | {a['MOTA']:.3f} | {a['IDF1']:.3f} | {a['IDsw']} | {a['Frag']} | "
            f"{a['count_error_crossing']} ({100 * a['exact_crossing']:.1f} %) | "
            f"{a['count_error_once']} ({100 * a['exact_once']:.1f} %) |")


def markdown(summary: Dict[str, Any]) -> str:
    """The overall table, then one table per family."""
    parts = [f"**All families** ({summary['scenes']} scenes)\n", COLUMNS]
    parts += [_row(n, summary["overall"][n]) for n in summary["trackers"]]
    for fam, per in summary["families"].items():
        parts += ["", f"**{fam}** ({per[summary['trackers'][0]]['scenes']} scenes)\n", COLUMNS]
        parts += [_row(n, per[n]) for n in summary["trackers"]]
    return "\n".join(parts) + "\n"


def run(families: Sequence[str], seeds: Sequence[int], trackers: Sequence[str], jobs: int,
        data: Any = None, options: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Every (family, seed) scene through every tracker: per-scene rows and the aggregates."""
    tasks = [(fam, seed, tuple(trackers), str(data) if data else None, options or {})
             for fam in families for seed in seeds]
    if jobs > 1:
        with multiprocessing.get_context("spawn").Pool(jobs, initializer=_quiet) as pool:
            results = list(pool.imap_unordered(run_task, tasks, chunksize=4))
    else:
        _quiet()
        results = [run_task(t) for t in tasks]
    results.sort(key=lambda r: (list(families).index(r[0]), r[1]))
    per_family: Dict[str, Dict[str, List[dict]]] = defaultdict(lambda: defaultdict(list))
    scenes = []
    for fam, seed, variant, rows in results:
        scenes.append({"family": fam, "seed": seed, "variant": variant, "results": rows})
        for name, row in rows.items():
            per_family[fam][name].append(row)
    overall = {n: aggregate([r for fam in per_family.values() for r in fam[n]]) for n in trackers}
    return {"trackers": list(trackers), "scenes": len(results), "seeds": [min(seeds), max(seeds)],
            "overall": overall,
            "families": {fam: {n: aggregate(per_family[fam][n]) for n in trackers} for fam in families},
            "per_scene": scenes}


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def failures(summary: Dict[str, Any], tracker: str, rule: str = "crossing") -> List[str]:
    """One line per scene where ``tracker`` miscounted under ``rule``."""
    out = []
    for s in summary["per_scene"]:
        r = s["results"].get(tracker)
        if r and r["count_error"][rule]:
            c = r["counts"]
            out.append(f"{s['family']} seed {s['seed']} ({s['variant']}): error {r['count_error'][rule]}, "
                       f"counted {c[rule]} truth {c['truth']}, IDsw {r['num_switches']}")
    return out


def parse_options(items: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``["bytetrack.buffer_s=3", ...]`` -> ``{"bytetrack": {"buffer_s": 3}}`` (values read as YAML)."""
    import yaml

    out: Dict[str, Dict[str, Any]] = defaultdict(dict)
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.rpartition(".")
        if not sep or not dot or name not in TRACKERS:
            raise SystemExit(f"--option: expected TRACKER.KEY=VALUE with TRACKER one of {', '.join(TRACKERS)}, "
                             f"got {item!r}")
        out[name][opt] = yaml.safe_load(value)
    return dict(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--seeds", type=int, default=100, help="scenes per family (seeds seed-start ...)")
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--trackers", nargs="+", default=None, choices=list(TRACKERS),
                    help="default: every tracker whose package is installed")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data", default=None, help="shared data folder (sprite images); default $EDGE_DETECT_DATA")
    ap.add_argument("--json", default=None, help="write the aggregates and per-scene rows here")
    ap.add_argument("--markdown", default=None, help="write the tables here")
    ap.add_argument("--option", action="append", default=[], metavar="TRACKER.KEY=VALUE",
                    help="a tracker setting (VALUE read as YAML), e.g. bytetrack.buffer_s=3 (repeatable)")
    ap.add_argument("--failures", default=None, metavar="TRACKER",
                    help="list the scenes this tracker miscounts (the default rule, per crossing)")
    args = ap.parse_args(argv)
    names = available_trackers(args.trackers)
    missing = sorted(set(args.trackers or TRACKERS) - set(names))
    if missing:
        print(f"skipped (package not installed): {', '.join(missing)}", file=sys.stderr)
    t0 = time.perf_counter()
    summary = run(args.families, range(args.seed_start, args.seed_start + args.seeds), names, max(args.jobs, 1),
                  args.data or default_data(), parse_options(args.option))
    summary["command"] = "python tools/track_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    text = markdown(summary)
    print(text)
    print(f"{summary['scenes']} scenes in {summary['seconds']} s", file=sys.stderr)
    if args.failures:
        print("\n".join(failures(summary, args.failures)) or "no miscounted scene")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
