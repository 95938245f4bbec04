"""Reports: arena figures (matplotlib) and one self-contained HTML file (Jinja2)."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "ArenaSection": "theraloop.report._html",
    "DiffSegment": "theraloop.report._html",
    "FigureImage": "theraloop.report._plots",
    "RefineDiff": "theraloop.report._html",
    "RefinePair": "theraloop.report._html",
    "RefineSection": "theraloop.report._html",
    "Report": "theraloop.report._html",
    "Table": "theraloop.report._html",
    "ValidationSection": "theraloop.report._html",
    "arena_figures": "theraloop.report._plots",
    "build_report": "theraloop.report._html",
    "classify_run_dir": "theraloop.report._html",
    "load_arena": "theraloop.report._html",
    "load_refinement": "theraloop.report._html",
    "load_validation": "theraloop.report._html",
    "numeric_tables": "theraloop.report._html",
    "render_report": "theraloop.report._html",
    "safety_scatter": "theraloop.report._plots",
    "significance_heatmap": "theraloop.report._plots",
    "significance_matrix": "theraloop.report._plots",
    "win_rate_heatmap": "theraloop.report._plots",
    "win_rate_matrix": "theraloop.report._plots",
    "word_diff": "theraloop.report._html",
    "write_report": "theraloop.report._html",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
