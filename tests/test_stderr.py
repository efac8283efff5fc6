"""Honest standard errors of the sampled Shapley estimators, against exact values by
enumeration on a d = 8 game with products and maxima of feature groups: 95% intervals
cover within a binomial band over many keys (one vmapped, jitted call), the stated
error is the actual one within 0.8-1.25x, and no stderr is 0 where the estimate errs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing

D = 8
X = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, 1, D, 1)), jnp.float32)
SEG = jnp.arange(D)[None]


def interactions(z):
    v = z[:, 0, :, 0]
    return (v[:, 0] * v[:, 1] * v[:, 2] + 2 * jnp.maximum(v[:, 3], v[:, 4]) + v[:, 5] * v[:, 6]
            + jnp.maximum(v[:, 6], v[:, 7]) + 0.3 * v.sum(1))


def _coverage(method, keys, **kw):
    exact = np.asarray(jx.exact_shapley(interactions, X, target=None, segments=SEG).values[0])
    run = jax.jit(jax.vmap(lambda k: getattr(jx, method)(interactions, X, target=None,
                                                       segments=SEG, key=k, **kw)))
    e = run(jax.random.split(jax.random.key(3), keys))
    err = np.asarray(e.values[:, 0]) - exact
    se = np.asarray(e.stderr[:, 0])
    rmse = np.sqrt(np.mean(err**2))
    return testing.coverage(e, exact), np.sqrt(np.mean(se**2)) / rmse, err, se


CASES = [("shapley_sampling", dict(n_permutations=8)),  # 4 antithetic pairs
         ("kernel_shap", dict(n_samples=100, enumerate_sizes=False))]


@pytest.mark.parametrize("method, kw", CASES)
def test_intervals_cover_and_stderr_matches_the_error(method, kw):
    cover, ratio, err, se = _coverage(method, 40, **kw)
    # 320 intervals from 40 keys (correlated within a key): a wide band around 0.95;
    # before the corrections, 4 pairs covered 0.72 and KernelSHAP's stderr was 2.3x wide
    assert 0.85 <= cover <= 0.995, cover
    assert 0.75 <= ratio <= 1.35, ratio
    assert not np.any((se == 0) & (np.abs(err) > 1e-5))


@pytest.mark.slow
@pytest.mark.parametrize("method, kw", CASES + [("shapley_sampling", dict(n_permutations=32)),
                                                 ("kernel_shap", dict(n_samples=200))])
def test_intervals_cover_within_a_binomial_band_over_400_keys(method, kw):
    cover, ratio, err, se = _coverage(method, 400, **kw)
    assert 0.90 <= cover <= 0.98, cover
    assert 0.8 <= ratio <= 1.25, ratio
    assert not np.any((se == 0) & (np.abs(err) > 1e-5))


def test_additive_game_is_exact_with_zero_stderr():
    f = lambda z: z[:, 0, :, 0] @ jnp.arange(1.0, D + 1.0)  # noqa: E731
    e = jx.shapley_sampling(f, X, target=None, segments=SEG, key=jax.random.key(0),
                            n_permutations=4)
    np.testing.assert_allclose(e.values[0], np.arange(1.0, D + 1.0) * X[0, 0, :, 0], rtol=1e-5)
    assert float(np.max(np.asarray(e.stderr))) == 0.0


def test_antithetic_pair_is_a_permutation_and_its_reverse():
    """With two features, a walk and its reverse give the product game's Shapley values
    exactly (each order credits the product to the feature added last); the same order
    twice would give (0, x0 x1) or (x0 x1, 0)."""
    x = jnp.asarray([[[[1.5], [2.0]]]])
    f = lambda z: z[:, 0, 0, 0] * z[:, 0, 1, 0]  # noqa: E731
    run = jax.vmap(lambda k: jx.shapley_sampling(f, x, target=None, segments=jnp.array([[0, 1]]),
                                                 key=k, n_permutations=2).values[0])
    np.testing.assert_allclose(run(jax.random.split(jax.random.key(0), 8)), 1.5, rtol=1e-6)
    single = jax.vmap(lambda k: jx.shapley_sampling(
        f, x, target=None, segments=jnp.array([[0, 1]]), key=k, n_permutations=1,
        antithetic=False).values[0])(jax.random.split(jax.random.key(0), 8))
    assert set(np.round(np.asarray(single[:, 0]), 4)) <= {0.0, 3.0}


def test_antithetic_pair_is_a_walk_and_its_exact_reverse():
    """`v(S) = |S|^2`: a feature at position `p` of a walk adds `2p + 1`, at `d - 1 - p` of
    the reverse `2(d - 1 - p) + 1`, so every pair averages the Shapley value `d` exactly.
    A second walk that is any other permutation (the same one, a shift, an independent
    draw) averages `p + q + 1` with `q != d - 1 - p` for some feature and key."""
    d = 5
    x = jnp.ones((1, 1, d, 1))
    f = lambda z: jnp.square(z[:, 0, :, 0].sum(1))  # noqa: E731
    run = jax.vmap(lambda k: jx.shapley_sampling(f, x, target=None, segments=jnp.arange(d)[None],
                                                 key=k, n_permutations=2).values[0])
    np.testing.assert_allclose(run(jax.random.split(jax.random.key(1), 16)), float(d), rtol=1e-6)


@pytest.mark.slow
def test_kernel_shap_uses_more_groups_when_the_units_allow():
    """One jackknife group per sampled pair (100 samples, d = 8: 50 pairs, the delete-one
    jackknife) gives the stderr 49 degrees of freedom instead of 7 with 8 groups: the
    interval's t quantile is 1.03 times the normal one instead of 1.21, at the same
    coverage, and the stated error is about the actual one."""
    from jaxplain.perturbation import kernelshap

    kw = dict(n_samples=100, enumerate_sizes=False)
    assert kernelshap.schedule(D, 100, False, True, "leverage").n_groups == 50
    assert kernelshap.max_groups(64) == 16 and kernelshap.max_groups(D) == kernelshap.MAX_GROUPS
    cover, ratio, err, se = _coverage("kernel_shap", 400, **kw)
    assert 0.90 <= cover <= 0.98, cover
    assert 0.9 <= ratio <= 1.1, ratio


# ---- regression-adjusted permutation sampling (`control=`) -------------------------------

def smooth(z):
    v = z[:, 0, :, 0]
    return jnp.tanh(v @ jnp.linspace(-1.0, 1.0, D)) + 0.1 * jnp.sum(v**2, 1)


def _quadratic_and_cubic():
    rng = np.random.default_rng(4)
    a = jnp.asarray(rng.normal(size=D), jnp.float32)
    b = jnp.asarray(np.triu(rng.normal(size=(D, D)), 1), jnp.float32)
    c = rng.normal(size=(D, D, D))
    c = jnp.asarray(np.where(np.fromfunction(lambda i, j, k: (i < j) & (j < k), c.shape), c, 0.0),
                    jnp.float32)  # one coefficient per triple i < j < k

    def quad(z):
        v = z[:, 0, :, 0]
        return v @ a + jnp.einsum("bi,ij,bj->b", v, b, v)

    def cubic(z):
        v = z[:, 0, :, 0]
        return quad(z) + jnp.einsum("bi,bj,bk,ijk->b", v, v, v, c)

    return quad, cubic


@pytest.mark.parametrize("control, kw", [("quadratic", dict(antithetic=False, n_permutations=32)),
                                         ("cubic", dict(n_permutations=128))])
def test_control_is_exact_on_its_surrogate_class(control, kw):
    """A game that is a polynomial of the surrogate's degree is fitted exactly by either
    fold, so the residual marginals vanish: float32 round-off of a least-squares fit
    through normal equations (3e-5 of the values for 92 cubic terms), a stderr near 0."""
    game = dict(zip(("quadratic", "cubic"), _quadratic_and_cubic()))[control]
    exact = np.asarray(jx.exact_shapley(game, X, target=None, segments=SEG).values[0])
    e = jx.shapley_sampling(game, X, target=None, segments=SEG, key=jax.random.key(0),
                            control=control, **kw)
    scale = np.abs(exact).max()
    assert np.abs(np.asarray(e.values[0]) - exact).max() < 1e-4 * scale
    assert np.asarray(e.stderr).max() < 1e-4 * scale
    assert abs(float(e.gap[0])) < 1e-5 * scale
    plain = jx.shapley_sampling(game, X, target=None, segments=SEG, key=jax.random.key(0), **kw)
    assert np.abs(np.asarray(plain.values[0]) - exact).max() > 1e-3 * scale  # not by chance


CONTROL_CASES = [dict(control="cubic", n_permutations=64),  # 32 antithetic pairs
                 dict(control="quadratic", antithetic=False, n_permutations=32)]


@pytest.mark.parametrize("game", [interactions, smooth], ids=["interactions", "smooth"])
@pytest.mark.parametrize("kw", CONTROL_CASES, ids=["cubic", "quadratic"])
def test_control_is_unbiased_honest_and_efficient(game, kw):
    keys = 400  # at 200 the cubic stderr on interactions came to 1.27x (1.21x at 400)
    exact = np.asarray(jx.exact_shapley(game, X, target=None, segments=SEG).values[0])
    run = jax.jit(jax.vmap(lambda k: jx.shapley_sampling(game, X, target=None, segments=SEG,
                                                         key=k, **kw)))
    e = run(jax.random.split(jax.random.key(3), keys))
    err = np.asarray(e.values[:, 0], np.float64) - exact
    se = np.asarray(e.stderr[:, 0])
    # unbiased: each feature's mean error within 4 standard errors of the mean (8 features)
    assert np.all(np.abs(err.mean(0)) <= 4 * err.std(0) / np.sqrt(keys) + 1e-6)
    cover = testing.coverage(e, exact)
    ratio = np.sqrt(np.mean(se**2)) / np.sqrt(np.mean(err**2))
    assert 0.90 <= cover <= 0.98, cover
    assert 0.8 <= ratio <= 1.25, ratio
    assert not np.any((se == 0) & (np.abs(err) > 1e-5))
    assert np.abs(np.asarray(e.gap)).max() < 1e-5 * (1 + np.abs(exact).sum())


def test_control_bad_values_raise_before_compiling():
    # label maps as users build them, on the host (a device map's broadcast to the batch
    # is an eager op that compiles once per shape, before the method's own checks)
    kw = dict(target=None, segments=np.asarray(SEG), key=jax.random.key(0))
    cases = [(dict(control=3), TypeError, "control"),
             (dict(control="linear"), ValueError, "control"),
             (dict(control="quadratic"), ValueError, "control"),  # antithetic pairs: a no-op
             (dict(control="cubic", tol=0.1), ValueError, "control"),
             (dict(control="cubic", n_permutations=8), ValueError, "n_permutations")]
    testing.refused_before_compiling(lambda **a: jx.shapley_sampling(interactions, X, **a), kw,
                                     cases)
    x64 = jnp.ones((1, 1, 64, 1))
    with pytest.raises(ValueError, match="2080 at d = 64"):
        jx.shapley_sampling(lambda z: z.sum((1, 2, 3)), x64, target=None,
                            segments=jnp.arange(64)[None], key=jax.random.key(0),
                            control="quadratic", antithetic=False, n_permutations=512)


def test_t_quantile_matches_scipy_and_tends_to_the_normal():
    from scipy import stats

    from jaxplain._core.stats import t_quantile

    for p in (0.9, 0.95, 0.975, 0.99):
        for df in (3, 4, 7, 10, 15, 63):
            rel = float(t_quantile(p, df)) / stats.t.ppf(p, df) - 1
            assert abs(rel) < (4e-3 if df == 3 else 1.1e-3 if df == 4 else 1e-4), (p, df, rel)
        assert float(t_quantile(p, jnp.inf)) == pytest.approx(stats.norm.ppf(p), rel=1e-6)


def test_interval_uses_student_t_with_the_stated_degrees_of_freedom():
    from scipy import stats

    v = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)
    se = np.array([[0.1, 0.2], [0.3, 0.0]], np.float32)
    e = jx.Explanation(v, stderr=se, stderr_df=np.array([7.0, 63.0]))
    lo, hi = e.interval(0.9)
    q = stats.t.ppf(0.95, np.array([7.0, 63.0]))[:, None]
    np.testing.assert_allclose(hi, v + q * se, rtol=1e-5)
    np.testing.assert_allclose(lo, v - q * se, rtol=1e-5)
    # without degrees of freedom: the normal quantile
    lo, hi = e._replace(stderr_df=None).interval()
    np.testing.assert_allclose(hi - v, 1.959964 * se, rtol=1e-5)
    # the same numbers under jit and vmap (rows of keys of a vmapped method)
    jl, jh = jax.jit(lambda e: e.interval(0.9))(e)
    np.testing.assert_allclose(jh, e.interval(0.9)[1], rtol=1e-6)
    vl, vh = jax.vmap(lambda e: e.interval(0.9))(jax.tree.map(lambda a: a[:, None], e))
    np.testing.assert_allclose(vh[:, 0], e.interval(0.9)[1], rtol=1e-6)
    with pytest.raises(ValueError, match="level"):
        e.interval(1.5)
    with pytest.raises(TypeError, match="level"):
        e.interval("95%")
    with pytest.raises(ValueError, match="no stderr"):
        jx.Explanation(v).interval()


def test_methods_state_the_degrees_of_freedom_of_their_stderr():
    from jaxplain.perturbation import kernelshap
    from jaxplain.perturbation._stderr import PRIOR_DF

    key = jax.random.key(0)
    kw = dict(target=None, segments=SEG, key=key)
    e = jx.shapley_sampling(interactions, X, n_permutations=8, **kw)  # 4 antithetic pairs
    np.testing.assert_array_equal(e.stderr_df, [4 - 1 + PRIOR_DF])
    e = jx.shapley_sampling(interactions, X, n_permutations=6, antithetic=False, **kw)
    np.testing.assert_array_equal(e.stderr_df, [6 - 1 + PRIOR_DF])
    e = jx.kernel_shap(interactions, X, n_samples=100, enumerate_sizes=False, **kw)
    groups = kernelshap.schedule(D, 100, False, True, "leverage").n_groups
    assert e.stderr_df.shape == (1, D)  # one per value: the kurtosis of each one's replicates
    assert np.all((e.stderr_df >= 2) & (e.stderr_df <= groups - 1)) and e.stderr_df.max() == 49
    m = testing.linear_model(jnp.array([[1.0], [-2.0]]))
    x = jnp.ones((3, 2))
    for sampling, n, df in (("mc", 8, 7), ("antithetic", 8, 3), ("lattice", 16, 3)):
        e = jx.smoothgrad(m, x, target=0, key=key, n_samples=n, sampling=sampling)
        np.testing.assert_array_equal(e.stderr_df, [df] * 3)


def test_jackknife_degrees_of_freedom_follow_the_replicates_kurtosis():
    from jaxplain.perturbation._stderr import jackknife_df

    rng = np.random.default_rng(0)
    g = 64
    reps = rng.normal(size=(4000, g, 1)).astype(np.float32)
    df = np.asarray(jackknife_df(jnp.asarray(reps)))[:, 0]
    dev = reps[:, :, 0] - reps[:, :, 0].mean(1, keepdims=True)
    kurt = g * np.sum(dev**4, 1) / np.sum(dev**2, 1) ** 2
    np.testing.assert_allclose(df, np.clip(2 * g / (kurt - 1), 2, g - 1), rtol=1e-4)
    assert 0.8 * (g - 1) <= np.median(df) <= g - 1  # normal replicates: about G - 1
    one = np.zeros((1, g, 1), np.float32)
    one[0, 0] = 1.0  # one group carries the whole variance: the fewest degrees of freedom
    assert float(jackknife_df(jnp.asarray(one))[0, 0]) < 2.2  # 2 G / (G - 4)
    heavy = rng.standard_t(3, size=(4000, g, 1)).astype(np.float32)  # kurtosis above 3
    assert np.median(np.asarray(jackknife_df(jnp.asarray(heavy)))) < 0.6 * np.median(df)
