"""Heatmap arithmetic for plots, in NumPy: channel reduction, sign handling, percentile
clipping, painting feature values onto pixels, resizing. No matplotlib here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.types import Explanation
from .._core.types import to_numpy as to_numpy

SIGNS = ("auto", "signed", "absolute", "positive", "negative")
REDUCTIONS = ("sum", "mean", "abs_sum", "max_abs", "l2")
SIGNED_CMAP = "RdBu_r"
ABSOLUTE_CMAP = "inferno"


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
