"""JSON views the API returns: sources (config + live state), with every credential masked.

Pure functions over the app's ``config_dict()`` and ``status()`` (see :mod:`edge_detect.server.app_protocol`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from edge_detect.errors import ConfigError
from edge_detect.urls import mask_credentials

__all__ = ["mask_tree", "source_views", "regions_view"]

_LIVE_KEYS = ("state", "fps_in", "fps_out", "read", "processed", "dropped", "reconnects", "last_frame_age_s",
              "inference_calls", "skipped_frames", "motion_frames")


def mask_tree(obj: Any) -> Any:
    """``obj`` with :func:`~edge_detect.urls.mask_credentials` applied to every string in it (dict keys too)."""
    if isinstance(obj, str):
        return mask_credentials(obj)
    if isinstance(obj, Mapping):
        return {mask_tree(k) if isinstance(k, str) else k: mask_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_tree(v) for v in obj]
    return obj


def regions_view(regions: Any, kind: str) -> Dict[str, Dict[str, Any]]:
    """A source's lines (``kind="line"``) or zones in one form: ``{NAME: {"xyxy" | "polygon": [flat numbers],
    "classes"?: [...], "anchor"?: str}}`` (the config accepts several; see :func:`~edge_detect.stream.processors.
    lines.line_specs`)."""
    if not regions:
        return {}
    if kind == "line":
        from edge_detect.stream.processors.lines import line_specs as specs
        key = "xyxy"
    else:
        from edge_detect.stream.processors.zones import zone_specs as specs
        key = "polygon"
    try:
        parsed = specs(regions)
    except ConfigError:  # already validated when it was set; show it as given rather than fail a read
        return dict(regions) if isinstance(regions, Mapping) else {}
    out: Dict[str, Dict[str, Any]] = {}
    for spec in parsed:
        item: Dict[str, Any] = {key: [float(v) for v in getattr(spec, key)]}
        if spec.classes:
            item["classes"] = list(spec.classes)
        if spec.anchor:
            item["anchor"] = spec.anchor
        out[spec.name] = item
    return out


def _source_view(cfg: Mapping[str, Any], live: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    view: Dict[str, Any] = {
        "id": str(cfg.get("id") or (live or {}).get("id")),
        "uri": mask_credentials(str(cfg.get("uri", (live or {}).get("uri", "")))),
        "lines": regions_view(cfg.get("lines"), "line"),
        "zones": regions_view(cfg.get("zones"), "zone"),
        "conf": cfg.get("conf"),
        "classes": cfg.get("classes"),
        "enabled": bool(cfg.get("enabled", True)),
        "options": mask_tree(dict(cfg.get("options") or {})),
        "detect": dict(cfg.get("detect") or {}),
        "motion": dict(cfg.get("motion") or {}),
    }
    for key in _LIVE_KEYS:
        view[key] = (live or {}).get(key)
    view["snapshot_url"] = f"/api/v1/sources/{view['id']}/snapshot.jpg"
    view["stream_url"] = f"/api/v1/sources/{view['id']}/stream.mjpg"
    return view


def source_views(config: Mapping[str, Any], status: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One view per source: config (``uri`` masked, ``lines``/``zones`` normalized by :func:`regions_view`,
    ``conf``, ``classes``, ``enabled``, ``options``, its own ``detect`` / ``motion`` keys) merged with the live state of ``status`` (``state``,
    ``fps_in``...), in the status's order; a source only in one of them is listed with what is known."""
    live = {str(s.get("id")): s for s in status.get("sources", [])}
    configured = {str(c.get("id")): c for c in config.get("sources", []) if isinstance(c, Mapping)}
    order = list(live) + [sid for sid in configured if sid not in live]
    return [_source_view(configured.get(sid, {"id": sid}), live.get(sid)) for sid in order]
