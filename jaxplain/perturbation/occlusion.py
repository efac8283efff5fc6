"""Occlusion, feature ablation and RISE: one model evaluation per window, feature or mask,
streamed through the perturbation engine (`engine.stream`).
"""

from __future__ import annotations

import functools

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import registry
from .._core import features
from .._core.batching import values_at
from .._core import validate as V
from .._core.types import ArrayLike, Explanation
from .._core.models import as_model
from .._core.targets import as_target
from .engine import (
    add_local,
    n_evals,
    prepare,
    stream,
    stream_evals,
)


# ---- occlusion -------------------------------------------------------------------------


def _tuple(v: Any, name: str, length: int, minimum: int = 1) -> tuple[int, ...]:
    vals = (v,) * length if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
    if not isinstance(vals, (tuple, list)) or len(vals) != length:
        V.fail(name, f"an int or a tuple of {length} ints", repr(v), TypeError)
    return tuple(
        V.check_int(int(a) if isinstance(a, np.integer) else a, name, minimum=minimum) for a in vals
    )


def occlusion_evals(a: dict) -> int:
    """Model evaluations per example of an `occlusion` call: one per window position, + 1."""
    shape = np.shape(a["x"])[1:]
    n_ax = 3 if isinstance(a["window"], (tuple, list)) and len(a["window"]) == 3 else 2
    win = _tuple(a["window"], "window", n_ax)
    st = _tuple(a["strides"], "strides", n_ax)
    windows = int(np.prod([(s - w) // t + 1 for s, w, t in zip(shape, win, st)]))
    return stream_evals(a, 1, windows, 4)


@registry.method(
    "perturbation",
    evals=occlusion_evals,
    cheap={"window": 4, "strides": 4},
    demo={"label": "occlusion", "quick": {"window": 4, "strides": 2}, "full": {"window": 4, "strides": 2}},
)
def occlusion(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    window: int | tuple[int, ...] = 4,
    strides: int | tuple[int, ...] = 1,
    baseline: Any = 0.0,
    batch_size: int | None = None,
) -> Explanation:
    """Occlusion: the drop of the target when a sliding window is replaced by the baseline.

    Each window position is one model evaluation; every pixel gets the average of
    `f(x) - f(x with the window occluded)` over the windows that cover it (as in
    Captum's `Occlusion`). Pixels that no window covers get 0.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)`.
      target: see `jaxplain.as_target`.
      window: `(h, w)` covers all channels; `(h, w, c)` slides along channels too
        (`c = 1` occludes one channel at a time). An int means a square window.
      strides: steps of the window, an int or one per window axis (Captum's
        default 1).
      baseline: a number, an image, one image per example, or `"blur"`.
      batch_size: model inputs per chunk (`None`: `batching.default_batch_size()`).

    Returns:
      `Explanation(values (N, H, W, C), n_evals)`: one evaluation per window
      position plus one at `x`.

    References:
      Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
      ECCV 2014.

    >>> import jax.numpy as jnp
    >>> from jaxplain.testing import linear_model
    >>> m = linear_model(jnp.ones((4, 4, 1, 1)))
    >>> occlusion(m, jnp.ones((1, 4, 4, 1)), target=0, window=2, strides=2).values[0, :, :, 0]
    Array([[4., 4., 4., 4.],
           [4., 4., 4., 4.],
           [4., 4., 4., 4.],
           [4., 4., 4., 4.]], dtype=float32)
    """
    model = as_model(model)
    x = V.check_array(x, min_ndim=4)
    t = as_target(target, model, x)
    n_ax = 3 if isinstance(window, (tuple, list)) and len(window) == 3 else 2
    win = _tuple(window, "window", n_ax)
    st = _tuple(strides, "strides", n_ax)
    dims = x.shape[1 : 1 + n_ax]
    if any(w > s for w, s in zip(win, dims)):
        V.fail("window", f"a window no larger than the image {dims}", win)
    mode, b = features.baseline_spec(baseline, x)
    if mode == "mean":
        V.fail(
            "baseline",
            "a number, an array or 'blur' (occlusion has no segments for 'mean')",
            "'mean'",
        )
    batch_size = V.check_batch_size(batch_size)
    return _occlusion(model, x, t, b, mode=mode, window=win, strides=st, batch_size=batch_size)


@functools.partial(jit, static_argnames=("mode", "window", "strides", "batch_size"))
def _occlusion(model, x, target, b, *, mode, window, strides, batch_size):
    n, shape = x.shape[0], x.shape[1:]
    b = features.make_baseline(mode, b, x, None, 0)
    (fx,), target = values_at(model, target, [x], batch_size, repeats=True)
    npos = [(s - w) // st + 1 for s, w, st in zip(shape, window, strides)]
    ranges = [jnp.arange(s) for s in shape[: len(window)]]

    def window_mask(pos):  # pos (b,) flat position -> (b, H, W, C) bool
        idx = jnp.unravel_index(pos, npos)
        m = jnp.ones((pos.shape[0],) + shape, bool)
        for axis, (i, w, st, r) in enumerate(zip(idx, window, strides, ranges)):
            lo = (i * st)[:, None]
            inside = (r[None, :] >= lo) & (r[None, :] < lo + w)
            bshape = [pos.shape[0]] + [1] * len(shape)
            bshape[axis + 1] = shape[axis]
            m = m & inside.reshape(bshape)
        return m

    def inputs_fn(ex, pos):
        return jnp.where(window_mask(pos), b[ex], x[ex])

    def reduce_fn(acc, c):
        drop = (fx[c.ex] - c.values[:, 0]) * 1.0
        mask = window_mask(c.unit).astype(x.dtype)
        return add_local(acc, c.ex0, jnp.einsum("mk,m,m...->k...", c.onehot, drop, mask))

    acc = stream(
        model,
        target,
        n,
        int(np.prod(npos)),
        lambda ex, u: (u[:, None], None),
        inputs_fn,
        reduce_fn,
        jnp.zeros_like(x),
        batch_size,
    )
    count = np.ones(shape, np.float32)
    for axis, (s, w, st, k) in enumerate(zip(shape, window, strides, npos)):
        c = np.zeros(s, np.float32)
        for i in range(k):
            c[i * st : i * st + w] += 1
        bshape = [1] * len(shape)
        bshape[axis] = s
        count = count * c.reshape(bshape)
    count = count[None]
    values = jnp.where(count > 0, acc / np.maximum(count, 1.0), 0.0)
    return Explanation(values, n_evals=n_evals(n, 1, 1, int(np.prod(npos)), 1, batch_size, 4))


# ---- feature ablation ------------------------------------------------------------------


@registry.method(
    "perturbation",
    evals=lambda a: stream_evals(a, 1, features.n_features(a["segments"]), 4),
    demo={"label": "feature ablation", "quick": None, "full": {}},
)
def feature_ablation(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    segments: ArrayLike,
    baseline: Any = 0.0,
    batch_size: int | None = None,
) -> Explanation:
    """Feature ablation: the drop of the target when one feature is replaced by the baseline.

    Feature `j` of an example gets `f(x) - f(x with feature j removed)`, one model
    evaluation per feature (as Captum's `FeatureAblation` with a `feature_mask`).
    It is occlusion with the windows replaced by features of any shape
    (superpixels, grid cells, user masks), and the cheapest perturbation method:
    `d + 1` evaluations per example. It sees no interactions: on an additive
    model it equals the Shapley values; on others, compare with `kernel_shap`.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)` (or `(N, H, W)`).
      target: see `jaxplain.as_target`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1` without gaps
        (`grid_segments`, `superpixels`, ...).
      baseline: what a removed feature becomes: a number, an image, one image
        per example, `"blur"` or `"mean"` (the feature's mean colour).
      batch_size: model inputs per chunk (`None`: `batching.default_batch_size()`).

    Returns:
      `Explanation(values (N, d), n_evals (N,))`. Features an example lacks
      (per-example segments with fewer labels) get 0. `jx.to_pixels` paints
      the values back onto the image.

    Raises:
      ValueError, TypeError: invalid arguments (before anything compiles).

    References:
      Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
      ECCV 2014 (occlusion); Captum's `FeatureAblation`.

    >>> import jax.numpy as jnp
    >>> from jaxplain.testing import linear_model
    >>> w = jnp.arange(8.0).reshape(2, 4, 1, 1)
    >>> seg = jnp.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    >>> feature_ablation(linear_model(w), jnp.ones((1, 2, 4, 1)), target=0, segments=seg).values
    Array([[ 1.,  5.,  9., 13.]], dtype=float32)
    """
    model, x, t, seg, d, mode, b, batch_size = prepare(
        model, x, target, segments, baseline, batch_size
    )
    return _feature_ablation(model, x, t, seg, b, d=d, mode=mode, batch_size=batch_size)


@functools.partial(jit, static_argnames=("d", "mode", "batch_size"))
def _feature_ablation(model, x, target, seg, b, *, d, mode, batch_size):
    n = x.shape[0]
    b = features.make_baseline(mode, b, x, seg, d)
    present = features.feature_counts(seg, d) > 0
    (fx,), target = values_at(model, target, [x], batch_size, repeats=True)
    labels = jnp.arange(d)

    def inputs_fn(ex, j):
        return features.apply_coalitions(x[ex], b[ex], seg[ex], j[:, None] != labels[None])

    def reduce_fn(acc, c):
        drop = fx[c.ex] - c.values[:, 0]
        hit = (c.unit[:, None] == labels[None]).astype(drop.dtype)
        return add_local(acc, c.ex0, jnp.einsum("mk,m,md->kd", c.onehot, drop, hit))

    acc = stream(
        model,
        target,
        n,
        d,
        lambda ex, u: (u[:, None], None),
        inputs_fn,
        reduce_fn,
        jnp.zeros((n, d), jnp.float32),
        batch_size,
    )
    evals = n_evals(n, 1, 1, d, 1, batch_size, 4)
    return Explanation(jnp.where(present, acc, 0.0), n_evals=evals)


from .rise import RISE_SAMPLINGS, rise, rise_masks  # noqa: E402, F401 - registered after ablation
