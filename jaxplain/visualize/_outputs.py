"""Plots of output explanations: decision planes, counterfactuals, anchors, ensembles.

Each function takes the result of the method (`Plane`, `Counterfactual`, `Anchor`,
`OverWeights`) and returns a matplotlib `Figure`. The arrays drawn are the
result's own values (class maps, differences, dimmed images, channel sums), so
what is on the picture can be read back from `fig.axes[i].images`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._common import _new_figure, _off, _show_image
from .heatmaps import SIGNED_CMAP, as_array, reduce_channels, to_image

CLASS_CMAP = "tab10"


def _class_name(c: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)


def _class_colors(n: int):
    import matplotlib

    cm = matplotlib.colormaps[CLASS_CMAP if n <= 10 else "tab20"]
    return [cm(i % cm.N) for i in range(n)]


def plot_decision_plane(plane: Any, *, example: int = 0, marks: dict[str, Any] | None = None,
                        class_names: Sequence[str] | None = None, softmax: bool = True):
    """The class regions of a `decision_plane`, its decision boundary and marked points.

    Left: the predicted class at every grid point (`plane.classes`, one colour per
    class), the boundary of the region of the class of `x` (black line), `x` at
    the origin and every point of `marks` (e.g. `{"counterfactual": cf.x}`) at its
    plane coordinates (`Plane.locate`). Right: the probability (`softmax=True`) or
    output of the class of `x` on the plane, with the same marks.

    Args:
      plane: a `jaxplain.Plane`.
      example: which example of the batch to draw.
      marks: name -> points `(N, ...)` (one per example) to place on the plane.
      class_names: labels of the classes.
      softmax: show probabilities on the right (outputs are logits).

    Returns:
      The `Figure` (axes 0: classes, axes 1: the class of `x`).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    out = as_array(plane.outputs)[example]
    classes = as_array(plane.classes)[example]
    alpha, beta = as_array(plane.alpha), as_array(plane.beta)
    k = out.shape[-1]
    own = int(classes[np.argmin(np.abs(alpha)), np.argmin(np.abs(beta))])
    margin = out[..., own] - np.max(np.delete(out, own, axis=-1), axis=-1)
    score = out[..., own]
    if softmax:
        e = np.exp(out - out.max(-1, keepdims=True))
        score = e[..., own] / e.sum(-1)
    coords = {"x": np.zeros(2)}
    for name, pts in (marks or {}).items():
        coords[name] = np.asarray(as_array(plane.locate(pts)))[example]
    extent = [alpha[0], alpha[-1], beta[0], beta[-1]]
    fig = _new_figure(1, 2, cell=3.4, extra_h=0.4)
    ax, ax2 = fig.subplots(1, 2)
    colors = _class_colors(k)
    ax.imshow(classes.T, origin="lower", extent=extent, aspect="auto", interpolation="nearest",
              cmap=ListedColormap(colors), vmin=-0.5, vmax=k - 0.5)
    im = ax2.imshow(score.T, origin="lower", extent=extent, aspect="auto", cmap="viridis",
                    vmin=0.0 if softmax else None, vmax=1.0 if softmax else None)
    fig.colorbar(im, ax=ax2, shrink=0.8)
    styles = ["*", "X", "o", "s", "^", "D"]
    for a in (ax, ax2):
        if margin.min() < 0 < margin.max():
            a.contour(alpha, beta, margin.T, levels=[0.0], colors="k", linewidths=1.5)
        for i, (name, (ca, cb)) in enumerate(coords.items()):
            a.plot([ca], [cb], styles[i % len(styles)], color="w", markeredgecolor="k",
                   markersize=11, label=name)
        a.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("beta (direction 2)")
    present = sorted({int(c) for c in np.unique(classes)})
    handles = [Patch(color=colors[c], label=_class_name(c, class_names)) for c in present]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="best")
    ax.set_title("predicted class")
    ax2.set_title(f"{'p' if softmax else 'output'}({_class_name(own, class_names)})")
    return fig


def plot_counterfactual(x: Any, cf: Any, *, class_names: Sequence[str] | None = None,
                        max_rows: int = 8):
    """Each example, its counterfactual and their difference (summed over channels).

    Args:
      x: the explained inputs `(N, H, W[, C])`.
      cf: a `jaxplain.Counterfactual` (or the counterfactual inputs).
      class_names: labels of the classes.
      max_rows: at most this many examples.

    Returns:
      The `Figure`, one row per example: `x`, the counterfactual, `cf - x` (red:
      increased, blue: decreased, on a symmetric scale).
    """
    xs = as_array(x)
    cfx = as_array(getattr(cf, "x", cf))
    n = min(len(xs), max_rows)
    diff = reduce_channels(cfx[:n] - xs[:n]) if cfx.ndim == 4 else cfx[:n] - xs[:n]
    fig = _new_figure(n, 3)
    axes = np.asarray(fig.subplots(n, 3)).reshape(n, 3)
    for i in range(n):
        _show_image(axes[i, 0], xs[i])
        _show_image(axes[i, 1], np.clip(cfx[i], 0, 1) if xs.min() >= 0 and xs.max() <= 1 else cfx[i])
        v = float(np.abs(diff[i]).max()) or 1.0
        axes[i, 2].imshow(diff[i], cmap=SIGNED_CMAP, vmin=-v, vmax=v, interpolation="nearest")
        _off(axes[i, 2])
        if hasattr(cf, "original_class"):
            a, t = int(as_array(cf.original_class)[i]), int(as_array(cf.target_class)[i])
            ok = bool(as_array(cf.success)[i])
            axes[i, 0].set_title(f"x: {_class_name(a, class_names)}", fontsize=8)
            axes[i, 1].set_title(f"-> {_class_name(t, class_names) if ok else 'failed'}",
                                 fontsize=8)
            axes[i, 2].set_title(f"change, d={float(as_array(cf.distance)[i]):.3g}", fontsize=8)
    return fig


def anchor_image(image: Any, segments: Any, anchor: Any, dim: float = 0.25) -> np.ndarray:
    """`image` `(H, W, 3)` in [0, 1] with the segments outside `anchor (d,)` dimmed to gray."""
    im = to_image(image)
    keep = np.asarray(anchor, bool)[np.asarray(segments)]
    gray = im.mean(-1, keepdims=True) * dim + (1 - dim) * 0.5
    return np.where(keep[..., None], im, gray)


def plot_anchor(x: Any, segments: Any, result: Any, *, class_names: Sequence[str] | None = None,
                max_cols: int = 6):
    """The anchor of each example: its segments as they are, the rest dimmed and outlined.

    Args:
      x: the explained images `(N, H, W, C)`.
      segments: the label map `(H, W)` or `(N, H, W)` given to `anchors`.
      result: a `jaxplain.Anchor`.
      class_names: labels of the classes.
      max_cols: at most this many examples.

    Returns:
      The `Figure`, one panel per example (`anchor_image`), titled with the class,
      the precision and the coverage of the rule.
    """
    from skimage.segmentation import find_boundaries

    xs = as_array(x)
    seg = np.asarray(segments)
    n = min(len(xs), max_cols)
    fig = _new_figure(1, n, cell=2.4, extra_h=0.3)
    axes = np.atleast_1d(fig.subplots(1, n))
    anchor = as_array(result.anchor)
    for i in range(n):
        s = seg[i] if seg.ndim == 3 else seg
        img = anchor_image(xs[i], s, anchor[i])
        edge = find_boundaries(s, mode="inner") & np.asarray(anchor[i], bool)[s]
        img = np.where(edge[..., None], np.array([1.0, 0.85, 0.0]), img)
        axes[i].imshow(img, interpolation="nearest")
        _off(axes[i])
        c = int(as_array(result.predicted_class)[i])
        p, cov = float(as_array(result.precision)[i]), float(as_array(result.coverage)[i])
        flag = "" if bool(as_array(result.valid)[i]) else " (not met)"
        axes[i].set_title(f"{_class_name(c, class_names)}: prec {p:.2f}{flag}\ncov {cov:.2f}, "
                          f"{int(anchor[i].sum())} segments", fontsize=8)
    return fig


def plot_ensemble(x: Any, result: Any, *, class_names: Sequence[str] | None = None,
                  members: bool = True, max_rows: int = 6):
    """Where the members of an ensemble agree: the mean and the spread of their explanations.

    Args:
      x: the explained images `(N, H, W, C)`.
      result: a `jaxplain.OverWeights` of an attribution method.
      class_names: labels of the classes.
      members: also draw every member's explanation.
      max_rows: at most this many examples.

    Returns:
      The `Figure`, one row per example: the image (titled with the averaged
      prediction and how many members predict it), the mean attribution, the
      standard deviation over members, then each member (channels summed first, so
      mean and std are those of what the member panels show; the mean and the
      members share one symmetric colour scale per row).
    """
    xs = as_array(x)
    vals = as_array(result.values)
    pred = as_array(result.predictive).argmax(-1)
    votes = as_array(result.outputs).argmax(-1)  # (M, N)
    m = vals.shape[0]
    n = min(len(xs), max_rows)
    cols = 3 + (m if members else 0)
    fig = _new_figure(n, cols, cell=1.6)
    axes = np.asarray(fig.subplots(n, cols)).reshape(n, cols)
    red = (lambda a: reduce_channels(a)) if vals.ndim == 5 else (lambda a: a)  # noqa: E731
    for i in range(n):
        _show_image(axes[i, 0], xs[i])
        agree = int(np.sum(votes[:, i] == pred[i]))
        axes[i, 0].set_title(f"{_class_name(int(pred[i]), class_names)} ({agree}/{m} agree)",
                             fontsize=8)
        reduced = red(vals[:, i])  # (M, H, W): the spread of what is drawn
        mi, si = reduced.mean(0), reduced.std(0)
        each = list(reduced) if members else []
        v = max([float(np.abs(a).max()) for a in [mi] + each] + [1e-12])
        panels = [(mi, "mean", SIGNED_CMAP, -v, v), (si, "std", "magma", 0.0, None)]
        panels += [(a, f"member {j} ({_class_name(int(votes[j, i]), class_names)})", SIGNED_CMAP,
                    -v, v) for j, a in enumerate(each)]
        for col, (arr, title, cmap, lo, hi) in enumerate(panels, start=1):
            axes[i, col].imshow(arr, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            axes[i, col].set_title(title, fontsize=7)
            _off(axes[i, col])
    return fig
