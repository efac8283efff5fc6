"""Plots of the network itself and of global views: feature maps, filters, synthesised
inputs, importance maps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .heatmaps import ABSOLUTE_CMAP, as_array, scale_of
from ._common import _grid, _new_figure, _off, _show_image


def plot_feature_maps(
    activations: Any,
    *,
    image: Any = None,
    max_maps: int = 16,
    ncols: int = 8,
    title: str | None = None,
    cmap: str = "viridis",
    cell: float = 1.3,
    shared: bool = True,
    label: str = "activation",
):
    """The channels of one layer's activations `(H, W, C)` (or `(1, H, W, C)`) as small images.

    Channels are sorted by mean activation (most active first). With `shared=True`
    every map uses one colour scale, from `min(0, lowest value)` to the highest
    value shown, and one colour bar (labelled `label`) reads it; with
    `shared=False` each map is scaled to its own range and the colour bar runs
    from each map's minimum to its maximum. With `image`, the input is drawn first.

    Returns:
      The Figure with `min(C, max_maps)` axes (+1 with `image`), then the colour bar's.
    """
    from matplotlib.colors import Normalize

    a = as_array(activations)
    if a.ndim == 4:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"activations: expected (H, W, C) or (1, H, W, C), got shape {a.shape}")
    order = np.argsort(-a.mean((0, 1)))[:max_maps]
    k = len(order) + (image is not None)
    rows, cols = _grid(k, ncols)
    fig = _new_figure(rows, cols, cell, extra_h=0.3 if title else 0)
    fig.set_figwidth(fig.get_figwidth() + 0.6)  # room for the colour bar
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(k)]
    it = iter(axes)
    if image is not None:
        ax = next(it)
        _show_image(ax, image)
        ax.set_title("input", fontsize=8)
    shown = a[..., order]
    lo, hi = min(0.0, float(shown.min())), float(shown.max())
    im = None
    for c, ax in zip(order, it):
        m = a[..., c]
        norm = Normalize(lo, hi if hi > lo else lo + 1) if shared else _own_range(m)
        im = ax.imshow(
            m if shared else (m - norm.vmin) / (norm.vmax - norm.vmin),
            cmap=cmap,
            norm=norm if shared else Normalize(0.0, 1.0),
            interpolation="nearest" if max(a.shape[:2]) <= 32 else "antialiased",
        )
        ax.set_title(f"ch {c}", fontsize=7)
        _off(ax)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.02)
        if not shared:
            cb.set_ticks([0.0, 1.0], labels=["min", "max"])
        cb.set_label(label if shared else f"{label} (each map's own range)", fontsize=7)
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _own_range(m: np.ndarray):
    from matplotlib.colors import Normalize

    lo, hi = float(m.min()), float(m.max())
    return Normalize(lo, hi if hi > lo else lo + 1)


def plot_filters(
    kernel: Any,
    *,
    max_filters: int = 32,
    ncols: int = 8,
    title: str | None = None,
    cell: float = 0.9,
):
    """Convolution kernels `(kh, kw, C_in, C_out)` as small images, one per output channel.

    All filters share one scale `s`, the largest absolute weight shown, read on a
    colour bar. RGB-input kernels (`C_in == 3`) are shown in colour (each channel
    `0.5 + 0.5 * w / s`: grey is zero); others show the mean over input channels
    with a diverging map from `-s` (blue) to `s` (red).

    Returns:
      The Figure with `min(C_out, max_filters)` axes, then the colour bar's.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    k = as_array(kernel)
    if k.ndim != 4:
        raise ValueError(f"kernel: expected (kh, kw, C_in, C_out), got shape {k.shape}")
    n = min(k.shape[-1], max_filters)
    rgb = k.shape[2] == 3
    shown = k[..., :n] if rgb else k[..., :n].mean(2)
    s = float(np.abs(shown).max()) or 1.0
    rows, cols = _grid(n, ncols)
    fig = _new_figure(rows, cols, cell, extra_h=0.3 if title else 0)
    fig.set_figwidth(fig.get_figwidth() + 0.7)  # room for the colour bar
    axes = []
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        if rgb:
            ax.imshow(np.clip(0.5 + 0.5 * shown[..., i] / s, 0, 1), interpolation="nearest")
        else:
            ax.imshow(shown[..., i], cmap="RdBu_r", vmin=-s, vmax=s, interpolation="nearest")
        _off(ax)
        axes.append(ax)
    sm = ScalarMappable(Normalize(-s, s), "gray" if rgb else "RdBu_r")
    cb = fig.colorbar(sm, ax=axes, shrink=0.8, pad=0.02)
    cb.set_label("weight per channel" if rgb else "weight (mean over input channels)", fontsize=7)
    cb.ax.tick_params(labelsize=7)
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
