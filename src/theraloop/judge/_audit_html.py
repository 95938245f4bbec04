"""The judge audit as figures (bar charts of shifts per perturbation and dimension, sensitivity AUC)
and a self-contained HTML page; `theraloop report` embeds the same figures and checks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import jinja2
import numpy as np

from theraloop.judge._audit import AuditResult, ShiftStat


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _bars(rows: dict[str, dict[str, ShiftStat]], dimensions: list[str], title: str, limit: float | None) -> bytes:
    """Horizontal grouped bars: one group per perturbation, one bar per dimension, CI as error bars."""
    from matplotlib.figure import Figure

    names = list(rows)
    figure = Figure(figsize=(8, 0.35 * len(names) * max(1, len(dimensions) / 2) + 1.5))
    axes = figure.subplots()
    height = 0.8 / len(dimensions)
    for index, key in enumerate(dimensions):
        stats = [rows[name].get(key) for name in names]
        means = np.array([s.mean if s and s.mean is not None else np.nan for s in stats])
        low = np.array([s.low if s and s.low is not None else m for s, m in zip(stats, means, strict=True)])
        high = np.array([s.high if s and s.high is not None else m for s, m in zip(stats, means, strict=True)])
        positions = np.arange(len(names)) + index * height
        axes.barh(positions, means, height=height, label=key,
                  xerr=np.vstack([means - low, high - means]).clip(min=0), capsize=2)
    if limit is not None:
        axes.axvline(limit, color="#b2182b", linestyle="--", linewidth=1, label=f"limit {limit:g}")
    axes.axvline(0, color="black", linewidth=0.6)
    axes.set_yticks(np.arange(len(names)) + 0.4 - height / 2, names)
    axes.invert_yaxis()
    axes.set_xlabel("mean score shift (perturbed - original), scale points")
    axes.set_title(title)
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def _auc_bars(result: AuditResult, limit: float) -> bytes:
    from matplotlib.figure import Figure

    sources = [name for name in result.sensitivity]
    figure = Figure(figsize=(8, 0.4 * len(sources) * max(1, len(result.dimensions) / 2) + 1.5))
    axes = figure.subplots()
    height = 0.8 / len(result.dimensions)
    for index, key in enumerate(result.dimensions):
        stats = [result.sensitivity[name].get(key) for name in sources]
        values = np.array([s.auc if s and s.auc is not None else np.nan for s in stats])
        low = np.array([s.low if s and s.low is not None else v for s, v in zip(stats, values, strict=True)])
        high = np.array([s.high if s and s.high is not None else v for s, v in zip(stats, values, strict=True)])
        axes.barh(np.arange(len(sources)) + index * height, values, height=height, label=key,
                  xerr=np.vstack([values - low, high - values]).clip(min=0), capsize=2)
    axes.axvline(limit, color="#b2182b", linestyle="--", linewidth=1, label=f"pass {limit:g}")
    axes.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    axes.set_xlim(0, 1)
    axes.set_yticks(np.arange(len(sources)) + 0.4 - height / 2, sources)
    axes.invert_yaxis()
    axes.set_xlabel("AUC: known-better scored above known-worse")
    axes.set_title("Sensitivity")
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def audit_figures(result: AuditResult) -> list[tuple[str, str, bytes]]:
    """(name, title, PNG) per chart, for whichever probes ran."""
    thresholds = result.config["thresholds"]
    figures = []
    if result.sensitivity:
        figures.append(("audit-sensitivity", "Sensitivity AUC per source and dimension",
                        _auc_bars(result, thresholds["min_auc"])))
    if result.injection:
        rows = {f"{name} ({inj.target})": inj.dimensions for name, inj in result.injection.items()}
        figures.append(("audit-injection", "Score shift per injection variant",
                        _bars(rows, result.dimensions, "Injection", thresholds["max_injection_shift"])))
    if result.null:
        rows = {kind: {key: stat.shift for key, stat in by_key.items()} for kind, by_key in result.null.items()}
        figures.append(("audit-null", "Null responses: shift from the original",
                        _bars(rows, result.dimensions, "Null and degenerate responses", thresholds["max_null_excess"])))
    if result.length:
        rows = {f"+{tokens} tokens": stats for tokens, stats in result.length.items()}
        figures.append(("audit-length", "Neutral filler: shift from the original",
                        _bars(rows, result.dimensions, "Length", None)))
    return figures


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Judge audit: {{ r.judge }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}.fail{color:#b2182b;font-weight:bold}.pass{color:#1a7f37}</style>
</head><body>
<h1>Judge audit: {{ r.judge }}</h1>
<p>Rubric {{ r.rubric }} (scale {{ r.scale.min }}-{{ r.scale.max }}); {{ r.n_items }} items,
{{ r.n_probe_items }} in the perturbation probes. Verdict:
<span class="{{ 'pass' if r.passed else 'fail' }}">{{ 'PASSED' if r.passed else 'FAILED' }}</span>
({{ r.failed() | length }} of {{ r.checks | length }} checks failed).</p>
{% for note in r.notes %}<p>{{ note }}</p>{% endfor %}
{% for name, title, uri in figures %}<figure><img src="{{ uri }}" alt="{{ title }}"><figcaption>{{ title }}</figcaption></figure>{% endfor %}
<h2>Failed checks</h2>
<table><tr><th>check</th><th>dimension</th><th>value</th><th>limit</th></tr>
{% for c in r.failed() %}<tr><td>{{ c.name }}</td><td>{{ c.dimension }}</td><td>{{ '%.3f' % c.value }}</td><td>{{ c.threshold }}</td></tr>{% endfor %}
</table>
{% if r.position and r.position.applicable %}<h2>Position</h2><p>Flip rate over {{ r.position.n_pairs }} pairs:
{% for k, v in r.position.flip_rate.items() %}{{ k }} {{ '-' if v is none else '%.2f' % v }}; {% endfor %}</p>{% endif %}
{% if r.stability %}<h2>Stability</h2><p>Identical scores over {{ r.stability.repeats }} runs ({{ r.stability.n }} items):
{% for k, v in r.stability.identical.items() %}{{ k }} {{ '-' if v is none else '%.2f' % v }}; {% endfor %}</p>{% endif %}
</body></html>
"""


def render_audit_html(result: AuditResult) -> str:
    figures = [(name, title, "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
               for name, title, png in audit_figures(result)]
    return jinja2.Environment(autoescape=True).from_string(_PAGE).render(r=result, figures=figures)


def write_audit(result: AuditResult, out_dir: str | Path) -> tuple[Path, Path]:
    """judge_audit.json and judge_audit.html in out_dir."""
    from theraloop.io import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "judge_audit.json", result.model_dump(mode="json"))
    (out_dir / "judge_audit.html").write_text(render_audit_html(result), encoding="utf-8")
    return out_dir / "judge_audit.json", out_dir / "judge_audit.html"


__all__ = ["audit_figures", "render_audit_html", "write_audit"]
