"""Grad-CAM family and layer attributions: closed forms, axioms, twins, jit, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing

import _cnn_helpers as H
from _cnn_helpers import CamNet, Features


class TanhNet(nn.Module):
    """Smooth CNN: path integrals converge fast, so completeness is tight."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), name="conv0")(x))
        x = jnp.tanh(nn.Conv(6, (3, 3), strides=2, name="conv1")(x))
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def camnet():
    x = testing.random_images(0, n=3)
    net = CamNet()
    v = H.init_params(net, x, 1)
    return jx.from_linen(net, v), v, x


@pytest.fixture(scope="module")
def twins():
    m = testing.tiny_cnn()
    x = testing.random_images(1, n=2, size=16)
    v = H.init_params(m, x, 0)
    return jx.from_linen(m, v), jx.from_nnx(H.tiny_cnn_nnx(v)), v, x


def test_grad_cam_equals_cam_for_gap_dense(camnet):
    model, v, x = camnet
    _, feats = model.probe(x, "features")
    w = v["params"]["head"]["kernel"]
    hw = feats.shape[1] * feats.shape[2]
    for c in range(4):
        cam = jnp.einsum("nhwk,k->nhw", feats, w[:, c]) / hw  # CAM (Zhou et al.) up to 1/(hw)
        got = jx.grad_cam(model, x, target=c, layer="features", relu=False, upsample=False)
        np.testing.assert_allclose(got.values, cam, atol=1e-5)
        got = jx.grad_cam(model, x, target=c, layer="features", upsample=False)
        np.testing.assert_allclose(got.values, np.maximum(cam, 0), atol=1e-5)


def test_grad_cam_plus_plus_closed_form(camnet):
    model, v, x = camnet
    _, a = model.probe(x, "features")
    a = np.asarray(a)
    w = np.asarray(v["params"]["head"]["kernel"])
    hw = a.shape[1] * a.shape[2]
    c = 2
    g = np.broadcast_to(w[:, c] / hw, a.shape)  # dy/dA is constant over space for GAP + dense
    denom = 2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3
    alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    ref = np.maximum((weights * a).sum(-1), 0)
    got = jx.grad_cam_plus_plus(model, x, target=c, layer="features", upsample=False)
    np.testing.assert_allclose(got.values, ref, rtol=1e-5, atol=1e-6)


def test_grad_cam_with_relu_between_layer_and_pooling(twins):
    lin, _, v, x = twins
    _, a = lin.probe(x, "conv1")  # pre-relu conv output
    a = np.asarray(a)
    w = np.asarray(v["params"]["head"]["kernel"])
    hw = a.shape[1] * a.shape[2]
    g = (a > 0) * w[:, 1] / hw
    ref = np.maximum((g.mean(axis=(1, 2), keepdims=True) * a).sum(-1), 0)
    got = jx.grad_cam(lin, x, target=1, layer="conv1", upsample=False)
    np.testing.assert_allclose(got.values, ref, rtol=1e-5, atol=1e-6)


def test_upsampling(twins):
    lin, _, _, x = twins
    small = jx.grad_cam(lin, x, target=0, layer="conv1", upsample=False).values
    assert small.shape == (2, 8, 8)
    big = jx.grad_cam(lin, x, target=0, layer="conv1").values
    assert big.shape == (2, 16, 16)
    np.testing.assert_allclose(big, jax.image.resize(small, (2, 16, 16), "bilinear"), atol=1e-6)
    assert jx.grad_cam(lin, x, target=0, layer="conv1", upsample=(5, 7)).values.shape == (2, 5, 7)


def test_linen_and_nnx_twins_give_the_same_maps(twins):
    lin, nx, _, x = twins
    for fn in (jx.grad_cam, jx.grad_cam_plus_plus, jx.layer_gradient_x_activation):
        a = fn(lin, x, target="predicted", layer="conv1").values
        b = fn(nx, x, target="predicted", layer="convs/1").values
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert float(jnp.abs(a).max()) > 0
    a = jx.layer_integrated_gradients(lin, x, target=2, layer="conv0", steps=8)
    b = jx.layer_integrated_gradients(nx, x, target=2, layer=("convs", 0), steps=8)
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    np.testing.assert_allclose(a.gap, b.gap, atol=1e-6)


def test_predicted_target_equals_argmax(twins):
    lin, _, _, x = twins
    pred = jnp.argmax(lin(x), axis=-1)
    a = jx.grad_cam(lin, x, target="predicted", layer="conv1", relu=False).values
    b = jx.grad_cam(lin, x, target=pred, layer="conv1", relu=False).values
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_layer_gradient_x_activation_matches_autodiff(twins):
    lin, _, _, x = twins
    _, act = lin.probe(x, "conv0")
    g = jax.grad(lambda d: jnp.sum(lin.probe(x, "conv0", d)[0][:, 1]))(jnp.zeros_like(act))
    got = jx.layer_gradient_x_activation(lin, x, target=1, layer="conv0")
    np.testing.assert_allclose(got.values, g * act, atol=1e-6)
    np.testing.assert_array_equal(got.n_evals, [1, 1])


def test_layer_activations(twins):
    lin, nx, _, x = twins
    np.testing.assert_allclose(jx.layer_activations(nx, x, layer="head").values, lin(x), atol=1e-5)
    assert jx.layer_activations(lin, x, layer="conv1").values.shape == (2, 8, 8, 8)


@pytest.fixture(scope="module")
def tanhnet():
    x = testing.random_images(2, n=3)
    net = TanhNet()
    return jx.from_linen(net, H.init_params(net, x, 2)), x


def test_layer_ig_completeness(tanhnet):
    model, x = tanhnet
    baseline = 0.5 * x[::-1]  # per-example baseline, nonzero activations at the baseline
    r = jx.layer_integrated_gradients(model, x, target=1, layer="conv1", baseline=baseline,
                                      steps=16)
    _, a_x = model.probe(x, "conv1")
    _, a_b = model.probe(baseline, "conv1")
    out_x, _ = model.probe(x, "conv1")
    out_b, _ = model.probe(x, "conv1", a_b - a_x)  # the model with the layer set to A(b)
    change = out_x[:, 1] - out_b[:, 1]
    total = r.values.reshape(3, -1).sum(1)
    np.testing.assert_allclose(total, change, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.gap, total - change, atol=1e-6)
    assert float(jnp.abs(change).min()) > 1e-3
    np.testing.assert_array_equal(r.n_evals, [19, 19, 19])


def test_layer_ig_chunking_and_rules(tanhnet):
    model, x = tanhnet
    kw = dict(target=0, layer="conv0", baseline=0.1, steps=6, rule="riemann_middle")
    a = jx.layer_integrated_gradients(model, x, **kw)
    b = jx.layer_integrated_gradients(model, x, batch_size=4, **kw)  # 18 evaluations, ragged chunks
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    c = jx.layer_integrated_gradients(model, x, batch_size=2, **kw)  # the ends chunked too
    np.testing.assert_allclose(c.values, a.values, atol=1e-6)
    np.testing.assert_allclose(c.gap, a.gap, atol=1e-6)
    # a riemann sum by hand
    _, a_x = model.probe(x, "conv0")
    _, a_b = model.probe(jnp.full_like(x, 0.1), "conv0")
    grad = jax.jit(jax.grad(lambda d: jnp.sum(model.probe(x, "conv0", d)[0][:, 0])))
    acc = sum(grad((alpha - 1) * (a_x - a_b)) for alpha in (np.arange(6) + 0.5) / 6) / 6
    np.testing.assert_allclose(a.values, (a_x - a_b) * acc, atol=1e-6)


def test_jit_equals_eager(twins):
    lin, nx, _, x = twins
    a = jx.grad_cam(nx, x, target=0, layer="convs/1")
    b = jx.layer_integrated_gradients(lin, x, target=0, layer="conv1", steps=4)
    with jax.disable_jit():
        a2 = jx.grad_cam(nx, x, target=0, layer="convs/1")
        c2 = jx.grad_cam_plus_plus(lin, x, target=1, layer="conv0")
    c = jx.grad_cam_plus_plus(lin, x, target=1, layer="conv0")
    np.testing.assert_allclose(c.values, c2.values, atol=1e-6)
    # inside an outer jit (traced inputs) the method gives the same numbers
    b2 = jax.jit(
        lambda m, x: jx.layer_integrated_gradients(m, x, target=0, layer="conv1", steps=4))(lin, x)
    np.testing.assert_allclose(a.values, a2.values, atol=1e-6)
    np.testing.assert_allclose(b.values, b2.values, atol=1e-6)
    np.testing.assert_allclose(b.gap, b2.gap, atol=1e-6)


def test_no_recompile_on_second_call_or_new_weights(twins):
    lin, nx, v, x = twins
    v2 = jax.tree.map(lambda a: -a, v)
    lin2, nx2 = lin.replace(v2), jx.from_nnx(H.tiny_cnn_nnx(v2))
    for model, model2, layer in ((lin, lin2, "conv1"), (nx, nx2, "convs/1")):
        first = jx.grad_cam(model, x, target=0, layer=layer, relu=False)
        with testing.count_compiles() as c:
            again = jx.grad_cam(model, x, target=0, layer=layer, relu=False)
            other = jx.grad_cam(model2, x, target=0, layer=layer, relu=False)
            jx.grad_cam(model, x, target=0, layer=tuple(layer.split("/")), relu=False)
        assert c["n"] == 0
        np.testing.assert_array_equal(first.values, again.values)
        assert not np.allclose(first.values, other.values)


def test_errors(twins):
    lin, nx, _, x = twins
    with pytest.raises(ValueError, match=r"layer: .*spatial dims.*\(2, 3\)"):
        jx.grad_cam(lin, x, target=0, layer="head")
    with pytest.raises(ValueError, match=r"no layer named 'conv7'; available layers: 'conv0'"):
        jx.grad_cam(lin, x, target=0, layer="conv7")
    with pytest.raises(ValueError, match=r"available layers: 'convs/0', 'convs/1', 'head'"):
        jx.layer_integrated_gradients(nx, x, target=0, layer="conv1")
    with pytest.raises(ValueError, match="upsample"):
        jx.grad_cam(lin, x, target=0, layer="conv1", upsample=(16,))
    with pytest.raises(TypeError, match="relu"):
        jx.grad_cam(lin, x, target=0, layer="conv1", relu="yes")
    with pytest.raises(ValueError, match="target"):
        jx.grad_cam(lin, x, target=3, layer="conv1")
    with pytest.raises(ValueError, match="rule"):
        jx.layer_integrated_gradients(lin, x, target=0, layer="conv1", rule="simpson")
    with pytest.raises(ValueError, match="steps"):
        jx.layer_integrated_gradients(lin, x, target=0, layer="conv1", steps=0)
    with pytest.raises(TypeError, match="Linen or NNX"):
        jx.grad_cam(lambda z: z.mean(axis=(1, 2)), x, target=0, layer="conv1")


# ---- attribution to a layer's input (at="input") ---------------------------------------------


class Chain(nn.Module):
    """Two blocks consumed directly: the input of block1 is the output of block0."""

    @nn.compact
    def __call__(self, x):
        a = Features(name="block0")(x)
        b = Features(name="block1")(a)
        return nn.Dense(4, name="head")(jnp.mean(b, axis=(1, 2)))


@pytest.fixture(scope="module")
def chain():
    x = testing.random_images(3, n=2)
    net = Chain()
    return jx.from_linen(net, H.init_params(net, x, 4)), x


def test_input_of_a_layer_equals_output_of_the_layer_feeding_it(chain):
    model, x = chain
    kw = {"target": "predicted"}
    for fn, extra in ((jx.grad_cam, {"upsample": False, "relu": False}),
                      (jx.grad_cam_plus_plus, {"upsample": False}),
                      (jx.layer_gradient_x_activation, {})):
        a = fn(model, x, layer="block1", at="input", **kw, **extra).values
        b = fn(model, x, layer="block0", **kw, **extra).values
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert float(jnp.abs(a).max()) > 0
    np.testing.assert_array_equal(jx.layer_activations(model, x, layer="block1", at="input").values,
                                  jx.layer_activations(model, x, layer="block0").values)
    a = jx.layer_integrated_gradients(model, x, target=1, layer="block1", at="input", steps=8)
    b = jx.layer_integrated_gradients(model, x, target=1, layer="block0", steps=8)
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    np.testing.assert_allclose(a.gap, b.gap, atol=1e-6)
    np.testing.assert_array_equal(
        jx.layer_activations(model, x, layer="block0", at="input").values, x)


def test_layer_ig_at_input_completeness(tanhnet):
    from jaxplain._core import layers as _layers

    model, x = tanhnet
    baseline = 0.5 * x[::-1]
    r = jx.layer_integrated_gradients(model, x, target=2, layer="conv1", baseline=baseline,
                                      steps=16, at="input")
    out_x, a_x = _layers.probe(model, x, "conv1", at="input")  # tanh(conv0(x))
    _, a_b = _layers.probe(model, baseline, "conv1", at="input")
    assert r.values.shape == a_x.shape == (3, 8, 8, 4)
    out_b, _ = _layers.probe(model, x, "conv1", a_b - a_x, at="input")
    change = out_x[:, 2] - out_b[:, 2]
    total = r.values.reshape(3, -1).sum(1)
    np.testing.assert_allclose(total, change, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.gap, total - change, atol=1e-6)
    assert float(jnp.abs(change).min()) > 1e-3
    # at the input of the first layer, layer IG is input-space IG
    kw = {"target": 0, "baseline": 0.2, "steps": 8, "rule": "riemann_trapezoid"}
    first = jx.layer_integrated_gradients(model, x, layer="conv0", at="input", **kw)
    ig = jx.integrated_gradients(model, x, **kw)
    np.testing.assert_allclose(first.values, ig.values, atol=1e-6)
    np.testing.assert_allclose(first.gap, ig.gap, atol=1e-5)  # both against f(x) - f(baseline)


def test_linen_and_nnx_twins_agree_at_the_layer_input(twins):
    lin, nx, _, x = twins
    for fn in (jx.grad_cam, jx.grad_cam_plus_plus, jx.layer_gradient_x_activation):
        a = fn(lin, x, target="predicted", layer="conv1", at="input").values
        b = fn(nx, x, target="predicted", layer="convs/1", at="input").values
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert float(jnp.abs(a).max()) > 0
    a = jx.layer_activations(lin, x, layer="head", at="input").values
    assert a.shape == (2, 8)
    np.testing.assert_allclose(jx.layer_activations(nx, x, layer="head", at="input").values, a,
                               atol=1e-6)
    a = jx.layer_integrated_gradients(lin, x, target=2, layer="conv1", steps=8, at="input")
    b = jx.layer_integrated_gradients(nx, x, target=2, layer=("convs", 1), steps=8, at="input")
    assert a.values.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    np.testing.assert_allclose(a.gap, b.gap, atol=1e-6)


def test_layer_input_compiles_once_and_bad_site_fails_before_compiling(twins):
    lin, nx, v, x = twins
    lin2 = lin.replace(jax.tree.map(lambda a: -a, v))
    first = jx.grad_cam(lin, x, target=0, layer="conv1", at="input")
    with testing.count_compiles() as c:
        again = jx.grad_cam(lin, x, target=0, layer="conv1", at="input")
        jx.grad_cam(lin2, x, target=0, layer="conv1", at="input")
    assert c["n"] == 0
    np.testing.assert_array_equal(first.values, again.values)
    calls = (
        lambda at: jx.grad_cam(lin, x, target=0, layer="conv1", at=at),
        lambda at: jx.grad_cam_plus_plus(nx, x, target=0, layer="convs/1", at=at),
        lambda at: jx.layer_gradient_x_activation(lin, x, target=0, layer="conv1", at=at),
        lambda at: jx.layer_integrated_gradients(nx, x, target=0, layer="convs/0", at=at),
        lambda at: jx.layer_activations(lin, x, layer="conv1", at=at),
    )
    with testing.count_compiles() as c:
        for call in calls:
            for bad in ("inputs", None, True):
                with pytest.raises(ValueError, match=r"at: expected one of \('output', 'input'\)"):
                    call(bad)
    assert c["n"] == 0
    with pytest.raises(ValueError, match=r"layer: .*spatial dims.*\(2, 8\)"):
        jx.grad_cam(lin, x, target=0, layer="head", at="input")


# ---- Guided Grad-CAM --------------------------------------------------------------------------


def test_guided_grad_cam_is_guided_backprop_times_the_block_upsampled_map(twins):
    linen, nnx_model, _, x = twins  # 16x16 input, conv1 after one 2x2 pool: 8x8 maps
    t = np.array([0, 2])
    e = jx.guided_grad_cam(linen, x, target=t, layer="conv1")
    cam = np.asarray(jx.grad_cam(linen, x, target=t, layer="conv1", upsample=False).values)
    assert cam.shape == (2, 8, 8) and (cam == 0).any() and (cam > 0).any()
    up = np.repeat(np.repeat(cam, 2, axis=1), 2, axis=2)  # nearest, factor 2
    guided = np.asarray(jx.guided_backprop(linen, x, target=t).values)
    np.testing.assert_allclose(e.values, guided * up[..., None], rtol=1e-5, atol=1e-8)
    assert e.n_evals.tolist() == [2, 2]
    bil = jx.guided_grad_cam(linen, x, target=t, layer="conv1", interpolation="bilinear")
    smooth = np.asarray(jx.grad_cam(linen, x, target=t, layer="conv1", upsample=True).values)
    np.testing.assert_allclose(bil.values, guided * smooth[..., None], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(jx.guided_grad_cam(nnx_model, x, target=t, layer="convs/1").values,
                               e.values, rtol=1e-5, atol=1e-8)
    jitted = jax.jit(lambda m, z: jx.guided_grad_cam(m, z, target=t, layer="conv1").values)
    np.testing.assert_allclose(jitted(linen, x), e.values, rtol=1e-5, atol=1e-8)


def test_guided_grad_cam_errors(twins):
    linen, _, _, x = twins
    with pytest.raises(ValueError, match="interpolation"):
        jx.guided_grad_cam(linen, x, target=0, layer="conv1", interpolation="cubic")
    with pytest.raises(ValueError, match="layer"):
        jx.guided_grad_cam(linen, x, target=0, layer="head")
    with pytest.raises(ValueError, match="layer"):
        jx.guided_grad_cam(linen, x, target=0, layer="nope")
