"""DeepLIFT and DeepLIFT-SHAP: closed forms, summation to delta, the pooling rule, invariances."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing


def _cnn(pool, seed=0):
    m = testing.tiny_cnn(n_classes=3, features=(4, 8), pool=pool)
    x = testing.random_images(0, n=3, size=8)
    return m, m.init(jax.random.key(seed), x[:1]), x


def test_linear_model_gives_w_times_x_minus_baseline():
    w = jax.random.normal(jax.random.key(0), (4, 4, 2, 3))
    m = testing.linear_model(w)
    x = testing.random_images(1, n=2, size=4, channels=2)
    b = testing.random_images(2, n=1, size=4, channels=2)[0]
    e = jx.deeplift(m, x, target=2, baseline=b)
    np.testing.assert_allclose(e.values, w[..., 2] * (x - b), atol=1e-5)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-5)
    refs = testing.random_images(3, n=5, size=4, channels=2)
    s = jx.deeplift_shap(m, x, target=2, references=refs)
    np.testing.assert_allclose(s.values, w[..., 2] * (x - refs.mean(0)), atol=1e-5)
    assert s.n_evals.tolist() == [10, 10]  # 5 (input, reference) pairs: 2 forwards each


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_first_layer_fast_path_gives_the_plain_convolution_s_values(pool, monkeypatch):
    """The 3-channel first convolution runs as `fast_model`'s patch product (both halves)
    with its matrix-product input gradient; the library convolution gives the same numbers."""
    from jaxplain.gradients import _deeplift_rules as _deeplift, deeplift as gradients

    monkeypatch.setenv("JAXPLAIN_CPU_REWRITES", "1")  # the fast path under test is a CPU rewrite
    m, v, x = _cnn(pool)
    model = jx.from_linen(m, v)
    b = 0.3 * testing.random_images(5, n=3, size=8)
    real, taken = _deeplift.tuned_eqn, []

    def spy(eqn, invals):
        out = real(eqn, invals)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(_deeplift, "tuned_eqn", spy)
    gradients._deeplift.clear_cache()  # trace anew, with the spy and then without the path
    fast = jx.deeplift(model, x, target=1, baseline=b)
    assert taken and all(taken)  # conv0 on both halves, in every trace of the pair
    monkeypatch.setattr(_deeplift, "tuned_eqn", lambda eqn, invals: None)
    gradients._deeplift.clear_cache()
    plain = jx.deeplift(model, x, target=1, baseline=b)
    gradients._deeplift.clear_cache()
    np.testing.assert_allclose(fast.values, plain.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.gap, plain.gap, atol=1e-6)


def test_single_relu_neuron_uses_the_secant_slope():
    w = jnp.array([0.5, -1.0, 2.0])
    f = lambda z: jax.nn.relu(z @ w - 0.2)[:, None]  # noqa: E731
    x = jnp.array([[1.0, 0.5, 0.4], [0.1, 0.9, 0.1]])  # pre-activations 0.6 and -0.85
    b = jnp.array([0.2, 0.3, -0.1])  # pre-activation -0.6: the unit is off at the baseline
    e = jx.deeplift(f, x, target=0, baseline=b)
    z, zb = x @ w - 0.2, b @ w - 0.2
    slope = (jax.nn.relu(z) - jax.nn.relu(zb)) / (z - zb)
    np.testing.assert_allclose(e.values, w * (x - b) * slope[:, None], atol=1e-6)
    # the gradient would be 0 for the second example (its unit is off) and 1 for the first
    assert float(slope[0]) == pytest.approx(0.6 / 1.2) and float(slope[1]) == 0.0


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_cnn_attributions_sum_to_the_change_of_the_output(pool):
    m, v, x = _cnn(pool)
    model = jx.from_linen(m, v)
    b = 0.3 * testing.random_images(4, n=3, size=8)
    e = jx.deeplift(model, x, target="predicted", baseline=b)
    out_x, out_b = model(x), model(b)
    t = jnp.argmax(out_x, -1)
    delta = out_x[jnp.arange(3), t] - out_b[jnp.arange(3), t]
    np.testing.assert_allclose(e.values.reshape(3, -1).sum(1), delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-5)
    # the NNX twin is read from its own jaxpr and gives the same numbers
    nnx_model = jx.from_nnx(testing.tiny_cnn_nnx(v, n_classes=3, features=(4, 8), pool=pool))
    np.testing.assert_allclose(jx.deeplift(nnx_model, x, target="predicted", baseline=b).values,
                               e.values, atol=1e-5)
    # and it is not the gradient: DeepLIFT differs from gradient x (x - b) on a ReLU network
    g = jx.saliency(model, x, target=t).values * (x - b)
    assert float(jnp.abs(g - e.values).max()) > 1e-3


def test_smooth_nonlinearities_and_gated_products_keep_summation_to_delta():
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    w1, w2 = jax.random.normal(k1, (6, 8)), jax.random.normal(k2, (8, 2))

    def mlp(z):
        h = jax.nn.silu(z @ w1) + jnp.tanh(z @ w1) * jax.nn.sigmoid(z @ w1) + jnp.exp(-(z @ w1) ** 2)
        return jax.nn.softplus(h) @ w2

    x = jax.random.normal(k3, (4, 6))
    e = jx.deeplift(mlp, x, target=1, baseline=0.5)
    delta = mlp(x)[:, 1] - mlp(jnp.full((1, 6), 0.5))[0, 1]
    np.testing.assert_allclose(e.values.sum(1), delta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ["leaky_relu", "elu", "gelu", "selu", "celu", "relu6", "hard_tanh"])
def test_jitted_activations_are_rescaled_as_one_function(act):
    """jax.nn's activations are jit calls built from `where` and friends: taken whole."""
    w1, w2 = jax.random.normal(jax.random.key(8), (5, 7)), jax.random.normal(jax.random.key(9), (7, 2))
    fn = getattr(jax.nn, act)
    f = lambda z: fn(3.0 * z @ w1) @ w2  # noqa: E731
    x = jax.random.normal(jax.random.key(10), (6, 5))
    e = jx.deeplift(f, x, target=0, baseline=-0.4)
    delta = f(x)[:, 0] - f(jnp.full((1, 5), -0.4))[0, 0]
    np.testing.assert_allclose(e.values.sum(1), delta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-4)


def test_max_pool_rule_routes_the_change_of_the_maximum():
    pool = lambda z: nn.max_pool(z, (2, 2), (2, 2)).reshape(z.shape[0], -1)  # noqa: E731
    x = jnp.array([[1.0, 3.0], [0.0, 2.0]]).reshape(1, 2, 2, 1)
    # the reference's maximum is smaller: all of 3 - 2 goes to the input's arg-max
    e = jx.deeplift(pool, x, target=0, baseline=jnp.array([[2.0, 0.0], [0.0, 0.0]])[..., None])
    np.testing.assert_allclose(e.values[0, ..., 0], [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    # the reference's maximum is larger: 3 - 5 goes to the reference's arg-max
    e = jx.deeplift(pool, x, target=0, baseline=jnp.array([[5.0, 0.0], [0.0, 0.0]])[..., None])
    np.testing.assert_allclose(e.values[0, ..., 0], [[-2.0, 0.0], [0.0, 0.0]], atol=1e-6)


def test_other_nonlinear_equations_keep_their_gradient_and_gap_reports_it():
    leaky = lambda z: jnp.where(z > 0, z, 0.1 * z).sum((1, 2, 3))[:, None]  # noqa: E731
    x = testing.random_images(6, n=2, size=4, channels=1) - 0.5
    e = jx.deeplift(leaky, x, target=0, baseline=0.3)
    grad = jnp.where(x > 0, 1.0, 0.1)
    np.testing.assert_allclose(e.values, grad * (x - 0.3), atol=1e-6)
    expected_gap = e.values.reshape(2, -1).sum(1) - (leaky(x)[:, 0] - leaky(jnp.full_like(x, 0.3))[:, 0])
    np.testing.assert_allclose(e.gap, expected_gap, atol=1e-5)
    assert float(jnp.abs(e.gap).max()) > 1e-3


def test_deeplift_shap_is_the_mean_of_deeplift_over_references():
    m, v, x = _cnn("max", seed=1)
    model = jx.from_linen(m, v)
    refs = 0.5 * testing.random_images(7, n=4, size=8)
    s = jx.deeplift_shap(model, x, target=1, references=refs, batch_size=5)
    each = [jx.deeplift(model, x, target=1, baseline=r).values for r in refs]
    np.testing.assert_allclose(s.values, np.mean(each, axis=0), atol=1e-5)
    np.testing.assert_allclose(s.gap, 0.0, atol=1e-5)


def test_batch_size_jit_and_new_weights():
    m, v, x = _cnn("max")
    model = jx.from_linen(m, v)
    ref = jx.deeplift(model, x, target="predicted", baseline=0.1)
    for bs in (1, 2, 1000):
        np.testing.assert_allclose(jx.deeplift(model, x, target="predicted", baseline=0.1,
                                               batch_size=bs).values, ref.values, atol=1e-6)
    jitted = jax.jit(lambda mm, xx: jx.deeplift(mm, xx, target="predicted", baseline=0.1).values)
    np.testing.assert_allclose(jitted(model, x), ref.values, atol=1e-6)
    with testing.count_compiles() as c:
        other = jx.from_linen(m, m.init(jax.random.key(9), x[:1]))
        out = jx.deeplift(other, x, target="predicted", baseline=0.1).values
    assert c["n"] == 0
    assert float(jnp.abs(out - ref.values).max()) > 1e-4


def test_errors():
    m, v, x = _cnn("avg")
    model = jx.from_linen(m, v)
    with pytest.raises(ValueError, match="references"):
        jx.deeplift_shap(model, x, target=0, references=x[:, :4])
    with pytest.raises(ValueError, match="baseline"):
        jx.deeplift(model, x, target=0, baseline=np.zeros((5, 8, 8, 3)))
    with pytest.raises(ValueError, match="target"):
        jx.deeplift(model, x, target=3)


# ---- attribution to a layer (Captum's LayerDeepLift) ------------------------------------------


def _above_conv0(params, pool):
    """The part of `testing.tiny_cnn` above conv0's output, in plain JAX."""

    def f(a):
        h = jax.nn.relu(a)
        h = nn.max_pool(h, (2, 2), (2, 2)) if pool == "max" else nn.avg_pool(h, (2, 2), (2, 2))
        k, b = params["conv1"]["kernel"], params["conv1"]["bias"]
        h = jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        h = jnp.mean(jax.nn.relu(h), axis=(1, 2))
        return h @ params["head"]["kernel"] + params["head"]["bias"]

    return f


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_layer_deeplift_is_deeplift_of_the_network_above_the_layer(pool):
    m, v, x = _cnn(pool, seed=2)
    model = jx.from_linen(m, v)
    b = 0.4 * testing.random_images(8, n=3, size=8)
    e = jx.deeplift(model, x, target=2, baseline=b, layer="conv0")
    act = lambda z: jx.layer_activations(model, z, layer="conv0").values  # noqa: E731
    above = _above_conv0(v["params"], pool)
    np.testing.assert_allclose(above(act(x)), model(x), rtol=1e-5, atol=1e-6)
    want = jx.deeplift(above, act(x), target=2, baseline=act(b))
    assert e.values.shape == (3, 8, 8, 4)
    np.testing.assert_allclose(e.values, want.values, atol=1e-5 * float(jnp.abs(want.values).max()))
    delta = model(x)[:, 2] - model(b)[:, 2]
    np.testing.assert_allclose(e.values.reshape(3, -1).sum(1), delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-5)


def test_layer_deeplift_closed_form_at_a_linear_head_and_the_input_site():
    m, v, x = _cnn("max", seed=3)
    model = jx.from_linen(m, v)
    b = 0.2 * testing.random_images(9, n=1, size=8)[0]
    t = np.array([0, 2, 1])
    e = jx.deeplift(model, x, target=t, baseline=b, layer="head", at="input")
    act = lambda z: jx.layer_activations(model, z, layer="head", at="input").values  # noqa: E731
    w = v["params"]["head"]["kernel"]
    np.testing.assert_allclose(e.values, w[:, t].T * (act(x) - act(b[None])), atol=1e-6)
    at_input = jx.deeplift(model, x, target=t, baseline=b, layer="conv0", at="input")
    np.testing.assert_allclose(at_input.values, jx.deeplift(model, x, target=t, baseline=b).values,
                               atol=1e-6)


def test_layer_deeplift_shap_nnx_jit_and_batch_size():
    m, v, x = _cnn("max", seed=4)
    model = jx.from_linen(m, v)
    refs = 0.5 * testing.random_images(10, n=3, size=8)
    s = jx.deeplift_shap(model, x, target=1, references=refs, layer="conv1", batch_size=4)
    each = [jx.deeplift(model, x, target=1, baseline=r, layer="conv1").values for r in refs]
    np.testing.assert_allclose(s.values, np.mean(each, axis=0), atol=1e-5)
    np.testing.assert_allclose(s.gap, 0.0, atol=1e-5)
    ref = jx.deeplift(model, x, target=1, baseline=0.1, layer="conv1")
    nnx_model = jx.from_nnx(testing.tiny_cnn_nnx(v, n_classes=3, features=(4, 8), pool="max"))
    np.testing.assert_allclose(
        jx.deeplift(nnx_model, x, target=1, baseline=0.1, layer="convs/1").values, ref.values,
        atol=1e-6)
    jitted = jax.jit(
        lambda xx: jx.deeplift(model, xx, target=1, baseline=0.1, layer="conv1").values)
    np.testing.assert_allclose(jitted(x), ref.values, atol=1e-6)
    for bs in (1, 2):
        np.testing.assert_allclose(
            jx.deeplift(model, x, target=1, baseline=0.1, layer="conv1", batch_size=bs).values,
            ref.values, atol=1e-6)


def test_layer_deeplift_errors():
    m, v, x = _cnn("avg")
    model = jx.from_linen(m, v)
    with pytest.raises(ValueError, match="layer"):
        jx.deeplift(model, x, target=0, layer="nope")
    with pytest.raises(ValueError, match="at"):
        jx.deeplift(model, x, target=0, layer="conv0", at="middle")
    with pytest.raises(ValueError, match="at"):
        jx.deeplift(model, x, target=0, at="middle")
    with pytest.raises(ValueError, match="layer"):
        jx.deeplift_shap(model, x, target=0, references=x, layer="nope")
    with pytest.raises((ValueError, TypeError), match="model"):
        jx.deeplift(lambda z: z.sum((1, 2)), x, target=0, layer="conv0")
