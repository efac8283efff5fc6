"""Variance-reduction options of the coalition and mask samplers (issue 38):
KernelSHAP's `sampling="leverage"` (the default: strata sized by leverage scores) and
`"kernel"` (by kernel mass), and RISE's `sampling="antithetic"|"lattice"`. The default
is also covered by test_stderr.py and test_shapley.py. Each stays unbiased or consistent against exact
values, keeps honest standard errors where it states them, and keeps the method
contract (jit == eager, same key same result, independent of `batch_size`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing
from jaxplain.perturbation import kernelshap

D = 8
X = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, 1, D, 1)), jnp.float32)
SEG = jnp.arange(D)[None]


def smooth(z):
    v = z[:, 0, :, 0]
    return jnp.tanh(v @ jnp.linspace(-1.0, 1.0, D)) + 0.1 * jnp.sum(v**2, 1)


def interactions(z):
    v = z[:, 0, :, 0]
    return (v[:, 0] * v[:, 1] * v[:, 2] + 2 * jnp.maximum(v[:, 3], v[:, 4]) + v[:, 5] * v[:, 6]
            + jnp.maximum(v[:, 6], v[:, 7]) + 0.3 * v.sum(1))


GAMES = {"smooth": smooth, "interactions": interactions}


def _kernel_shap_runs(game, keys, **kw):
    exact = np.asarray(jx.exact_shapley(game, X, target=None, segments=SEG).values[0])
    run = jax.jit(jax.vmap(lambda k: jx.kernel_shap(game, X, target=None, segments=SEG, key=k,
                                                    **kw)))
    e = run(jax.random.split(jax.random.key(5), keys))
    err = np.asarray(e.values[:, 0]) - exact
    se = np.asarray(e.stderr[:, 0])
    rmse = float(np.sqrt(np.mean(err**2)))
    return testing.coverage(e, exact), float(np.sqrt(np.mean(se**2)) / rmse), err, se


def test_leverage_schedule_shares_the_budget_equally_between_sizes():
    # d = 12, no enumeration: paired strata are sizes 1..6 (a size and its mirror: 2 shares,
    # the middle one 1), so uncapped rounds give 200 per mirrored pair of sizes and 100;
    # the first round caps sizes 1 and 2 at their 12 and 66 pairs and shares out the rest
    plan = kernelshap.schedule(12, 1100, False, True, "leverage")
    assert plan.strata_size == (1, 2, 3, 4, 5, 6)
    assert plan.later == (200, 200, 200, 200, 200, 100)
    assert plan.first == (24, 132, 270, 270, 270, 134)
    kern = kernelshap.schedule(12, 1100, False, True, "kernel")
    assert kern.strata_mass == plan.strata_mass  # same strata, same kernel weights
    assert plan.first[-1] > kern.first[-1]  # leverage samples the middle sizes more


@pytest.mark.parametrize("game", GAMES)
def test_kernel_strata_are_consistent_and_their_stderr_is_honest(game):
    cover, ratio, err, se = _kernel_shap_runs(GAMES[game], 40, n_samples=100,
                                              enumerate_sizes=False, sampling="kernel")
    assert abs(float(np.mean(err))) < 4 * float(np.std(err)) / np.sqrt(err.size)  # no bias
    assert 0.85 <= cover <= 0.995, cover  # 320 correlated intervals: a wide band
    assert 0.75 <= ratio <= 1.35, ratio
    assert not np.any((se == 0) & (np.abs(err) > 1e-5))


@pytest.mark.slow
@pytest.mark.parametrize("game, n, enum", [("smooth", 100, False), ("interactions", 120, True)])
def test_kernel_strata_cover_over_400_keys(game, n, enum):
    # measured: coverage 0.928-0.955, rms(stderr)/rmse 1.19-1.22 (both samplings, both games;
    # the default, leverage, is checked over 400 keys in test_stderr.py)
    cover, ratio, err, se = _kernel_shap_runs(GAMES[game], 400, n_samples=n,
                                              enumerate_sizes=enum, sampling="kernel")
    assert 0.90 <= cover <= 0.98, cover
    assert 0.8 <= ratio <= 1.25, ratio
    assert not np.any((se == 0) & (np.abs(err) > 1e-5))


def test_kernel_strata_are_exact_when_the_budget_covers_every_coalition():
    e = jx.kernel_shap(interactions, X, target=None, segments=SEG, key=jax.random.key(0),
                       n_samples=2**D - 2, sampling="kernel")
    exact = jx.exact_shapley(interactions, X, target=None, segments=SEG).values
    np.testing.assert_allclose(e.values, exact, atol=2e-5)
    assert float(np.max(e.stderr)) == 0.0


# ---- RISE -----------------------------------------------------------------------------------

RNG = np.random.default_rng(1)
IMG = jnp.asarray(RNG.uniform(0.5, 1.5, (1, 8, 8, 1)), jnp.float32)
WT = jnp.asarray(RNG.normal(size=(8, 8, 1)), jnp.float32)


def cnn_like(z):
    return jnp.tanh(0.3 * jnp.sum(z * WT, axis=(1, 2, 3))) + 2.0 + 0.5 * z[:, 2, 3, 0] * z[:, 5, 5, 0]


def _rise(f, sampling, keys, n_masks=64, **kw):
    run = jax.jit(jax.vmap(lambda k, x: jx.rise(f, x, target=None, key=k, n_masks=n_masks,
                                                cells=4, sampling=sampling, **kw).values[0],
                           in_axes=(0, None)))
    return np.asarray(run(jax.random.split(jax.random.key(0), keys), IMG))


def test_rise_antithetic_pairs_are_exact_on_a_constant_model():
    # mc: 3 * mean(M) / p varies with the masks; a pair at p = 0.5 is M and 1 - M: exactly 3
    const = lambda z: 0.0 * z.sum((1, 2, 3)) + 3.0  # noqa: E731
    np.testing.assert_allclose(_rise(const, "antithetic", 4, n_masks=8), 3.0, rtol=1e-5)
    assert np.ptp(_rise(const, "mc", 4, n_masks=8)) > 0.1


@pytest.mark.parametrize("sampling", ["antithetic", "lattice"])
def test_rise_options_are_unbiased_and_cut_the_error(sampling):
    mc = _rise(cnn_like, "mc", 32)
    opt = _rise(cnn_like, sampling, 32)
    # unbiased: both means estimate the same saliency (difference within 4 standard errors)
    diff = opt.mean(0) - mc.mean(0)
    sem = np.sqrt((opt.var(0) + mc.var(0)) / 32)
    assert np.mean(np.abs(diff) <= 4 * sem) >= 0.99
    # measured (64 keys, 200 masks, 40 000-mask reference): RMSE mc 0.136, antithetic 0.043,
    # lattice 0.070; here the spread over keys at 64 masks
    assert np.sqrt(np.mean(opt.var(0))) < 0.7 * np.sqrt(np.mean(mc.var(0)))


@pytest.mark.parametrize("sampling", ["antithetic", "lattice"])
def test_rise_options_keep_the_contract(sampling):
    kw = dict(target=None, key=jax.random.key(3), n_masks=6, cells=2, sampling=sampling, p=0.4)
    a = jx.rise(cnn_like, IMG, **kw)
    b = jax.jit(lambda z: jx.rise(cnn_like, z, **kw))(IMG)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.values, jx.rise(cnn_like, IMG, **kw, batch_size=4).values,
                               rtol=1e-5, atol=1e-6)
    other = jx.rise(cnn_like, IMG, **dict(kw, key=jax.random.key(4)))
    assert not np.allclose(a.values, other.values)


def test_kernel_shap_kernel_strata_keep_the_contract():
    kw = dict(target=None, segments=SEG, key=jax.random.key(3), n_samples=40, sampling="kernel")
    a = jx.kernel_shap(interactions, X, **kw)
    b = jax.jit(lambda z: jx.kernel_shap(interactions, z, **kw))(X)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.values, jx.kernel_shap(interactions, X, **kw, batch_size=7).values,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.values, jx.kernel_shap(interactions, X, **dict(
        kw, key=jax.random.key(4))).values)


def test_bad_sampling_settings():
    with pytest.raises(ValueError, match="sampling"):
        jx.kernel_shap(smooth, X, target=None, segments=SEG, key=jax.random.key(0),
                       sampling="sobol")
    with pytest.raises(ValueError, match="sampling"):
        jx.rise(cnn_like, IMG, target=None, key=jax.random.key(0), sampling="sobol")
    with pytest.raises(ValueError, match="n_masks"):
        jx.rise(cnn_like, IMG, target=None, key=jax.random.key(0), n_masks=5,
                sampling="antithetic")


def test_paired_estimators_are_exact_on_pairwise_games():
    """Why there is no linear or quadratic control variate: KernelSHAP's complementary
    pairs and antithetic permutation pairs are already exact on every game of order <= 2
    (a linear surrogate's Shapley values, or a pairwise one's, cancel nothing they leave);
    without pairs KernelSHAP errs. A surrogate worth subtracting needs third-order terms."""
    d = 6
    rng = np.random.default_rng(0)
    b, a = jnp.asarray(rng.normal(size=(d, d)), jnp.float32), jnp.asarray(rng.normal(size=d))
    pairwise = lambda z: z[:, 0, :, 0] @ a + jnp.einsum(  # noqa: E731
        "ni,ij,nj->n", z[:, 0, :, 0], b, z[:, 0, :, 0])
    x, seg = X[:, :, :d], SEG[:, :d]
    exact = jx.exact_shapley(pairwise, x, target=None, segments=seg).values
    kw = dict(target=None, segments=seg, key=jax.random.key(1))
    ks = jx.kernel_shap(pairwise, x, **kw, n_samples=24, enumerate_sizes=False)
    ss = jx.shapley_sampling(pairwise, x, **kw, n_permutations=4)
    np.testing.assert_allclose(ks.values, exact, atol=2e-5)
    np.testing.assert_allclose(ss.values, exact, atol=2e-5)
    unpaired = jx.kernel_shap(pairwise, x, **kw, n_samples=24, enumerate_sizes=False,
                              paired=False)
    assert float(np.max(np.abs(unpaired.values - exact))) > 0.01
