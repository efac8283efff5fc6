"""`neurons`: any method explains a hidden unit (Captum's neuron methods through one adapter)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing


def _setup(pool="max", seed=0):
    m = testing.tiny_cnn(n_classes=3, features=(4, 8), pool=pool)
    x = testing.random_images(seed, n=3, size=8)
    v = m.init(jax.random.key(seed), x[:1])
    return m, v, jx.from_linen(m, v), x


def test_outputs_are_the_flattened_activations_and_gradients_are_the_units():
    _, _, model, x = _setup()
    nm = jx.neurons(model, "conv1")
    act = jx.layer_activations(model, x, layer="conv1").values  # (3, 4, 4, 8)
    np.testing.assert_allclose(nm(x), act.reshape(3, -1))
    unit = np.ravel_multi_index((2, 1, 5), act.shape[1:])
    direct = jax.grad(lambda z: jnp.sum(jx.layer_activations(model, z, layer="conv1")
                                        .values[:, 2, 1, 5]))(x)
    np.testing.assert_allclose(jx.saliency(nm, x, target=unit, absolute=False).values, direct,
                               rtol=1e-5, atol=1e-7)
    at_input = jx.neurons(model, "head", at="input")  # the pooled features
    assert at_input(x).shape == (3, 8)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_completeness_holds_for_a_unit(pool):
    _, _, model, x = _setup(pool, seed=1)
    nm = jx.neurons(model, "conv1")
    b = 0.2 * testing.random_images(5, n=3, size=8)
    units = np.array([3, 40, 100])
    delta = nm(x)[jnp.arange(3), units] - nm(b)[jnp.arange(3), units]
    ig = jx.integrated_gradients(nm, x, target=units, baseline=b, steps=64)
    total = ig.values.reshape(3, -1).sum(1)
    np.testing.assert_allclose(ig.gap, total - delta, atol=1e-5)  # its gap is about this unit
    np.testing.assert_allclose(total, delta, atol=2e-3)  # up to quadrature through ReLU kinks
    dl = jx.deeplift(nm, x, target=units, baseline=b)  # the jaxpr interpreter reads through it
    np.testing.assert_allclose(dl.values.reshape(3, -1).sum(1), delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dl.gap, 0.0, atol=1e-5)


def test_guided_backprop_and_nnx_and_new_weights_without_recompiling():
    m, v, model, x = _setup()
    nm = jx.neurons(model, "conv1")
    nnx_model = jx.from_nnx(testing.tiny_cnn_nnx(v, n_classes=3, features=(4, 8), pool="max"))
    ref = jx.guided_backprop(nm, x, target=7).values
    np.testing.assert_allclose(jx.guided_backprop(jx.neurons(nnx_model, "convs/1"), x,
                                                  target=7).values, ref, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(ref).max()) > 0
    jitted = jax.jit(lambda mm, xx: jx.saliency(mm, xx, target=7).values)
    first = jitted(nm, x)
    np.testing.assert_allclose(first, jx.saliency(nm, x, target=7).values, atol=1e-7)
    other = jx.neurons(jx.from_linen(m, m.init(jax.random.key(9), x[:1])), "conv1")
    with testing.count_compiles() as c:
        second = jitted(other, x)
    assert c["n"] == 0 and float(jnp.abs(second - first).max()) > 1e-5


def test_errors():
    _, _, model, x = _setup()
    with pytest.raises(ValueError, match="layer: no layer named 'nope'"):
        jx.saliency(jx.neurons(model, "nope"), x, target=0)
    with pytest.raises(ValueError, match="at"):
        jx.neurons(model, "conv1", at="middle")
    with pytest.raises(TypeError, match="layer"):
        jx.neurons(model, 3.5)
    with pytest.raises(TypeError, match="model"):
        jx.neurons(lambda z: z, "conv1")
    with pytest.raises(ValueError, match=r"target: expected a class index in \[0, 128\)"):
        jx.saliency(jx.neurons(model, "conv1"), x, target=128)
