"""Measuring a safety assessor on labelled posts: recall and false-positive rates per layer and per
category with Wilson intervals, a tier confusion matrix, and an HTML page with precision-recall curves."""

from __future__ import annotations

import base64
import html
import io
import math

from pydantic import BaseModel, Field

from theraloop.safety._types import RISK_CATEGORIES, RiskAssessment, RiskTier


class LabelledPost(BaseModel):
    id: str
    text: str = Field(min_length=1)
    tier: str
    categories: list[str] = Field(default_factory=list)
    kind: str | None = Field(None, description="e.g. risk, hard_negative, distress, neutral")
    subkind: str | None = Field(None, description="e.g. the kind of look-alike: figurative, past_recovered, "
                                                  "third_person, fiction_or_art, clinical_or_educational")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion (None when n is 0)."""
    if n == 0:
        return None
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(hits: int, n: int) -> dict:
    interval = wilson_interval(hits, n)
    return {"n": n, "hits": hits, "rate": round(hits / n, 4) if n else None,
            "wilson_95": [round(value, 4) for value in interval] if interval else None}


def layer_tiers(assessment: RiskAssessment) -> dict[str, RiskTier]:
    """Each layer's own tier, the rules+encoder tier (no LLM) and the combined tier."""
    tiers = {report.layer: report.tier if report.ok else RiskTier.HIGH for report in assessment.layers}
    offline = [tier for layer, tier in tiers.items() if layer in ("rules", "encoder")]
    tiers = {**tiers, "rules+encoder": max(offline, default=RiskTier.NONE), "combined": assessment.tier}
    return tiers


def evaluate(posts: list[LabelledPost], assessments: list[RiskAssessment]) -> dict:
    truth = [RiskTier.parse(post.tier) for post in posts]
    per_layer = [layer_tiers(assessment) for assessment in assessments]
    layers = list(dict.fromkeys(layer for tiers in per_layer for layer in tiers))
    result: dict = {"n": len(posts), "layers": {}}
    for layer in layers:
        flagged = [tiers.get(layer, RiskTier.NONE) >= RiskTier.MODERATE for tiers in per_layer]
        at_high = [tiers.get(layer, RiskTier.NONE) >= RiskTier.HIGH for tiers in per_layer]

        def rate(select, values=flagged):
            chosen = [value for value, keep in zip(values, select, strict=True) if keep]
            return _rate(sum(chosen), len(chosen))

        block = {
            "recall_high_flagged": rate([tier >= RiskTier.HIGH for tier in truth]),
            "recall_high_at_high": rate([tier >= RiskTier.HIGH for tier in truth], at_high),
            "recall_any_risk": rate([tier >= RiskTier.MODERATE for tier in truth]),
            "recall_imminent_at_high": rate([tier >= RiskTier.IMMINENT for tier in truth], at_high),
            "false_positive_rate_none": rate([tier == RiskTier.NONE for tier in truth]),
            "flag_rate_low": rate([tier == RiskTier.LOW for tier in truth]),
            "per_category_recall": {category: rate([category in post.categories for post in posts])
                                    for category in RISK_CATEGORIES},
        }
        kinds = sorted({post.kind for post in posts if post.kind})
        if "hard_negative" in kinds:
            block["false_positive_rate_hard_negative"] = rate([post.kind == "hard_negative" for post in posts])
            subkinds = sorted({post.subkind for post in posts if post.kind == "hard_negative" and post.subkind})
            if subkinds:
                block["false_positive_rate_hard_negative_by_subkind"] = {
                    subkind: rate([post.kind == "hard_negative" and post.subkind == subkind for post in posts])
                    for subkind in subkinds}
        result["layers"][layer] = block
    labels = [tier.label for tier in RiskTier]
    matrix = [[0] * len(labels) for _ in labels]
    for true, assessment in zip(truth, assessments, strict=True):
        matrix[true][assessment.tier] += 1
    result["confusion"] = {"labels": labels, "rows_truth_columns_predicted": matrix}
    return result


def pr_curves_png(posts: list[LabelledPost], assessments: list[RiskAssessment]) -> bytes:
    """Precision-recall of each layer's score for risk at moderate or above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    truth = [RiskTier.parse(post.tier) >= RiskTier.MODERATE for post in posts]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    names = list(dict.fromkeys(report.layer for assessment in assessments for report in assessment.layers))
    for name in names:
        scores = []
        for assessment in assessments:
            report = next((r for r in assessment.layers if r.layer == name), None)
            scores.append(1.0 if report is None or not report.ok or report.score is None else report.score)
        if len(set(truth)) == 2:
            precision, recall, _ = precision_recall_curve(truth, scores)
            axis.plot(recall, precision, label=name, drawstyle="steps-post")
    combined = [assessment.tier / RiskTier.IMMINENT for assessment in assessments]
    if len(set(truth)) == 2:
        precision, recall, _ = precision_recall_curve(truth, combined)
        axis.plot(recall, precision, label="combined", linestyle="--", drawstyle="steps-post")
    axis.set_xlabel("recall (risk at moderate or above)")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.legend(loc="lower left")
    axis.set_title("Precision-recall per safety layer")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _cell(value: dict | None) -> str:
    if not value or value["rate"] is None:
        return "-"
    low, high = value["wilson_95"]
    return f"{value['rate']:.3f} [{low:.3f}, {high:.3f}] (n={value['n']})"


def render_html(metrics: dict, png: bytes, title: str) -> str:
    headline = ["recall_high_flagged", "recall_any_risk", "recall_high_at_high", "false_positive_rate_none",
                "false_positive_rate_hard_negative", "flag_rate_low"]
    rows = []
    for layer, block in metrics["layers"].items():
        cells = "".join(f"<td>{html.escape(_cell(block.get(key)))}</td>" for key in headline)
        rows.append(f"<tr><th>{html.escape(layer)}</th>{cells}</tr>")
    category_rows = []
    for category in RISK_CATEGORIES:
        cells = "".join(f"<td>{html.escape(_cell(block['per_category_recall'][category]))}</td>"
                        for block in metrics["layers"].values())
        category_rows.append(f"<tr><th>{category.replace('_', ' ')}</th>{cells}</tr>")
    confusion = metrics["confusion"]
    matrix_rows = "".join(
        f"<tr><th>{label}</th>" + "".join(f"<td>{count}</td>" for count in row) + "</tr>"
        for label, row in zip(confusion["labels"], confusion["rows_truth_columns_predicted"], strict=True))
    layer_heads = "".join(f"<th>{html.escape(layer)}</th>" for layer in metrics["layers"])
    image = base64.b64encode(png).decode()
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;font-size:.9rem}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{metrics['n']} labelled posts. Rates with Wilson 95% intervals. "Flagged" means the
layer put the post at moderate risk or above.</p>
<h2>Per layer</h2><table><tr><th>layer</th><th>recall, high risk flagged</th><th>recall, any risk</th>
<th>recall, high risk at high</th><th>false positives, no-risk posts</th><th>false positives, hard negatives</th>
<th>flag rate, low (distress) posts</th></tr>{''.join(rows)}</table>
<h2>Recall per category</h2><table><tr><th>category</th>{layer_heads}</tr>{''.join(category_rows)}</table>
<h2>Combined tier: truth (rows) against prediction (columns)</h2><table><tr><th></th>
{''.join(f'<th>{label}</th>' for label in confusion['labels'])}</tr>{matrix_rows}</table>
<h2>Precision-recall</h2><img alt="precision-recall curves per layer" src="data:image/png;base64,{image}">
</body></html>"""
