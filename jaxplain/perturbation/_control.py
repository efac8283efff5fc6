"""Regression-adjusted permutation sampling (`shapley_sampling(control=...)`).

Every walk of a permutation evaluates the `d + 1` prefixes of its order, coalitions
whose values the plain estimator already has. The units (antithetic pairs, or single
walks) are split into two folds (even and odd unit index). On each fold a polynomial
surrogate of the coalition indicator `z`, `g(z) = c + sum_T theta_T prod_{i in T} z_i`
over the sets `T` of at most `degree` features, is fitted by ridge least squares to
the fold's prefix values. Its Shapley values are exact (a product over `T` is a
unanimity game: `1 / |T|` to each member), so the estimate of fold B is
`phi(g_A) + mean over fold B of the residual marginals Delta_i(f - g_A)`: unbiased,
since `g_A` never saw fold B. The result averages the two folds' estimates; the
standard error comes from the spread of the residual unit marginals about their
fold's mean (`_stderr.moderated_stderr`). No model evaluation is added; every
estimate stays exactly efficient (`phi(g)` sums to `g(1) - g(0)`, the residual
marginals of a walk to `(f - g)(1) - (f - g)(0)`).

Which surrogates help: any walk credits a linear term exactly, and an antithetic pair
credits a quadratic term exactly (a feature at position `k` of a walk is at `d-1-k`
of the reverse, so a pair term `z_i z_j` is counted once in two walks: the pair mean
is `phi_i` whatever the order). So `"quadratic"` changes nothing with antithetic pairs
(refused), and works with single walks; `"cubic"` (triples, pairs and singletons) is
the first surrogate that reduces the variance of antithetic pairs. `KernelSHAP` with
paired coalitions is likewise exact on quadratic games (measured: within 2e-4 of
values near 3 with 30 samples, d = 12), so a quadratic control variate there would
be a no-op too.

The coalition values are kept (4 bytes per model evaluation) and the surrogate is
fitted after the stream; the design (`rows x terms`, shared by all examples, since
the permutations are) is built once. `MAX_TERMS` bounds its width.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._core import validate as V
from .._core.types import HIGHEST
from ._stderr import moderated_df, moderated_stderr
from .engine import stream

CONTROLS = {"quadratic": 2, "cubic": 3}
"""`control=` -> the surrogate's degree (its terms: every set of at most this many features)."""

MAX_TERMS = 1024
"""The most surrogate terms: a quadratic surrogate up to d = 44 features, a cubic one
up to d = 18 (d = 64 would need 2080 quadratic terms)."""

RIDGE = 1e-4
"""Ridge penalty on the standardised design, relative to the rows of the fitting fold.
A fold's walks often leave terms undetermined (d = 12, 45 pairs: rank 258 of 298 cubic
terms); at 1e-6 float32 gave them coefficients 12x the float64 solution's and the
estimate 10x the plain one's error, at 1e-4 float32 matches float64. A game of the
surrogate's class is fitted exactly all the same: see `REFINE`."""

REFINE = 2
"""Steps of iterated ridge (`theta += (G + ridge)^-1 X^T (y - X theta)`): each shrinks
the ridge's bias along a direction the rows determine (eigenvalue `e`) by `ridge / (e +
ridge)`, and leaves the undetermined ones regularised. A game of the surrogate's class
is then fitted to float32 round-off."""


COLLINEAR = 1e-4
"""`spd_solve` drops a term whose variance left after the earlier terms is below this
share of its own (a set of walks too small to tell it from them)."""


def n_terms(d: int, degree: int) -> int:
    """Non-constant terms of a degree-`degree` surrogate of `d` features."""
    return sum(math.comb(d, k) for k in range(1, degree + 1))


def terms(d: int, degree: int) -> np.ndarray:
    """`(p, degree)` feature indices of each term; index `d` pads (a constant 1)."""
    rows = [c + (d,) * (degree - k) for k in range(1, degree + 1)
            for c in itertools.combinations(range(d), k)]
    return np.asarray(rows, np.int32).reshape(-1, degree)


def term_shapley(idx: np.ndarray, d: int) -> np.ndarray:
    """`(d, p)` Shapley values of each term (a unanimity game on its features)."""
    member = (idx[None, :, :] == np.arange(d)[:, None, None]).any(-1)
    return (member / member.sum(0, keepdims=True)).astype(np.float32)


def parse_control(control, tol) -> int:
    """`control=` -> the surrogate's degree (0 for None); refuses other values, and a
    control with `tol=` (shared by `shapley_sampling` and `kernel_shap`)."""
    if control is None:
        return 0
    if not isinstance(control, str):
        V.fail("control", f"None or one of {tuple(CONTROLS)}", repr(control), TypeError)
    degree = CONTROLS.get(control)
    if degree is None:
        V.fail("control", f"None or one of {tuple(CONTROLS)}", repr(control))
    if tol is not None:
        V.fail("control", "None with tol= (adaptive rounds are not served by a control "
               "variate)", repr(control))
    return degree


def check_terms(control, d: int, degree: int) -> int:
    """The surrogate's number of terms at `d` features; refused above `MAX_TERMS`."""
    p = n_terms(d, degree)
    if p > MAX_TERMS:
        V.fail("control", f"a surrogate of at most {MAX_TERMS} terms ({control!r} has {p} "
               f"at d = {d} features; use control=None)", repr(control))
    return p


def check_control(control, d: int, antithetic: bool, n_permutations: int, tol) -> int:
    """Validates `control=`; returns the surrogate's degree (0 without one)."""
    degree = parse_control(control, tol)
    if not degree or d < 2:
        return 0
    if degree == 2 and antithetic:
        V.fail("control", "'cubic' or None with antithetic=True (antithetic pairs already "
               "credit a quadratic surrogate exactly: 'quadratic' would change nothing; "
               "or pass antithetic=False)", repr(control))
    p = check_terms(control, d, degree)
    need = min_permutations(d, degree, antithetic)
    if n_permutations < need:
        V.fail("n_permutations", f"at least {need} with control={control!r} at d = {d} "
               f"(each of two folds fits {p} terms on the {d - 1} inner coalitions of "
               "each of its walks)", n_permutations)
    return degree


def min_permutations(d: int, degree: int, antithetic: bool) -> int:
    """The fewest permutations a degree-`degree` control serves at `d` features: two
    folds, each of at least 2 units and with a coalition per term (a walk has `d - 1`)."""
    per_unit = 2 if antithetic else 1
    return 2 * max(2, -(-n_terms(d, degree) // (per_unit * (d - 1)))) * per_unit


def adjusted(values, rank, f0, fx, present, *, antithetic: bool, degree: int):
    """Cross-fitted regression-adjusted estimate `(phi (N, d), stderr (N, d), stderr_df
    (N,))`.

    `values (N, U, walks * (d - 1))`: the inner prefix values of every unit's walks
    (as `_walks` evaluates them); `rank (U, d)`: each unit's first order (the second
    walk of a pair is its reverse)."""
    n, n_units, _ = values.shape
    d = rank.shape[1]
    idx = terms(d, degree)
    phi_t = jnp.asarray(term_shapley(idx, d))
    ranks = [rank, d - 1 - rank] if antithetic else [rank]
    w = len(ranks)
    ys = jnp.stack([jnp.concatenate(
        [jnp.broadcast_to(f0[:, None, None], (n, n_units, 1)),
         values[:, :, i * (d - 1):(i + 1) * (d - 1)],
         jnp.broadcast_to(fx[:, None, None], (n, n_units, 1))], axis=2)
        for i in range(w)], axis=1)  # (N, walks, U, d + 1)
    z = jnp.stack([r[:, None, :] < jnp.arange(d + 1)[None, :, None] for r in ranks])
    z = jnp.concatenate([z, jnp.ones(z.shape[:-1] + (1,), bool)], -1)
    design = jnp.all(z[..., jnp.asarray(idx)], -1).astype(jnp.float32)  # (walks, U, d+1, p)
    fold = jnp.arange(n_units) % 2
    rows = design.reshape(-1, idx.shape[0])
    yrows = ys.reshape(n, -1)
    row_fold = jnp.broadcast_to(fold[None, :, None], design.shape[:3]).reshape(-1)
    est, resid = [], []
    for f in (0, 1):
        theta = fit(rows, yrows, (row_fold != f).astype(jnp.float32))  # (N, p)
        g = jnp.matmul(theta, rows.T, precision=HIGHEST).reshape(ys.shape)
        r = _unit_marginals(ys - g, ranks)  # (N, U, d), residual marginals of every unit
        mine = (fold == f).astype(jnp.float32)
        mean = jnp.einsum("u,nud->nd", mine, r[0], precision=HIGHEST) / mine.sum()
        est.append(jnp.matmul(theta, phi_t.T, precision=HIGHEST) + mean)
        resid.append((r, mine, mean))
    phi = 0.5 * (est[0] + est[1])
    m2 = sum(jnp.einsum("u,nud->nd", mine, jnp.square(r[0] - mean[:, None]), precision=HIGHEST)
             for r, mine, mean in resid)
    spread = sum(jnp.einsum("u,nud->nd", mine, r[1], precision=HIGHEST)
                 for r, mine, _ in resid)
    count = jnp.full((n,), float(n_units))
    se = moderated_stderr(count, m2, spread, present, jnp.abs(fx) + jnp.abs(f0))
    return jnp.where(present, phi, 0.0), se, moderated_df(count)


def fit(rows, yrows, weight):
    """Ridge least squares of `yrows (N, R)` on the centred, standardised `rows (R, p)`
    over the rows of `weight` 1: the non-constant coefficients `(N, p)`."""
    total = weight.sum()
    mu = jnp.matmul(weight, rows, precision=HIGHEST) / total
    xc = (rows - mu[None]) * weight[:, None]
    sd = jnp.sqrt(jnp.matmul(weight, jnp.square(rows - mu[None]), precision=HIGHEST) / total)
    sd = jnp.where(sd > 1e-6, sd, 1.0)
    xs = xc / sd[None]
    ybar = jnp.matmul(yrows, weight, precision=HIGHEST) / total
    gram = jnp.matmul(xs.T, xs, precision=HIGHEST)
    rhs = jnp.matmul(xs.T, (yrows - ybar[:, None]).T, precision=HIGHEST)  # (p, N)
    gram = gram + RIDGE * total * jnp.eye(gram.shape[0], dtype=gram.dtype)
    low = cholesky(gram)
    sol = cho_apply(low, rhs)
    for _ in range(REFINE):  # iterated ridge, residuals from the rows (not the Gram)
        res = (yrows - ybar[:, None]).T - jnp.matmul(xs, sol, precision=HIGHEST)
        sol = sol + cho_apply(low, jnp.matmul(xs.T, res, precision=HIGHEST))
    return (sol / sd[:, None]).T


def cholesky(a):
    """The lower Cholesky factor of a symmetric positive definite `a (p, p)`, one column
    per step of a `lax.fori_loop` of matrix-vector products. No LAPACK call: batched
    LAPACK factorisations (`vmap` over keys, as the tests and benchmarks do) deadlocked
    on XLA:CPU now and then (jax 0.10.2: threads waiting in `lapack_sgetrf_ffi` /
    `ParallelBatchMap` and in OpenBLAS's thread server). A term (nearly) collinear
    with the earlier ones gets an infinite pivot, so coefficient 0."""
    p = a.shape[0]
    ar = jnp.arange(p)

    def column(k, low):  # column k of the factor, from the columns before it
        col = a[:, k] - jnp.matmul(low, low[k], precision=HIGHEST)
        keep = col[k] > COLLINEAR * a[k, k]  # float32 factorisation error: about p * 1e-7
        piv = jnp.sqrt(jnp.where(keep, col[k], 1.0))
        col = jnp.where(ar > k, jnp.where(keep, col / piv, 0.0), 0.0)
        return low.at[:, k].set(jnp.where(ar == k, jnp.where(keep, piv, 1e30), col))

    return jax.lax.fori_loop(0, p, column, jnp.zeros_like(a))


def cho_apply(low, b):
    """`(low low^T)^-1 b` for `b (p, N)`: forward then backward substitution."""
    p = low.shape[0]

    def forward(k, y):
        return y.at[k].set((b[k] - jnp.matmul(low[k], y, precision=HIGHEST)) / low[k, k])

    y = jax.lax.fori_loop(0, p, forward, jnp.zeros_like(b))

    def backward(i, out):
        k = p - 1 - i
        return out.at[k].set((y[k] - jnp.matmul(low[:, k], out, precision=HIGHEST)) / low[k, k])

    return jax.lax.fori_loop(0, p, backward, jnp.zeros_like(b))


def _unit_marginals(ys, ranks):
    """`(mean, spread)`: each unit's marginals averaged over its walks `(N, U, d)`, and
    the walks' squared deviations about that mean (0 for single walks)."""
    walks = []
    for i, r in enumerate(ranks):
        y = ys[:, i]
        walks.append(jnp.take_along_axis(y, r[None] + 1, 2) - jnp.take_along_axis(y, r[None], 2))
    mean = sum(walks) / len(walks)
    return mean, sum(jnp.square(wk - mean) for wk in walks)


def stream_adjusted(model, target, units_fn, inputs_fn, rank, f0, fx, present, *,
                    antithetic: bool, degree: int, batch_size):
    """Streams the walks of `rank (U, d)` (as `shapley._walks` builds them), keeping every
    coalition value, then returns `adjusted`'s `(phi, stderr, stderr_df)`."""
    n, (n_units, d) = f0.shape[0], rank.shape
    size = (2 if antithetic else 1) * (d - 1)

    def store(buf, c):  # units an earlier chunk covered write the same values again
        return buf.at[c.ex, c.unit].set(c.values.astype(buf.dtype), mode="drop")

    buf = stream(model, target, n, n_units, units_fn, inputs_fn, store,
                 jnp.zeros((n, n_units, size), jnp.float32), batch_size, unit_size=size)
    return adjusted(buf, rank, f0, fx, present, antithetic=antithetic, degree=degree)
