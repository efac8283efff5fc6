"""The streaming engine, occlusion and RISE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import perturbation, testing


def _linear(seed=0, size=6, channels=2, k=2):
    w = jax.random.normal(jax.random.key(seed), (size, size, channels, k))
    return testing.linear_model(w), w


def _occlusion_reference(f, x, window, strides, baseline):
    """Brute force (NumPy loops), Captum's definition."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    cnt = np.zeros(x.shape[1:])
    fx = np.asarray(f(jnp.asarray(x)))
    win = tuple(window) + (x.shape[-1],) * (3 - len(window))
    st = tuple(strides) + (1,) * (3 - len(strides))
    for i in range(0, x.shape[1] - win[0] + 1, st[0]):
        for j in range(0, x.shape[2] - win[1] + 1, st[1]):
            for c in range(0, x.shape[3] - win[2] + 1, st[2]):
                z = x.copy()
                z[:, i:i + win[0], j:j + win[1], c:c + win[2]] = baseline
                drop = fx - np.asarray(f(jnp.asarray(z)))
                out[:, i:i + win[0], j:j + win[1], c:c + win[2]] += drop[:, None, None, None]
                cnt[i:i + win[0], j:j + win[1], c:c + win[2]] += 1
    return np.where(cnt > 0, out / np.maximum(cnt, 1), 0.0)


def test_occlusion_single_pixels_on_linear_model_is_w_times_x():
    m, w = _linear()
    x = testing.random_images(0, n=3, size=6, channels=2)
    e = jx.occlusion(m, x, target=1, window=1)
    np.testing.assert_allclose(e.values, np.broadcast_to((w[..., 1] * x).sum(-1, keepdims=True), x.shape),
                               atol=1e-5)
    per_channel = jx.occlusion(m, x, target=1, window=(1, 1, 1), baseline=0.25)
    np.testing.assert_allclose(per_channel.values, w[..., 1] * (x - 0.25), atol=1e-5)
    assert e.n_evals.tolist() == [37] * 3


@pytest.mark.parametrize("window,strides", [((3, 2), (2, 1)), ((2, 3, 1), (1, 2, 1)), ((4, 4), (3, 3))])
def test_occlusion_matches_brute_force(window, strides):
    f = lambda z: jnp.tanh(z.sum((1, 2, 3)) - 0.3 * z[:, 1, 2, 0] * z[:, 3, 3, 1])  # noqa: E731
    x = testing.random_images(1, n=2, size=6, channels=2)
    e = jx.occlusion(f, x, target=None, window=window, strides=strides, baseline=0.1, batch_size=5)
    np.testing.assert_allclose(e.values, _occlusion_reference(f, x, window, strides, 0.1), atol=1e-5)


def test_occlusion_errors():
    m, _ = _linear()
    x = testing.random_images(0, n=1, size=6, channels=2)
    with pytest.raises(ValueError, match="window"):
        jx.occlusion(m, x, target=0, window=7)
    with pytest.raises(TypeError, match="strides"):
        jx.occlusion(m, x, target=0, window=2, strides=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="baseline"):
        jx.occlusion(m, x, target=0, baseline="mean")


def test_rise_masks_and_reproducibility():
    masks = perturbation.rise_masks(jax.random.key(0), jnp.arange(2000), 12, 10, 0.3, 4)
    assert masks.shape == (2000, 12, 10)
    assert float(masks.min()) >= 0.0 and float(masks.max()) <= 1.0
    assert abs(float(masks.mean()) - 0.3) < 0.02
    f = lambda z: jnp.sin(z.sum((1, 2, 3)))  # noqa: E731
    x = testing.random_images(2, n=2, size=8, channels=1)
    key = jax.random.key(3)
    a = jx.rise(f, x, target=None, key=key, n_masks=64, batch_size=16)
    b = jx.rise(f, x, target=None, key=key, n_masks=64, batch_size=64)
    c = jx.rise(f, x, target=None, key=jax.random.key(4), n_masks=64)
    assert a.values.shape == (2, 8, 8) and a.n_evals.tolist() == [64, 64]
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.values, c.values)
    # the definition: sum_i f(b + M_i (x - b)) M_i / (n p), masks shared by examples
    m = perturbation.rise_masks(key, jnp.arange(64), 8, 8, 0.5, 7)
    fi = jax.vmap(lambda mi: f(x * mi[None, :, :, None]))(m)  # (64, N)
    np.testing.assert_allclose(a.values, jnp.einsum("in,ihw->nhw", fi, m) / 32.0, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="key"):
        jx.rise(f, x, target=None)
    with pytest.raises(ValueError, match="p"):
        jx.rise(f, x, target=None, key=key, p=0.0)


def test_stream_splits_units_larger_than_batch_and_merges_moments():
    # units of 5 evaluations with batch_size 2: sub-batches inside a unit.
    x = testing.random_images(0, n=3, size=2, channels=1)
    f = lambda z: z.sum((1, 2, 3))  # noqa: E731
    t = jx.as_target(None, jx.as_model(f), x)
    samples = np.random.default_rng(0).normal(size=(3, 7, 4)).astype(np.float32)

    def units_fn(ex, u):
        return jnp.broadcast_to(u[:, None, None].astype(jnp.float32), (u.shape[0], 5, 1)), None

    def inputs_fn(ex, aux):
        return x[ex] * aux[:, :, None, None]

    def reduce_fn(carry, c):
        moments, tot = carry
        moments = perturbation.merge_moments(moments, c.ex0, c.onehot, jnp.asarray(samples)[c.ex, c.unit])
        return moments, perturbation.add_local(tot, c.ex0, c.onehot.T @ c.values.sum(1))

    init = ((jnp.zeros(3), jnp.zeros((3, 4)), jnp.zeros((3, 4))), jnp.zeros(3))
    for bs in (2, 7, 100):
        (count, mean, m2), tot = perturbation.stream(jx.as_model(f), t, 3, 7, units_fn, inputs_fn, reduce_fn,
                                                     init, bs, unit_size=5)
        np.testing.assert_allclose(count, 7)
        np.testing.assert_allclose(mean, samples.mean(1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m2 / 6, samples.var(1, ddof=1), rtol=1e-4)
        np.testing.assert_allclose(tot, np.asarray(f(x)) * 5 * 21, rtol=1e-5)


@pytest.mark.parametrize("d", [1, 2, 7, 64, 128, 129, 300])
def test_ranks_from_bits_equal_a_stable_double_argsort(d):
    from jaxplain import perturbation as P

    b = jax.random.bits(jax.random.key(d), (40, d), jnp.uint32)
    b = b % jnp.uint32(3) if d > 2 else b  # many ties
    ref = jnp.argsort(jnp.argsort(b, axis=-1, stable=True), axis=-1, stable=True)
    got = P.ranks_from_bits(b)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(np.sort(np.asarray(got), axis=-1), np.tile(np.arange(d), (40, 1)))
