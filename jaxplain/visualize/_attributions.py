"""Attribution plots: overlays, images x methods grids, superpixels, deletion/insertion curves."""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np

from .heatmaps import (
    ABSOLUTE_CMAP,
    SIGNED_CMAP,
    as_array,
    feature_map,
    is_signed,
    reduce_channels,
    resolve_sign,
    scale_of,
    to_gray,
    to_image,
    upsample,
)
from ._common import _new_figure, _off, _show_image, blend


def overlay(
    image: Any,
    attribution: Any,
    *,
    ax=None,
    sign: str = "auto",
    percentile: float = 99.5,
    reduce: str | None = None,
    cmap: str | None = None,
    alpha: float = 0.8,
    vmax: float | None = None,
    colorbar: bool = True,
    title: str | None = None,
):
    """Draws one attribution over its image; returns the Figure.

    Args:
      image: one image `(H, W[, C])`.
      attribution: its attribution `(H, W[, C])`, a coarser map `(h, w)` (upsampled,
        e.g. Grad-CAM), or an `Explanation` of one example.
      ax: an Axes to draw in (a new Figure when `None`).
      sign: `"auto"` (signed when there are negative values), `"signed"`,
        `"absolute"`, `"positive"` or `"negative"`.
      percentile: clipping percentile of the magnitudes.
      reduce: channel reduction (`reduce_channels`); defaults to `"sum"` for signed
        maps and `"abs_sum"` otherwise.
      cmap: colormap; defaults to a diverging map for signed attributions and a
        sequential one for magnitudes.
      alpha: maximal opacity of the heatmap.
      vmax: fixed scale instead of the percentile (shared scales across plots).
      colorbar: add a colorbar (in units of the clipping scale).
      title: axes title.
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if ax is None:
        fig = _new_figure(1, 1, 3.2)
        ax = fig.add_subplot()
    heat, sign = _heatmap(attribution, sign, reduce, to_gray(image).shape)
    rgb = blend(image, heat, sign=sign, percentile=percentile, alpha=alpha, cmap=cmap, vmax=vmax)
    interp = "nearest" if max(rgb.shape[:2]) <= 32 else "antialiased"
    ax.imshow(rgb, interpolation=interp)
    _off(ax)
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        cm = matplotlib.colormaps[cmap or (SIGNED_CMAP if sign == "signed" else ABSOLUTE_CMAP)]
        scale = vmax if vmax is not None else scale_of(heat, percentile)
        norm = Normalize(-scale if sign == "signed" else 0.0, scale)
        ax.figure.colorbar(ScalarMappable(norm, cm), ax=ax, shrink=0.8, pad=0.02)
    return ax.figure


def _heatmap(attribution: Any, sign: str, reduce: str | None, hw) -> tuple[np.ndarray, str]:
    a = as_array(attribution)
    if sign == "auto":
        sign = "signed" if is_signed(a) else "absolute"
    if a.ndim == 3 and a.shape[-1] <= 4:
        a = reduce_channels(a, reduce or ("sum" if sign == "signed" else "abs_sum"))
    return upsample(a, hw), sign


def _batch_heatmaps(values: Any, n: int, hw, segments: Any = None) -> np.ndarray:
    v = as_array(values)
    if v.ndim == 2 and v.shape[0] == n and (segments is not None):
        return feature_map(v, segments)
    if v.ndim == 2:
        raise ValueError(
            f"attributions: per-feature values of shape {v.shape} need `segments` to be drawn"
        )
    if v.ndim == 4:
        return v  # channels reduced later, with the sign known
    return upsample(v, hw)


def plot_attributions(
    images: Any,
    attributions: Mapping[str, Any],
    *,
    labels: Sequence[str] | None = None,
    segments: Any = None,
    sign: str | Mapping[str, str] = "auto",
    percentile: float = 99.5,
    scale: str = "image",
    alpha: float = 0.8,
    cmap: str | None = None,
    colorbar: bool = True,
    cell: float = 1.7,
):
    """A grid of explanations: one row per image, one column per method.

    Args:
      images: `(N, H, W[, C])` images.
      attributions: `{method name: values}` where values are `(N, H, W[, C])`
        attributions, coarser `(N, h, w)` maps (upsampled), `(N, d)` feature values
        (needs `segments`), or `Explanation`s of those.
      labels: one row label per image (e.g. "7 (p=0.98)").
      segments: label map(s) `(H, W)` or `(N, H, W)` for feature-valued methods.
      sign: `"auto"`, `"signed"`, `"absolute"`, ... for all methods or per method.
      percentile: clipping percentile.
      scale: `"image"` clips every heatmap at its own percentile (colorbars in
        relative units); `"column"` shares one scale per method (colorbar in the
        method's units), which compares images against each other.
      alpha: maximal heatmap opacity.
      cmap: colormap for all heatmaps (defaults by sign).
      colorbar: one colorbar under each method column.
      cell: size of one panel in inches.

    Returns:
      The Figure with `N * (1 + M)` image axes (+ `M` colorbar axes).
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if scale not in ("image", "column"):
        raise ValueError(f"scale: expected 'image' or 'column', got {scale!r}")
    imgs = as_array(images)
    if imgs.ndim == 3 and imgs.shape[-1] > 4:
        imgs = imgs[..., None]
    if imgs.ndim != 4:
        raise ValueError(f"images: expected a batch (N, H, W[, C]), got shape {imgs.shape}")
    n, hw = imgs.shape[0], imgs.shape[1:3]
    names = list(attributions)
    fig = _new_figure(n, 1 + len(names), cell, extra_h=0.5 if colorbar else 0.0)
    axes = np.asarray(fig.subplots(n, 1 + len(names), squeeze=False))
    for i in range(n):
        _show_image(axes[i, 0], imgs[i])
        if labels is not None:
            axes[i, 0].set_ylabel(str(labels[i]), fontsize=9)
    axes[0, 0].set_title("input", fontsize=10)
    for j, name in enumerate(names):
        s = sign.get(name, "auto") if isinstance(sign, Mapping) else sign
        heats = _batch_heatmaps(attributions[name], n, hw, segments)
        s = resolve_sign(heats, s)
        if heats.ndim == 4:
            heats = reduce_channels(heats, "sum" if s == "signed" else "abs_sum")
        heats = upsample(heats, hw)
        shared = (
            scale_of(heats if s == "signed" else np.abs(heats), percentile)
            if scale == "column"
            else None
        )
        for i in range(n):
            vmax = shared if shared is not None else None
            rgb = blend(
                imgs[i], heats[i], sign=s, percentile=percentile, alpha=alpha, cmap=cmap, vmax=vmax
            )
            axes[i, j + 1].imshow(rgb, interpolation="nearest" if max(hw) <= 32 else "antialiased")
            _off(axes[i, j + 1])
        axes[0, j + 1].set_title(textwrap.fill(str(name), max(8, int(cell * 9))), fontsize=9)
        if colorbar:
            cm = matplotlib.colormaps[cmap or (SIGNED_CMAP if s == "signed" else ABSOLUTE_CMAP)]
            top = shared if shared is not None else 1.0
            norm = Normalize(-top if s == "signed" else 0.0, top)
            cb = fig.colorbar(
                ScalarMappable(norm, cm),
                ax=axes[-1, j + 1],
                orientation="horizontal",
                location="bottom",
                fraction=0.08,
                pad=0.02,
                aspect=12,
            )
            cb.ax.tick_params(labelsize=7)
            if shared is None:
                cb.set_ticks([-1, 0, 1] if s == "signed" else [0, 0.5, 1])
            else:
                cb.locator = matplotlib.ticker.MaxNLocator(3)
                cb.update_ticks()
            if shared is None:
                cb.set_label("relative" if s != "signed" else "relative (+/-)", fontsize=7)
    return fig


def plot_segments(
    images: Any,
    segments: Any,
    weights: Any,
    *,
    top_k: int = 5,
    positive_only: bool = False,
    titles: Sequence[str] | None = None,
    cell: float = 2.4,
):
    """Superpixel explanations: boundaries, weights per segment, and the top-k view.

    For each image, three panels: the image with the segment boundaries, the
    weight of every segment painted on it (diverging colours, with a colorbar), and
    the image with only its `top_k` most important segments kept (green outline
    for positive, red for negative weights; the rest dimmed), as in lime's mask view.

    Args:
      images: one image `(H, W[, C])` or a batch `(N, H, W[, C])`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1`.
      weights: per-segment values `(d,)` / `(N, d)` or an `Explanation`.
      top_k: how many segments the third panel keeps (by |weight|).
      positive_only: keep only segments with positive weight in the third panel.
      titles: one title per image.

    Returns:
      The Figure with `3 N` image axes (+ `N` colorbar axes).
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from skimage.segmentation import find_boundaries

    imgs = as_array(images)
    w = as_array(weights)
    if w.ndim == 1:
        imgs, w = imgs[None], w[None]
    if imgs.ndim == 3 and imgs.shape[-1] > 4 or imgs.ndim == 2:
        imgs = imgs[..., None]
    n = len(imgs)
    seg = np.asarray(segments).astype(np.int64)
    seg = np.broadcast_to(seg, (n,) + seg.shape[-2:])
    fig = _new_figure(n, 3, cell)
    axes = np.asarray(fig.subplots(n, 3, squeeze=False))
    cm = matplotlib.colormaps[SIGNED_CMAP]
    for i in range(n):
        img, sg = _display_scale(to_image(imgs[i]), seg[i])
        bnd = find_boundaries(sg, mode="inner")
        shown = img.copy()
        shown[bnd] = (1.0, 1.0, 0.0)
        axes[i, 0].imshow(shown)
        heat = w[i][sg]
        top = scale_of(w[i], 100)
        painted = cm((np.clip(heat / top, -1, 1) + 1) / 2)[..., :3]
        painted = 0.55 * painted + 0.45 * to_gray(img)[..., None]
        painted[bnd] = 0.2
        axes[i, 1].imshow(painted)
        cb = fig.colorbar(
            ScalarMappable(Normalize(-top, top), cm), ax=axes[i, 1], shrink=0.85, pad=0.02
        )
        cb.ax.tick_params(labelsize=7)
        order = np.argsort(-(w[i] if positive_only else np.abs(w[i])))
        keep = [k for k in order[:top_k] if not positive_only or w[i][k] > 0]
        mask = np.isin(sg, keep)
        masked = np.where(mask[..., None], img, 0.25 * to_gray(img)[..., None] + 0.7)
        for k in keep:
            edge = find_boundaries(sg == k, mode="inner")
            masked[edge] = (0.0, 0.85, 0.0) if w[i][k] > 0 else (0.9, 0.0, 0.0)
        axes[i, 2].imshow(masked)
        for ax in axes[i]:
            _off(ax)
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]), fontsize=9)
    axes[0, 0].set_title(f"segments (d={int(seg.max()) + 1})", fontsize=10)
    axes[0, 1].set_title("weight per segment", fontsize=10)
    axes[0, 2].set_title(f"top {top_k}" + (" positive" if positive_only else ""), fontsize=10)
    return fig


def _display_scale(
    img: np.ndarray, seg: np.ndarray, min_side: int = 160
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour upscaling of small images (and their labels) so boundaries stay thin."""
    f = max(1, -(-min_side // max(img.shape[:2])))
    if f == 1:
        return img, seg
    return np.kron(img, np.ones((f, f, 1), img.dtype)), np.kron(seg, np.ones((f, f), seg.dtype))


def auc(curve: Any, fractions: Any = None) -> float:
    """Area under a curve sampled at `fractions` (default: evenly over [0, 1]), trapezoid rule."""
    c = as_array(curve).reshape(-1)
    f = np.linspace(0, 1, len(c)) if fractions is None else np.asarray(fractions, np.float64)
    return float(np.sum((c[1:] + c[:-1]) * np.diff(f)) / 2) if len(c) > 1 else float(c[0])


def _curve_array(c: Any) -> tuple[np.ndarray, np.ndarray | None]:
    fractions = getattr(c, "fractions", None)
    for name in ("curve", "curves", "values"):
        if hasattr(c, name) and not isinstance(c, np.ndarray):
            c = getattr(c, name)
            break
    return as_array(c), (None if fractions is None else as_array(fractions))


def plot_curves(
    curves: Mapping[str, Any] | None = None,
    *,
    deletion: Mapping[str, Any] | None = None,
    insertion: Mapping[str, Any] | None = None,
    fractions: Any = None,
    ylabel: str | None = None,
    band: bool = True,
):
    """Deletion / insertion curves with their area under the curve in the legend.

    Args:
      curves: `{method: curve}` for one panel (titled "curves"). A curve is `(K,)`
        or per-example `(N, K)` (the mean is drawn, with a +/- one standard-error
        band), or a `jaxplain.Curve` from `deletion`/`insertion` (its `values`
        and `fractions` are used).
      deletion, insertion: `{method: curve}` for a "deletion" and an "insertion"
        panel (lower AUC is better for deletion, higher for insertion).
      fractions: the x positions (fraction of features removed/inserted); defaults
        to an even grid over [0, 1].
      ylabel: y-axis label (default: "probability of the target" when every curve
        says `scale == "probability"`, "target score" otherwise).
      band: draw the standard-error band for per-example curves.

    Returns:
      The Figure with one axes per panel.
    """
    panels = [
        (k, v)
        for k, v in (("curves", curves), ("deletion", deletion), ("insertion", insertion))
        if v is not None
    ]
    if not panels:
        raise ValueError("plot_curves: expected curves, deletion or insertion, got none")
    from matplotlib.figure import Figure

    if ylabel is None:
        scales = {getattr(c, "scale", None) for _, g in panels for c in g.values()}
        ylabel = "probability of the target" if scales == {"probability"} else "target score"
    fig = Figure(figsize=(4.3 * len(panels), 3.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, group) in zip(axes, panels):
        for name, c in group.items():
            c, own = _curve_array(c)
            c2 = c.reshape(-1, c.shape[-1]) if c.ndim > 1 else c[None]
            mean = c2.mean(0)
            f = (
                np.asarray(fractions)
                if fractions is not None
                else own
                if own is not None
                else np.linspace(0, 1, len(mean))
            )
            (line,) = ax.plot(f, mean, lw=1.8, label=f"{name} (AUC {auc(mean, f):.3f})")
            if band and len(c2) > 1:
                se = c2.std(0) / math.sqrt(len(c2))
                ax.fill_between(f, mean - se, mean + se, color=line.get_color(), alpha=0.15, lw=0)
        better = {"deletion": " (lower AUC is better)", "insertion": " (higher AUC is better)"}.get(
            kind, ""
        )
        ax.set_title(kind + better, fontsize=10)
        verb = {"deletion": "removed", "insertion": "inserted"}.get(kind, "")
        ax.set_xlabel(f"fraction of features {verb}".strip())
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    return fig
