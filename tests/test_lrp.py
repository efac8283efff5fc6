"""LRP: every rule against a NumPy float64 reference written from the textbook
formulas (explicit contributions `a_j w_jk`), LRP-0 = gradient x input on ReLU
CNNs, conservation, composites, models, jit and errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cnn_helpers import init_params, tiny_cnn, tiny_cnn_nnx

import jaxplain as jx
from jaxplain.gradients import relevance as R
from jaxplain import testing

TINY = 1e-12


# ---- the reference: one example, dense matrices, float64 --------------------------------------


def _stab(z, eps):
    return z + np.where(z >= 0, 1.0, -1.0) * max(eps, TINY)


def ref_layer(rule, a, W, b, r, low=None, high=None):
    """Relevance of the layer input `a` (d,) from that of its output `r` (k,), z = a @ W + b."""
    c = a[:, None] * W  # contributions a_j w_jk
    if isinstance(rule, R.Epsilon):
        return (c / _stab(c.sum(0) + b, rule.epsilon)) @ r
    if isinstance(rule, R.Gamma):
        cg = a[:, None] * (W + rule.gamma * np.maximum(W, 0))
        z = cg.sum(0) + b + (rule.gamma * np.maximum(b, 0) if rule.gamma_bias else 0)
        return (cg / _stab(z, rule.epsilon)) @ r
    if isinstance(rule, R.AlphaBeta):
        cp, cn = np.maximum(c, 0), np.minimum(c, 0)
        share = rule.alpha * cp / _stab(cp.sum(0), rule.epsilon) - rule.beta * cn / _stab(cn.sum(0), rule.epsilon)
        return share @ r
    assert isinstance(rule, R.ZBox)
    cb = c - low[:, None] * np.maximum(W, 0) - high[:, None] * np.minimum(W, 0)
    return (cb / _stab(cb.sum(0), rule.epsilon)) @ r


def ref_lrp(layers, x, rules, target, low=None, high=None):
    """`layers`: ("linear", W, b) | ("relu",) | ("tanh",) | ("avgpool", P) applied to a vector."""
    acts, a = [], np.asarray(x, np.float64)
    for op in layers:
        acts.append(a)
        if op[0] == "linear":
            a = a @ op[1] + op[2]
        elif op[0] == "avgpool":
            a = a @ op[1]
        else:
            a = np.maximum(a, 0) if op[0] == "relu" else np.tanh(a)
    r = np.zeros_like(a)
    r[target] = a[target]
    li = sum(op[0] == "linear" for op in layers)
    for op, a in zip(reversed(layers), reversed(acts)):
        if op[0] == "linear":
            li -= 1
            r = ref_layer(rules[li], a, op[1], op[2], r, low, high)
        elif op[0] == "avgpool":  # LRP-0
            r = ref_layer(R.Epsilon(0.0), a, op[1], np.zeros(op[1].shape[1]), r)
        # activations pass relevance through
    return r


# ---- a dense network --------------------------------------------------------------------------


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(6, 5), (5, 4), (4, 3)]
    ps = [(rng.normal(0, 0.7, s).astype(np.float32), rng.normal(0, 0.3, s[1]).astype(np.float32)) for s in shapes]

    def f(x):
        h = jax.nn.relu(x @ ps[0][0] + ps[0][1])
        h = jnp.tanh(h @ ps[1][0] + ps[1][1])
        return h @ ps[2][0] + ps[2][1]

    layers = [("linear", *map(np.float64, ps[0])), ("relu",), ("linear", *map(np.float64, ps[1])),
              ("tanh",), ("linear", *map(np.float64, ps[2]))]
    x = rng.uniform(-1, 1, (3, 6)).astype(np.float32)
    return f, layers, x


MLP_RULES = {
    "epsilon": [R.Epsilon(0.3)] * 3,
    "lrp0": [R.Epsilon(0.0)] * 3,
    "gamma": [R.Gamma(0.5), R.Gamma(0.25), R.Epsilon(0.1)],
    "gamma_keep_bias": [R.Gamma(0.5, gamma_bias=False), R.Gamma(0.25, gamma_bias=False), R.Epsilon(0.1)],
    "alpha_beta": [R.AlphaBeta(2.0, 1.0), R.ZPlus(), R.Epsilon(0.01)],
    "box": [R.ZBox(-1.0, 1.0), R.Gamma(0.25), R.Epsilon(0.0)],
}


@pytest.mark.parametrize("name", list(MLP_RULES))
def test_dense_rules_match_the_textbook_formulas(name):
    f, layers, x = _mlp()
    rules = MLP_RULES[name]
    e = jx.lrp(f, x, target=1, rule=rules)
    low, high = np.full(6, -1.0), np.full(6, 1.0)
    for i in range(x.shape[0]):
        want = ref_lrp(layers, x[i], rules, 1, low, high)
        np.testing.assert_allclose(e.values[i], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    out = np.asarray(f(x))[:, 1]
    np.testing.assert_allclose(e.gap, np.asarray(e.values).sum(1) - out, atol=1e-5)


def test_per_channel_box_bounds_and_a_function_of_the_layer():
    f, layers, x = _mlp(1)
    low = np.linspace(-1.5, -1.0, 6).astype(np.float32)
    high = np.linspace(1.0, 2.0, 6).astype(np.float32)
    rule = lambda layer: R.ZBox(low, high) if layer.index == 0 else R.Epsilon(0.2)
    e = jx.lrp(f, x, target=0, rule=rule)
    rules = [R.ZBox(low, high), R.Epsilon(0.2), R.Epsilon(0.2)]
    for i in range(x.shape[0]):
        want = ref_lrp(layers, x[i], rules, 0, low.astype(np.float64), high.astype(np.float64))
        np.testing.assert_allclose(e.values[i], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


# ---- a convolutional network, its layers as matrices --------------------------------------------


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3), padding="SAME", name="conv")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(4, name="head")(x.reshape(x.shape[0], -1))


def _conv_case():
    net = _ConvNet()
    x = np.asarray(testing.random_images(3, n=2, size=6, channels=2))
    variables = init_params(net, x[:1], seed=2, scale=0.5)
    p = jax.tree.map(np.float64, variables["params"])
    k, b = p["conv"]["kernel"], p["conv"]["bias"]
    conv = lambda v: jax.lax.conv_general_dilated(
        v.reshape(1, 6, 6, 2), jnp.asarray(k, jnp.float32), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC")).reshape(-1)
    wconv = np.asarray(jax.jacfwd(conv)(jnp.zeros(72)), np.float64).T  # (72, 108)
    pool = lambda v: nn.avg_pool(v.reshape(1, 6, 6, 3), (2, 2), (2, 2)).reshape(-1)
    wpool = np.asarray(jax.jacfwd(pool)(jnp.zeros(108)), np.float64).T  # (108, 27)
    layers = [("linear", wconv, np.tile(b, 36)), ("relu",), ("avgpool", wpool),
              ("linear", p["head"]["kernel"], p["head"]["bias"])]
    return jx.from_linen(net, variables), layers, x


@pytest.mark.parametrize("rules", [
    [R.Epsilon(0.0), R.Epsilon(0.0)],
    [R.Gamma(0.25), R.Epsilon(0.1)],
    [R.ZBox(0.0, 1.0), R.AlphaBeta(1.0, 0.0)],
    [R.AlphaBeta(2.0, 1.0), R.Gamma(1.0)],
], ids=["lrp0", "gamma", "box", "alpha_beta"])
def test_conv_rules_match_the_reference_on_the_layer_matrices(rules):
    model, layers, x = _conv_case()
    e = jx.lrp(model, x, target=2, rule=rules)
    for i in range(x.shape[0]):
        want = ref_lrp(layers, x[i].reshape(-1), rules, 2, np.zeros(72), np.ones(72))
        np.testing.assert_allclose(np.asarray(e.values[i]).reshape(-1), want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())


# ---- CNNs: LRP-0 is gradient x input; conservation ----------------------------------------------


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_lrp0_equals_gradient_times_input_on_relu_cnns(pool):
    x = testing.random_images(0, n=3, size=8)
    net, variables = tiny_cnn(x[:1], seed=1, pool=pool)
    model = jx.from_linen(net, variables)
    e = jx.lrp(model, x, target="predicted", rule=R.Epsilon(0.0))
    g = jx.gradient_x_input(model, x, target="predicted")
    np.testing.assert_allclose(e.values, g.values, atol=1e-5 * float(jnp.abs(g.values).max()))


@pytest.mark.parametrize("rule", [R.ZPlus(0.0), R.AlphaBeta(2.0, 1.0, 0.0), R.Gamma(0.5, 0.0),
                                  R.epsilon_gamma_box(0.0, 1.0, epsilon=0.0)],
                         ids=["zplus", "alpha_beta", "gamma", "gamma_box"])
def test_bias_free_cnn_conserves_relevance(rule):
    x = testing.random_images(1, n=3, size=8)
    net, variables = tiny_cnn(x[:1], seed=3, pool="max")
    variables = jax.tree.map(lambda v: v, variables)
    p = variables["params"]
    params = {k: dict(v, bias=jnp.zeros_like(v["bias"])) for k, v in p.items()}
    model = jx.from_linen(net, {"params": params})
    out = model(x)
    t = jnp.argmax(out, axis=1)
    e = jx.lrp(model, x, target=t, rule=rule)
    f = out[jnp.arange(3), t]
    np.testing.assert_allclose(e.values.reshape(3, -1).sum(1), f, rtol=1e-4)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-4 * float(jnp.abs(f).max()))


def test_epsilon_absorbs_relevance_as_it_grows():
    x = testing.random_images(1, n=3, size=8)
    net, variables = tiny_cnn(x[:1], seed=3)
    p = variables["params"]
    model = jx.from_linen(net, {"params": {k: dict(v, bias=jnp.zeros_like(v["bias"])) for k, v in p.items()}})
    totals = [float(jnp.abs(jx.lrp(model, x, target=0, rule=R.Epsilon(eps)).values).sum())
              for eps in (0.0, 0.1, 1.0)]
    assert totals[0] > totals[1] > totals[2] > 0


def test_composites_pick_rules_by_layer_kind():
    x = testing.random_images(2, n=2, size=8)
    net, variables = tiny_cnn(x[:1], seed=4)
    model = jx.from_linen(net, variables)
    found = R.layers(model, x)
    assert [(l.index, l.kind) for l in found] == [(0, "conv"), (1, "conv"), (2, "dense")]
    assert all(l.count == 3 for l in found)
    box = R.ZBox(0.0, 1.0)
    a = jx.lrp(model, x, target=1, rule=R.epsilon_gamma_box(0.0, 1.0, epsilon=0.3, gamma=0.2)).values
    b = jx.lrp(model, x, target=1, rule=[box, R.Gamma(0.2), R.Epsilon(0.3)]).values
    np.testing.assert_allclose(a, b, rtol=1e-6)
    c = jx.lrp(model, x, target=1, rule=R.epsilon_plus(epsilon=0.3)).values
    d = jx.lrp(model, x, target=1, rule=[R.ZPlus(), R.ZPlus(), R.Epsilon(0.3)]).values
    np.testing.assert_allclose(c, d, rtol=1e-6)
    assert not np.allclose(a, c)


def test_nnx_twin_jit_batch_size_and_no_recompile():
    x = testing.random_images(5, n=5, size=8)
    net, variables = tiny_cnn(x[:1], seed=5)
    linen = jx.from_linen(net, variables)
    nnx_model = tiny_cnn_nnx(variables)
    rule = R.epsilon_gamma_box(0.0, 1.0)
    ref = jx.lrp(linen, x, target=2, rule=rule).values
    np.testing.assert_allclose(jx.lrp(nnx_model, x, target=2, rule=rule).values, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jx.lrp(linen, x, target=2, rule=rule, batch_size=2).values, ref,
                               rtol=1e-5, atol=1e-7)
    jitted = jax.jit(lambda m, z: jx.lrp(m, z, target=2, rule=rule).values)
    np.testing.assert_allclose(jitted(linen, x), ref, rtol=1e-5, atol=1e-7)
    other = jx.from_linen(net, init_params(net, x[:1], seed=6))
    with testing.count_compiles() as c:
        jx.lrp(other, x, target=2, rule=rule).values.block_until_ready()
    assert c["n"] == 0


# ---- bad input ----------------------------------------------------------------------------------


def test_bad_rules_are_named():
    x = testing.random_images(0, n=2, size=8)
    net, variables = tiny_cnn(x[:1])
    model = jx.from_linen(net, variables)
    with pytest.raises(TypeError, match="rule"):
        jx.lrp(model, x, target=0, rule="epsilon")
    with pytest.raises(ValueError, match=r"rule: expected one rule per linear layer \(3"):
        jx.lrp(model, x, target=0, rule=[R.Epsilon()] * 2)
    with pytest.raises(TypeError, match=r"rule\[1\]"):
        jx.lrp(model, x, target=0, rule=[R.Epsilon(), 0.5, R.Epsilon()])
    with pytest.raises(ValueError, match="ZBox on the first layer only"):
        jx.lrp(model, x, target=0, rule=[R.Epsilon(), R.ZBox(), R.Epsilon()])
    with pytest.raises(ValueError, match="ZBox.low"):
        jx.lrp(model, x, target=0, rule=R.epsilon_gamma_box(np.zeros(5), 1.0))
    with pytest.raises(ValueError, match="Gamma.gamma"):
        R.Gamma(-1.0)
    with pytest.raises(ValueError, match="Epsilon.epsilon"):
        R.Epsilon(float("nan"))
    with pytest.raises(ValueError, match="model"):
        jx.lrp(lambda z: jnp.tanh(z).reshape(z.shape[0], -1), x, target=0)


# ---- relevance at a layer -------------------------------------------------------------------------


def test_layer_relevance_lrp0_is_layer_gradient_x_activation_and_input_site_is_the_input():
    x = testing.random_images(6, n=3, size=8)
    net, variables = tiny_cnn(x[:1], seed=7)
    model = jx.from_linen(net, variables)
    t = np.array([0, 1, 2])
    e = jx.lrp(model, x, target=t, rule=R.Epsilon(0.0), layer="conv1")
    ref = jx.layer_gradient_x_activation(model, x, target=t, layer="conv1").values
    assert e.values.shape == ref.shape == (3, 4, 4, 8)
    np.testing.assert_allclose(e.values, ref, atol=1e-5 * float(jnp.abs(ref).max()))
    rule = [R.AlphaBeta(), R.Gamma(0.3), R.Epsilon(0.2)]
    at_input = jx.lrp(model, x, target=t, rule=rule, layer="conv0", at="input")
    np.testing.assert_allclose(at_input.values, jx.lrp(model, x, target=t, rule=rule).values,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="ZBox on a layer at or above the probed"):
        jx.lrp(model, x, target=t, rule=R.epsilon_gamma_box(0.0, 1.0), layer="conv0", at="input")
    rule = R.epsilon_gamma_box(0.0, 1.0)  # the box layer lies below conv1: allowed
    nnx_model = tiny_cnn_nnx(variables)
    np.testing.assert_allclose(
        jx.lrp(nnx_model, x, target=t, rule=rule, layer="convs/1").values,
        jx.lrp(model, x, target=t, rule=rule, layer="conv1").values, rtol=1e-5, atol=1e-7)


def test_layer_relevance_is_conserved_above_the_layer():
    x = testing.random_images(7, n=2, size=8)
    net, variables = tiny_cnn(x[:1], seed=8)
    p = variables["params"]
    model = jx.from_linen(net, {"params": {k: dict(v, bias=jnp.zeros_like(v["bias"])) for k, v in p.items()}})
    e = jx.lrp(model, x, target=1, rule=R.ZPlus(0.0), layer="conv1")
    f = model(x)[:, 1]
    np.testing.assert_allclose(e.values.reshape(2, -1).sum(1), f, rtol=1e-4)
    with pytest.raises(ValueError, match="layer"):
        jx.lrp(model, x, target=1, layer="nope")


def test_layers_lists_dense_layers_of_a_plain_function_with_one_output():
    w = jnp.arange(6.0).reshape(3, 2)
    found = R.layers(lambda z: jnp.tanh(z @ w).sum(-1), np.ones((2, 3), np.float32))
    assert found == (R.Layer(0, 1, "dense"),)


@pytest.mark.parametrize(
    "b, bias, want",
    [
        # a = (1, 2), w = (2, -0.5): contributions +2 and -1; z = 1 + b; R = z
        (0.5, False, [3.0, -1.5]),  # 2 * 1.5 * 2/2, -(1 * 1.5 * -1/-1): conserves R = 1.5
        (0.5, True, [2.4, -1.5]),  # z+ = 2 + 0.5 absorbs a share: 2 * 1.5 * 2/2.5
        (-0.5, False, [1.0, -0.5]),  # R = 0.5: 2 * 0.5 * 2/2, -(0.5 * -1/-1)
        (-0.5, True, [1.0, -1.0 / 3.0]),  # z- = -1 - 0.5: -(0.5 * -1/-1.5)
    ],
)
def test_alpha_beta_bias_conventions_by_hand(b, bias, want):
    """`bias=False` keeps the bias out of the denominators (relevance conserved);
    `bias=True` adds max(b, 0) to z+ and min(b, 0) to z- (Zennit's and Captum's)."""
    w, bb = jnp.array([[2.0], [-0.5]]), jnp.array([b])
    out = jx.lrp(lambda z: z @ w + bb, jnp.array([[1.0, 2.0]]), target=0,
                 rule=R.AlphaBeta(2.0, 1.0, bias=bias))
    np.testing.assert_allclose(out.values[0], want, rtol=1e-5)
    zplus = jx.lrp(lambda z: z @ w + bb, jnp.array([[1.0, 2.0]]), target=0,
                   rule=R.ZPlus(bias=bias))
    share = 2.0 / (2.0 + max(b, 0.0)) if bias else 1.0  # z+ = 2 (+ the positive bias)
    np.testing.assert_allclose(zplus.values[0], [(1 + b) * share, 0.0], rtol=1e-5)
    with pytest.raises(TypeError, match="AlphaBeta.bias: expected True or False"):
        R.AlphaBeta(bias="yes")
