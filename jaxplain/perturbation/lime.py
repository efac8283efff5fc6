"""LIME: a kernel-weighted linear surrogate fitted on random coalitions of features.

The whole run is one jitted program: coalitions are drawn on device from
`fold_in(key, sample)`, perturbed inputs are built on device and evaluated in
chunks of `batch_size`, and each chunk is folded into the sufficient statistics
of a weighted ridge regression (`Z^T W Z`, `Z^T W y`, `y^T W y`), which is solved
in closed form at the end. Memory is bounded by `batch_size`, not `n_samples`.
"""

from __future__ import annotations

import functools

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._compile import jit
from .._core.types import HIGHEST
from .._core import registry
from .._core import features
from .._core import validate as V
from .._core.types import ArrayLike, Explanation
from .._core.batching import values_at
from .engine import (
    add_local,
    n_evals,
    prepare,
    ranks_from_bits,
    stream,
    stream_evals,
    unit_bits,
    unit_bytes,
)

DISTANCES = ("cosine", "hamming")


@registry.method(
    "perturbation",
    evals=lambda a: stream_evals(a, 1, a["n_samples"] - 1, features.n_features(a["segments"])),
    cheap={"n_samples": 4},
    demo={"label": "LIME", "quick": {"n_samples": 300}, "full": {"n_samples": 1000}},
)
def lime(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    segments: ArrayLike,
    baseline: Any = 0.0,
    key: Any,
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    distance: str = "cosine",
    alpha: float = 1.0,
    batch_size: int | None = None,
) -> Explanation:
    """LIME with feature coalitions (superpixels, grid cells, pixels).

    As the `lime` package does for images: sample 0 keeps every feature; every
    other sample switches off `k ~ U{1..d}` features chosen uniformly; samples
    are weighted by `sqrt(exp(-D^2 / kernel_width^2))` where `D` is the cosine
    (or Hamming) distance of the coalition to the all-ones coalition; a ridge
    regression with an unpenalised intercept is fitted with these weights.
    Coalitions are shared by all examples (they depend on the key and the
    sample index only), so an example gets the same result alone or in a batch.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)`.
      target: see `jaxplain.as_target`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1` without gaps
        (`grid_segments`, `superpixels`, ...).
      baseline: what switched-off features become: a number, an image, one image
        per example, `"blur"` or `"mean"` (lime's `hide_color=None`).
      key: a `jax.random.key` (required).
      n_samples: coalitions per example, including the all-ones one (= model
        evaluations per example).
      kernel_width: width of the exponential kernel (lime's default 0.25).
      distance: `"cosine"` (lime's default) or `"hamming"`.
      alpha: ridge penalty on the coefficients (lime's default 1.0).
      batch_size: model inputs per chunk.

    Returns:
      `Explanation(values (N, d) coefficients, score (N,) weighted R^2 of the
      surrogate, intercept (N,), n_evals (N,))`. Features an example lacks
      (per-example segments with fewer labels) get 0.

    Raises:
      ValueError, TypeError: invalid arguments (before anything compiles).

    References:
      Ribeiro, Singh & Guestrin, "'Why Should I Trust You?': Explaining the
      Predictions of Any Classifier", KDD 2016.

    >>> import jax, jax.numpy as jnp
    >>> from jaxplain.testing import linear_model
    >>> w = jnp.arange(8.0).reshape(2, 4, 1, 1)
    >>> seg = jnp.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    >>> e = lime(linear_model(w), jnp.ones((1, 2, 4, 1)), target=0, segments=seg,
    ...          key=jax.random.key(0), kernel_width=100.0, alpha=1e-6, n_samples=200)
    >>> [round(v, 3) for v in e.values[0].tolist()]
    [1.0, 5.0, 9.0, 13.0]
    """
    model, x, t, seg, d, mode, b, batch_size = prepare(
        model, x, target, segments, baseline, batch_size
    )
    key = V.check_key(key)
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], fixed=1)
    kernel_width = V.check_float(kernel_width, "kernel_width", minimum=0.0, open_min=True)
    V.check_choice(distance, "distance", DISTANCES)
    alpha = V.check_float(alpha, "alpha", minimum=0.0)
    return _lime(
        model,
        x,
        t,
        seg,
        b,
        key,
        kernel_width,
        alpha,
        d=d,
        mode=mode,
        n_samples=n_samples,
        distance=distance,
        batch_size=batch_size,
    )


def lime_masks(key: jax.Array, sample: jax.Array, d: int) -> jax.Array:
    """lime's coalitions `(b, d)` bool for sample indices `sample (b,)` (sample 0: all ones)."""

    bits = unit_bits(key, sample, d + 1)
    n_off = 1 + (bits[:, 0] % d).astype(jnp.int32)
    return (ranks_from_bits(bits[:, 1:]) >= n_off[:, None]) | (sample == 0)[:, None]


def kernel_weights(z: jax.Array, present: jax.Array, width: float, distance: str) -> jax.Array:
    """lime's kernel `sqrt(exp(-D^2 / width^2))` of coalitions `z (b, d)` to the all-ones one."""
    on = jnp.sum(z * present, axis=-1)
    dn = jnp.maximum(jnp.sum(present, axis=-1), 1.0)
    if distance == "cosine":
        dist = jnp.where(on > 0, 1.0 - jnp.sqrt(on / dn), 1.0)
    else:
        dist = (dn - on) / dn
    return jnp.exp(-0.5 * jnp.square(dist) / width**2)


def masked_solve(a: jax.Array, r: jax.Array, present: jax.Array) -> jax.Array:
    """Solves `a @ u = r` (`a` symmetric positive definite) on `present` coordinates (others 0).

    `a (..., k, k)`, `r (..., k[, m])`, `present (..., k)` bool.
    """
    p = present.astype(a.dtype)
    a = (
        a * p[..., :, None] * p[..., None, :]
        + jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape) * (1.0 - p)[..., None, :]
    )
    vec = r.ndim < a.ndim
    rhs = (r * p)[..., None] if vec else r * p[..., None]
    out = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), rhs)
    return out[..., 0] if vec else out


@functools.partial(jit, static_argnames=("d", "mode", "n_samples", "distance", "batch_size"))
def _lime(
    model, x, target, seg, b, key, kernel_width, alpha, *, d, mode, n_samples, distance, batch_size
):
    n = x.shape[0]
    b = features.make_baseline(mode, b, x, seg, d)
    present = features.feature_counts(seg, d) > 0
    pf = present.astype(jnp.float32)
    # f(x) is sample 0 (the all-ones coalition); it also binds a "predicted" target.
    (fx,), target = values_at(model, target, [x], batch_size, repeats=True)

    def units_fn(ex, s):
        return lime_masks(key, s + 1, d)[:, None], None

    def inputs_fn(ex, masks):
        return features.apply_coalitions(x[ex], b[ex], seg[ex], masks)

    def reduce_fn(acc, c):
        gram, zy, yy = acc
        z = c.aux[:, 0].astype(jnp.float32) * pf[c.ex]
        w = kernel_weights(z, pf[c.ex], kernel_width, distance)
        y = c.values[:, 0] - fx[c.ex]  # centred on f(x) for float32 accuracy
        zz = jnp.concatenate([jnp.ones_like(w)[:, None], z], axis=1)
        ow = c.onehot * w[:, None]
        gram = add_local(gram, c.ex0, jnp.einsum("mk,mi,mj->kij", ow, zz, zz, precision=HIGHEST))
        zy = add_local(zy, c.ex0, jnp.einsum("mk,m,mi->ki", ow, y, zz, precision=HIGHEST))
        yy = add_local(yy, c.ex0, jnp.matmul(ow.T, jnp.square(y), precision=HIGHEST))
        return gram, zy, yy

    # sample 0 (all ones, distance 0, weight 1, centred value 0) enters analytically.
    ones = jnp.concatenate([jnp.ones((n, 1)), pf], axis=1)
    init = (ones[:, :, None] * ones[:, None, :], jnp.zeros((n, d + 1)), jnp.zeros((n,)))
    gram, zy, yy = stream(
        model, target, n, n_samples - 1, units_fn, inputs_fn, reduce_fn, init, batch_size
    )

    keep = jnp.concatenate([jnp.ones((n, 1), bool), present], axis=1)
    penalty = jnp.diag(jnp.concatenate([jnp.zeros((1,)), jnp.full((d,), 1.0)])) * alpha
    beta = masked_solve(gram + penalty[None], zy, keep)
    sw = gram[:, 0, 0]
    ss_tot = yy - jnp.square(zy[:, 0]) / sw
    ss_res = yy - 2 * jnp.sum(beta * zy, -1) + jnp.einsum("ni,nij,nj->n", beta, gram, beta, precision=HIGHEST)
    score = 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0)
    score = jnp.where(ss_tot > 0, score, 1.0)
    return Explanation(
        values=beta[:, 1:],
        score=score,
        intercept=beta[:, 0] + fx,
        n_evals=n_evals(n, 1, 1, n_samples - 1, 1, batch_size, unit_bytes(units_fn)),
    )
