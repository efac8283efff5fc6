"""Plots of concept tests: TCAV scores with the spread of their random runs and significance."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._common import _new_figure
from .heatmaps import as_array


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def plot_tcav(results: Mapping[str, Any], *, title: str | None = None, alpha: float = 0.05,
              show_runs: bool = True):
    """TCAV scores of several concepts, each next to its random runs, with significance.

    One pair of bars per concept: the concept's mean score over its runs and the
    mean score of the random runs it was tested against, each with an error bar
    of one standard deviation over the runs (and the runs as dots). Concepts
    with `p_value < alpha` are drawn in colour and starred (`*` p < 0.05, `**` p <
    0.01, `***` p < 0.001); the others are grey and marked "n.s.". The dashed
    line is the score of a direction unrelated to the target (0.5).

    Args:
      results: `{concept name: TCAVResult}` (from `jaxplain.tcav`, for one target
        and layer, or as the names say).
      title: the figure title.
      alpha: the significance level that colours a concept.
      show_runs: draw each run's score as a dot.

    Returns:
      The matplotlib `Figure`.
    """
    if not isinstance(results, Mapping) or not results:
        raise TypeError(f"results: expected a non-empty dict {{name: TCAVResult}}, got "
                        f"{type(results).__name__}")
    names = list(results)
    fig = _new_figure(1, max(len(names), 2), cell=1.5, extra_h=1.6)
    ax = fig.subplots()
    xs = np.arange(len(names), dtype=float)
    width = 0.36
    for i, name in enumerate(names):
        r = results[name]
        scores, rand = as_array(r.scores).ravel(), as_array(r.random_scores).ravel()
        p = float(as_array(r.p_value))
        color = "tab:red" if p < alpha else "0.55"
        for dx, vals, c, label in ((-width / 2, scores, color, "concept"),
                                   (width / 2, rand, "0.8", "random")):
            ax.bar(xs[i] + dx, vals.mean(), width, yerr=vals.std(), color=c, capsize=3,
                   edgecolor="0.3", linewidth=0.5, label=label if i == 0 else None)
            if show_runs:
                jitter = np.linspace(-width / 4, width / 4, len(vals))
                ax.plot(xs[i] + dx + jitter, vals, ".", color="0.15", markersize=3)
        top = max(scores.mean() + scores.std(), rand.mean() + rand.std())
        ax.text(xs[i], min(top + 0.04, 1.08), f"{_stars(p)}\np={p:.2g}", ha="center",
                va="bottom", fontsize=8)
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=0.8)
    ax.set_xticks(xs, names, rotation=20 if len(names) > 3 else 0)
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("TCAV score")
    ax.legend(fontsize=7, loc="upper right", ncols=2)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
