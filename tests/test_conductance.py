"""Layer conductance and internal influence: closed forms, a float64 path integral, IG sums."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing


class Curved(nn.Module):
    """x -> y = lower(tanh(x)) (probed) -> head(tanh(y)) ** 2: nonlinear below and above, and
    the units interact above (with a separable head every path would give the same shares)."""

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(4, name="lower")(jnp.tanh(x))
        return nn.Dense(2, name="head")(jnp.tanh(y)) ** 2


def _curved():
    net = Curved()
    x = jax.random.normal(jax.random.key(0), (3, 5))
    v = net.init(jax.random.key(1), x)
    return jx.from_linen(net, v), v["params"], x


def _reference(params, x, b, t, conduct, nodes=20000):
    """The path integral in float64 with analytic derivatives (midpoint rule)."""
    W, c = (np.float64(params["lower"][k]) for k in ("kernel", "bias"))
    u = np.float64(params["head"]["kernel"])[:, t]
    c_head = np.float64(params["head"]["bias"])[t]
    x, b = np.float64(x), np.float64(b)
    a = (np.arange(nodes) + 0.5) / nodes
    z = b + a[:, None] * (x - b)  # (nodes, d)
    y = np.tanh(z) @ W + c
    s = np.tanh(y) @ u + c_head  # F = s ** 2
    g = 2 * s[:, None] * u * (1 - np.tanh(y) ** 2)  # dF/dy
    if not conduct:
        return g.mean(0)
    dy = ((1 - np.tanh(z) ** 2) * (x - b)) @ W  # dy/da
    return (g * dy).mean(0)


@pytest.mark.parametrize("conduct", [True, False])
def test_against_a_float64_path_integral_on_a_curved_path(conduct):
    model, params, x = _curved()
    b = 0.5 * jnp.ones(5)
    fn = jx.layer_conductance if conduct else jx.internal_influence
    e = fn(model, x, target=1, layer="lower", baseline=b, steps=64)
    for i in range(3):
        want = _reference(params, np.asarray(x[i]), np.asarray(b), 1, conduct)
        np.testing.assert_allclose(e.values[i], want, rtol=2e-4, atol=1e-6)
    if conduct:  # the units' conductances sum to F(x) - F(b): every path crosses `lower`
        delta = model(x)[:, 1] - model(jnp.broadcast_to(b, x.shape))[:, 1]
        np.testing.assert_allclose(e.values.sum(1), delta, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(e.gap, 0.0, atol=1e-5)
        # not layer integrated gradients: that path is straight in y-space, this one is curved
        lig = jx.layer_integrated_gradients(model, x, target=1, layer="lower", baseline=b)
        assert float(jnp.abs(lig.values - e.values).max()) > 1e-3


class Quad(nn.Module):
    """x -> y = lin(x) (probed) -> sum_j c_j y_j ** 2, with c = QUAD_COEF."""

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3, name="lin")(x)
        return jnp.sum(QUAD_COEF * y ** 2, axis=-1, keepdims=True)


QUAD_COEF = jnp.array([1.0, -2.0, 0.5])


def _quad():
    """`(model, kernel, x, b, y(x), y(b))` of a `Quad` on 2 inputs of 4 features."""
    net = Quad()
    x = jax.random.normal(jax.random.key(2), (2, 4))
    v = net.init(jax.random.key(3), x)
    b = jax.random.normal(jax.random.key(4), (4,))
    W, beta = v["params"]["lin"]["kernel"], v["params"]["lin"]["bias"]
    return jx.from_linen(net, v), W, x, b, x @ W + beta, b[None] @ W + beta


def test_closed_form_for_a_quadratic_head_on_a_linear_layer():
    model, _, x, b, yx, yb = _quad()
    coef = QUAD_COEF
    for rule, steps in (("gauss_legendre", 2), ("riemann_trapezoid", 3)):  # exact for linear g
        e = jx.layer_conductance(model, x, target=0, layer="lin", baseline=b, steps=steps,
                                 rule=rule)
        np.testing.assert_allclose(e.values, coef * (yx ** 2 - yb ** 2), rtol=1e-5, atol=1e-5)
        i = jx.internal_influence(model, x, target=0, layer="lin", baseline=b, steps=steps,
                                  rule=rule)
        np.testing.assert_allclose(i.values, coef * (yx + yb), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_conductance_sums_to_integrated_gradients_node_by_node(pool):
    m = testing.tiny_cnn(n_classes=3, features=(4, 8), pool=pool)
    x = testing.random_images(0, n=3, size=8)
    v = m.init(jax.random.key(5), x[:1])
    model = jx.from_linen(m, v)
    b = 0.3 * testing.random_images(4, n=3, size=8)
    ig = jx.integrated_gradients(model, x, target="predicted", baseline=b, steps=12)
    for layer, at in (("conv0", "output"), ("conv1", "output"), ("head", "input")):
        e = jx.layer_conductance(model, x, target="predicted", baseline=b, layer=layer, at=at,
                                 steps=12)
        np.testing.assert_allclose(e.values.reshape(3, -1).sum(1), ig.values.reshape(3, -1).sum(1),
                                   rtol=1e-5, atol=1e-6)
    at_input = jx.layer_conductance(model, x, target="predicted", baseline=b, layer="conv0",
                                    at="input", steps=12)
    np.testing.assert_allclose(at_input.values, ig.values, atol=1e-6)  # the input's own share


def test_nnx_jit_batch_size_and_n_evals():
    m = testing.tiny_cnn(n_classes=3, features=(4, 8), pool="max")
    x = testing.random_images(1, n=3, size=8)
    v = m.init(jax.random.key(6), x[:1])
    model = jx.from_linen(m, v)
    nnx_model = jx.from_nnx(testing.tiny_cnn_nnx(v, n_classes=3, features=(4, 8), pool="max"))
    for fn in (jx.layer_conductance, jx.internal_influence):
        ref = fn(model, x, target=2, layer="conv1", steps=8)
        np.testing.assert_allclose(fn(nnx_model, x, target=2, layer="convs/1", steps=8).values,
                                   ref.values, atol=1e-6)
        jitted = jax.jit(lambda xx, fn=fn: fn(model, xx, target=2, layer="conv1", steps=8).values)
        np.testing.assert_allclose(jitted(x), ref.values, atol=1e-6)
        for bs in (1, 5, 1000):
            np.testing.assert_allclose(
                fn(model, x, target=2, layer="conv1", steps=8, batch_size=bs).values,
                ref.values, atol=1e-6)
    e = jx.layer_conductance(model, x, target=2, layer="conv1", steps=8)
    assert e.n_evals.tolist() == [10] * 3  # 8 nodes, x and the baseline
    i = jx.internal_influence(model, x, target=2, layer="conv1", steps=8)
    assert i.n_evals.tolist() == [8] * 3  # the nodes only
    i = jx.internal_influence(model, x, target="predicted", layer="conv1", steps=8)
    assert i.n_evals.tolist() == [9] * 3  # and a forward at x for the prediction


def test_errors():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(2, n=2, size=8)
    model = jx.from_linen(m, m.init(jax.random.key(0), x[:1]))
    for fn in (jx.layer_conductance, jx.internal_influence):
        with pytest.raises(ValueError, match="layer"):
            fn(model, x, target=0, layer="nope")
        with pytest.raises(ValueError, match="steps"):
            fn(model, x, target=0, layer="conv0", steps=0)
        with pytest.raises(ValueError, match="rule"):
            fn(model, x, target=0, layer="conv0", rule="simpson")
        with pytest.raises(ValueError, match="baseline"):
            fn(model, x, target=0, layer="conv0", baseline=np.zeros((3, 8, 8, 3)))
        with pytest.raises(ValueError, match="target"):
            fn(model, x, target=7, layer="conv0")
        with pytest.raises(ValueError, match="at"):
            fn(model, x, target=0, layer="conv0", at="middle")


# ---- neuron conductance ---------------------------------------------------------------------


def test_neuron_conductance_against_a_float64_path_integral_and_per_example_units():
    model, params, x = _curved()
    b = 0.5 * jnp.ones(5)
    W = np.float64(params["lower"]["kernel"])
    units = np.array([2, 0, 3])
    e = jx.neuron_conductance(model, x, target=1, layer="lower", neuron=units, baseline=b,
                              steps=64)
    assert e.values.shape == x.shape
    nodes = 20000
    for i, k in enumerate(units):
        xi, bi = np.float64(x[i]), np.float64(b)
        a = (np.arange(nodes) + 0.5) / nodes
        z = bi + a[:, None] * (xi - bi)
        # dF/dy_k along the path, from the layer-conductance reference's integrand
        u = np.float64(params["head"]["kernel"])[:, 1]
        y = np.tanh(z) @ W + np.float64(params["lower"]["bias"])
        s = np.tanh(y) @ u + np.float64(params["head"]["bias"])[1]
        g_k = 2 * s * u[k] * (1 - np.tanh(y[:, k]) ** 2)
        dyk_dz = (1 - np.tanh(z) ** 2) * W[:, k]  # (nodes, d)
        want = (xi - bi) * (g_k[:, None] * dyk_dz).mean(0)
        np.testing.assert_allclose(e.values[i], want, rtol=2e-4, atol=1e-6)
    # summed over the inputs: the unit's layer conductance
    lc = jx.layer_conductance(model, x, target=1, layer="lower", baseline=b, steps=64)
    np.testing.assert_allclose(e.values.sum(1), lc.values[np.arange(3), units], rtol=1e-5,
                               atol=1e-7)


def test_neuron_conductance_closed_form_for_a_quadratic_head_on_a_linear_layer():
    model, W, x, b, yx, yb = _quad()
    for k in range(3):  # (x - b)_i W_ik c_k (y_k(x) + y_k(b)); 2 Gauss nodes are exact
        e = jx.neuron_conductance(model, x, target=0, layer="lin", neuron=k, baseline=b, steps=2)
        want = (x - b) * W[:, k] * (QUAD_COEF[k] * (yx[:, k] + yb[0, k]))[:, None]
        np.testing.assert_allclose(e.values, want, rtol=1e-5, atol=1e-5)


def test_neuron_conductance_on_a_cnn_jit_batch_size_and_index_forms():
    m = testing.tiny_cnn(n_classes=3, features=(4, 8), pool="max")
    x = testing.random_images(1, n=3, size=8)
    v = m.init(jax.random.key(6), x[:1])
    model = jx.from_linen(m, v)
    b = 0.3 * testing.random_images(4, n=3, size=8)
    shape = jx.layer_activations(model, x[:1], layer="conv1").values.shape[1:]
    where = (1, 2, 5)
    flat = int(np.ravel_multi_index(where, shape))
    kw = dict(target="predicted", layer="conv1", baseline=b, steps=8)
    ref = jx.neuron_conductance(model, x, neuron=where, **kw)
    np.testing.assert_allclose(jx.neuron_conductance(model, x, neuron=flat, **kw).values,
                               ref.values, atol=1e-7)
    lc = jx.layer_conductance(model, x, **kw)
    np.testing.assert_allclose(ref.values.reshape(3, -1).sum(1), lc.values[:, 1, 2, 5],
                               rtol=1e-5, atol=1e-6)
    jitted = jax.jit(lambda xx: jx.neuron_conductance(model, xx, neuron=flat, **kw).values)
    np.testing.assert_allclose(jitted(x), ref.values, atol=1e-6)
    for bs in (1, 5, 1000):
        np.testing.assert_allclose(
            jx.neuron_conductance(model, x, neuron=flat, batch_size=bs, **kw).values,
            ref.values, atol=1e-6)
    assert ref.n_evals.tolist() == [9] * 3  # 8 nodes and a forward at x for the prediction


def test_neuron_conductance_errors():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(2, n=2, size=8)
    model = jx.from_linen(m, m.init(jax.random.key(0), x[:1]))
    units = int(np.prod(jx.layer_activations(model, x[:1], layer="conv0").values.shape[1:]))
    for bad, cls in ((units, ValueError), (-1, ValueError), (1.5, TypeError), ("0", TypeError),
                     (True, TypeError), ((0, 0), ValueError), ((0, 0, 99), ValueError),
                     (np.array([0, 1, 2]), ValueError), (None, TypeError)):
        with pytest.raises(cls, match="neuron"):
            jx.neuron_conductance(model, x, target=0, layer="conv0", neuron=bad)
