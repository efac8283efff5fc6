"""Shared matplotlib helpers of the visualize package."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .heatmaps import (
    ABSOLUTE_CMAP,
    SIGNED_CMAP,
    normalize,
    reduce_channels,
    resolve_sign,
    to_gray,
    to_image,
    upsample,
)


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


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Saves a Figure (creating folders) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
