"""Localisation (against a ground-truth mask), complexity, and axioms as metrics.

Localisation metrics read pixel-level attributions: `(N, H, W, C)` arrays are
summed over channels into one value per pixel, `(N, H, W)` maps are used as
they are. Complexity metrics read every entry of the attributions as given.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from . import base as B
from .masks import check_mask
from .._core import registry
from .._core.batching import values_at
from .._core import validate as V
from .._core.models import as_model
from ..perturbation.engine import coalition_values
from .._core.targets import as_target


def _map_and_mask(attributions: Any, mask: Any) -> tuple[jax.Array, jax.Array]:
    a = B.attribution_array(attributions)
    if a.ndim not in (3, 4):
        V.fail(
            "attributions",
            "pixel-level attributions (N, H, W, C) or a map (N, H, W)",
            f"shape {tuple(a.shape)}",
        )
    pm = a.sum(-1) if a.ndim == 4 else a
    return pm, check_mask(mask, pm.shape)


@registry.method("metrics")
def pointing_game(attributions: Any, mask: Any, *, tolerance: int = 0) -> jax.Array:
    """Pointing game: is the most relevant pixel inside the ground-truth mask?

    Args:
      attributions: pixel-level attributions `(N, H, W, C)`, a map `(N, H, W)`, or
        an `Explanation` holding either.
      mask: the ground truth, booleans or 0/1, `(H, W)` or `(N, H, W)`; every
        example needs at least one pixel inside.
      tolerance: a hit also counts within this many pixels of the mask (Zhang et
        al. use 15 at 224x224).

    Returns:
      `(N,)` 1.0 for a hit, 0.0 for a miss.

    References:
      Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
    """
    pm, m = _map_and_mask(attributions, mask)
    tol = V.check_int(tolerance, "tolerance", minimum=0)
    return _pointing(pm, m, tol=tol)


@functools.partial(jit, static_argnames=("tol",))
def _pointing(pm, m, *, tol):
    if tol:
        r = np.arange(-tol, tol + 1)
        disk = jnp.asarray((r[:, None] ** 2 + r[None, :] ** 2) <= tol * tol, jnp.float32)
        grow = lambda mm: jax.scipy.signal.convolve2d(mm, disk, mode="same") > 0.5
        m = jax.vmap(grow)(m.astype(jnp.float32))
    n = pm.shape[0]
    top = jnp.argmax(pm.reshape(n, -1), axis=1)
    return jnp.take_along_axis(m.reshape(n, -1), top[:, None], axis=1)[:, 0].astype(pm.dtype)


@registry.method("metrics")
def relevance_mass(attributions: Any, mask: Any) -> jax.Array:
    """Relevance mass accuracy: the share of positive relevance inside the mask.

    `sum_{mask} max(a, 0) / sum max(a, 0)` per example (0 when no relevance is
    positive). Arguments as in `pointing_game`.

    Returns:
      `(N,)` values in [0, 1]; higher is better.

    References:
      Arras, Osman and Samek, "CLEVR-XAI: A benchmark dataset for the ground truth
      evaluation of neural network explanations", Information Fusion 2022.
    """
    pm, m = _map_and_mask(attributions, mask)
    return _mass(pm, m)


@jit
def _mass(pm, m):
    pos = jnp.maximum(pm, 0.0).reshape(pm.shape[0], -1)
    tot = pos.sum(1)
    inside = jnp.where(m.reshape(pm.shape[0], -1), pos, 0.0).sum(1)
    return jnp.where(tot > 0, inside / jnp.where(tot > 0, tot, 1.0), 0.0)


@registry.method("metrics")
def relevance_rank_accuracy(attributions: Any, mask: Any) -> jax.Array:
    """Relevance rank accuracy: the share of the `K` most relevant pixels inside the mask.

    `K` is the mask's size per example. Arguments as in `pointing_game`.

    Returns:
      `(N,)` values in [0, 1]; higher is better.

    References:
      Arras, Osman and Samek, "CLEVR-XAI: A benchmark dataset for the ground truth
      evaluation of neural network explanations", Information Fusion 2022.
    """
    pm, m = _map_and_mask(attributions, mask)
    return _rank_accuracy(pm, m)


@jit
def _rank_accuracy(pm, m):
    n = pm.shape[0]
    m = m.reshape(n, -1)
    k = m.sum(1)
    top = B.ranks_desc(pm.reshape(n, -1)) < k[:, None]
    return ((top & m).sum(1) / jnp.maximum(k, 1)).astype(pm.dtype)


# ---- complexity --------------------------------------------------------------------------------


@registry.method("metrics")
def sparseness(attributions: Any) -> jax.Array:
    """Sparseness: the Gini index of the absolute attributions of each example.

    Args:
      attributions: `(N, ...)` attributions or an `Explanation`; every entry counts.

    Returns:
      `(N,)` values in [0, 1): 0 when all entries are equal, near 1 when one entry
      holds all the mass (0 for all-zero attributions). Higher is sparser.

    References:
      Chalasani et al., "Concise Explanations of Neural Networks using Adversarial
      Training", ICML 2020.
    """
    return _gini(B.attribution_array(attributions))


@jit
def _gini(a):
    v = jnp.sort(jnp.abs(a.reshape(a.shape[0], -1)), axis=1)
    n = v.shape[1]
    i = jnp.arange(1, n + 1, dtype=v.dtype)
    tot = v.sum(1)
    g = jnp.sum((2 * i - n - 1)[None] * v, axis=1) / (n * jnp.where(tot > 0, tot, 1.0))
    return jnp.where(tot > 0, g, 0.0)


@registry.method("metrics")
def complexity(attributions: Any) -> jax.Array:
    """Complexity: the entropy of each example's fractional absolute attributions.

    `-sum_i p_i log p_i` with `p = |a| / sum |a|` (natural log). Lower is simpler.

    Args:
      attributions: `(N, ...)` attributions or an `Explanation`; every entry counts.

    Returns:
      `(N,)` entropies in `[0, log(size)]` (0 for all-zero attributions).

    References:
      Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model
      Explanations", IJCAI 2020.
    """
    return _entropy(B.attribution_array(attributions))


@jit
def _entropy(a):
    v = jnp.abs(a.reshape(a.shape[0], -1))
    tot = v.sum(1, keepdims=True)
    p = v / jnp.where(tot > 0, tot, 1.0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=1)


# ---- axioms ------------------------------------------------------------------------------------


@registry.method("metrics", evals=lambda a: 2)
def completeness_gap(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    baseline: Any = "zero",
    blur_sigma: float | None = None,
    batch_size: int | None = None,
) -> jax.Array:
    """Completeness gap: `sum(a) - (f(x) - f(baseline))` per example.

    Zero for methods that satisfy completeness with this baseline (integrated
    gradients up to quadrature error, DeepLIFT, exact Shapley values over pixels).

    Args:
      model, x, target: as in `deletion`.
      attributions: `(N, ...)` attributions (all entries are summed) or an `Explanation`.
      baseline: "zero", "mean", "blur", a number or an array like `x`.
      blur_sigma: the Gaussian's standard deviation for "blur".
      batch_size: model inputs per chunk (`None`: the backend's default).

    Returns:
      `(N,)` signed gaps (2 N forward passes).

    References:
      Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
    """
    model = as_model(model)
    x = V.check_array(x)
    a = B.attribution_array(attributions)
    if a.shape[0] != x.shape[0]:
        V.fail("attributions", f"one row per example ({x.shape[0]})", f"shape {tuple(a.shape)}")
    t = as_target(target, model, x)
    mode, arr = B.check_baseline(baseline, x)
    return _completeness(
        model, x, t, a, arr, mode=mode, sigma=B.check_sigma(blur_sigma, x.shape, mode),
        batch_size=V.check_batch_size(batch_size),
    )


@functools.partial(jit, static_argnames=("mode", "sigma", "batch_size"))
def _completeness(model, x, target, a, baseline, *, mode, sigma, batch_size):
    f = B.view_model(model, x.shape)
    base = B.make_baseline(x, mode, baseline, sigma)
    (fx, fb), _ = values_at(f, target, [B.as_view(x), base], batch_size)
    return a.reshape(a.shape[0], -1).sum(1) - (fx - fb)


@registry.method("metrics", evals=lambda a: 2)
def efficiency_gap(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    segments: Any = None,
    baseline: Any = "zero",
    blur_sigma: float | None = None,
    batch_size: int | None = None,
) -> jax.Array:
    """Efficiency gap of feature attributions: `sum_j phi_j - (v(all) - v(none))`.

    `v(S)` is the target with the features outside `S` replaced by the baseline,
    as Shapley estimators define it; exact Shapley values have gap 0.

    Args:
      model, x, target, baseline, blur_sigma, batch_size: as in `deletion`.
      attributions: `(N, d)` values with `segments=`, or pixel-level attributions.
      segments: the features `(H, W)` or `(N, H, W)` (default: every pixel).

    Returns:
      `(N,)` signed gaps.

    References:
      Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions",
      NeurIPS 2017.
    """
    model = as_model(model)
    x = V.check_array(x)
    a = B.attribution_array(attributions)
    kind, seg, d = B.check_features(a.shape, x.shape, segments)
    t = as_target(target, model, x)
    mode, arr = B.check_baseline(baseline, x)
    return _efficiency(
        model,
        x,
        t,
        a,
        seg,
        arr,
        features=(kind, d),
        mode=mode,
        sigma=B.check_sigma(blur_sigma, x.shape, mode),
        batch_size=V.check_batch_size(batch_size),
    )


@functools.partial(jit, static_argnames=("features", "mode", "sigma", "batch_size"))
def _efficiency(model, x, target, a, segments, baseline, *, features, mode, sigma, batch_size):
    kind, d = features
    f = B.view_model(model, x.shape)
    x4 = B.as_view(x)
    base = B.make_baseline(x, mode, baseline, sigma)
    t = target.resolve(f, x4)
    values, seg = B.to_features(a, x.shape, kind, segments, d)
    v = coalition_values(
        f,
        t,
        x4,
        base,
        seg,
        lambda ex, s: jnp.broadcast_to(s[:, None] == 0, (ex.shape[0], d)),
        2,
        batch_size,
    )
    return values.sum(1) - (v[:, 0] - v[:, 1])
