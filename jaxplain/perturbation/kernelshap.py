"""KernelSHAP: Shapley values as a constrained, Shapley-kernel-weighted regression.

Coalition sizes are enumerated exactly, smallest and largest first, while a size's
kernel-proportional share of the remaining budget covers at least `ENUM_SHARE` of
its coalitions (shap's `KernelExplainer` asks for all of them, and so enumerates
less). The other sizes are strata: each gets its kernel-proportional share of
the budget, drawn on device in complementary pairs and without replacement (the
first units of one random order of the stratum), and is weighted by its kernel
mass. Each chunk of evaluations is folded into regression statistics (`Z^T W Z`,
`Z^T W y`), kept per group of sampled pairs so a delete-a-group jackknife gives
standard errors; a group's deviation is scaled by its strata's finite-population
correction (`finite_population`: a stratum drawn in full has no sampling error).
The stderr carries its degrees of freedom (`Explanation.stderr_df`: `n_groups - 1`,
fewer where a few groups dominate the variance; `_stderr.jackknife_df`), so
`Explanation.interval()` scales it by Student t: with 8 groups and the normal quantile,
95% intervals covered 0.88-0.92 (the jackknife's own noise), with `t(7)` 0.93-0.96
(d = 8, smooth and interaction games, 100-200 samples, 400 keys). A schedule now uses
as many groups as its first round has sampled units, up to `MAX_GROUPS` = 64 (16 at
d = 64, where each group's `d x d` statistics cost more memory; `max_groups`): on
the d = 8 interaction game (100 samples, no enumeration, 400 keys) 16 groups kept
coverage at 0.948 with intervals 10% narrower (`t(15)` instead of `t(7)`).

Where the coalitions barely determine the `d` coefficients (a sampled pair's leverage
is about `d / pairs`: 0.33 at d = 16 with 100 evaluations, 0.43 at d = 64 with 300),
the jackknife is too wide: like the delete-one jackknife of a linear regression
(HC3), a replicate divides the group's residual by one minus its leverage. Its
linearisation (every replicate keeps the full fit's Gram matrix; HC0) does not
divide, and is too narrow. The stderr is their geometric mean, which divides by the
square root (HC2, unbiased for a homoscedastic linear regression). Measured against
exact values (the sample-efficiency games, the same coalitions, 200 keys; 100 at d =
64; the t factor then in the stderr), rms(stderr) / RMSE and 95% coverage, jackknife /
linearised / geometric mean:
1.23 / 0.85 / 1.02 and 0.95 / 0.87 / 0.92 (d = 16 smooth, 100 evaluations); 1.21 /
0.84 / 1.00 and 0.97 / 0.89 / 0.94 (d = 16 products/maxima, 100); 1.46 / 0.81 / 1.09
and 0.985 / 0.87 / 0.95 (d = 64, 300). With more evaluations per coefficient the
three agree (d = 12 at 300: 1.01 / 0.96 / 0.99; d = 16 at 1000: 1.05 / 1.03 / 1.04).
The final weighted least squares is solved with the efficiency constraint `sum(phi) =
f(x) - f(baseline)` enforced exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._compile import jit
from .._core.types import HIGHEST
from .._core import batching, registry
from .._core import features
from .._core import validate as V
from .._core.types import ArrayLike, Explanation
from .._core.batching import values_at
from .engine import (
    add_local,
    n_evals,
    stream,
    stream_evals,
    unit_bytes,
)
from .engine import prepare
from ._rounds import check_adaptive, run_rounds
from . import _kernelshap_control
from ._stderr import jackknife_df, jackknife_spread
from ._wls import constrained_apply, constrained_factor, constrained_solve
from ._kernelshap_plan import (  # noqa: F401 - the plan's names, re-exported
    ENUM_SHARE,
    MAX_GROUPS,
    max_groups,
    N_GROUPS,
    SAMPLINGS,
    WOR_MAX,
    Schedule,
    allocate,
    coalitions,
    finite_population,
    groups,
    permutations,
    schedule,
    unrank,
    wor_row,
)


def kernel_shap_evals(a: dict) -> int:
    """Model evaluations per example of a `kernel_shap` call (the most, when adaptive)."""
    d = features.n_features(a["segments"])
    plan = schedule(d, a["n_samples"], a["enumerate_sizes"], a["paired"])  # any sampling
    rounds = check_adaptive(a["tol"], a["max_evals"], max(plan.n_units, 1))[2]
    return stream_evals(a, 2, plan.n_units, d + 12, rounds=rounds)  # mask, weight, group, fpc


@registry.method(
    "shapley",
    evals=lambda a: kernel_shap_evals(a),
    cheap={"n_samples": 12},  # 4 features: sizes 1 and 3 enumerated, 4 of the 6 pairs drawn
    demo={"label": "KernelSHAP", "quick": {"n_samples": 256}, "full": {"n_samples": 1000}},
)
def kernel_shap(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    segments: ArrayLike,
    baseline: Any = 0.0,
    key: Any,
    n_samples: int = 1000,
    paired: bool = True,
    enumerate_sizes: bool = True,
    sampling: str = "leverage",
    control: str | None = None,
    tol: float | None = None,
    max_evals: int | None = None,
    batch_size: int | None = None,
) -> Explanation:
    """KernelSHAP with exact efficiency, paired sampling and jackknife standard errors.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)`.
      target: see `jaxplain.as_target`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1` without gaps.
      baseline: a number, an image, one image per example, `"blur"` or `"mean"`.
      key: a `jax.random.key` (required).
      n_samples: coalitions evaluated per example besides the empty and full
        ones (fewer when `2^d - 2` is smaller: then the result is exact); with
        `tol`, the coalitions per round.
      paired: sample each coalition together with its complement.
        Within a size, coalitions (pairs) are drawn without replacement while
        unused ones remain (sizes up to `WOR_MAX` of them; larger ones draw
        independently), also across adaptive rounds.
      enumerate_sizes: enumerate every coalition of the smallest and largest
        sizes when the budget allows it (see `ENUM_SHARE`); otherwise every
        size is a sampled stratum.
      sampling: how the budget is shared between the sampled sizes: `"leverage"`
        equally, in proportion to their leverage scores in the KernelSHAP
        regression (Musco & Witter 2024; it samples the middle sizes more),
        `"kernel"` in proportion to their Shapley-kernel mass (shap's choice).
        Both are unbiased stratified designs. Measured against exact values (100
        keys, `benchmarks/results/sample_efficiency.md`), leverage's RMSE was
        0.98-1.00x kernel's at d = 12, 0.90-1.04x at d = 16 and 0.81-0.91x at
        d = 64, so it is the default.
      control: None, or `"cubic"`: a surrogate with every term of up to 3
        features (d <= 18), fitted by ridge least squares to the evaluated
        coalitions and used as a control variate at no extra model evaluation
        (`_kernelshap_control.py`). The sampled pairs split into two folds; each
        fold's surrogate has exact Shapley values and the other fold, with the
        enumerated sizes, estimates the residual: unbiased, exactly efficient,
        with a jackknife standard error. It needs enough samples to fit its
        terms (`ValueError` names the least `n_samples`: 440 at d = 12, 1120 at
        d = 16). Measured (`benchmarks.sample_efficiency`, 40 keys), RMSE over
        control=None: d = 12 smooth game 0.80x at 1000 evaluations and 0.34x at
        3000, trained CNN 0.14x and 0.05x, products/maxima 4e-4x (to round-off
        at 3000); d = 16 at 3000: 0.86x, 0.13x, 0.16x; 95% coverage 0.950-0.958,
        stated/actual error 0.97-1.14. At d = 8 (200 keys) it gave 0.39-0.72x
        with 150 samples, with coverage 0.93-0.95 and stated/actual 0.95-1.0
        (400-800 keys), and with `enumerate_sizes=False` and 200-240 of the 254
        coalitions sampled it lost on an interaction game (2.3-3.5x: the fitting
        half counts at its population weight, so near a full sample the residual
        weighs up to 2x).
        So it is an option, not the default. `"quadratic"` only with `paired=False`
        (pairs already estimate quadratic games exactly). Not with `tol`; with
        every coalition enumerated it is ignored (the result is exact).
      tol: adaptive stopping: run rounds of `n_samples` until the largest
        standard error (over features and examples) is below `tol`.
      max_evals: with `tol`, the budget of model evaluations per example
        (default: 20 rounds).
      batch_size: model inputs per chunk.

    Returns:
      `Explanation(values (N, d), stderr (N, d), gap (N,) efficiency gap (0 up
      to rounding), n_evals (N,), stderr_df (N, d))`: `interval()` gives 95%
      intervals. `stderr` is 0 when every coalition was
      enumerated, and None (not estimated) without `tol` when fewer than
      `N_GROUPS` sampling units (pairs when `paired`) remain after the enumerated
      sizes: e.g. `n_samples < 16` sampled coalitions with `paired=True`.

    Raises:
      ValueError: with `tol`, a `max_evals` too small to fill the `N_GROUPS`
        jackknife groups; counts whose evaluations exceed the int32 flat index;
        a `control` with `tol`, with too few `n_samples`, or of more than
        `_control.MAX_TERMS` terms.
      TypeError: a `control` that is not a string or None.

    References:
      Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
      NeurIPS 2017. Covert & Lee, "Improving KernelSHAP: Practical Shapley Value
      Estimation via Linear Regression", AISTATS 2021. Musco & Witter, "Provably
      Accurate Shapley Value Estimation via Leverage Score Sampling", ICLR 2025.

    >>> import jax, jax.numpy as jnp
    >>> f = lambda z: z[:, 0, 0, 0] * z[:, 0, 1, 0] + z[:, 0, 2, 0]
    >>> e = kernel_shap(f, jnp.ones((1, 1, 3, 1)), target=None, segments=jnp.array([[0, 1, 2]]),
    ...                 key=jax.random.key(0))
    >>> [round(v, 4) for v in e.values[0].tolist()], e.n_evals.tolist()
    ([0.5, 0.5, 1.0], [8])
    """
    model, x, t, seg, d, mode, b, batch_size = prepare(
        model, x, target, segments, baseline, batch_size
    )
    key = V.check_key(key)
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], fixed=2)
    for name, v in (("paired", paired), ("enumerate_sizes", enumerate_sizes)):
        if not isinstance(v, bool):
            V.fail(name, "a bool", repr(v), TypeError)
    V.check_choice(sampling, "sampling", SAMPLINGS)
    plan = schedule(d, n_samples, enumerate_sizes, paired, sampling)
    degree = _kernelshap_control.check_control(
        control, d, plan, n_samples=n_samples, paired=paired, enumerate_sizes=enumerate_sizes,
        sampling=sampling, tol=tol)
    adaptive, tol, rounds = check_adaptive(tol, max_evals, max(plan.n_units, 1))
    sampled = plan.n_units - plan.n_enum
    if (
        adaptive
        and not plan.exact
        and groups(rounds * plan.n_units - plan.n_enum, paired) < N_GROUPS
    ):
        need = -(-(plan.n_enum + N_GROUPS * (2 if paired else 1)) // plan.n_units)
        V.fail(
            "max_evals",
            f"at least {2 + need * plan.n_units} ({need} rounds: tol is compared with "
            f"a jackknife standard error over {N_GROUPS} groups of sampled coalitions)",
            max_evals,
        )
    with_stderr = plan.exact or adaptive or groups(sampled, paired) >= N_GROUPS
    return _kernel_shap(
        model,
        x,
        t,
        seg,
        b,
        key,
        tol,
        rounds,
        plan=plan,
        mode=mode,
        adaptive=adaptive and not plan.exact,
        with_stderr=with_stderr,
        control=degree,
        batch_size=batch_size,
    )


def estimate(stats, plan: Schedule, delta, present):
    """Values, jackknife standard errors and their degrees of freedom (`(N, d)` each) from
    the regression statistics."""
    # (N, G+2, d, d), (N, G+2, d), (N, G+2): the groups' statistics scaled by the
    # finite-population correction, the enumerated part (slot G), the sampled total (G+1)
    gram, zy, cnt = stats
    g = plan.n_groups
    gs, as_, ns = gram[:, :g], zy[:, :g], cnt[:, :g]
    tg, ta, tn = gs.sum(1), as_.sum(1), ns.sum(1)

    def scale(n_s):
        return jnp.where(n_s > 0, plan.mass / jnp.maximum(n_s, 1.0), 0.0)

    full_g = gram[:, g] + scale(tn)[:, None, None] * gram[:, g + 1]
    full_a = zy[:, g] + scale(tn)[:, None] * zy[:, g + 1]
    # a replicate deletes group j: the full fit moved by the (corrected) group's weight
    dn = scale(tn[:, None] - ns)
    dg = dn[..., None, None] * (tg[:, None] - gs) - scale(tn)[:, None, None, None] * tg[:, None]
    da = dn[..., None] * (ta[:, None] - as_) - scale(tn)[:, None, None] * ta[:, None]
    gg = jnp.concatenate([full_g[:, None], full_g[:, None] + dg], 1)
    aa = jnp.concatenate([full_a[:, None], full_a[:, None] + da], 1)
    factor = constrained_factor(gg, present[:, None])
    phis = constrained_apply(factor, aa[..., None], delta[:, None, None])[..., 0]
    phi, reps = phis[:, 0], phis[:, 1:]
    # the same replicates linearised: the full fit's Gram matrix, the group's change of
    # the normal equations' residual (`d(Z^T W y) - d(Z^T W Z) phi`), no change of the
    # sum. The full fit's factor, solved without LAPACK (`lapack=False`): a second batched
    # LAPACK call cost 40 ms of a 115 ms call (d = 64, a CNN, jax 0.10.2: 0.6 ms alone),
    # and two at once deadlocked XLA:CPU under vmap
    rhs = da - jnp.einsum("ngij,nj->ngi", dg, phi, precision=HIGHEST)  # (N, G, d)
    full = (factor[0][:, 0], factor[1][:, 0], False)
    lin = jnp.swapaxes(constrained_apply(full, jnp.swapaxes(rhs, 1, 2),
                                         jnp.zeros(rhs.shape[:2], rhs.dtype)), 1, 2)
    # HC2: the geometric mean of the jackknife (HC3-like) and its linearisation (HC0)
    se = jnp.sqrt(jackknife_spread(reps) * jackknife_spread(lin))
    if plan.exact:
        return phi, jnp.zeros_like(phi), jnp.full_like(phi, float(g - 1))
    ok = (tn == 0) | jnp.all(ns > 0, axis=1)
    return phi, jnp.where(present, jnp.where(ok[:, None], se, jnp.nan), 0.0), jackknife_df(reps)


def _reducer(d, f0, g):
    """`stream`'s reducer for KernelSHAP: per-example regression statistics in slots of
    the `g` jackknife groups (their units scaled by the finite-population correction),
    the enumerated coalitions, and the sampled ones' plain total."""

    def reduce_fn(stats, c):
        gram, zy, cnt = stats
        weight, group, fpc = c.extra
        sampled = group >= 0
        slot = jnp.where(sampled, group, g)
        hot = jax.nn.one_hot(slot, g + 2)
        coef = hot * jnp.where(sampled, fpc, 1.0)[:, None] + jax.nn.one_hot(
            jnp.where(sampled, g + 1, -1), g + 2
        )
        m, k = c.onehot.shape
        q = (c.onehot[:, :, None] * coef[:, None, :]).reshape(m, -1)
        z = c.aux[:, 0].astype(jnp.float32)
        qw = q * weight[:, None]
        y = c.values[:, 0] - f0[c.ex].astype(c.values.dtype)
        zz = jnp.einsum("mq,mi,mj->qij", qw, z, z, precision=HIGHEST)
        gram = add_local(gram, c.ex0, zz.reshape(k, g + 2, d, d))
        zy = add_local(zy, c.ex0, jnp.einsum("mq,m,mi->qi", qw, y, z, precision=HIGHEST).reshape(k, g + 2, d))
        cnt = add_local(cnt, c.ex0, jnp.matmul(c.onehot.T, hot, precision=HIGHEST))
        return gram, zy, cnt

    return reduce_fn


@functools.partial(
    jit, static_argnames=("plan", "mode", "adaptive", "with_stderr", "control", "batch_size")
)
def _kernel_shap(
    model,
    x,
    target,
    seg,
    b,
    key,
    tol,
    max_rounds,
    *,
    plan,
    mode,
    adaptive,
    batch_size,
    with_stderr=True,
    control=0,
):
    n, d = x.shape[0], plan.d
    b = features.make_baseline(mode, b, x, seg, d)
    present = features.feature_counts(seg, d) > 0
    (fx, f0), target = values_at(model, target, [x, b], batch_size, repeats=True)
    acc = batching.accumulator(fx.dtype)  # bfloat16 models: the regression in float32
    delta = fx.astype(acc) - f0.astype(acc)
    g = plan.n_groups

    orders = permutations(plan, key, None if adaptive else 1) if not plan.exact else None

    def units_fn(ex, i):
        masks, weight, group = coalitions(plan, key, i, orders)
        return masks[:, None], (weight, group, finite_population(plan, i))

    def inputs_fn(ex, masks):
        return features.apply_coalitions(x[ex], b[ex], seg[ex], masks)

    if control:  # cross-fitted control variate (`_kernelshap_control.py`): one round
        def store(buf, c):  # units an earlier chunk covered write the same values again
            return buf.at[c.ex, c.unit].set(c.values[:, 0].astype(buf.dtype), mode="drop")

        buf = stream(model, target, n, plan.n_units, units_fn, inputs_fn, store,
                     jnp.zeros((n, plan.n_units), jnp.float32), batch_size)
        phi, se, df = _kernelshap_control.adjusted(
            buf, plan, key, orders, f0, delta, present, degree=control,
            solve=functools.partial(constrained_solve, lapack=False))
        return Explanation(
            phi,
            stderr=se if with_stderr else None,
            gap=phi.sum(-1) - delta,
            n_evals=n_evals(n, 2, 1, plan.n_units, 1, batch_size, unit_bytes(units_fn)),
            stderr_df=df if with_stderr else None,
        )

    reduce_fn = _reducer(d, f0, g)

    def round_fn(stats, r):
        return stream(model, target, n, plan.n_units, units_fn, inputs_fn, reduce_fn, stats,
                      batch_size, offset=r * plan.n_units)

    init = (jnp.zeros((n, g + 2, d, d)), jnp.zeros((n, g + 2, d)), jnp.zeros((n, g + 2)))
    stats, rounds = run_rounds(
        round_fn, lambda s: estimate(s, plan, delta, present)[1], init, adaptive, tol, max_rounds
    )
    if d < 2:
        phi, se, df = jnp.where(present, delta[:, None], 0.0), jnp.zeros((n, d)), None
    else:
        phi, se, df = estimate(stats, plan, delta, present)
    return Explanation(
        phi,
        stderr=se if with_stderr else None,
        gap=phi.sum(-1) - delta,
        n_evals=n_evals(n, 2, rounds, plan.n_units, 1, batch_size, unit_bytes(units_fn)),
        stderr_df=df if with_stderr else None,
    )
