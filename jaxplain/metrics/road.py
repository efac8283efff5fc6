"""ROAD: remove pixels in attribution order and debias the removal by noisy linear imputation.

Deleting pixels by setting them to a constant leaves a visible mask, and a model
may react to the *shape* of the mask rather than to the information removed
(Rong et al. call this class leakage). ROAD instead fills every removed pixel
with the weighted mean of its 8 neighbours (direct neighbours weigh 1/6,
diagonal ones 1/12), solved jointly for all removed pixels (a removed
neighbour is itself an unknown), plus a little Gaussian noise.

For each image and channel the unknowns satisfy a sparse linear system: for a
removed pixel `i` with in-image neighbours `N(i)` and weights `w`,

    (sum_{j in N(i)} w_ij) u_i - sum_{j in N(i), removed} w_ij u_j
        = sum_{j in N(i), kept} w_ij x_j.

The matrix is a weighted graph Laplacian with the kept pixels as boundary:
symmetric, positive definite as soon as one pixel is kept. `impute.py` solves it
on device, matrix-free, for a chunk of images at once, by conjugate gradients
preconditioned with a multigrid V-cycle; the whole metric is one jitted
program, chunked by `batch_size` like the other curve metrics.
"""

from __future__ import annotations

import functools
import itertools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from . import base as B
from .._core import registry
from .._core import validate as V
from .._core import batching
from .impute import impute
from .._core.noise import gaussian
from .base import Curve
from .._core.models import as_model
from .._core.targets import as_target

ORDERS = ("morf", "lerf")
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(10))
"""0.0, 0.1, ..., 0.9: the unperturbed image, then 10% to 90% of the pixels removed."""

@registry.method("metrics", evals=lambda a: len(a["fractions"]))
def road(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    fractions: Any = DEFAULT_FRACTIONS,
    order: str = "morf",
    key: Any,
    noise_std: float = 0.01,
    segments: Any = None,
    softmax: bool = False,
    tol: float = 1e-6,
    max_iter: int | None = None,
    batch_size: int | None = None,
) -> Curve:
    """ROAD curve: the target as pixels are removed and filled by noisy linear imputation.

    For every fraction `f`, the `round(f * d)` most (`order="morf"`) or least
    (`"lerf"`) important features are removed; each removed pixel becomes the
    weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal), solved jointly
    over all removed pixels per channel, plus `N(0, noise_std^2)` noise. With
    MoRF a faithful explanation makes the target fall fast (*lower* AUC is
    better); with LeRF it should stay high (*higher* AUC is better). Costs
    `N * len(fractions)` forward passes plus one linear solve per pass (10-20
    multigrid-preconditioned CG iterations, on device, in the same chunks).

    Args:
      model: a `Model`, NNX module or callable `f(x_batch) -> outputs`.
      x: inputs `(N, H, W, C)`, `(N, H, W)` or `(N, D)` (a row of pixels).
      attributions: an array shaped like `x`, an `(N, H, W)` pixel map, `(N, d)`
        per-feature values with `segments=`, or an `Explanation`.
      target: which output to follow (see `as_target`).
      fractions: increasing fractions of features removed, in [0, 1], at least
        two (default 0.0, 0.1, ..., 0.9). With every pixel removed nothing is
        left to impute from, and the image becomes the noise alone.
      order: "morf" (most relevant first) or "lerf" (least relevant first).
      noise_std: standard deviation of the noise added to imputed pixels (0: none).
      key: a `jax.random.key` for the noise; draws depend on (example,
        fraction) only, not on `batch_size`.
      segments: optional superpixels `(H, W)` or `(N, H, W)`; features are then
        removed whole (all their pixels imputed). Default: every pixel.
      softmax: follow the softmax probability of the target instead of the raw output.
      tol: relative residual at which the conjugate-gradient solve stops.
      max_iter: iteration cap of the solve (default `H * W`).
      batch_size: model inputs (and linear systems) per chunk (`None`:
        `batching.default_batch_size()`); memory does not grow with `len(fractions)`.

    Returns:
      A `Curve` with `auc (N,)` (trapezoid rule over `fractions`), `values
      (N, len(fractions))` and `fractions`.

    Raises:
      ValueError, TypeError: bad shapes, fractions, order, noise or configuration.

    References:
      Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
      Evaluation Strategy for Attribution Methods", ICML 2022.

    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: x.sum(axis=(1, 2, 3))
    >>> x = jnp.ones((1, 4, 4, 1))  # a constant image is imputed exactly
    >>> curve = road(f, x, x, target=None, key=jax.random.key(0), fractions=(0.0, 0.5),
    ...              noise_std=0.0)
    >>> jnp.round(curve.values, 4).tolist()  # float32 round-off aside
    [[16.0, 16.0]]
    """
    model = as_model(model)
    x = V.check_array(x)
    a = B.attribution_array(attributions)
    kind, seg, d = B.check_features(a.shape, x.shape, segments)
    fracs = _check_fractions(fractions)
    order = V.check_choice(order, "order", ORDERS)
    noise_std = V.check_float(noise_std, "noise_std", minimum=0.0)
    key = V.check_key(key)
    tol = V.check_float(tol, "tol", minimum=0.0, maximum=1.0, open_min=True)
    if max_iter is not None:
        max_iter = V.check_int(max_iter, "max_iter", minimum=1)
    V.check_n_evals(x.shape[0], len(fracs), "fractions")
    batch_size = V.check_batch_size(batch_size)
    t = as_target(target, model, x)
    ks = tuple(int(np.floor(f * d + 0.5)) for f in fracs)
    return _road(
        model,
        x,
        t,
        a,
        seg,
        key if noise_std > 0 else None,  # no noise: no draws
        V.to_device(noise_std, np.float32),  # host-built: no eager XLA op
        features=(kind, d),
        ks=ks,
        fractions=fracs,
        order=order,
        softmax=bool(softmax),
        tol=tol,
        max_iter=max_iter,
        batch_size=batch_size,
    )


def _check_fractions(fractions: Any) -> tuple[float, ...]:
    """At least two increasing numbers in [0, 1] -> a tuple of floats (static)."""
    what = "an increasing sequence of at least two fractions in [0, 1]"
    if isinstance(fractions, (str, bytes, dict)) or fractions is None:
        V.fail("fractions", what, type(fractions).__name__, TypeError)
    try:
        items = list(np.asarray(fractions).reshape(-1)) if np.ndim(fractions) else None
    except (TypeError, ValueError):
        items = None
    if items is None or np.ndim(fractions) != 1:
        V.fail("fractions", what, repr(fractions)[:80], TypeError)
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) for v in items):
        V.fail("fractions", what, repr(fractions)[:80], TypeError)
    vals = tuple(float(v) for v in items)
    if len(vals) < 2:
        V.fail("fractions", what, f"{len(vals)} value(s)")
    if not all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        V.fail("fractions", what, f"values {list(vals)}")
    if any(b <= a for a, b in itertools.pairwise(vals)):
        V.fail("fractions", what + " (strictly increasing)", f"{list(vals)}")
    return vals


@functools.partial(
    jit,
    static_argnames=(
        "features",
        "ks",
        "fractions",
        "order",
        "softmax",
        "tol",
        "max_iter",
        "batch_size",
    ),
)
def _road(
    model,
    x,
    target,
    a,
    segments,
    key,
    noise_std,
    *,
    features,
    ks,
    fractions,
    order,
    softmax,
    tol,
    max_iter,
    batch_size,
):
    kind, d = features
    f = B.view_model(model, x.shape, softmax)
    x4 = B.as_view(x)
    t = target.resolve(f, x4)
    values, seg = B.to_features(a, x.shape, kind, segments, d)
    rank = B.ranks_desc(values)  # 0 = most relevant
    n, h, w, c = x4.shape
    m = len(ks)
    k = jnp.asarray(ks, jnp.int32)

    def chunk(start, size):
        ex, s = batching.flat_index(start, size, m)
        kk = k[s][:, None]
        gone = rank[ex] < kk if order == "morf" else rank[ex] >= d - kk
        removed = jnp.take_along_axis(gone, seg[ex].reshape(size, -1), axis=1)
        removed = removed.reshape(size, h, w)
        xs = x4[ex]
        filled = impute(xs, removed, tol=tol, max_iter=max_iter)
        if key is not None:
            noise = jax.vmap(lambda kk_: gaussian(kk_, (h, w, c), x4.dtype))(
                B.sample_keys(key, ex, s)
            )
            filled = jnp.where(removed[..., None], filled + noise_std * noise, filled)
        return t.take(ex).select(f(filled))

    curve = batching.chunked_map(chunk, n * m, batch_size).reshape(n, m)
    frac = jnp.asarray(fractions, curve.dtype)
    auc = B.trapezoid(curve, frac)
    return Curve(auc, curve, frac, "probability" if softmax else "raw")
