"""The bulk Gaussian noise generator behind SmoothGrad, ROAD, infidelity and sensitivity."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain._core.noise import gaussian, normal_from_words


def test_moments_and_tails_match_a_standard_normal():
    z = np.asarray(gaussian(jax.random.key(0), (400, 1000)), np.float64).ravel()
    n = z.size
    # Standard errors of the sample moments of N(0, 1): 1/sqrt(n), sqrt(2/n), sqrt(96/n).
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96 / n)
    assert abs((z**3).mean()) < 5 * math.sqrt(15 / n)
    # Tail mass beyond 2 and 3 sigma (two-sided) against the normal CDF.
    for c in (2.0, 3.0):
        p = math.erfc(c / math.sqrt(2))
        assert abs((np.abs(z) > c).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert np.isfinite(z).all()


def test_the_extreme_words_stay_finite_and_symmetric():
    # Words whose top 23 bits are all 0 / all 1 are the two ends: finite, +-the same value.
    words = jnp.array([0, 0x1FF, 0xFFFFFE00, 0xFFFFFFFF], jnp.uint32)
    z = np.asarray(normal_from_words(words))
    assert np.isfinite(z).all()
    assert z[0] == z[1] == -z[2] == -z[3] and z[3] > 5.0
    # The middle words straddle 0 symmetrically.
    mid = np.asarray(normal_from_words(jnp.array([0x7FFFFE00, 0x80000000], jnp.uint32)))
    assert mid[0] == -mid[1] and 0 < mid[1] < 1e-6


def test_neighbouring_values_and_keys_are_uncorrelated():
    z = np.asarray(gaussian(jax.random.key(1), (200_001,)))
    n = z.size - 1
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / math.sqrt(n)
    # The two halves come from the two words of one hash: they must not be correlated either.
    h = z[:100_000], z[100_000:200_000]
    assert abs(np.corrcoef(*h)[0, 1]) < 5 / math.sqrt(100_000)
    a = np.asarray(gaussian(jax.random.fold_in(jax.random.key(1), 1), (200_001,)))
    assert abs(np.corrcoef(a, z)[0, 1]) < 5 / math.sqrt(n)


def test_deterministic_jit_equals_eager_and_any_key_impl():
    key = jax.random.key(3)
    a = gaussian(key, (5, 7))
    np.testing.assert_array_equal(a, gaussian(key, (5, 7)))
    np.testing.assert_array_equal(a, jax.jit(gaussian, static_argnums=(1,))(key, (5, 7)))
    assert not np.array_equal(a, gaussian(jax.random.key(4), (5, 7)))
    # A raw uint32 key and other implementations work too.
    np.testing.assert_array_equal(a, gaussian(jax.random.key_data(key), (5, 7)))
    r = gaussian(jax.random.key(3, impl="rbg"), (5, 7))
    assert r.shape == (5, 7) and np.isfinite(r).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_and_odd_sizes(dtype):
    z = gaussian(jax.random.key(0), (3, 5, 7), dtype)
    assert z.dtype == dtype and z.shape == (3, 5, 7)
    np.testing.assert_array_equal(
        z, gaussian(jax.random.key(0), (3, 5, 7)).astype(dtype)
    )
