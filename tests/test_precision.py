"""Low-precision models: a bfloat16 Linen CNN keeps its axioms within derived bounds.

Sums over paths, samples and coalitions accumulate in float32 whatever the model's
dtype (`batching.accumulator`), and the regression statistics use explicit HIGHEST
matmul precision, so the only rounding left is the model's own.

Bounds (u = 2**-8, bfloat16's unit roundoff; the CNN has L = 4 rounded stages:
convolution, ReLU + pooling, dense, output):
- integrated gradients: |gap_bf16| <= |gap_f32| + L u (|f(x)| + |f(b)| + sum|attr|),
  where gap_f32 is the same weights' quadrature gap in float32: each output carries
  a relative error of at most L u, and so does every gradient summed into attr;
- KernelSHAP: efficiency is a constraint of the float32 solve, so its reported gap
  (against its own f(x), f(b)) is |gap| <= 1e-5 (|f(x) - f(b)| + sum|phi|) (float32
  round-off of a 4-feature solve); against f(x), f(b) evaluated separately (another
  batch layout, which XLA may round differently) add L u (|f(x)| + |f(b)|).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx

U, L = 2.0**-8, 4


class LowCNN(nn.Module):
    dtype: jnp.dtype = jnp.bfloat16

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), dtype=self.dtype, param_dtype=self.dtype)(x)
        x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
        return nn.Dense(3, dtype=self.dtype, param_dtype=self.dtype)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def models():
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    low = LowCNN()
    v16 = low.init(jax.random.key(0), x)
    v32 = jax.tree.map(lambda p: p.astype(jnp.float32), v16)
    return jx.from_linen(low, v16), jx.from_linen(LowCNN(jnp.float32), v32), x


@pytest.mark.parametrize("input_dtype", [np.float32, jnp.bfloat16])
def test_integrated_gradients_of_a_bfloat16_cnn_are_complete_within_bounds(models, input_dtype):
    m16, m32, x = models
    xs = jnp.asarray(x, input_dtype)
    e16 = jx.integrated_gradients(m16, xs, target=1, steps=64)
    e32 = jx.integrated_gradients(m32, x, target=1, steps=64)
    assert e16.values.dtype == jnp.float32  # summed in float32
    f = lambda m, z: np.asarray(m(z)[:, 1], np.float64)  # noqa: E731
    fx, fb = f(m16, xs), f(m16, jnp.zeros_like(xs))
    attr = np.abs(np.asarray(e16.values, np.float64)).reshape(len(x), -1).sum(1)
    bound = np.abs(np.asarray(e32.gap)) + L * U * (np.abs(fx) + np.abs(fb) + attr)
    gap = np.abs(np.asarray(e16.gap, np.float64))
    assert (gap <= bound).all(), (gap, bound)
    assert (bound < 0.1 * (np.abs(fx - fb) + attr)).all()  # the bound itself is informative
    assert np.abs(np.asarray(e16.values) - np.asarray(e32.values)).max() > 0  # it is bf16


def test_kernel_shap_of_a_bfloat16_cnn_is_efficient_to_float32_round_off(models):
    m16, _, x = models
    seg = jx.grid_segments(8, 8, 2)
    e = jx.kernel_shap(m16, jnp.asarray(x, jnp.bfloat16), target=1, segments=seg,
                       key=jax.random.key(0), n_samples=16)
    assert e.values.dtype == jnp.float32
    fx = np.asarray(m16(jnp.asarray(x, jnp.bfloat16))[:, 1], np.float64)
    fb = np.asarray(m16(jnp.zeros((4, 8, 8, 3), jnp.bfloat16))[:, 1], np.float64)
    phi = np.asarray(e.values, np.float64)
    bound = 1e-5 * (np.abs(fx - fb) + np.abs(phi).sum(1))
    assert (np.abs(np.asarray(e.gap)) <= bound + 1e-7).all()
    outside = bound + L * U * (np.abs(fx) + np.abs(fb))
    assert (np.abs(phi.sum(1) - (fx - fb)) <= outside).all()
