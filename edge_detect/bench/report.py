"""The bench report: its JSON Schema (:data:`REPORT_SCHEMA`, :func:`validate_report`), the
:class:`BenchReport` container, and its renderings: terminal table, Markdown, PNG chart, files
(:func:`write_report`). The keys are documented in :mod:`edge_detect.bench`."""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.errors import DataError
from edge_detect.stats import nan_to_none
from edge_detect.paths import PathLike

__all__ = ["SCHEMA_VERSION", "STAGES", "REPORT_SCHEMA", "BenchReport", "validate_report", "format_table",
           "to_markdown", "plot_report", "write_report"]

SCHEMA_VERSION = 1
PLOT_BASE_IN, PLOT_ROW_IN = 1.8, 0.6  # PNG chart height in inches: base + per configuration (100 dpi)
STAGES = ("decode", "preprocess", "inference", "postprocess", "sinks")

# ---------------------------------------------------------------------------------------------- schema
_NUM = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}


def _obj(props: Mapping[str, Any], required: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    return {"type": "object", "properties": dict(props), "required": list(required or props)}


REPORT_SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edge-detect bench report",
    **_obj({
        "schema": {"const": SCHEMA_VERSION},
        "system": {"type": "object"},
        "results": {"type": "array", "items": _obj({
            "model": {"type": "string"},
            "backend": {"type": "string"},
            "precision": {"type": "string", "enum": ["fp32", "bf16", "fp16", "int8"]},
            "tf32": {"type": ["boolean", "null"]},
            "device": {"type": ["string", "null"]},
            "imgsz": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
            "batch": {"type": "integer", "minimum": 1},
            "inference": _obj({k: _NUM for k in ("fps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms")}),
            "e2e": _obj({
                "fps": _NUM, "frames": _INT, "dropped": _INT, "corrupt": _INT, "ratio_to_inference": _NUM,
                "latency_ms": _obj({k: _NUM for k in ("p50", "p95", "p99")}),
                "stages": _obj({s: _obj({"mean_ms": _NUM, "p95_ms": _NUM}) for s in STAGES}),
            }),
            "accuracy": _obj({"map50_95": _NUM, "map50": _NUM}),
        }, required=("model", "backend", "precision", "imgsz", "batch", "inference"))},
        "skipped": {"type": "array", "items": _obj({"model": {"type": "string"}, "reason": {"type": "string"}})},
    }, required=("system", "results")),
}


def validate_report(report: Mapping[str, Any]) -> None:
    """Check a report dict (as written to JSON) against :data:`REPORT_SCHEMA`.

    Raises:
        DataError: a stable key is missing or has the wrong type; the message gives the JSON path, what was
            expected and what was found.
        MissingDependencyError: ``jsonschema`` is not installed.
    """
    jsonschema = require("jsonschema", "dev")
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise DataError(f"bench report {where}: expected {err.validator} {err.validator_value!r}, "
                        f"got {err.instance!r} ({err.message}); {len(errors)} error(s) in all")


@dataclass
class BenchReport:
    """Everything one ``bench`` run measured: system info, settings, results and skipped configurations."""

    system: Dict[str, Any]
    settings: Dict[str, Any] = field(default_factory=dict)
    results: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (``nan`` -> ``None``) following :data:`REPORT_SCHEMA`."""
        return nan_to_none({"schema": SCHEMA_VERSION, "system": self.system, "settings": self.settings,
                            "results": self.results, "skipped": self.skipped})


# ---------------------------------------------------------------------------------------------- rendering
def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _precision(r: Mapping[str, Any]) -> str:
    """``fp32``, or ``fp32+tf32`` when the run let CUDA use TF32 (key ``tf32``)."""
    return f"{r['precision']}+tf32" if r.get("tf32") else str(r["precision"])


def _label(r: Mapping[str, Any]) -> str:
    return f"{r['model']} {r['backend']} {_precision(r)} {r['imgsz'][0]}x{r['imgsz'][1]} b{r['batch']}"


_COLUMNS = ("model", "backend", "precision", "imgsz", "batch", "inf FPS", "mean ms", "p50 ms", "p95 ms",
            "p99 ms", "e2e FPS", "e2e/inf", "g2g p50/p95/p99 ms", "dropped", "mAP50-95", "mAP50")


def _rows(report: Mapping[str, Any]) -> List[List[str]]:
    rows = []
    for r in report["results"]:
        inf, e2e, acc = r["inference"], r.get("e2e") or {}, r.get("accuracy") or {}
        lat = e2e.get("latency_ms") or {}
        rows.append([
            r["model"], r["backend"], _precision(r), f"{r['imgsz'][0]}x{r['imgsz'][1]}", str(r["batch"]),
            _f(inf["fps"]), _f(inf["mean_ms"], 2), _f(inf["p50_ms"], 2), _f(inf["p95_ms"], 2),
            _f(inf["p99_ms"], 2), _f(e2e.get("fps")), _f(e2e.get("ratio_to_inference"), 2),
            "/".join(_f(lat.get(k)) for k in ("p50", "p95", "p99")) if lat else "-",
            str(e2e["dropped"]) if e2e else "-", _f(acc.get("map50_95"), 3), _f(acc.get("map50"), 3),
        ])
    return rows


_DETECT_COLUMNS = ("configuration", "detect", "frames", "inference calls", "skipped", "motion frames",
                   "CPU ms/frame", "motion ms", "inference ms", "calls vs first", "CPU vs first", "lines",
                   "lines = first", "tracks", "tracks found", "same output")


def _detect_rows(report: Mapping[str, Any]) -> List[List[str]]:
    """One row per detect setting of every result (``detect`` list; :mod:`edge_detect.bench.detect`)."""
    rows = []
    for r in report["results"]:
        for d in r.get("detect") or ():
            cpu, vs = d.get("cpu_ms_per_frame") or {}, d.get("vs_first") or {}
            counts = ", ".join(f"{n} {c['in']}/{c['out']}" for n, c in (d.get("lines") or {}).items()) or "-"
            rows.append([_label(r), d["spec"], str(d["frames"]), str(d["inference_calls"]), str(d["skipped_frames"]),
                         str(d["motion_frames"]), _f(cpu.get("total"), 2), _f(cpu.get("motion"), 2),
                         _f(cpu.get("inference"), 2), _f(vs.get("inference_calls"), 3), _f(vs.get("cpu"), 3),
                         counts, "yes" if vs.get("lines_equal") else "no", str(d.get("tracks", "-")),
                         str(vs.get("tracks_found", "-")), _f(vs.get("same_output_frames"), 3)])
    return rows


def _as_dict(report: Union["BenchReport", Mapping[str, Any]]) -> Mapping[str, Any]:
    return report.to_dict() if isinstance(report, BenchReport) else report


def format_table(report: Union[BenchReport, Mapping[str, Any]]) -> str:
    """Plain-text table for the terminal, one row per result, then the skipped configurations."""
    d = _as_dict(report)
    rows = [list(_COLUMNS)] + _rows(d)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    detect = _detect_rows(d)
    if detect:
        rows = [list(_DETECT_COLUMNS)] + detect
        widths = [max(len(row[i]) for row in rows) for i in range(len(_DETECT_COLUMNS))]
        lines += [""] + ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                         for row in rows]
    lines += [f"skipped {s['model']} ({s.get('backend') or 'auto'}): {s['reason']}" for s in d.get("skipped", [])]
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> List[str]:
    """Markdown table; the first ``text_columns`` columns left-aligned, the (numeric) rest right-aligned."""
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _name(path: Optional[str]) -> str:
    return Path(path).name if path else "-"


def to_markdown(report: Union[BenchReport, Mapping[str, Any]], title: Optional[str] = None,
                heading: str = "###") -> str:
    """Markdown: system line, settings and load, results table, per-stage e2e table, skipped configurations."""
    from edge_detect.sysinfo import summary_line

    d = _as_dict(report)
    lines = [f"{heading} {title}", ""] if title else []
    lines += [f"System: {summary_line(d['system'])}", ""]
    s = d.get("settings") or {}
    load0 = (d["system"].get("cpu") or {}).get("load_avg")
    load1 = s.get("load_avg_end")
    lines += [f"Settings: warm-up {s.get('warmup')}, {s.get('iters')} timed runs, source {_name(s.get('source'))}"
              f" (max frames {s.get('max_frames') or 'all'}), data {_name(s.get('data'))}, "
              f"threads {s.get('threads') or 'default'}"
              + (f"; load average (1/5/15 min) {load0} at start, {load1} at end" if load0 and load1 else ""), ""]
    lines += _md_table(_COLUMNS, _rows(d), text_columns=4)
    e2e_rows = [[_label(r)] + [f"{_f(st['mean_ms'], 2)} / {_f(st['p95_ms'], 2)}"
                               for st in (r["e2e"]["stages"][k] for k in STAGES)]
                for r in d["results"] if r.get("e2e")]
    if e2e_rows:
        lines += ["", "Per-stage end-to-end time, mean / p95 ms:", ""]
        lines += _md_table(["configuration", *STAGES], e2e_rows, text_columns=1)
    cpu_keys = ("decode", "preprocess", "inference", "postprocess", "sinks", "total")
    cpu_rows = [[_label(r)] + [_f((r["e2e"].get("cpu_ms_per_frame") or {}).get(k), 2) for k in cpu_keys]
                for r in d["results"] if (r.get("e2e") or {}).get("cpu_ms_per_frame")]
    if cpu_rows:
        lines += ["", "CPU ms per processed frame and stage (thread CPU time; inference = process CPU left):", ""]
        lines += _md_table(["configuration", *cpu_keys], cpu_rows, text_columns=1)
    detect = _detect_rows(d)
    if detect:
        lines += ["", "Detect settings (one run each through the app's pipeline; ratios to the first setting; lines "
                      "in/out; tracks found: of the first setting's confirmed tracks):", ""]
        lines += _md_table(_DETECT_COLUMNS, detect, text_columns=2)
    for sk in d.get("skipped", []):
        lines.append(f"\n- skipped `{sk['model']}` ({sk.get('backend') or 'auto'}): {sk['reason']}")
    return "\n".join(lines) + "\n"


def plot_report(report: Union[BenchReport, Mapping[str, Any]], path: PathLike) -> Path:
    """PNG chart: throughput (inference-only and e2e FPS) and latency (p50/p95/p99 ms) per configuration.

    Uses matplotlib's object-oriented API with the Agg canvas (no display, no global pyplot state).
    """
    require("matplotlib", "bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = _as_dict(report)
    results = d["results"]
    if not results:
        raise DataError("bench plot: expected at least one result, got none (all configurations skipped?)")
    labels = [_label(r) for r in results]
    y = np.arange(len(results))
    fig = Figure(figsize=(11, PLOT_BASE_IN + PLOT_ROW_IN * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    ax_fps, ax_lat = fig.subplots(1, 2, sharey=True)
    inf = [r["inference"]["fps"] or 0.0 for r in results]
    e2e = [(r.get("e2e") or {}).get("fps") or 0.0 for r in results]
    h = 0.38
    for offset, values, name, color in ((-h / 2, inf, "inference-only FPS", "C0"),
                                        (h / 2, e2e, "end-to-end FPS", "C1")):
        bars = ax_fps.barh(y + offset, values, h, label=name, color=color)
        ax_fps.bar_label(bars, labels=[f"{v:.1f}" if v else "n/a" for v in values], fontsize="x-small",
                         padding=2)
    ax_fps.set_xlabel("images / s (higher is better)")
    ax_fps.set_yticks(y, labels)
    ax_fps.invert_yaxis()
    ax_fps.margins(x=0.15)
    h3 = 0.27
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        bars = ax_lat.barh(y + (i - 1) * h3, [r["inference"][q] or 0.0 for r in results], h3,
                           label=f"inference {q[:3]} ms", color=f"C{i + 2}")
        ax_lat.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)
    ax_lat.set_xlabel("inference latency per batch, ms (lower is better)")
    ax_lat.margins(x=0.15)
    handles = [h for ax in (ax_fps, ax_lat) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False)
    fig.suptitle("edge-detect bench")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def write_report(report: BenchReport, json_path: Optional[PathLike] = None,
                 markdown_path: Optional[PathLike] = None, plot_path: Optional[PathLike] = None) -> Dict[str, Path]:
    """Write the JSON, Markdown and PNG outputs that are asked for; returns their paths.

    The JSON is checked against :data:`REPORT_SCHEMA` first when ``jsonschema`` is installed.
    """
    written: Dict[str, Path] = {}
    d = report.to_dict()
    if json_path is not None:
        if importlib.util.find_spec("jsonschema") is not None:  # self-check; optional dependency
            validate_report(d)
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(d, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        written["json"] = p
    if markdown_path is not None:
        p = Path(markdown_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(to_markdown(d), encoding="utf-8")
        written["markdown"] = p
    if plot_path is not None:
        written["plot"] = plot_report(d, plot_path)
    return written
