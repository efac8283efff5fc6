"""Layer access: `Model.layer_names` and `Model.probe` for Linen and NNX models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain._core import layers as _layers
from jaxplain import testing

import _cnn_helpers as H


@pytest.fixture(scope="module")
def twins():
    m = testing.tiny_cnn()
    x = testing.random_images(0, n=2)
    v = H.init_params(m, x, 0)
    return jx.from_linen(m, v), jx.from_nnx(H.tiny_cnn_nnx(v)), v, x


class Block(nn.Module):
    features: int = 3

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Conv(self.features, (3, 3), name="conv")(x))


class Features(nn.Module):
    def setup(self):
        self.block1 = Block(4)
        self.block3 = Block(5)

    def __call__(self, x):
        return self.block3(self.block1(x))


class Nested(nn.Module):
    @nn.compact
    def __call__(self, x):
        f = Features(name="features")(x)
        return nn.Dense(2, name="head")(jnp.mean(f, axis=(1, 2)))


class NestedNNX(nnx.Module):
    def __init__(self, rngs):
        self.blocks = nnx.List(
            [nnx.Conv(3, 4, (3, 3), rngs=rngs), nnx.Conv(4, 5, (3, 3), rngs=rngs)])
        self.head = nnx.Linear(5, 2, rngs=rngs)

    def __call__(self, x):
        for b in self.blocks:
            x = jnp.tanh(b(x))
        return self.head(jnp.mean(x, axis=(1, 2)))


def test_layer_names(twins):
    lin, nx, _, _ = twins
    assert lin.layer_names() == ["conv0", "conv1", "head"]
    assert nx.layer_names() == ["convs/0", "convs/1", "head"]
    x = testing.random_images(1, n=1)
    nested = jx.from_linen(Nested(), H.init_params(Nested(), x, 0))
    assert nested.layer_names() == [
        "features", "features/block1", "features/block1/conv", "features/block3",
        "features/block3/conv", "head",
    ]


def test_activations_equal_subnetwork_linen_and_nnx(twins):
    lin, nx, v, x = twins
    p = v["params"]
    a0 = nn.Conv(4, (3, 3)).apply({"params": p["conv0"]}, x)
    h = nn.avg_pool(nn.relu(a0), (2, 2), (2, 2))
    a1 = nn.Conv(8, (3, 3)).apply({"params": p["conv1"]}, h)
    logits = nn.Dense(3).apply({"params": p["head"]}, jnp.mean(nn.relu(a1), axis=(1, 2)))
    cases = ((lin, ("conv0", "conv1", "head")), (nx, ("convs/0", ("convs", 1), "head")))
    for model, names in cases:
        for name, ref in zip(names, (a0, a1, logits)):
            out, act = model.probe(x, name)
            np.testing.assert_allclose(act, ref, atol=1e-5)
            np.testing.assert_allclose(out, logits, atol=1e-5)


def test_nested_paths_and_tuple_names():
    x = testing.random_images(1, n=2)
    net = Nested()
    v = H.init_params(net, x, 0)
    model = jx.from_linen(net, v)
    p = v["params"]["features"]
    b1 = Block(4).apply({"params": p["block1"]}, x)
    b3 = Block(5).apply({"params": p["block3"]}, b1)
    _, a = model.probe(x, "features/block3")
    np.testing.assert_allclose(a, b3, atol=1e-6)
    _, a = model.probe(x, ("features", "block1"))
    np.testing.assert_allclose(a, b1, atol=1e-6)
    _, a = model.probe(x, "features/block3/conv")  # pre-tanh conv output
    np.testing.assert_allclose(jnp.tanh(a), b3, atol=1e-6)


def test_delta_is_added_to_the_layer_output(twins):
    lin, nx, _, x = twins
    for model in (lin, nx):
        out, logits = model.probe(x, "head")
        d = jnp.arange(6.0).reshape(2, 3)
        out2, act2 = model.probe(x, "head", d)
        np.testing.assert_allclose(act2, logits, atol=1e-6)  # activation before delta
        np.testing.assert_allclose(out2, out + d, atol=1e-5)


def _fd_check(model, x, layer, cls):
    _, act = model.probe(x, layer)

    @jax.jit
    def f(d):
        return jnp.sum(model.probe(x, layer, d)[0][:, cls])

    g = jax.jit(jax.grad(f))(jnp.zeros_like(act))
    v = jax.random.normal(jax.random.key(3), act.shape)
    eps = 1e-2
    fd = (f(eps * v) - f(-eps * v)) / (2 * eps)
    np.testing.assert_allclose(fd, jnp.vdot(g, v), rtol=2e-3, atol=1e-5)
    assert float(jnp.abs(g).max()) > 0


def test_layer_gradients_match_finite_differences():
    x = testing.random_images(2, n=2)
    net = Nested()
    _fd_check(jx.from_linen(net, H.init_params(net, x, 1)), x, "features/block1", 1)
    _fd_check(jx.from_nnx(H.random_nnx(lambda: NestedNNX(nnx.Rngs(0)))), x, "blocks/0", 0)
    _fd_check(jx.from_nnx(H.random_nnx(lambda: NestedNNX(nnx.Rngs(0)))), x, ("blocks", 1), 1)


def test_jit_probe_no_recompile_and_module_untouched(twins):
    lin, nx, v, x = twins
    f = jax.jit(lambda m, x: m.probe(x, ("convs", "1"))[1])
    nx2 = jx.from_nnx(H.tiny_cnn_nnx(jax.tree.map(lambda a: 2 * a, v)))
    f(nx, x)
    with testing.count_compiles() as c:
        a, b = f(nx, x), f(nx2, x)
    assert c["n"] == 0
    assert not np.allclose(a, b)
    module = H.tiny_cnn_nnx(v)
    cls = type(module.convs[1])
    jx.from_nnx(module).probe(x, "convs/1")
    assert type(module.convs[1]) is cls
    np.testing.assert_allclose(jx.from_nnx(module)(x), lin(x), atol=1e-5)


def test_wrong_layer_names_list_available(twins):
    lin, nx, _, x = twins
    with pytest.raises(ValueError, match=r"no layer named 'conv9'.*'conv0', 'conv1', 'head'"):
        lin.probe(x, "conv9")
    with pytest.raises(ValueError, match=r"'convs/0', 'convs/1', 'head'"):
        nx.probe(x, "convs/2")
    with pytest.raises(ValueError, match="available layers"):
        _layers.activation_shape(lin, x, "features")
    with pytest.raises(TypeError, match="layer"):
        lin.probe(x, 3)
    with pytest.raises(ValueError, match="layer"):
        lin.probe(x, "")
    with pytest.raises(TypeError, match="Linen or NNX"):
        jx.as_model(lambda z: z.sum(axis=(1, 2, 3))).probe(x, "conv0")


def test_shared_layer_called_twice_is_an_error():
    class Shared(nn.Module):
        @nn.compact
        def __call__(self, x):
            d = nn.Dense(3, name="d")
            return d(d(x))

    x = jnp.ones((2, 3))
    model = jx.from_linen(Shared(), H.init_params(Shared(), x, 0))
    with pytest.raises(ValueError, match="called 2 times"):
        model.probe(x, "d")


# ---- probes at a layer's input (at="input") --------------------------------------------------


class BlockNNX(nnx.Module):
    def __init__(self, cin, cout, rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.conv(x))


class ChainNNX(nnx.Module):
    """Blocks consumed directly: the input of blocks/1 is the output of blocks/0."""

    def __init__(self, rngs):
        self.blocks = nnx.List([BlockNNX(3, 4, rngs), BlockNNX(4, 5, rngs)])
        self.head = nnx.Linear(5, 2, rngs=rngs)

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


def _input_probe(model, x, layer, delta=None):
    return _layers.probe(model, x, layer, delta, at="input")


def test_input_of_a_layer_is_the_output_of_the_layer_feeding_it():
    x = testing.random_images(1, n=2)
    lin = jx.from_linen(Nested(), H.init_params(Nested(), x, 0))
    nx = jx.from_nnx(H.random_nnx(lambda: ChainNNX(nnx.Rngs(0))))
    for model, prev, layers, first in (
        (lin, "features/block1", ("features/block3", ("features", "block3", "conv")), "features"),
        (nx, "blocks/0", ("blocks/1", "blocks/1/conv"), "blocks/0"),
    ):
        out, a_prev = model.probe(x, prev)
        for layer in layers:
            out_in, a_in = _input_probe(model, x, layer)
            np.testing.assert_array_equal(a_in, a_prev)
            np.testing.assert_array_equal(out_in, out)  # probing does not change the outputs
        np.testing.assert_array_equal(_input_probe(model, x, first)[1], x)


def test_input_activations_equal_subnetwork_linen_and_nnx(twins):
    lin, nx, v, x = twins
    p = v["params"]
    a0 = nn.Conv(4, (3, 3)).apply({"params": p["conv0"]}, x)
    h = nn.avg_pool(nn.relu(a0), (2, 2), (2, 2))
    a1 = nn.Conv(8, (3, 3)).apply({"params": p["conv1"]}, h)
    pooled = jnp.mean(nn.relu(a1), axis=(1, 2))
    logits = nn.Dense(3).apply({"params": p["head"]}, pooled)
    cases = ((lin, ("conv0", "conv1", "head")), (nx, ("convs/0", ("convs", 1), "head")))
    for model, names in cases:
        for name, ref in zip(names, (x, h, pooled)):
            out, act = _input_probe(model, x, name)
            np.testing.assert_allclose(act, ref, atol=1e-5)
            np.testing.assert_allclose(out, logits, atol=1e-5)
        # the shape helper agrees and keeps the two sites apart in its cache
        assert _layers.activation_shape(model, x, names[2], "input").shape == (2, 8)
        assert _layers.activation_shape(model, x, names[2]).shape == (2, 3)


def test_delta_is_added_to_the_layer_input(twins):
    lin, nx, v, x = twins
    w = np.asarray(v["params"]["head"]["kernel"])
    d = jnp.arange(16.0).reshape(2, 8) / 10
    for model in (lin, nx):
        out, pooled = _input_probe(model, x, "head")
        out2, act2 = _input_probe(model, x, "head", d)
        np.testing.assert_allclose(act2, pooled, atol=1e-6)  # activation before delta
        np.testing.assert_allclose(out2, out + d @ w, atol=1e-5)


def _fd_check_input(model, x, layer, cls):
    _, act = _input_probe(model, x, layer)

    @jax.jit
    def f(d):
        return jnp.sum(_input_probe(model, x, layer, d)[0][:, cls])

    g = jax.jit(jax.grad(f))(jnp.zeros_like(act))
    v = jax.random.normal(jax.random.key(4), act.shape)
    eps = 1e-2
    fd = (f(eps * v) - f(-eps * v)) / (2 * eps)
    np.testing.assert_allclose(fd, jnp.vdot(g, v), rtol=2e-3, atol=1e-5)
    assert float(jnp.abs(g).max()) > 0


def test_layer_input_gradients_match_finite_differences():
    x = testing.random_images(2, n=2)
    net = Nested()
    _fd_check_input(jx.from_linen(net, H.init_params(net, x, 1)), x, "features/block3", 1)
    chain = jx.from_nnx(H.random_nnx(lambda: ChainNNX(nnx.Rngs(0))))
    _fd_check_input(chain, x, "blocks/1", 0)
    _fd_check_input(chain, x, ("blocks", 1, "conv"), 1)


def test_bad_site_and_keyword_only_layer_input(twins):
    lin, nx, _, x = twins
    for model in (lin, nx):
        for bad in ("inputs", "Output", None, 0):
            with pytest.raises(ValueError, match=r"at: expected one of \('output', 'input'\)"):
                _layers.probe(model, x, "head", at=bad)
    with pytest.raises(ValueError, match="at: expected"):
        _layers.activation_shape(lin, x, "conv0", "pre")
    with pytest.raises(TypeError, match="Linen or NNX"):
        _layers.probe(jx.as_model(lambda z: z.sum(axis=(1, 2, 3))), x, "conv0", at="input")
    with pytest.raises(ValueError, match=r"no layer named 'conv9'"):
        _input_probe(lin, x, "conv9")

    class KeywordCall(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="d")(inputs=x)

    z = jnp.ones((2, 3))
    model = jx.from_linen(KeywordCall(), H.init_params(KeywordCall(), z, 0))
    with pytest.raises(ValueError, match=r"'d' was called without a positional argument"):
        _input_probe(model, z, "d")
    model.probe(z, "d")  # the output site does not care how the layer was called


@pytest.mark.parametrize("at", ["output", "input"])
def test_replace_sets_the_site_and_drops_the_layers_below(twins, at):
    lin, nnx_model, _, x = twins
    for model, layer in ((lin, "conv1"), (nnx_model, "convs/1")):
        _, act = _layers.probe(model, x, layer, at=at)
        a = act * 0.5 + 0.1
        out_add, _ = _layers.probe(model, x, layer, a - act, at=at)
        out_rep, seen = _layers.probe(model, x, layer, _layers.Replace(a), at=at)
        np.testing.assert_allclose(out_rep, out_add, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(seen, act)  # the activation before the site is set
        f = lambda d: jnp.sum(_layers.probe(model, x, layer, d, at=at)[0][:, 1])
        g_rep = jax.grad(lambda v: f(_layers.Replace(v)))(a)
        g_add = jax.grad(f)(a - act)
        np.testing.assert_allclose(g_rep, g_add, rtol=1e-5, atol=1e-7)
        assert not np.allclose(g_rep, 0)
    # with the site replaced, the output no longer depends on x (for this chain)
    _, act = _layers.probe(lin, x, "conv1", at=at)
    rep = _layers.Replace(act + 0.1)
    g_x = jax.grad(lambda z: jnp.sum(_layers.probe(lin, z, "conv1", rep, at=at)[0]))(x)
    np.testing.assert_array_equal(g_x, 0)
