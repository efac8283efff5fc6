"""Pictures of explanations: the NumPy adapter plus matplotlib plots.

The only module of jaxplain that imports matplotlib (lazily, inside the plot
functions, so `import jaxplain` stays light). Every `plot_*` function returns the
`matplotlib.figure.Figure` and never calls `show()`: save it with
`fig.savefig(path)` or display it in a notebook.

Heatmaps follow the conventions of Captum's `visualize_image_attr` and shap's image
plots: attributions are reduced over channels, clipped at a high percentile of
their magnitude (so one hot pixel does not wash out the rest), shown with a
diverging map centred on zero when they are signed (red = evidence for the target,
blue = against) or a sequential map when they are magnitudes, and blended over a
grayscale copy of the image with an opacity that follows the attribution, so the
image stays readable where the explanation is silent.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._types import Explanation
from ._types import to_numpy as to_numpy

SIGNS = ("auto", "signed", "absolute", "positive", "negative")
REDUCTIONS = ("sum", "mean", "abs_sum", "max_abs", "l2")
SIGNED_CMAP = "RdBu_r"
ABSOLUTE_CMAP = "inferno"


# ---- NumPy side ---------------------------------------------------------------------------


def as_array(a: Any) -> np.ndarray:
    """The values of an `Explanation` (or any array) as a float32 NumPy array."""
    if isinstance(a, Explanation):
        a = a.values
    return np.asarray(to_numpy(a), dtype=np.float32)


def reduce_channels(a: Any, how: str = "sum") -> np.ndarray:
    """Collapses the channel axis of images `(..., H, W, C)` to `(..., H, W)`.

    Arrays without a channel axis (`(N, H, W)` or `(H, W)`) pass through. `how` is
    one of `"sum"` (signed, Captum's default), `"mean"`, `"abs_sum"`, `"max_abs"` or
    `"l2"` (magnitudes).
    """
    a = as_array(a)
    if how not in REDUCTIONS:
        raise ValueError(f"how: expected one of {REDUCTIONS}, got {how!r}")
    if a.ndim < 3 or (a.ndim == 3 and a.shape[-1] > 4):
        return a
    if how == "sum":
        return a.sum(-1)
    if how == "mean":
        return a.mean(-1)
    if how == "abs_sum":
        return np.abs(a).sum(-1)
    if how == "max_abs":
        return np.abs(a).max(-1)
    return np.sqrt((a * a).sum(-1))


def is_signed(a: Any, tolerance: float = 0.01) -> bool:
    """True when `a` has negative values that matter (more than `tolerance` of its range)."""
    a = as_array(a)
    hi = float(np.abs(a).max()) if a.size else 0.0
    return hi > 0 and float(a.min()) < -tolerance * hi


def normalize(
    a: Any, sign: str = "signed", percentile: float = 99.5, vmax: float | None = None
) -> np.ndarray:
    """Scales a heatmap into `[-1, 1]` (signed) or `[0, 1]` (other signs).

    Args:
      a: a heatmap (any shape).
      sign: `"signed"` keeps the sign; `"absolute"` takes magnitudes; `"positive"`
        / `"negative"` keep one side (negative values shown as positive numbers).
      percentile: values are divided by this percentile of the kept magnitudes and
        clipped, so a few extreme pixels do not wash out the map.
      vmax: the scale to divide by instead of the percentile.

    Returns:
      The scaled heatmap, same shape, float32.
    """
    a = as_array(a)
    if sign not in SIGNS[1:]:
        raise ValueError(f"sign: expected one of {SIGNS[1:]}, got {sign!r}")
    if sign == "absolute":
        a = np.abs(a)
    elif sign == "positive":
        a = np.maximum(a, 0)
    elif sign == "negative":
        a = np.maximum(-a, 0)
    if vmax is None:
        vmax = scale_of(a, percentile)
    lo = -1.0 if sign == "signed" else 0.0
    return np.clip(a / vmax, lo, 1.0).astype(np.float32)


def scale_of(a: Any, percentile: float = 99.5) -> float:
    """The `percentile` of `|a|` (a positive number, 1 for an all-zero map)."""
    m = np.abs(as_array(a)).ravel()
    v = float(np.percentile(m, percentile)) if m.size else 0.0
    if not v > 0:
        v = float(m.max()) if m.size else 0.0
    return v if v > 0 else 1.0


def resolve_sign(a: Any, sign: str = "auto") -> str:
    """`"signed"` or `"absolute"` for `sign="auto"` (from the data), else `sign` itself."""
    if sign not in SIGNS:
        raise ValueError(f"sign: expected one of {SIGNS}, got {sign!r}")
    if sign != "auto":
        return sign
    return "signed" if is_signed(a) else "absolute"


def feature_map(values: Any, segments: Any) -> np.ndarray:
    """Paints per-feature values `(N, d)` (or `(d,)`) onto label maps: `(N, H, W)` (or `(H, W)`).

    `segments` is `(H, W)` or `(N, H, W)` with labels `0..d-1`.
    """
    v = as_array(values)
    s = np.asarray(segments).astype(np.int64)
    if v.ndim == 1:
        return v[s] if s.ndim == 2 else v[None][np.zeros(len(s), int)[:, None, None], s]
    if s.ndim == 2:
        s = np.broadcast_to(s, (len(v),) + s.shape)
    return np.take_along_axis(v, s.reshape(len(v), -1), axis=1).reshape(s.shape)


def upsample(heat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a heatmap `(..., h, w)` to `(..., H, W)` (e.g. a Grad-CAM map)."""
    heat = np.asarray(heat, np.float32)
    if tuple(heat.shape[-2:]) == tuple(hw):
        return heat
    from skimage.transform import resize

    out_shape = heat.shape[:-2] + tuple(hw)
    return resize(
        heat, out_shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True
    ).astype(np.float32)


def to_image(image: Any) -> np.ndarray:
    """One image as `(H, W, 3)` float in [0, 1] (gray is repeated; channels-first is moved)."""
    im = as_array(image)
    if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3):
        im = np.moveaxis(im, 0, -1)
    if im.ndim == 2:
        im = im[..., None]
    if im.shape[-1] == 1:
        im = np.repeat(im, 3, -1)
    if im.shape[-1] == 4:
        im = im[..., :3]
    lo, hi = float(im.min()), float(im.max())
    if lo < 0 or hi > 1:
        im = (im - lo) / (hi - lo if hi > lo else 1.0)
    return im


def to_gray(image: Any) -> np.ndarray:
    """One image as `(H, W)` luminance in [0, 1]."""
    im = to_image(image)
    return im @ np.array([0.299, 0.587, 0.114], np.float32)


def blend(
    image: Any,
    heat: Any,
    *,
    sign: str = "auto",
    percentile: float = 99.5,
    alpha: float = 0.8,
    cmap: str | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """A heatmap composited over a dimmed grayscale image, as an RGB array `(H, W, 3)`.

    The opacity of the heatmap at a pixel grows with the attribution's magnitude
    there (up to `alpha`), so silent regions show the image.
    """
    import matplotlib

    base = to_gray(image)
    hw = base.shape
    h = heat if np.ndim(heat) == 2 else reduce_channels(heat)
    h = upsample(h, hw)
    sign = resolve_sign(h, sign)
    n = normalize(h, sign, percentile, vmax)
    cm = matplotlib.colormaps[cmap or (SIGNED_CMAP if sign == "signed" else ABSOLUTE_CMAP)]
    colors = cm((n + 1) / 2 if sign == "signed" else n)[..., :3]
    a = (alpha * np.abs(n) ** 0.7)[..., None]
    return ((1 - a) * (0.25 + 0.6 * base)[..., None] + a * colors).astype(np.float32)


# ---- matplotlib side ------------------------------------------------------------------------


def _new_figure(rows: int, cols: int, cell: float = 1.9, extra_h: float = 0.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(cols * cell + 0.4, rows * cell + extra_h + 0.3), layout="constrained")


def _off(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _show_image(ax, image: Any, interpolation: str | None = None):
    im = to_image(image)
    interp = interpolation or ("nearest" if max(im.shape[:2]) <= 32 else "antialiased")
    ax.imshow(im, interpolation=interp)
    _off(ax)


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
    ylabel: str = "target score",
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
      ylabel: y-axis label.
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


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def plot_feature_maps(
    activations: Any,
    *,
    image: Any = None,
    max_maps: int = 16,
    ncols: int = 8,
    title: str | None = None,
    cmap: str = "viridis",
    cell: float = 1.3,
):
    """The channels of one layer's activations `(H, W, C)` (or `(1, H, W, C)`) as small images.

    Channels are sorted by mean activation (most active first) and each is scaled to
    its own range. With `image`, the input is drawn first.

    Returns:
      The Figure with `min(C, max_maps)` axes (+1 with `image`).
    """
    a = as_array(activations)
    if a.ndim == 4:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"activations: expected (H, W, C) or (1, H, W, C), got shape {a.shape}")
    order = np.argsort(-a.mean((0, 1)))[:max_maps]
    k = len(order) + (image is not None)
    rows, cols = _grid(k, ncols)
    fig = _new_figure(rows, cols, cell, extra_h=0.3 if title else 0)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(k)]
    it = iter(axes)
    if image is not None:
        ax = next(it)
        _show_image(ax, image)
        ax.set_title("input", fontsize=8)
    for c, ax in zip(order, it):
        ax.imshow(
            a[..., c],
            cmap=cmap,
            interpolation="nearest" if max(a.shape[:2]) <= 32 else "antialiased",
        )
        ax.set_title(f"ch {c}", fontsize=7)
        _off(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_filters(
    kernel: Any,
    *,
    max_filters: int = 32,
    ncols: int = 8,
    title: str | None = None,
    cell: float = 0.9,
):
    """Convolution kernels `(kh, kw, C_in, C_out)` as small images, one per output channel.

    RGB-input kernels (`C_in == 3`) are shown in colour (each scaled around grey);
    others show the mean over input channels with a diverging map.

    Returns:
      The Figure with `min(C_out, max_filters)` axes.
    """
    k = as_array(kernel)
    if k.ndim != 4:
        raise ValueError(f"kernel: expected (kh, kw, C_in, C_out), got shape {k.shape}")
    n = min(k.shape[-1], max_filters)
    rows, cols = _grid(n, ncols)
    fig = _new_figure(rows, cols, cell, extra_h=0.3 if title else 0)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        f = k[..., i]
        if f.shape[-1] == 3:
            s = np.abs(f).max() or 1.0
            ax.imshow(0.5 + 0.5 * f / s, interpolation="nearest")
        else:
            m = f.mean(-1)
            s = np.abs(m).max() or 1.0
            ax.imshow(m, cmap="RdBu_r", vmin=-s, vmax=s, interpolation="nearest")
        _off(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_feature_visualization(
    images: Any,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    title: str | None = None,
    cell: float = 1.6,
):
    """Inputs synthesised to excite units (activation maximisation), each scaled to its range.

    Args:
      images: `(K, H, W[, C])` synthesised inputs, one per unit.
      titles: one caption per image (e.g. "conv2 ch 5").

    Returns:
      The Figure with `K` axes.
    """
    x = as_array(images)
    if x.ndim == 3:
        x = x[..., None]
    rows, cols = _grid(len(x), ncols)
    fig = _new_figure(rows, cols, cell, extra_h=0.3 if title else 0)
    for i, im in enumerate(x):
        ax = fig.add_subplot(rows, cols, i + 1)
        lo, hi = np.percentile(im, 1), np.percentile(im, 99)
        _show_image(ax, np.clip((im - lo) / (hi - lo if hi > lo else 1.0), 0, 1))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_importance(
    maps: Any,
    *,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    shared: bool = True,
    cmap: str = ABSOLUTE_CMAP,
    ncols: int = 5,
    cell: float = 1.5,
):
    """Importance maps such as `global_importance(...).per_class`: `(K, H, W[, C])` or one map.

    Channels are summed. With `shared=True` all maps use one colour scale (one
    colorbar), so classes can be compared; otherwise each map is scaled alone.

    Returns:
      The Figure with `K` map axes (+1 colorbar axes when shared).
    """
    from matplotlib.colors import Normalize

    m = as_array(maps)
    if m.ndim == 2 or (m.ndim == 3 and m.shape[-1] in (1, 3)):  # one map (with channels)
        m = m[None]
    if m.ndim == 4:
        m = m.sum(-1)
    rows, cols = _grid(len(m), ncols)
    fig = _new_figure(rows, cols, cell, extra_h=0.3 if title else 0)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(m))]
    top = scale_of(m, 99.5)
    im = None
    for i, (ax, a) in enumerate(zip(axes, m)):
        vmax = top if shared else scale_of(a, 99.5)
        lo = min(0.0, float(a.min())) if not shared else min(0.0, float(m.min()))
        im = ax.imshow(
            a,
            cmap=cmap,
            norm=Normalize(lo, vmax),
            interpolation="nearest" if max(a.shape) <= 32 else "antialiased",
        )
        _off(ax)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if shared and im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.02)
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _benchmark_records(results: Any) -> list[dict]:
    if isinstance(results, (str, Path)):
        p = Path(results)
        if p.is_dir():
            recs = []
            for f in sorted(p.glob("*.json")):
                recs += _benchmark_records(json.loads(f.read_text()))
            return recs
        return _benchmark_records(json.loads(p.read_text()))
    if isinstance(results, Mapping):
        for key in ("results", "records", "rows", "runs"):
            if key in results and isinstance(results[key], list):
                return [dict(r) for r in results[key]]
        return [dict(results)]
    return [dict(r) for r in results]


def _pick(rec: Mapping, names: Sequence[str], default=None):
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    return default


def _nested_rows(r: Mapping, metric: str) -> list[tuple]:
    """Rows of one record of benchmarks/harness.py: jaxplain, the best config per peer library."""
    label = str(_pick(r, ["case", "method", "name"], "?"))
    lim = (r.get("limit") or {}).get(metric)
    rows = []
    t = r["jaxplain"].get(metric)
    if t is not None:
        rows.append((label, "jaxplain", float(t), lim))
    best: dict[str, float] = {}
    for name, timing in (r.get("peers") or {}).items():
        v = (timing or {}).get(metric) if isinstance(timing, Mapping) else None
        if v is not None:
            lib = name.split("[", 1)[0].split(".", 1)[0]
            best[lib] = min(best.get(lib, float("inf")), float(v))
    rows += [(label, lib, v, lim) for lib, v in best.items()]
    return rows


def plot_benchmark(
    results: Any, *, metric: str | None = None, log: bool = True, title: str | None = None
):
    """Bar chart of benchmark timings: one group per method, one bar per library.

    Args:
      results: a path to a JSON file (or a folder of them) from `benchmarks/results`,
        a dict with a `"results"` list, or a list of records. Records of the
        harness (`{"case", "jaxplain": {"median_s"}, "limit": {...}, "peers": {...}}`)
        give one bar for jaxplain and one per peer library (its best configuration).
        A flat record names its
        method (`method`), its implementation (`library`/`impl`/`framework`) and a
        time (`seconds`/`time_s`/`median_s`/`steady_s`/`time`), optionally the
        physical limit (`limit_s`/`physical_limit_s`) drawn as a black tick.
      metric: the record field to plot (default: the first time field found).
      log: logarithmic y axis.

    Returns:
      The Figure with one axes.
    """
    from matplotlib.figure import Figure

    recs = _benchmark_records(results)
    time_keys = (
        [metric] if metric else ["steady_s", "median_s", "seconds", "time_s", "time", "mean_s"]
    )
    rows = []
    for r in recs:
        if isinstance(r.get("jaxplain"), Mapping):  # the harness's nested layout
            rows += _nested_rows(r, metric or "median_s")
            continue
        t = _pick(r, time_keys)
        if t is None:
            continue
        rows.append(
            (
                str(_pick(r, ["method", "name"], "?")),
                str(_pick(r, ["library", "impl", "framework", "backend"], "jaxplain")),
                float(t),
                _pick(r, ["limit_s", "physical_limit_s", "limit"]),
            )
        )
    if not rows:
        raise ValueError(f"results: found no timing field among {time_keys} in {len(recs)} records")
    methods = list(dict.fromkeys(r[0] for r in rows))
    libs = list(dict.fromkeys(r[1] for r in rows))
    fig = Figure(
        figsize=(max(5.0, 0.9 * len(methods) * max(1, len(libs)) ** 0.5 + 2), 3.6),
        layout="constrained",
    )
    ax = fig.add_subplot()
    width = 0.8 / len(libs)
    for j, lib in enumerate(libs):
        xs, ys = [], []
        for r in rows:
            if r[1] == lib:
                xs.append(methods.index(r[0]) + (j - (len(libs) - 1) / 2) * width)
                ys.append(r[2])
        ax.bar(xs, ys, width * 0.95, label=lib)
    lim = [(methods.index(r[0]), float(r[3])) for r in rows if r[3] is not None]
    for i, (x, v) in enumerate(dict(lim).items()):
        ax.plot(
            [x - 0.45, x + 0.45],
            [v, v],
            color="k",
            lw=1.5,
            label="physical limit" if i == 0 else None,
        )
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(time_keys[0] if metric else "seconds")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Saves a Figure (creating folders) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
