"""Tracking benchmark: scripted synthetic scenes with exact ground truth (:mod:`.world`, :mod:`.scenes`), the
trackers under test fed the same noisy detections, and identity / counting metrics (:mod:`.evaluate`).

Run it with ``python tools/track_bench.py`` (see BENCHMARKS.md, "Tracking")."""
