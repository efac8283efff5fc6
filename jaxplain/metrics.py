"""Evaluating explanations: faithfulness metrics built on the perturbation engine.

Deletion, insertion and monotonicity are coalition *schedules*: features are
removed (or added) in the order of their attributions, and every step of every
example is one coalition evaluated by `perturbation.coalition_values`, in chunks
of `batch_size` model inputs built on device. Faithfulness correlation and
infidelity evaluate random coalitions (or noise) drawn from an explicit `key`.

Attributions are given as an array shaped like `x` (channels are summed per
pixel), an `(N, H, W)` pixel map, `(N, d)` per-feature values with `segments=`,
or an `Explanation`. With `segments=` and pixel-level attributions, a feature's
attribution is the sum over its pixels.

The other metric families live in `_robustness.py`, `_localisation.py`,
`_sanity.py` and `_evaluate.py`; they are re-exported here, so
`jaxplain.metrics.<name>` lists every metric.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _metrics_base as B
from . import _validate as V
from . import batching
from .features import apply_coalitions
from .models import as_model
from .perturbation import coalition_values
from .targets import as_target

PERTURBATIONS = ("subset", "gaussian")


class Curve(NamedTuple):
    """A deletion / insertion curve (a pytree).

    Attributes:
      auc: area under the curve per example, `(N,)` (trapezoid rule over the
        fraction of features removed or inserted, from 0 to 1).
      values: the target at every step, `(N, steps + 1)`.
      fractions: the fraction of features removed / inserted at each step, `(steps + 1,)`.
    """

    auc: jax.Array
    values: jax.Array
    fractions: jax.Array


def _steps_schedule(steps: int, d: int) -> np.ndarray:
    """Number of features moved at each step: `round(s * d / steps)`, s = 0..steps."""
    return ((np.arange(steps + 1) * d + steps // 2) // steps).astype(np.int32)


def _prepare(model, x, attributions, target, baseline, segments, blur_sigma):
    """Python-time validation shared by the perturbation metrics."""
    model = as_model(model)
    x = V.check_array(x)
    a = B.attribution_array(attributions)
    kind, seg, d = B.check_features(a.shape, x.shape, segments)
    t = as_target(target, model, x)
    mode, arr = B.check_baseline(baseline, x)
    sigma = B.check_sigma(blur_sigma, x.shape, mode)
    return model, x, a, (kind, seg, d), t, (mode, arr, sigma)


def _setup(model, x, target, a, feats, base, softmax):
    """Traced: the model on the image view, the view, the bound target, features, baseline."""
    (kind, seg, d), (mode, arr, sigma) = feats, base
    f = B.view_model(model, x.shape, softmax)
    x4 = B.as_view(x)
    values, seg = B.to_features(a, x.shape, kind, seg, d)
    return f, x4, target.resolve(f, x4), values, seg, B.make_baseline(x4, mode, arr, sigma)


def _curve_call(kind, model, x, attributions, target, steps, baseline, segments, blur_sigma,
                softmax, batch_size):
    model, x, a, (fk, seg, d), t, (mode, arr, sigma) = _prepare(
        model, x, attributions, target, baseline, segments, blur_sigma)
    steps = V.check_int(steps, "steps", minimum=1)
    batch_size = V.check_batch_size(batch_size)
    return _curve(model, x, t, a, seg, arr, kind=kind, features=(fk, d), steps=steps, mode=mode,
                  sigma=sigma, softmax=bool(softmax), batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("kind", "features", "steps", "mode", "sigma", "softmax",
                                             "batch_size"))
def _curve(model, x, target, a, segments, baseline, *, kind, features, steps, mode, sigma, softmax,
           batch_size):
    (fk, d) = features
    f, x4, t, values, seg, base = _setup(model, x, target, a, (fk, segments, d),
                                         (mode, baseline, sigma), softmax)
    ks = _steps_schedule(steps, d)
    rank = B.ranks_desc(values)
    k = jnp.asarray(ks)
    if kind == "deletion":  # keep the features not yet removed (most important go first)
        mask_fn = lambda ex, s: rank[ex] >= k[s][:, None]  # noqa: E731
    elif kind == "insertion":  # keep the most important k features
        mask_fn = lambda ex, s: rank[ex] < k[s][:, None]  # noqa: E731
    else:  # monotonicity: insert the least important features first
        mask_fn = lambda ex, s: rank[ex] >= d - k[s][:, None]  # noqa: E731
    curve = coalition_values(f, t, x4, base, seg, mask_fn, steps + 1, batch_size)
    frac = jnp.asarray(ks / d, curve.dtype)
    auc = jnp.sum((curve[:, 1:] + curve[:, :-1]) * jnp.diff(frac) / 2, axis=1)
    return Curve(auc, curve, frac)


_CURVE_ARGS = """
    Args:
      model: a `Model`, NNX module or callable `f(x_batch) -> outputs`.
      x: inputs `(N, H, W, C)`, `(N, H, W)` or `(N, D)`.
      attributions: an array shaped like `x`, an `(N, H, W)` pixel map, `(N, d)`
        per-feature values with `segments=`, or an `Explanation`.
      target: which output to follow (see `as_target`); "predicted" is the class
        predicted at `x`.
      steps: number of removal steps; step `s` moves `round(s * d / steps)` features.
      baseline: what removed pixels become: "zero", "mean" (per-image channel
        means), "blur" (Gaussian blur of `x`), a number or an array like `x`.
      segments: optional superpixels `(H, W)` or `(N, H, W)`; by default every pixel
        is a feature.
      blur_sigma: the Gaussian's standard deviation in pixels for "blur" (default
        `max(H, W) / 10`).
      softmax: follow the softmax probability of the target instead of the raw output.
      batch_size: model inputs per chunk (`None`: `batching.DEFAULT_BATCH_SIZE`).
"""


def deletion(model: Any, x: Any, attributions: Any, *, target: Any, steps: int = 64,
             baseline: Any = "zero", segments: Any = None, blur_sigma: float | None = None,
             softmax: bool = False, batch_size: int | None = None) -> Curve:
    """Deletion curve: the target as features are removed, most important first.

    A faithful explanation makes the target fall quickly, so a *lower* AUC is
    better. Costs `N * (steps + 1)` forward passes.
    {args}
    Returns:
      A `Curve` with `auc (N,)`, `values (N, steps + 1)` and `fractions (steps + 1,)`.

    Raises:
      ValueError, TypeError: bad shapes, segments, baseline or configuration.

    References:
      Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
      Black-box Models", BMVC 2018.

    >>> import jax.numpy as jnp
    >>> f = lambda x: x.sum(axis=(1, 2, 3))
    >>> x = jnp.arange(8.0).reshape(1, 2, 4, 1)
    >>> float(deletion(f, x, x, target=None, steps=8).auc[0])
    8.75
    """
    return _curve_call("deletion", model, x, attributions, target, steps, baseline, segments,
                       blur_sigma, softmax, batch_size)


def insertion(model: Any, x: Any, attributions: Any, *, target: Any, steps: int = 64,
              baseline: Any = "blur", segments: Any = None, blur_sigma: float | None = None,
              softmax: bool = False, batch_size: int | None = None) -> Curve:
    """Insertion curve: the target as features of `x` are put back into the baseline.

    Features are inserted most important first, starting from the baseline (a
    blurred copy of `x` by default); a *higher* AUC is better. Costs
    `N * (steps + 1)` forward passes.
    {args}
    Returns:
      A `Curve` with `auc (N,)`, `values (N, steps + 1)` and `fractions (steps + 1,)`.

    Raises:
      ValueError, TypeError: bad shapes, segments, baseline or configuration.

    References:
      Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
      Black-box Models", BMVC 2018.
    """
    return _curve_call("insertion", model, x, attributions, target, steps, baseline, segments,
                       blur_sigma, softmax, batch_size)


for _f in (deletion, insertion):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("{args}", _CURVE_ARGS)


def monotonicity(model: Any, x: Any, attributions: Any, *, target: Any, steps: int = 64,
                 baseline: Any = "zero", segments: Any = None, blur_sigma: float | None = None,
                 softmax: bool = False, atol: float = 0.0,
                 batch_size: int | None = None) -> jax.Array:
    """Monotonicity: does the target grow as features are added, least important first?

    Starting from the baseline, features are inserted in *increasing* order of
    attribution; each step should increase the target. Arguments as in `deletion`.

    Returns:
      `(N,)` fraction of the `steps` increments that do not decrease the target by
      more than `atol` (1.0: monotonic, as in Arya et al.'s boolean metric).

    References:
      Arya et al., "One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI
      Explainability Techniques", 2019.
    """
    atol = V.check_float(atol, "atol", minimum=0.0)
    c = _curve_call("monotonicity", model, x, attributions, target, steps, baseline, segments,
                    blur_sigma, softmax, batch_size)
    return jnp.mean(jnp.diff(c.values, axis=1) >= -atol, axis=1).astype(c.values.dtype)


# ---- random coalitions: faithfulness correlation, infidelity ---------------------------------


def faithfulness_correlation(model: Any, x: Any, attributions: Any, *, target: Any, key: Any,
                             n_samples: int = 64, subset_size: int | float = 0.1,
                             baseline: Any = "zero", segments: Any = None,
                             blur_sigma: float | None = None, softmax: bool = False,
                             batch_size: int | None = None) -> jax.Array:
    """Faithfulness correlation: do attributions predict the effect of removing features?

    For `n_samples` random subsets `S` of `subset_size` features per example, the
    Pearson correlation between `sum_{j in S} a_j` and `f(x) - f(x with S removed)`.
    Higher is better. Costs `N * (n_samples + 1)` forward passes.

    Args:
      model, x, attributions, target, baseline, segments, blur_sigma, softmax,
      batch_size: as in `deletion`.
      key: a `jax.random.key`; subsets are drawn per (example, sample) from it.
      n_samples: random subsets per example (>= 2).
      subset_size: features per subset: an int count or a float fraction in (0, 1).

    Returns:
      `(N,)` correlations in [-1, 1] (0 when either side is constant).

    References:
      Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model
      Explanations", IJCAI 2020.
    """
    delta, dots = _subsets_call(model, x, attributions, target, key, n_samples, 2, subset_size,
                                baseline, segments, blur_sigma, softmax, batch_size)
    return B.pearson(dots, delta)


def _subsets_call(model, x, attributions, target, key, n_samples, min_samples, subset_size,
                  baseline, segments, blur_sigma, softmax, batch_size):
    model, x, a, (fk, seg, d), t, (mode, arr, sigma) = _prepare(
        model, x, attributions, target, baseline, segments, blur_sigma)
    key = V.check_key(key)
    n_samples = V.check_int(n_samples, "n_samples", minimum=min_samples)
    return _subsets(model, x, t, a, seg, arr, key, features=(fk, d), mode=mode, sigma=sigma,
                    softmax=bool(softmax), n_samples=n_samples, size=B.subset_size(subset_size, d),
                    batch_size=V.check_batch_size(batch_size))


@functools.partial(jax.jit, static_argnames=("features", "mode", "sigma", "softmax", "n_samples",
                                             "size", "batch_size"))
def _subsets(model, x, target, a, segments, baseline, key, *, features, mode, sigma, softmax,
             n_samples, size, batch_size):
    """`(f(x) - f(x_S), sum_S a)`, both `(N, n_samples)`, for random subsets S.

    One pass: each chunk draws its subsets once, builds the perturbed inputs on
    device (`apply_coalitions`) and sums the removed features' attributions.
    """
    (fk, d) = features
    f, x4, t, values, seg, base = _setup(model, x, target, a, (fk, segments, d),
                                         (mode, baseline, sigma), softmax)
    n = x.shape[0]

    def chunk(start, size_):
        ex, s = batching.flat_index(start, size_, n_samples)
        removed = B.random_subsets(B.sample_keys(key, ex, s), d, size)
        fs = t.take(ex).select(f(apply_coalitions(x4[ex], base[ex], seg[ex], ~removed)))
        return fs, jnp.sum(jnp.where(removed, values[ex], 0.0), axis=1)

    fs, dots = batching.chunked_map(chunk, n * n_samples, batch_size)
    fx = t.select(f(x4))
    return fx[:, None] - fs.reshape(n, n_samples), dots.reshape(n, n_samples)


def infidelity(model: Any, x: Any, attributions: Any, *, target: Any, key: Any,
               perturbation: str | Callable = "gaussian", n_samples: int = 64,
               noise_scale: float = 0.1, subset_size: int | float = 0.1, baseline: Any = "zero",
               segments: Any = None, blur_sigma: float | None = None, normalize: bool = False,
               softmax: bool = False, batch_size: int | None = None) -> jax.Array:
    """Infidelity: expected squared error of `I . a` as a predictor of `f(x) - f(x - I)`.

    The perturbation distribution of `I`:

    - "gaussian": `I ~ N(0, noise_scale^2)` on every input entry; `I . a` is the
      dot product with attributions shaped like `x` (gradient-style, "local").
    - "subset": a random subset `S` of `subset_size` features is replaced by the
      baseline, i.e. `I = (x - baseline) * 1_S`; `I . a` is `sum_{j in S} a_j`, the
      matching choice for attributions that already multiply by `x - baseline`
      (integrated gradients, Shapley values, occlusion), which then have
      infidelity 0 on linear models.
    - a callable `perturbation(key, x_example) -> I` shaped like one example, used
      with the dot product as for "gaussian".

    Lower is better. Costs `N * (n_samples + 1)` forward passes.

    Args:
      model, x, attributions, target, baseline, segments, blur_sigma, softmax,
      batch_size: as in `deletion` (`baseline` and `segments` only for "subset").
      key: a `jax.random.key` (one draw per example and sample).
      perturbation: "gaussian", "subset" or a callable (see above).
      n_samples: perturbations per example.
      noise_scale: standard deviation for "gaussian".
      subset_size: features per subset for "subset" (count or fraction).
      normalize: rescale attributions by the optimal least-squares factor first
        (Yeh et al.'s scale-invariant variant).

    Returns:
      `(N,)` infidelity per example.

    References:
      Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019.
    """
    if perturbation == "subset":
        delta, dots = _subsets_call(model, x, attributions, target, key, n_samples, 1, subset_size,
                                    baseline, segments, blur_sigma, softmax, batch_size)
    else:
        if not callable(perturbation):
            V.check_choice(perturbation, "perturbation", PERTURBATIONS)
        model = as_model(model)
        x = V.check_array(x)
        a = B.attribution_array(attributions)
        if a.shape != x.shape:
            V.fail("attributions", f"an array shaped like x {tuple(x.shape)} for "
                   f"perturbation={perturbation!r}", f"shape {tuple(a.shape)}")
        t = as_target(target, model, x)
        key = V.check_key(key)
        n_samples = V.check_int(n_samples, "n_samples", minimum=1)
        scale = V.check_float(noise_scale, "noise_scale", minimum=0.0, open_min=True)
        if callable(perturbation):
            try:
                out = jax.eval_shape(perturbation, key, x[0])
            except Exception as e:  # noqa: BLE001 - surface the user's error with context
                raise ValueError(f"perturbation: the callable failed on one example: {e}") from e
            if getattr(out, "shape", None) != x.shape[1:]:
                V.fail("perturbation", f"a callable (key, x_example) -> I of shape {x.shape[1:]}",
                       getattr(out, "shape", type(out).__name__))
        delta, dots = _noise(model, x, t, a, key, perturb=perturbation, scale=scale,
                             softmax=bool(softmax), n_samples=n_samples,
                             batch_size=V.check_batch_size(batch_size))
    if normalize:
        den = jnp.mean(dots * dots, axis=1, keepdims=True)
        beta = jnp.where(den > 0, jnp.mean(dots * delta, axis=1, keepdims=True) / jnp.where(
            den > 0, den, 1.0), 1.0)
        dots = beta * dots
    return jnp.mean((dots - delta) ** 2, axis=1)


@functools.partial(jax.jit, static_argnames=("perturb", "scale", "softmax", "n_samples",
                                             "batch_size"))
def _noise(model, x, target, a, key, *, perturb, scale, softmax, n_samples, batch_size):
    """`(f(x) - f(x - I), I . a)`, both `(N, n_samples)`, for noise perturbations I."""
    f = (lambda z: jax.nn.softmax(model(z), axis=-1)) if softmax else model
    t = target.resolve(f, x)
    n = x.shape[0]

    def draw(k):
        if callable(perturb):
            return perturb(k, x[0]).astype(x.dtype)
        return scale * jax.random.normal(k, x.shape[1:], x.dtype)

    def chunk(start, size):
        ex, s = batching.flat_index(start, size, n_samples)
        noise = jax.vmap(draw)(B.sample_keys(key, ex, s))
        fs = t.take(ex).select(f(x[ex] - noise))
        return fs, jnp.sum((noise * a[ex]).reshape(size, -1), axis=1)

    fs, dots = batching.chunked_map(chunk, n * n_samples, batch_size)
    fx = t.select(f(x))
    return fx[:, None] - fs.reshape(n, n_samples), dots.reshape(n, n_samples)


# ---- the other families, re-exported so `jaxplain.metrics` lists every metric ----------------

from ._robustness import avg_sensitivity, local_lipschitz_estimate, max_sensitivity  # noqa: E402
from ._localisation import (  # noqa: E402
    complexity,
    completeness_gap,
    efficiency_gap,
    pointing_game,
    relevance_mass,
    relevance_rank_accuracy,
    sparseness,
)
from ._sanity import (  # noqa: E402
    RandomisationResult,
    model_parameter_randomisation,
    random_logit,
    ssim,
)
from ._evaluate import MetricTable, evaluate  # noqa: E402

__all__ = [
    "Curve",
    "MetricTable",
    "RandomisationResult",
    "avg_sensitivity",
    "complexity",
    "completeness_gap",
    "deletion",
    "efficiency_gap",
    "evaluate",
    "faithfulness_correlation",
    "infidelity",
    "insertion",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "model_parameter_randomisation",
    "monotonicity",
    "pointing_game",
    "random_logit",
    "relevance_mass",
    "relevance_rank_accuracy",
    "sparseness",
    "ssim",
]
