"""Faithfulness on random coalitions: faithfulness correlation and infidelity.

Both draw, per example and sample, a random perturbation from an explicit `key`
(`fold_in(fold_in(key, example), sample)`, so results do not depend on
`batch_size`), evaluate the model on the perturbed inputs built on device in
chunks of `batch_size`, and compare the output change with what the
attributions predict for that perturbation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._compile import jit
from . import base as B
from .._core import registry
from .._core import validate as V
from .._core import batching
from .._core.noise import gaussian
from .._core.features import apply_coalitions
from .._core.models import as_model
from .._core.targets import as_target

PERTURBATIONS = ("subset", "gaussian")


@registry.method("metrics", evals=lambda a: a["n_samples"] + 1, cheap={"n_samples": 4})
def faithfulness_correlation(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    key: Any,
    n_samples: int = 64,
    subset_size: float = 0.1,
    baseline: Any = "zero",
    segments: Any = None,
    blur_sigma: float | None = None,
    softmax: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
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
    delta, dots = _subsets_call(
        model,
        x,
        attributions,
        target,
        key,
        n_samples,
        2,
        subset_size,
        baseline,
        segments,
        blur_sigma,
        softmax,
        batch_size,
    )
    return B.pearson(dots, delta)


def _subsets_call(
    model,
    x,
    attributions,
    target,
    key,
    n_samples,
    min_samples,
    subset_size,
    baseline,
    segments,
    blur_sigma,
    softmax,
    batch_size,
):
    model, x, a, (fk, seg, d), t, (mode, arr, sigma) = B.prepare(
        model, x, attributions, target, baseline, segments, blur_sigma
    )
    key = V.check_key(key)
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], fixed=1, minimum=min_samples)
    return _subsets(
        model,
        x,
        t,
        a,
        seg,
        arr,
        key,
        features=(fk, d),
        mode=mode,
        sigma=sigma,
        softmax=bool(softmax),
        n_samples=n_samples,
        size=B.subset_size(subset_size, d),
        batch_size=V.check_batch_size(batch_size),
    )


@functools.partial(
    jit,
    static_argnames=("features", "mode", "sigma", "softmax", "n_samples", "size", "batch_size"),
)
def _subsets(
    model,
    x,
    target,
    a,
    segments,
    baseline,
    key,
    *,
    features,
    mode,
    sigma,
    softmax,
    n_samples,
    size,
    batch_size,
):
    """`(f(x) - f(x_S), sum_S a)`, both `(N, n_samples)`, for random subsets S.

    One pass: each chunk draws its subsets once, builds the perturbed inputs on
    device (`apply_coalitions`) and sums the removed features' attributions.
    """
    (fk, d) = features
    f, x4, t, values, seg, base = B.setup(
        model, x, target, a, (fk, segments, d), (mode, baseline, sigma), softmax
    )
    n = x.shape[0]

    def chunk(start, size_):
        ex, s = batching.flat_index(start, size_, n_samples)
        removed = B.random_subsets(B.sample_keys(key, ex, s), d, size)
        fs = t.take(ex).select(f(apply_coalitions(x4[ex], base[ex], seg[ex], ~removed)))
        return fs, jnp.sum(jnp.where(removed, values[ex], 0.0), axis=1)

    fs, dots = batching.chunked_map(chunk, n * n_samples, batch_size)
    fx = t.select(f(x4))
    return fx[:, None] - fs.reshape(n, n_samples), dots.reshape(n, n_samples)


@registry.method("metrics", evals=lambda a: a["n_samples"] + 1, cheap={"n_samples": 4})
def infidelity(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    key: Any,
    perturbation: str | Callable = "gaussian",
    n_samples: int = 64,
    noise_scale: float = 0.1,
    subset_size: float = 0.1,
    baseline: Any = "zero",
    segments: Any = None,
    blur_sigma: float | None = None,
    normalize: bool = False,
    softmax: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
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
        delta, dots = _subsets_call(
            model,
            x,
            attributions,
            target,
            key,
            n_samples,
            1,
            subset_size,
            baseline,
            segments,
            blur_sigma,
            softmax,
            batch_size,
        )
    else:
        if not callable(perturbation):
            V.check_choice(perturbation, "perturbation", PERTURBATIONS)
        model = as_model(model)
        x = V.check_array(x)
        a = B.attribution_array(attributions)
        if a.shape != x.shape:
            V.fail(
                "attributions",
                f"an array shaped like x {tuple(x.shape)} for perturbation={perturbation!r}",
                f"shape {tuple(a.shape)}",
            )
        t = as_target(target, model, x)
        key = V.check_key(key)
        n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], fixed=1)
        scale = V.check_float(noise_scale, "noise_scale", minimum=0.0, open_min=True)
        if callable(perturbation):
            try:
                out = jax.eval_shape(perturbation, key, x[0])
            except Exception as e:
                raise ValueError(f"perturbation: the callable failed on one example: {e}") from e
            if getattr(out, "shape", None) != x.shape[1:]:
                V.fail(
                    "perturbation",
                    f"a callable (key, x_example) -> I of shape {x.shape[1:]}",
                    getattr(out, "shape", type(out).__name__),
                )
        delta, dots = _noise(
            model,
            x,
            t,
            a,
            key,
            perturb=perturbation,
            scale=scale,
            softmax=bool(softmax),
            n_samples=n_samples,
            batch_size=V.check_batch_size(batch_size),
        )
    return _infidelity_score(delta, dots, normalize=bool(normalize))


@functools.partial(jit, static_argnames=("normalize",))
def _infidelity_score(delta, dots, *, normalize):
    """Mean squared gap per example, optionally after the optimal rescaling of `dots`
    (one compiled program: eager, these few ops were a host dispatch each)."""
    if normalize:
        den = jnp.mean(dots * dots, axis=1, keepdims=True)
        beta = jnp.where(
            den > 0,
            jnp.mean(dots * delta, axis=1, keepdims=True) / jnp.where(den > 0, den, 1.0),
            1.0,
        )
        dots = beta * dots
    return jnp.mean((dots - delta) ** 2, axis=1)


@functools.partial(
    jit, static_argnames=("perturb", "scale", "softmax", "n_samples", "batch_size")
)
def _noise(model, x, target, a, key, *, perturb, scale, softmax, n_samples, batch_size):
    """`(f(x) - f(x - I), I . a)`, both `(N, n_samples)`, for noise perturbations I."""
    f = (lambda z: jax.nn.softmax(model(z), axis=-1)) if softmax else model
    t = target.resolve(f, x)
    n = x.shape[0]

    def draw(k):
        if callable(perturb):
            return perturb(k, x[0]).astype(x.dtype)
        return scale * gaussian(k, x.shape[1:], x.dtype)

    def chunk(start, size):
        ex, s = batching.flat_index(start, size, n_samples)
        noise = jax.vmap(draw)(B.sample_keys(key, ex, s))
        fs = t.take(ex).select(f(x[ex] - noise))
        return fs, jnp.sum((noise * a[ex]).reshape(size, -1), axis=1)

    fs, dots = batching.chunked_map(chunk, n * n_samples, batch_size)
    fx = t.select(f(x))
    return fx[:, None] - fs.reshape(n, n_samples), dots.reshape(n, n_samples)
