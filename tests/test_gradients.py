"""Gradient family: closed forms, axioms, transformations and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing
from jaxplain._core.noise import gaussian
from jaxplain._core.quadrature import RULES

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(4, 4, 2, 3)), jnp.float32)  # x: (N, 4, 4, 2), 3 classes
X = jnp.asarray(RNG.normal(size=(3, 4, 4, 2)), jnp.float32)
LIN = testing.linear_model(W, jnp.array([0.5, -1.0, 2.0]))


@pytest.fixture(scope="module")
def cnn():
    m = testing.tiny_cnn()
    x = testing.random_images(1, n=3)
    v = m.init(jax.random.key(0), x)
    return m, v, x


# ---- closed forms on a linear model ---------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_ig_linear_is_exact_for_every_rule(rule):
    b = jnp.asarray(RNG.normal(size=(4, 4, 2)), jnp.float32)
    e = jx.integrated_gradients(LIN, X, target=np.array([0, 2, 1]), baseline=b, steps=5, rule=rule)
    expected = W[..., [0, 2, 1]].transpose(3, 0, 1, 2) * (X - b)
    np.testing.assert_allclose(e.values, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-4)
    assert (np.asarray(e.n_evals) == 7).all()


def test_saliency_and_gradient_x_input_linear():
    s = jx.saliency(LIN, X, target=1)
    np.testing.assert_allclose(s.values, jnp.broadcast_to(W[..., 1], X.shape), rtol=1e-6)
    a = jx.saliency(LIN, X, target=1, absolute=True)
    np.testing.assert_allclose(a.values, jnp.abs(s.values))
    gi = jx.gradient_x_input(LIN, X, target=1)
    ig = jx.integrated_gradients(LIN, X, target=1, baseline=0.0, steps=3)
    np.testing.assert_allclose(gi.values, ig.values, rtol=1e-5, atol=1e-6)


def test_ig_per_example_baseline_and_broadcast_baseline():
    b = jnp.asarray(RNG.normal(size=X.shape), jnp.float32)
    e = jx.integrated_gradients(LIN, X, target=0, baseline=b, steps=2)
    np.testing.assert_allclose(e.values, W[..., 0] * (X - b), rtol=1e-5, atol=1e-5)
    c = jnp.array([0.1, -0.2], jnp.float32)  # per-channel baseline
    e = jx.integrated_gradients(LIN, X, target=0, baseline=c, steps=2)
    np.testing.assert_allclose(e.values, W[..., 0] * (X - c), rtol=1e-5, atol=1e-5)


def test_ig_quadratic_closed_form():
    # f(x) = sum(x^2): grad along the path is linear in alpha, so IG_i = x_i^2 - b_i^2 exactly
    quad = jx.from_callable(lambda z: jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=1))
    b = 0.5
    for rule in ("gauss_legendre", "riemann_middle", "riemann_trapezoid"):
        e = jx.integrated_gradients(quad, X, target=None, baseline=b, steps=3, rule=rule)
        np.testing.assert_allclose(e.values, X**2 - b**2, rtol=1e-4, atol=1e-5)


def test_completeness_gap_shrinks_and_gauss_legendre_wins(cnn):
    m, v, x = cnn
    # a smooth non-linear model (no ReLU kinks): tanh MLP on the flattened image
    rng = np.random.default_rng(0)  # its own draws: the result must not depend on test order
    w1 = jnp.asarray(rng.normal(size=(x[0].size, 16)) / 8, jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    smooth = jx.Model(lambda p, z: jnp.tanh(z.reshape(z.shape[0], -1) @ p[0] * 3) @ p[1], (w1, w2))
    gaps = {}
    for rule in ("gauss_legendre", "riemann_trapezoid"):
        for steps in (4, 16, 64):
            e = jx.integrated_gradients(smooth, x, target=0, steps=steps, rule=rule)
            gaps[rule, steps] = float(jnp.abs(e.gap).max())
    for rule in ("gauss_legendre", "riemann_trapezoid"):
        assert gaps[rule, 64] < gaps[rule, 4]
    # measured on seeds 0-3: GL/trapezoid gap 0.20-0.24 at 4 steps, below 0.003 at 16
    assert gaps["gauss_legendre", 4] < 0.5 * gaps["riemann_trapezoid", 4]
    assert gaps["gauss_legendre", 16] < 0.01 * gaps["riemann_trapezoid", 16]
    assert gaps["gauss_legendre", 16] < 1e-4


@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
def test_ig_independent_of_batch_size(cnn, batch_size):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    ref = jx.integrated_gradients(model, x, target="predicted", steps=10)
    e = jx.integrated_gradients(model, x, target="predicted", steps=10, batch_size=batch_size)
    np.testing.assert_allclose(e.values, ref.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(e.gap, ref.gap, atol=1e-5)


# ---- noise tunnels ----------------------------------------------------------------------


def test_smoothgrad_family_on_linear_model(key):
    sg = jx.smoothgrad(LIN, X, target=2, key=key, n_samples=8)
    np.testing.assert_allclose(sg.values, jnp.broadcast_to(W[..., 2], X.shape), rtol=1e-5)
    np.testing.assert_allclose(sg.stderr, 0.0, atol=1e-6)
    vg = jx.vargrad(LIN, X, target=2, key=key, n_samples=8)
    np.testing.assert_allclose(vg.values, 0.0, atol=1e-5)
    sq = jx.squaregrad(LIN, X, target=2, key=key, n_samples=8)
    np.testing.assert_allclose(sq.values, jnp.broadcast_to(W[..., 2] ** 2, X.shape), rtol=1e-5)


def test_smoothgrad_keys_and_zero_noise(cnn):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    a = jx.smoothgrad(model, x, target=1, key=jax.random.key(3), n_samples=6)
    b = jx.smoothgrad(model, x, target=1, key=jax.random.key(3), n_samples=6)
    c = jx.smoothgrad(model, x, target=1, key=jax.random.key(4), n_samples=6)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    d = jx.smoothgrad(model, x, target=1, key=jax.random.key(3), n_samples=6, batch_size=2)
    np.testing.assert_allclose(a.values, d.values, rtol=1e-5, atol=1e-7)
    z = jx.smoothgrad(model, x, target=1, key=jax.random.key(3), n_samples=3, noise_level=0.0)
    np.testing.assert_allclose(z.values, jx.saliency(model, x, target=1).values, rtol=1e-5, atol=1e-8)
    assert int(a.n_evals[0]) == 6


def test_smoothgrad_matches_a_direct_monte_carlo(cnn):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    key = jax.random.key(7)
    e = jx.smoothgrad(model, x, target=0, key=key, n_samples=4, noise_level=0.2)
    noise_key, _ = jax.random.split(key)
    flat = x.reshape(3, -1)
    sigma = (0.2 * (flat.max(1) - flat.min(1)))[:, None, None, None]
    grads = [
        jax.grad(lambda z: model(z)[:, 0].sum())(
            x + gaussian(jax.random.fold_in(noise_key, j), x.shape) * sigma)
        for j in range(4)
    ]
    np.testing.assert_allclose(e.values, np.mean(grads, 0), rtol=1e-4, atol=1e-7)


def test_smoothgrad_ig_zero_noise_equals_ig(cnn):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    nt = jx.noise_tunnel(model, x, method=jx.integrated_gradients, target=0, key=jax.random.key(0),
                         n_samples=2, noise_level=0.0, steps=8)
    ig = jx.integrated_gradients(model, x, target=0, steps=8)
    np.testing.assert_allclose(nt.values, ig.values, rtol=1e-5, atol=1e-7)
    assert int(nt.n_evals[0]) == 2 * 10


# ---- expected gradients -----------------------------------------------------------------


def test_expected_gradients_single_reference_is_ig(key):
    r = jnp.asarray(RNG.normal(size=(1, 4, 4, 2)), jnp.float32)
    e = jx.expected_gradients(LIN, X, target=1, references=r, key=key, n_samples=5)
    np.testing.assert_allclose(e.values, W[..., 1] * (X - r), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-4)


def test_expected_gradients_converges_to_mean_reference(key):
    refs = jnp.asarray(RNG.normal(size=(4, 4, 4, 2)), jnp.float32)
    e = jx.expected_gradients(LIN, X, target=0, references=refs, key=key, n_samples=2000, batch_size=500)
    np.testing.assert_allclose(e.values, W[..., 0] * (X - refs.mean(0)), atol=0.12)
    f = jx.expected_gradients(LIN, X, target=0, references=refs, key=key, n_samples=2000, batch_size=333)
    np.testing.assert_allclose(e.values, f.values, rtol=1e-4, atol=1e-5)


# ---- guided backprop / deconvnet ----------------------------------------------------------


def test_guided_backprop_and_deconvnet_closed_form():
    w = jnp.asarray(RNG.normal(size=(5, 6)), jnp.float32)
    vv = jnp.asarray(RNG.normal(size=(6, 2)), jnp.float32)
    net = jx.Model(lambda p, z: jax.nn.relu(z @ p[0]) @ p[1], (w, vv))
    x = jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32)
    gb = jx.guided_backprop(net, x, target=1).values
    pre = x @ w
    expected = ((pre > 0) * jnp.maximum(vv[:, 1], 0)) @ w.T
    np.testing.assert_allclose(gb, expected, rtol=1e-5, atol=1e-6)
    dc = jx.deconvnet(net, x, target=1).values
    np.testing.assert_allclose(dc, jnp.broadcast_to(jnp.maximum(vv[:, 1], 0) @ w.T, x.shape), rtol=1e-5)
    # the forward pass is unchanged
    np.testing.assert_allclose(jx.with_relu_rule(net, "guided")(x), net(x), rtol=1e-6)


def test_guided_backprop_linen_nnx_twins(cnn):
    m, v, x = cnn
    lin, nn_ = jx.from_linen(m, v), jx.from_nnx(testing.tiny_cnn_nnx(v))
    a = jx.guided_backprop(lin, x, target=2).values
    b = jx.guided_backprop(nn_, x, target=2).values
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    assert not np.allclose(a, jx.saliency(lin, x, target=2).values)


# ---- transformations: one table drives jit == eager, twins and compile-once ------------------

METHODS = {
    "saliency": lambda model, x, **kw: jx.saliency(model, x, target=1),
    "gradient_x_input": lambda model, x, **kw: jx.gradient_x_input(model, x, target=1),
    "integrated_gradients": lambda model, x, **kw: jx.integrated_gradients(model, x, target="predicted", steps=6),
    "smoothgrad": lambda model, x, **kw: jx.smoothgrad(model, x, target=1, key=jax.random.key(1), n_samples=3),
    "vargrad": lambda model, x, **kw: jx.vargrad(model, x, target=1, key=jax.random.key(1), n_samples=3),
    "expected_gradients": lambda model, x, **kw: jx.expected_gradients(
        model, x, target=0, references=x[::-1], key=jax.random.key(2), n_samples=4),
    "guided_backprop": lambda model, x, **kw: jx.guided_backprop(model, x, target=1),
    "deconvnet": lambda model, x, **kw: jx.deconvnet(model, x, target=1),
}


# Op by op (`jax.disable_jit`) costs 3-9 s of CPU per method; two methods cover both
# routes (one gradient; a chunked loop over steps), and the method table checks every
# method's call against `jax.jit` of it.
OP_BY_OP = {"saliency", "integrated_gradients"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_jit_equals_eager_and_twins_agree(cnn, name):
    m, v, x = cnn
    method = METHODS[name]
    model = jx.from_linen(m, v)
    ref = method(model, x).values
    if name in OP_BY_OP:
        with jax.disable_jit():
            eager = method(model, x).values
        np.testing.assert_allclose(eager, ref, rtol=2e-4, atol=1e-6)
    outer = jax.jit(lambda mod, z: method(mod, z).values)(model, x)
    np.testing.assert_allclose(outer, ref, rtol=1e-5, atol=1e-7)
    twin = method(jx.from_nnx(testing.tiny_cnn_nnx(v)), x).values
    np.testing.assert_allclose(twin, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_compiles_once_and_not_for_new_weights(cnn, name):
    m, v, x = cnn
    method = METHODS[name]
    method(jx.from_linen(m, v), x)  # warm
    v2 = jax.tree.map(lambda a: a * 1.5, v)
    with testing.count_compiles() as c:
        a = method(jx.from_linen(m, v), x).values
        b = method(jx.from_linen(m, v2), x).values
    assert c["n"] == 0, c
    assert not np.allclose(a, b)


# ---- bad input -----------------------------------------------------------------------------

BAD = [
    (dict(x=X[0, 0, 0]), ValueError, "x: expected a batch"),
    (dict(x=X[0]), ValueError, r"x: expected a batch .* add a batch axis with x\[None\]"),
    (dict(x=X.astype(jnp.int32)), TypeError, "x: expected a floating"),
    (dict(x=X.at[0, 0, 0, 0].set(jnp.nan)), ValueError, "x: expected finite"),
    (dict(target=3), ValueError, r"target: expected a class index in \[0, 3\)"),
    (dict(target=np.array([0, 1])), ValueError, "target: expected one class index per example"),
    (dict(baseline=jnp.zeros((3, 3))), ValueError, "baseline: expected a scalar"),
    (dict(baseline="zeros"), TypeError, "baseline"),
    (dict(steps=0), ValueError, r"steps: expected an int in \[1, "),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(rule="simpson"), ValueError, "rule: expected one of"),
    (dict(batch_size=0), ValueError, "batch_size"),
]


@pytest.mark.parametrize("kwargs, err, match", BAD)
def test_ig_bad_input_raises_before_compiling(kwargs, err, match):
    args = dict(x=X, target=0)
    args.update(kwargs)
    x = args.pop("x")
    with testing.count_compiles() as c:
        with pytest.raises(err, match=match):
            jx.integrated_gradients(LIN, x, **args)
    assert c["n"] == 0


def test_stochastic_methods_require_a_key():
    with pytest.raises(TypeError, match="key"):
        jx.smoothgrad(LIN, X, target=0, key=None)
    with pytest.raises(TypeError, match="key"):
        jx.expected_gradients(LIN, X, target=0, references=X, key="seed")
    with pytest.raises(ValueError, match="references"):
        jx.expected_gradients(LIN, X, target=0, references=X[:, :2], key=0)
    with pytest.raises(ValueError, match="kind"):
        jx.noise_tunnel(LIN, X, method=jx.saliency, target=0, key=0, kind="mean")
    with pytest.raises(ValueError, match="noise_level"):
        jx.smoothgrad(LIN, X, target=0, key=0, noise_level=-1.0)
