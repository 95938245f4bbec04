"""Arena figures as PNG bytes: win-rate and significance matrices, and safety against a quality criterion.

Figures are built on matplotlib's object API (no pyplot), so no global state leaks between calls and
no display is needed.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from pydantic import BaseModel

from theraloop.arena import ArenaResult

# Win rates diverge around 0.5 (an even match is white).
_WIN_CMAP = LinearSegmentedColormap.from_list("win_rate", ["#b2182b", "#f7f7f7", "#2166ac"])
# Significance colours: small adjusted p (strong evidence) dark, p near 1 pale.
_P_CMAP = LinearSegmentedColormap.from_list("significance", ["#08306b", "#6baed6", "#f7fbff"])


class FigureImage(BaseModel):
    """One rendered figure; `name` is also its PNG file name without extension."""

    name: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def win_rate_matrix(result: ArenaResult, criterion: str) -> np.ndarray:
    """Row system's win rate against the column system (NaN on the diagonal and where unmeasured)."""
    systems = result.systems
    matrix = np.full((len(systems), len(systems)), np.nan)
    for row, system in enumerate(systems):
        for col, opponent in enumerate(systems):
            rate = result.win_rates[criterion][system].get(opponent)
            if rate is not None:
                matrix[row, col] = rate
    return matrix


def significance_matrix(result: ArenaResult, criterion: str) -> np.ndarray:
    """Holm-adjusted mid-p McNemar per pair, symmetric; NaN where no test was possible."""
    index = {system: position for position, system in enumerate(result.systems)}
    matrix = np.full((len(index), len(index)), np.nan)
    for pair in result.pairs:
        p = pair.criteria[criterion].midp_p_holm
        if p is not None:
            matrix[index[pair.system_a], index[pair.system_b]] = matrix[index[pair.system_b], index[pair.system_a]] = p
    return matrix


def _luminance(rgba: tuple[float, ...]) -> float:
    red, green, blue = rgba[:3]
    return 0.299 * red + 0.587 * green + 0.114 * blue


def _heatmap(matrix: np.ndarray, labels: list[str], title: str, colorbar: str, cmap, fmt: str) -> bytes:
    size = 1.6 + 0.9 * len(labels)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("opponent")
    axes.set_title(title)
    for (row, col), value in np.ndenumerate(matrix):
        if not math.isnan(value):
            axes.text(col, row, format(value, fmt), ha="center", va="center", fontsize=9,
                      color="white" if _luminance(cmap(value)) < 0.5 else "black")
    figure.colorbar(image, ax=axes, label=colorbar, shrink=0.8)
    return _png(figure)


def win_rate_heatmap(result: ArenaResult, criterion: str) -> bytes:
    return _heatmap(win_rate_matrix(result, criterion), result.systems, f"Win rate: {criterion}",
                    "row's share of questions won", _WIN_CMAP, ".2f")


def significance_heatmap(result: ArenaResult, criterion: str) -> bytes:
    return _heatmap(significance_matrix(result, criterion), result.systems,
                    f"Holm-adjusted McNemar mid-p: {criterion}", "adjusted p", _P_CMAP, ".3f")


def scatter_axes(result: ArenaResult) -> tuple[str, str] | None:
    """(x, y) criteria for the safety scatter: safety against empathy, else against overall."""
    if "safety" not in result.criteria:
        return None
    for other in ("empathy", "overall"):
        if other in result.criteria:
            return other, "safety"
    return None


def safety_scatter(result: ArenaResult) -> bytes | None:
    """Each system's arena score on safety against empathy (or overall); None if the criteria are absent."""
    chosen = scatter_axes(result)
    if chosen is None:
        return None
    x_key, y_key = chosen
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.add_subplot()
    for system in result.systems:
        x, y = result.scores[x_key].get(system), result.scores[y_key].get(system)
        if x is None or y is None:
            continue
        axes.scatter(x, y, s=60)
        near_right = x > 0.8  # put the label on the left so it stays inside the axes
        axes.annotate(system, (x, y), textcoords="offset points", xytext=(-6 if near_right else 6, 4),
                      ha="right" if near_right else "left", fontsize=9)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axes.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlim(-0.05, 1.05)
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlabel(f"{x_key} score (mean win rate)")
    axes.set_ylabel(f"{y_key} score (mean win rate)")
    axes.set_title(f"{y_key} vs {x_key}")
    return _png(figure)


def arena_figures(result: ArenaResult, prefix: str) -> list[FigureImage]:
    figures = []
    for criterion in result.criteria:
        figures.append(FigureImage(name=f"{prefix}win-rate-{criterion}", title=f"Win rates: {criterion}",
                                   png=win_rate_heatmap(result, criterion)))
    for criterion in result.criteria:
        figures.append(FigureImage(name=f"{prefix}significance-{criterion}",
                                   title=f"Significance (Holm-adjusted mid-p): {criterion}",
                                   png=significance_heatmap(result, criterion)))
    scatter = safety_scatter(result)
    if scatter is not None:
        x_key, y_key = scatter_axes(result)
        figures.append(FigureImage(name=f"{prefix}{y_key}-vs-{x_key}", title=f"{y_key} vs {x_key} by system",
                                   png=scatter))
    return figures
