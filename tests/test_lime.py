"""LIME: recovery of linear models, agreement with a reference ridge fit, transformations."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing
from jaxplain._core import features

L = importlib.import_module("jaxplain.perturbation.lime")  # the module (jaxplain.lime is the function)


def _problem(seed=0, n=2, size=4, channels=2):
    w = jax.random.normal(jax.random.key(seed), (size, size, channels, 3))
    x = testing.random_images(seed, n=n, size=size, channels=channels)
    return testing.linear_model(w), w, x


def _per_feature(w, x, b, seg, k):
    seg = np.broadcast_to(np.asarray(seg), x.shape[:3])
    contrib = np.asarray((w[..., k] * (x - b)).sum(-1))
    d = seg.max() + 1
    return np.stack([np.bincount(s.ravel(), c.ravel(), minlength=d) for s, c in zip(seg, contrib)])


def _nonlinear(z):
    flat = z.reshape(z.shape[0], -1)
    return jnp.tanh(flat @ jnp.linspace(-1.0, 1.0, flat.shape[1])) + flat[:, 0] * flat[:, 5]


def test_wide_kernel_recovers_linear_weights():
    m, w, x = _problem()
    seg = jx.grid_segments(4, 4, 2)
    e = jx.lime(m, x, target=2, segments=seg, baseline=0.2, key=jax.random.key(0), n_samples=300,
                kernel_width=1e3, alpha=1e-6, batch_size=60)
    np.testing.assert_allclose(e.values, _per_feature(w, x, 0.2, seg, 2), atol=2e-4)
    np.testing.assert_allclose(e.score, 1.0, atol=1e-4)
    np.testing.assert_allclose(e.intercept, m(jnp.full_like(x, 0.2))[:, 2], atol=2e-4)
    # 2 x 299 rows in 10 chunks of 60: the last chunk repeats 2 rows of example 1, counted
    assert e.n_evals.tolist() == [300, 302]


def test_per_example_segments_with_different_feature_counts():
    m, w, x = _problem(1)
    seg = np.stack([jx.grid_segments(4, 4, 2), jx.grid_segments(4, 4, (1, 3))])  # d = 4 and 3
    e = jx.lime(m, x, target=0, segments=seg, key=jax.random.key(1), n_samples=300, kernel_width=1e3,
                alpha=1e-6)
    ref = _per_feature(w, x, 0.0, seg, 0)
    np.testing.assert_allclose(e.values[0], ref[0], atol=2e-4)
    np.testing.assert_allclose(e.values[1, :3], ref[1, :3], atol=2e-4)
    assert e.values[1, 3] == 0.0


def test_matches_weighted_ridge_on_the_same_samples():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    x = testing.random_images(2, n=1, size=4, channels=1)
    seg = jx.grid_segments(4, 4, (2, 3))
    key = jax.random.key(5)
    e = jx.lime(_nonlinear, x, target=None, segments=seg, key=key, n_samples=64, batch_size=10)
    z = np.asarray(L.lime_masks(key, jnp.arange(64), 6)).astype(float)
    assert z[0].all() and (z[1:].sum(1) < 6).all()
    y = np.asarray(_nonlinear(jx.apply_coalitions(jnp.repeat(x, 64, 0), 0.0, jnp.asarray(seg),
                                                  jnp.asarray(z, bool))))
    dist = pairwise_distances(z, z[:1], metric="cosine").ravel()
    wts = np.sqrt(np.exp(-(dist**2) / 0.25**2))
    np.testing.assert_allclose(L.kernel_weights(jnp.asarray(z), jnp.ones(6), 0.25, "cosine"), wts, rtol=1e-5)
    ham = pairwise_distances(z, z[:1], metric="hamming").ravel()
    np.testing.assert_allclose(L.kernel_weights(jnp.asarray(z), jnp.ones(6), 0.5, "hamming"),
                               np.sqrt(np.exp(-(ham**2) / 0.5**2)), rtol=1e-5)
    ridge = Ridge(alpha=1.0).fit(z, y, sample_weight=wts)
    np.testing.assert_allclose(e.values[0], ridge.coef_, atol=2e-4)
    np.testing.assert_allclose(e.intercept[0], ridge.intercept_, atol=2e-4)
    np.testing.assert_allclose(e.score[0], ridge.score(z, y, sample_weight=wts), atol=1e-3)


def test_reproducible_batch_independent_and_jit_equals_eager():
    x = testing.random_images(3, n=3, size=4, channels=1)
    seg = jx.grid_segments(4, 4, 2)
    kw = dict(target=None, segments=seg, n_samples=40, baseline="mean")
    a = jx.lime(_nonlinear, x, key=jax.random.key(0), batch_size=7, **kw)
    b = jx.lime(_nonlinear, x, key=jax.random.key(0), **kw)
    c = jx.lime(_nonlinear, x, key=jax.random.key(1), **kw)
    for fa, fb in zip(a._replace(n_evals=None), b._replace(n_evals=None)):  # n_evals counts
        if fa is not None:  # the rows each chunking repeats
            np.testing.assert_allclose(fa, fb, rtol=1e-4, atol=1e-5)
    assert not np.allclose(a.values, c.values)
    # an example gets the same values alone as in the batch
    alone = jx.lime(_nonlinear, x[1:2], key=jax.random.key(0), **kw)
    np.testing.assert_allclose(alone.values[0], b.values[1], rtol=1e-4, atol=1e-5)
    jitted = jax.jit(lambda xx: jx.lime(_nonlinear, xx, key=jax.random.key(0), **kw))(x)
    np.testing.assert_allclose(jitted.values, b.values, rtol=1e-4, atol=1e-5)


def test_flax_model_predicted_target_and_no_recompile():
    module = testing.tiny_cnn()
    x = testing.random_images(0, n=2, size=8)
    model = jx.from_linen(module, module.init(jax.random.key(0), x))
    seg = jx.grid_segments(8, 8, 2)
    kw = dict(target="predicted", segments=seg, key=jax.random.key(0), n_samples=32)
    first = jx.lime(model, x, **kw)
    assert first.values.shape == (2, 4) and np.isfinite(first.values).all()
    model2 = model.replace(jax.tree.map(lambda p: p * 1.1, model.params))
    x2 = x + 0.1
    with testing.count_compiles() as c:
        jx.lime(model2, x2, **kw).values.block_until_ready()
    assert c["n"] == 0


def test_memory_is_bounded_by_batch_size_not_n_samples():
    x = testing.random_images(0, n=1, size=4, channels=1)
    seg, d = features.check_segments(jx.grid_segments(4, 4, 2), x.shape)
    m = jx.as_model(_nonlinear)
    t = jx.as_target(None, m, x)
    sizes = {}
    # passes of 16 chunks of 256 (`stream`'s UNITS_CHUNKS): 2 and 25 of 4000 units
    for n in (8000, 100000):
        lowered = L._lime.lower(m, x, t, seg, jnp.zeros_like(x), jax.random.key(0), 0.25, 1.0, d=d, mode=None,
                                n_samples=n, distance="cosine", batch_size=256)
        sizes[n] = lowered.compile().memory_analysis().temp_size_in_bytes
    assert sizes[100000] <= sizes[8000] * 1.05 + 1024, sizes
    # and the 100 000-sample run itself
    e = jx.lime(_nonlinear, x, target=None, segments=seg[0], key=jax.random.key(0), n_samples=100000,
                batch_size=256)
    # 99 999 rows in 25 passes of 4000 (one row repeated), each 16 chunks of 250
    assert np.isfinite(e.values).all() and e.n_evals.tolist() == [100001]


def test_bad_inputs():
    x = testing.random_images(0, n=1, size=4, channels=1)
    seg = jx.grid_segments(4, 4, 2)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="key"):
        jx.lime(_nonlinear, x, target=None, segments=seg)
    with pytest.raises(ValueError, match="n_samples"):
        jx.lime(_nonlinear, x, target=None, segments=seg, key=key, n_samples=0)
    with pytest.raises(ValueError, match="segments.*gaps"):
        jx.lime(_nonlinear, x, target=None, segments=np.where(seg == 1, 5, seg), key=key)
    with pytest.raises(ValueError, match="segments"):
        jx.lime(_nonlinear, x, target=None, segments=seg[:3], key=key)
    with pytest.raises(TypeError, match="segments"):
        jx.lime(_nonlinear, x, target=None, segments=None, key=key)
    with pytest.raises(ValueError, match="distance"):
        jx.lime(_nonlinear, x, target=None, segments=seg, key=key, distance="l2")
    with pytest.raises(ValueError, match="kernel_width"):
        jx.lime(_nonlinear, x, target=None, segments=seg, key=key, kernel_width=0.0)
