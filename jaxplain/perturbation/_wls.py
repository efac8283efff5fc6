"""KernelSHAP's weighted least squares with the efficiency constraint: one Cholesky
factor of a Gram matrix, applied to any number of right-hand sides (the full fit,
its jackknife replicates and their linearisation share it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _control


def constrained_solve(gram, zy, delta, present, *, lapack: bool = True):
    """`argmin sum w (y - z.phi)^2` subject to `sum(phi) = delta`, absent features fixed at 0.

    `gram (..., d, d)`, `zy (..., d)`, `delta (...)`, `present (..., d)` bool. With
    `lapack=False` the factorisation is `_control.cholesky` (no batched LAPACK call:
    the control variate's many replicates under `vmap` hung in it, as in `_control`).
    """
    factor = constrained_factor(gram, present, lapack=lapack)
    return constrained_apply(factor, zy[..., None], delta[..., None])[..., 0]


def constrained_factor(gram, present, *, lapack: bool = True):
    """The lower Cholesky factor `constrained_apply` solves with: `(low, p, lapack)`."""
    p = jnp.broadcast_to(present, gram.shape[:-1]).astype(gram.dtype)
    d = gram.shape[-1]
    scale = jnp.trace(gram, axis1=-2, axis2=-1) / jnp.maximum(p.sum(-1), 1.0)
    eye = jnp.broadcast_to(jnp.eye(d, dtype=gram.dtype), gram.shape)
    a = gram * p[..., :, None] * p[..., None, :] + eye * (1.0 - p)[..., None, :]
    a = a + eye * (1e-6 * jnp.where(scale > 0, scale, 1.0))[..., None, None] * p[..., None, :]
    if lapack:
        return jax.scipy.linalg.cho_factor(a, lower=True)[0], p, True
    low = jax.vmap(_control.cholesky)(a.reshape((-1, d, d))).reshape(a.shape)
    return low, p, False


def constrained_apply(factor, zy, delta):
    """`constrained_solve` for `k` right-hand sides `zy (..., d, k)`, `delta (..., k)`
    with the factor of one Gram matrix: `phi (..., d, k)`."""
    low, p, lapack = factor
    k, d = zy.shape[-1], low.shape[-1]
    rhs = jnp.concatenate([zy * p[..., None], p[..., None]], -1)
    if lapack:
        sol = jax.scipy.linalg.cho_solve((low, True), rhs)
    else:
        sol = jax.vmap(_control.cho_apply)(low.reshape((-1, d, d)),
                                           rhs.reshape((-1, d, k + 1))).reshape(rhs.shape)
    u, v = sol[..., :k], sol[..., k:]
    mu = (jnp.sum(p[..., None] * u, -2) - delta) / jnp.sum(p[..., None] * v, -2)
    phi = (u - mu[..., None, :] * v) * p[..., None]
    # polish the constraint to the last bit of rounding
    fix = (delta - phi.sum(-2)) / jnp.maximum(p.sum(-1), 1.0)[..., None]
    return phi + p[..., None] * fix[..., None, :]
