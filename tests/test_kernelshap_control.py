"""`kernel_shap(control="cubic")`: the cross-fitted control variate of
`_kernelshap_control.py`, against exact values by enumeration on d = 8 games."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing
from jaxplain.perturbation import _kernelshap_control as kc
from jaxplain.perturbation.kernelshap import coalitions, permutations, schedule

D = 8
X = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, 1, D, 1)), jnp.float32)
SEG = jnp.arange(D)[None]
KW = dict(target=None, segments=SEG)


def cubic(z):
    rng = np.random.default_rng(4)
    a, b, c = rng.normal(size=D), np.triu(rng.normal(size=(D, D)), 1), rng.normal(size=(D,) * 3)
    c = np.where(np.fromfunction(lambda i, j, k: (i < j) & (j < k), c.shape), c, 0.0)
    v = z[:, 0, :, 0]
    return (v @ jnp.asarray(a, jnp.float32) + jnp.einsum("bi,ij,bj->b", v, jnp.asarray(b, jnp.float32), v)
            + jnp.einsum("bi,bj,bk,ijk->b", v, v, v, jnp.asarray(c, jnp.float32)))


def smooth(z):
    v = z[:, 0, :, 0]
    return jnp.tanh(v @ jnp.linspace(-1.0, 1.0, D)) + 0.1 * jnp.sum(v**2, 1)


def products(z):  # a product of four and a maximum of a product: beyond the cubic surrogate
    v = z[:, 0, :, 0]
    return (v[:, 0] * v[:, 1] * v[:, 2] * v[:, 3]
            + jnp.maximum(v[:, 4], jnp.maximum(v[:, 5], v[:, 6]) * v[:, 7]) + 0.3 * v.sum(1))


def _exact(game):
    return np.asarray(jx.exact_shapley(game, X, **KW).values[0], np.float64)


def test_exact_on_a_cubic_game_same_key_and_batch_size():
    exact = _exact(cubic)
    e = jx.kernel_shap(cubic, X, **KW, key=jax.random.key(0), n_samples=200, control="cubic")
    scale = np.abs(exact).max()
    assert np.abs(np.asarray(e.values[0]) - exact).max() < 1e-5 * scale
    assert np.asarray(e.stderr).max() < 1e-5 * scale
    assert abs(float(e.gap[0])) < 1e-6 * scale
    plain = jx.kernel_shap(cubic, X, **KW, key=jax.random.key(0), n_samples=200)
    assert np.abs(np.asarray(plain.values[0]) - exact).max() > 1e-3 * scale  # not by chance
    assert e.n_evals.tolist() == plain.n_evals.tolist()  # no extra evaluation
    # same key, same numbers; other chunks, the same up to float32 rounding (of the model
    # in other batch shapes, which the fit amplifies: 4e-5 of values ~0.3 on `products`;
    # eagerly, under `jax.disable_jit`, up to 3.6e-4 of 1.1, and 25 s: not checked here)
    again = jx.kernel_shap(cubic, X, **KW, key=jax.random.key(0), n_samples=200, control="cubic")
    np.testing.assert_array_equal(e.values, again.values)
    chunked = jx.kernel_shap(cubic, X, **KW, key=jax.random.key(0), n_samples=200,
                             control="cubic", batch_size=16)
    np.testing.assert_allclose(e.values, chunked.values, atol=1e-4 * scale)


@pytest.mark.parametrize("game", [smooth, products], ids=["smooth", "products"])
def test_unbiased_honest_efficient_and_better(game):
    """200 keys in one vmapped call, 150 samples (sizes 1, 2, 6, 7 enumerated). Measured:
    RMSE 0.72x control=None on smooth, 0.39x on products; coverage of `interval()` 0.936
    / 0.945 and rms(stderr) / RMSE 0.96 / 0.99. Before the estimating fold's own
    finite-population correction (`layout`), 0.897 / 0.916 and 0.84 / 0.87: most of each
    middle stratum is sampled here, where the correction matters most."""
    keys, exact = 200, _exact(game)

    def run(control):
        f = jax.jit(jax.vmap(lambda k: jx.kernel_shap(game, X, **KW, key=k, n_samples=150,
                                                      control=control)))
        return f(jax.random.split(jax.random.key(3), keys))

    e = run("cubic")
    err = np.asarray(e.values[:, 0], np.float64) - exact
    se = np.asarray(e.stderr[:, 0])
    assert np.all(np.abs(err.mean(0)) <= 4 * err.std(0) / np.sqrt(keys) + 1e-6)
    cover = testing.coverage(e, exact)
    rmse = np.sqrt(np.mean(err**2))
    ratio = np.sqrt(np.mean(se**2)) / rmse
    assert 0.90 <= cover <= 0.98, cover
    assert 0.8 <= ratio <= 1.25, ratio
    assert np.abs(np.asarray(e.gap)).max() < 1e-5 * (1 + np.abs(exact).sum())
    if game is products:  # (smooth: 0.72x; not compiled here, 4 s)
        plain = run(None)
        plain_rmse = np.sqrt(np.mean((np.asarray(plain.values[:, 0], np.float64) - exact) ** 2))
        assert rmse < 0.6 * plain_rmse, (rmse, plain_rmse)


def test_layout_matches_the_coalitions_groups():
    """The control's folds come from the units' ordinals, counted as `coalitions` does."""
    plan = schedule(D, 150, True, True, "leverage")
    lay = kc.layout(plan)
    key = jax.random.key(0)
    group = jax.jit(lambda k: coalitions(plan, k, jnp.arange(plan.n_units),
                                         permutations(plan, k, 1))[2])(key)
    sampled = ~lay.enum
    enum, _, ordinal = kc._ordinals(plan)
    np.testing.assert_array_equal(np.asarray(group)[sampled], (ordinal % plan.n_groups)[sampled])
    assert np.all(np.asarray(group)[enum] == -1)
    assert lay.n_groups % 2 == 0 and np.all(lay.group[sampled] % 2 == lay.fold[sampled])
    # each fold's finite-population correction: its coalitions are a sample of those the
    # other fold left in the stratum (counted here from the rows, in coalitions)
    pop = np.asarray(plan.strata_pop, np.float64) * plan.per_unit
    for f in (0, 1):
        for h in range(len(pop)):
            rows = sampled & (lay.stratum == h)
            mine, known = np.sum(rows & (lay.fold == f)), np.sum(rows & (lay.fold != f))
            if mine:
                np.testing.assert_allclose(lay.fpc[f, h], np.sqrt(1 - mine / (pop[h] - known)),
                                           rtol=1e-6)


def test_bad_values_raise_before_compiling():
    kw = dict(target=None, segments=np.asarray(SEG), key=jax.random.key(0))
    cases = [(dict(control=3), TypeError, "control"),
             (dict(control="linear"), ValueError, "control"),
             (dict(control="quadratic"), ValueError, "paired=False"),  # pairs: a no-op
             (dict(control="cubic", tol=0.1), ValueError, "control"),
             (dict(control="cubic", n_samples=100), ValueError, "n_samples: expected at least 112")]
    testing.refused_before_compiling(lambda **a: jx.kernel_shap(products, X, **a), kw, cases)
    x20 = jnp.ones((1, 1, 20, 1))
    with pytest.raises(ValueError, match="1350 at d = 20"):
        jx.kernel_shap(lambda z: z.sum((1, 2, 3)), x20, target=None,
                       segments=jnp.arange(20)[None], key=jax.random.key(0), control="cubic")
    # every coalition enumerated: exact already, the control is not needed
    e = jx.kernel_shap(products, X, **kw, n_samples=300, control="cubic")
    np.testing.assert_allclose(e.values[0], _exact(products), atol=1e-5)
