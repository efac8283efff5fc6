"""Shapley values of feature coalitions: exact enumeration and permutation sampling.

Features are the labels of `segments`; the value of a coalition is the target on
`x` with the features outside it replaced by the baseline. Every estimator is one
jitted program that streams coalitions through `perturbation.stream` (bounded by
`batch_size`), draws its randomness from `fold_in(key, unit)` (so results do not
depend on `batch_size`) and shares the coalitions across examples.

`kernel_shap` (the regression estimator) lives in `jaxplain.kernelshap`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import registry
from .._core import features
from .._core import validate as V
from .._core.types import HIGHEST, ArrayLike, Explanation
from .._core.batching import values_at
from . import _control
from ._rounds import check_adaptive, run_rounds
from ._stderr import moderated_df, moderated_stderr
from .engine import (
    add_local,
    merge_moments,
    n_evals,
    prepare,
    ranks_from_bits,
    stream,
    stream_evals,
    unit_bits,
    unit_bytes,
)

MAX_EXACT_FEATURES = 16
"""`exact_shapley` enumerates `2^d` coalitions; beyond this, use a sampling estimator."""

def shapley_weights(d: int) -> np.ndarray:
    """`w[s] = s! (d-s-1)! / d!`, the weight of a coalition of size `s` not holding the feature."""
    return np.array([1.0 / (d * math.comb(d - 1, s)) for s in range(d)], np.float32)


# ---- exact ---------------------------------------------------------------------------------


@registry.method("shapley", evals=lambda a: exact_shapley_evals(a))
def exact_shapley(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    segments: ArrayLike,
    baseline: Any = 0.0,
    batch_size: int | None = None,
) -> Explanation:
    """Exact Shapley values by enumerating all `2^d` coalitions (d <= 16), chunked.

    `phi_j = sum_S |S|! (d-|S|-1)! / d! (v(S + j) - v(S))`, computed as one
    linear statistic of the `2^d` coalition values streamed in chunks of
    `batch_size`. The oracle for the sampling estimators.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)`.
      target: see `jaxplain.as_target`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1` without gaps, d <= 16.
      baseline: a number, an image, one image per example, `"blur"` or `"mean"`.
      batch_size: model inputs per chunk.

    Returns:
      `Explanation(values (N, d), gap (N,) = sum(values) - (f(x) - f(baseline)),
      n_evals (N,) = 2^d)`.

    References:
      Shapley, "A Value for n-Person Games", 1953.

    >>> import jax.numpy as jnp
    >>> f = lambda z: z[:, 0, 0, 0] * z[:, 0, 1, 0]          # a product of two pixels
    >>> exact_shapley(f, jnp.ones((1, 1, 2, 1)), target=None, segments=jnp.array([[0, 1]])).values
    Array([[0.5, 0.5]], dtype=float32)
    """
    model, x, t, seg, d, mode, b, batch_size = prepare(
        model, x, target, segments, baseline, batch_size
    )
    if d > MAX_EXACT_FEATURES:
        V.fail(
            "segments",
            f"at most {MAX_EXACT_FEATURES} features for exact_shapley (2^d evaluations; "
            "use kernel_shap or shapley_sampling)",
            f"{d} features",
        )
    return _exact(model, x, t, seg, b, d=d, mode=mode, batch_size=batch_size)


@functools.partial(jit, static_argnames=("d", "mode", "batch_size"))
def _exact(model, x, target, seg, b, *, d, mode, batch_size):
    n = x.shape[0]
    b = features.make_baseline(mode, b, x, seg, d)
    present = features.feature_counts(seg, d) > 0
    (fx, f0), target = values_at(model, target, [x, b], batch_size, repeats=True)
    w = jnp.asarray(shapley_weights(d))
    bits = jnp.left_shift(1, jnp.arange(d, dtype=jnp.int32))

    def units_fn(ex, i):  # coalition i + 1 in 1..2^d - 2 (the two ends are known)
        return (jnp.bitwise_and((i + 1)[:, None], bits[None]) != 0)[:, None], None

    def inputs_fn(ex, masks):
        return features.apply_coalitions(x[ex], b[ex], seg[ex], masks)

    def reduce_fn(acc, c):
        z = c.aux[:, 0].astype(jnp.float32)
        s = jnp.sum(c.aux[:, 0], axis=-1)
        coef = z * w[jnp.maximum(s - 1, 0)][:, None] - (1.0 - z) * w[jnp.minimum(s, d - 1)][:, None]
        y = c.values[:, 0] - f0[c.ex]
        return add_local(acc, c.ex0, jnp.einsum("mk,m,mj->kj", c.onehot, y, coef))

    acc = stream(
        model, target, n, 2**d - 2, units_fn, inputs_fn, reduce_fn, jnp.zeros((n, d)), batch_size
    )
    delta = fx - f0
    phi = jnp.where(present, acc + delta[:, None] / d, 0.0)
    evals = n_evals(n, 2, 1, 2**d - 2, 1, batch_size, unit_bytes(units_fn))
    return Explanation(phi, gap=phi.sum(-1) - delta, n_evals=evals)


# ---- permutation sampling --------------------------------------------------------------------


def shapley_sampling_evals(a: dict) -> int:
    """Model evaluations per example of a `shapley_sampling` call (the most, when adaptive)."""
    d = features.n_features(a["segments"])
    per_round = a["n_permutations"] * max(d - 1, 0)
    rounds = check_adaptive(a["tol"], a["max_evals"], max(per_round, 1))[2]
    if d < 2:
        return stream_evals(a, 2, 0, 0)
    per_unit = 2 if a["antithetic"] else 1
    units, size = a["n_permutations"] // per_unit, per_unit * (d - 1)
    return stream_evals(a, 2, units, size * d + 4 * d, size, rounds)


def exact_shapley_evals(a: dict) -> np.ndarray:
    """Model evaluations per example of an `exact_shapley` call."""
    d = features.n_features(a["segments"])
    return stream_evals(a, 2, 2**d - 2, d)


@registry.method(
    "shapley",
    evals=lambda a: shapley_sampling_evals(a),
    cheap={"n_permutations": 2},
    demo={"label": "Shapley sampling", "quick": None, "full": {"n_permutations": 16}},
)
def shapley_sampling(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    segments: ArrayLike,
    baseline: Any = 0.0,
    key: Any,
    n_permutations: int = 10,
    antithetic: bool = True,
    control: str | None = None,
    tol: float | None = None,
    max_evals: int | None = None,
    batch_size: int | None = None,
) -> Explanation:
    """Shapley values by permutation sampling with antithetic permutations.

    Each permutation adds the features one by one to the empty coalition; the
    marginal contributions of a permutation need `d - 1` model evaluations (the
    empty and full coalitions are evaluated once per example and shared).
    With `antithetic=True` permutations come in pairs (a random order and its
    reverse), whose average is one sample for the standard error. Values of an
    additive model are exact whatever the sample. The standard error is moderated
    (`_stderr.moderated_stderr`) and carries its degrees of freedom (`stderr_df`), so
    `Explanation.interval()` covers 95% even with few samples; it is 0 only when every
    contribution was identical.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)`.
      target: see `jaxplain.as_target`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1` without gaps.
      baseline: a number, an image, one image per example, `"blur"` or `"mean"`.
      key: a `jax.random.key` (required).
      n_permutations: permutations (even when `antithetic`); with `tol`, the
        permutations per round.
      antithetic: pair each permutation with its reverse.
      control: None, or a surrogate of the coalition values used as a control
        variate at no extra model evaluation (`_control.py`): `"cubic"` (terms of
        up to 3 features; d <= 18) or `"quadratic"` (up to 2; d <= 44; only with
        `antithetic=False`, since a pair already credits quadratic terms exactly).
        The walks split into two folds; each fold's surrogate, fitted by ridge
        least squares to its walks' coalition values, has exact Shapley values,
        and the other fold estimates the residual: unbiased and exactly efficient.
        Not with `tol`.
      tol: adaptive stopping: run rounds of `n_permutations` until the largest
        standard error (over features and examples) is below `tol`.
      max_evals: with `tol`, the budget of model evaluations per example
        (default: 20 rounds).
      batch_size: model inputs per chunk.

    Returns:
      `Explanation(values (N, d), stderr (N, d), gap (N,) efficiency gap,
      n_evals (N,), stderr_df (N,))`: `interval()` gives 95% intervals. `stderr`
      is None when one sample cannot estimate it:
      `n_permutations=1`, or `n_permutations=2` with `antithetic=True` (one
      pair), without `tol`.

    Raises:
      ValueError: with `tol`, a `max_evals` too small for two standard-error
        samples; an odd `n_permutations` with `antithetic=True`; counts whose
        evaluations exceed the int32 flat index (`N * n_permutations * (d - 1)`).

    References:
      Castro, Gomez & Tejada, "Polynomial calculation of the Shapley value based
      on sampling", Computers & Operations Research 2009. Mitchell et al.,
      "Sampling Permutations for Shapley Value Estimation", JMLR 2022.
    """
    model, x, t, seg, d, mode, b, batch_size = prepare(
        model, x, target, segments, baseline, batch_size
    )
    key = V.check_key(key)
    n_permutations = V.check_budget(
        n_permutations, "n_permutations", x.shape[0], per_unit=max(d - 1, 1), fixed=2
    )
    if not isinstance(antithetic, bool):
        V.fail("antithetic", "a bool", repr(antithetic), TypeError)
    if antithetic and n_permutations % 2:
        V.fail(
            "n_permutations",
            "an even number with antithetic=True (pairs of permutations)",
            n_permutations,
        )
    degree = _control.check_control(control, d, antithetic, n_permutations, tol)
    round_evals = n_permutations * max(d - 1, 0) or 1
    adaptive, tol, rounds = check_adaptive(tol, max_evals, round_evals)
    units = n_permutations // (2 if antithetic else 1)  # samples of the standard error per round
    if adaptive and d > 1 and units * rounds < 2:
        V.fail(
            "max_evals",
            f"at least {2 + 2 * round_evals} (two rounds: tol is compared with a "
            f"standard error, which needs two samples)",
            max_evals,
        )
    with_stderr = adaptive or d == 1 or units >= 2
    return _sampling(
        model,
        x,
        t,
        seg,
        b,
        key,
        tol,
        rounds,
        d=d,
        mode=mode,
        n_permutations=n_permutations,
        antithetic=antithetic,
        control=degree,
        adaptive=adaptive and d > 1,
        with_stderr=with_stderr,
        batch_size=batch_size,
    )


def permutation_ranks(key: jax.Array, unit: jax.Array, d: int) -> jax.Array:
    """Position of every feature in the random permutation of each unit, `(b, d)` int."""
    return ranks_from_bits(unit_bits(key, unit, d))


@functools.partial(
    jit,
    static_argnames=(
        "d",
        "mode",
        "n_permutations",
        "antithetic",
        "control",
        "adaptive",
        "with_stderr",
        "batch_size",
    ),
)
def _sampling(
    model,
    x,
    target,
    seg,
    b,
    key,
    tol,
    max_rounds,
    *,
    d,
    mode,
    n_permutations,
    antithetic,
    control=0,
    adaptive,
    with_stderr=True,
    batch_size,
):
    n = x.shape[0]
    b = features.make_baseline(mode, b, x, seg, d)
    present = features.feature_counts(seg, d) > 0
    (fx, f0), target = values_at(model, target, [x, b], batch_size, repeats=True)
    delta = fx - f0
    if d == 1:
        return Explanation(
            delta[:, None],
            stderr=jnp.zeros((n, 1)),
            gap=jnp.zeros((n,)),
            n_evals=n_evals(n, 2, 0, 0, 1, batch_size, 0),
        )
    per_unit = 2 if antithetic else 1
    units = n_permutations // per_unit
    units_fn, inputs_fn, reduce_fn = _walks(key, x, b, seg, d, fx, f0, antithetic)

    def evals(rounds):
        return n_evals(n, 2, rounds, units, per_unit * (d - 1), batch_size, unit_bytes(units_fn))

    if control:  # regression-adjusted (`_control.py`): fixed units, no rounds
        phi, se, df = _control.stream_adjusted(
            model, target, units_fn, inputs_fn, permutation_ranks(key, jnp.arange(units), d),
            f0, fx, present, antithetic=antithetic, degree=control, batch_size=batch_size)
        return Explanation(phi, stderr=se, gap=phi.sum(-1) - delta, n_evals=evals(1),
                           stderr_df=df)

    def round_fn(stats, r):
        return stream(model, target, n, units, units_fn, inputs_fn, reduce_fn, stats,
                      batch_size, unit_size=per_unit * (d - 1), offset=r * units)

    def stderr_fn(stats):
        return _stderr(stats, present, jnp.abs(fx) + jnp.abs(f0))

    init = (jnp.zeros((n,)), jnp.zeros((n, d)), jnp.zeros((n, d)), jnp.zeros((n, d)))
    stats, rounds = run_rounds(round_fn, stderr_fn, init, adaptive, tol, max_rounds)
    phi = jnp.where(present, stats[1], 0.0)
    return Explanation(
        phi,
        stderr=stderr_fn(stats) if with_stderr else None,
        gap=phi.sum(-1) - delta,
        n_evals=evals(rounds),
        stderr_df=moderated_df(stats[0]) if with_stderr else None,
    )


def _walks(key, x, b, seg, d, fx, f0, antithetic):
    """`(units_fn, inputs_fn, reduce_fn)` of `stream` for permutation walks: a unit is one
    random order of the features (and its reverse when `antithetic`), its rows the
    `d - 1` inner coalitions of each walk, its statistic the marginal contributions."""
    per_unit = 2 if antithetic else 1
    sizes = jnp.arange(1, d)

    def orders(rank):
        return [rank, d - 1 - rank] if antithetic else [rank]

    def units_fn(ex, u):
        rank = permutation_ranks(key, u, d)
        masks = [r[:, None, :] < sizes[None, :, None] for r in orders(rank)]
        return jnp.concatenate(masks, axis=1), rank

    def inputs_fn(ex, masks):
        return features.apply_coalitions(x[ex], b[ex], seg[ex], masks)

    def reduce_fn(stats, c):
        walks = []
        for i, r in enumerate(orders(c.extra)):
            inner = c.values[:, i * (d - 1) : (i + 1) * (d - 1)]
            ys = jnp.concatenate([f0[c.ex][:, None], inner, fx[c.ex][:, None]], axis=1)
            walks.append(jnp.take_along_axis(ys, r + 1, 1) - jnp.take_along_axis(ys, r, 1))
        mean = sum(walks) / per_unit
        spread = sum(jnp.square(w - mean) for w in walks)  # inside a pair: 0 without pairs
        spread = add_local(stats[3], c.ex0, jnp.matmul(c.onehot.T, spread, precision=HIGHEST))
        return merge_moments(stats[:3], c.ex0, c.onehot, mean) + (spread,)

    return units_fn, inputs_fn, reduce_fn


def _stderr(stats, present, scale):
    """Standard errors of the running means `(count, mean, M2, spread)` (`_stderr.py`)."""
    return moderated_stderr(stats[0], stats[2], stats[3], present, scale)
