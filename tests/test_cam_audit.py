"""Audit of issue 4 (layer access, Grad-CAM, layer attribution, model visualisation).

Closes gaps left by test_cam.py / test_layers.py / test_modelviz.py: closed forms on
the NNX route too, Grad-CAM++ with spatially varying gradients, layer IG exactness
where the head is linear in the layer, the feature-visualisation objective being the
real channel mean, the regularisers doing what they say, and the error for a wrong
layer name from every public entry point (before anything compiles).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain._core import layers as _layers
from jaxplain import testing

import _cnn_helpers as H
from _cnn_helpers import CamNet


# ---- a GAP + dense CNN as Linen and NNX twins ------------------------------------------------


class FeaturesNNX(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 5, (3, 3), rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.conv(x))


class CamNetNNX(nnx.Module):
    def __init__(self, rngs):
        self.features = FeaturesNNX(rngs)
        self.head = nnx.Linear(5, 4, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.mean(self.features(x), axis=(1, 2)))


@pytest.fixture(scope="module")
def camnets():
    """(linen model, nnx model, head kernel (5, 4), x): the same weights in both frameworks."""
    x = testing.random_images(5, n=3)
    module = H.random_nnx(lambda: CamNetNNX(nnx.Rngs(0)), seed=11)
    p = {
        "features": {"conv": {"kernel": module.features.conv.kernel[...],
                              "bias": module.features.conv.bias[...]}},
        "head": {"kernel": module.head.kernel[...], "bias": module.head.bias[...]},
    }
    lin = jx.from_linen(CamNet(), {"params": p})
    return lin, jx.from_nnx(module), np.asarray(p["head"]["kernel"]), x


def _conv_relu(x, kernel, bias):
    """The 'features' sub-network computed directly (SAME padding, stride 1)."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return np.maximum(np.asarray(y + bias), 0)


def test_nnx_twin_is_the_same_network_and_activations_equal_the_subnetwork(camnets):
    lin, nx, w, x = camnets
    p = lin.params["params"]
    feats = _conv_relu(x, p["features"]["conv"]["kernel"], p["features"]["conv"]["bias"])
    logits = feats.mean(axis=(1, 2)) @ w + np.asarray(p["head"]["bias"])
    for model in (lin, nx):
        out, act = model.probe(x, "features")
        np.testing.assert_allclose(act, feats, atol=1e-5)
        np.testing.assert_allclose(out, logits, atol=1e-5)
        np.testing.assert_allclose(jx.layer_activations(model, x, layer="features").values,
                                   feats, atol=1e-5)


def test_grad_cam_closed_form_on_both_frameworks_with_per_example_targets(camnets):
    """Grad-CAM for GAP + dense = CAM / (h w): sum_k w[k, c] A[..., k] / (h w), to 1e-5."""
    lin, nx, w, x = camnets
    _, feats = lin.probe(x, "features")
    feats = np.asarray(feats)
    hw = feats.shape[1] * feats.shape[2]
    classes = np.array([3, 0, 2])  # one class per example
    cam = np.einsum("nhwk,kn->nhw", feats, w[:, classes]) / hw
    assert (cam < 0).any() and (cam > 0).any()  # so relu=True vs False is actually tested
    for model in (lin, nx):
        signed = jx.grad_cam(model, x, target=classes, layer="features", relu=False,
                             upsample=False)
        np.testing.assert_allclose(signed.values, cam, atol=1e-5)
        pos = jx.grad_cam(model, x, target=classes, layer="features", upsample=False)
        np.testing.assert_allclose(pos.values, np.maximum(cam, 0), atol=1e-5)
        np.testing.assert_array_equal(pos.n_evals, [1, 1, 1])


def test_layer_gradient_x_activation_closed_form(camnets):
    """dF_c/dA = w[:, c] / (h w) everywhere for GAP + dense, so values = A * w[:, c] / (h w)."""
    lin, nx, w, x = camnets
    _, feats = lin.probe(x, "features")
    hw = feats.shape[1] * feats.shape[2]
    for model in (lin, nx):
        got = jx.layer_gradient_x_activation(model, x, target=1, layer="features")
        np.testing.assert_allclose(got.values, np.asarray(feats) * w[:, 1] / hw, atol=1e-6)


def test_layer_ig_is_exact_when_the_head_is_linear_in_the_layer(camnets):
    """F(A) = w^T mean(A) + b is linear: layer IG = (A(x) - A(b)) w / (h w) and gap = 0."""
    lin, nx, w, x = camnets
    baseline = 0.3 * x[::-1]
    p = lin.params["params"]
    conv = p["features"]["conv"]
    a_x = _conv_relu(x, conv["kernel"], conv["bias"])
    a_b = _conv_relu(baseline, conv["kernel"], conv["bias"])
    hw = a_x.shape[1] * a_x.shape[2]
    ref = (a_x - a_b) * w[:, 2] / hw
    assert np.abs(ref).max() > 1e-3
    change = (a_x - a_b).mean(axis=(1, 2)) @ w[:, 2]
    for model in (lin, nx):
        for steps, rule in ((1, "riemann_left"), (3, "gauss_legendre")):
            r = jx.layer_integrated_gradients(model, x, target=2, layer="features",
                                              baseline=baseline, steps=steps, rule=rule)
            np.testing.assert_allclose(r.values, ref, atol=1e-6)
            np.testing.assert_allclose(r.values.reshape(3, -1).sum(1), change, atol=1e-5)
            np.testing.assert_allclose(r.gap, 0.0, atol=1e-5)
        # at the input of the (linear) head: the pooled features, exact again
        r = jx.layer_integrated_gradients(model, x, target=2, layer="head", at="input",
                                          baseline=baseline, steps=2)
        pooled = a_x.mean(axis=(1, 2)) - a_b.mean(axis=(1, 2))
        np.testing.assert_allclose(r.values, pooled * w[:, 2], atol=1e-6)
        np.testing.assert_allclose(r.gap, 0.0, atol=1e-5)


def test_layer_ig_gap_detects_incompleteness():
    """The gap is sum(values) - (F(A(x)) - F(A(b))): nonzero when quadrature is too coarse."""
    x = testing.random_images(6, n=2)
    net, v = H.tiny_cnn(x, seed=6)
    model = jx.from_linen(net, v)
    coarse = jx.layer_integrated_gradients(model, x, target=0, layer="conv0", steps=1,
                                           rule="riemann_right")  # the gradient at A(x) only
    out_x, a_x = model.probe(x, "conv0")
    out_b, _ = model.probe(x, "conv0", -a_x + model.probe(jnp.zeros_like(x), "conv0")[1])
    change = np.asarray(out_x[:, 0] - out_b[:, 0])
    total = np.asarray(coarse.values.reshape(2, -1).sum(1))
    np.testing.assert_allclose(coarse.gap, total - change, atol=1e-5)
    assert float(np.abs(coarse.gap).max()) > 1e-3  # relu network: one node is not exact


# ---- Grad-CAM++ with gradients that vary over space -----------------------------------------


def test_grad_cam_plus_plus_with_spatially_varying_gradients():
    """tiny_cnn: conv1 -> relu -> GAP -> dense, so dF/dA = 1[A > 0] w[:, c] / (h w) per pixel."""
    x = testing.random_images(7, n=3)
    net, v = H.tiny_cnn(x, seed=7)
    lin = jx.from_linen(net, v)
    nx = jx.from_nnx(H.tiny_cnn_nnx(v))
    _, a = lin.probe(x, "conv1")
    a = np.asarray(a, np.float64)
    w = np.asarray(v["params"]["head"]["kernel"], np.float64)
    hw = a.shape[1] * a.shape[2]
    c = 1
    g = (a > 0) * w[:, c] / hw
    active = (a > 0).mean(axis=(1, 2))
    assert ((active > 0) & (active < 1)).sum() >= 6  # the gradient really varies over space
    s = a.sum(axis=(1, 2), keepdims=True)
    denom = 2 * g**2 + s * g**3
    alpha = np.divide(g**2, denom, out=np.zeros_like(g), where=denom != 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    ref = np.maximum((weights * a).sum(-1), 0)
    assert ref.max() > 0
    for model, layer in ((lin, "conv1"), (nx, "convs/1")):
        got = jx.grad_cam_plus_plus(model, x, target=c, layer=layer, upsample=False)
        np.testing.assert_allclose(got.values, ref, rtol=1e-4, atol=1e-6)


# ---- feature visualisation -------------------------------------------------------------------

SHAPE = (8, 8, 3)


@pytest.fixture(scope="module")
def fvnet():
    x = testing.random_images(0, n=1)
    net, v = H.tiny_cnn(x, seed=3)
    return jx.from_linen(net, v)


def test_feature_visualization_objective_is_the_channel_mean_of_the_current_image(fvnet):
    """Without jitter, objective[k, s] is mean_ij layer(img_s)[..., channel_k], img_s the image
    after s Adam steps; and the image after s steps is the same whatever the total `steps`."""
    kw = dict(layer="conv1", channel=[2, 5], key=jax.random.key(4), image_shape=SHAPE, lr=0.1,
              jitter=0, param="pixel")
    short = jx.feature_visualization(fvnet, steps=6, **kw)
    long = jx.feature_visualization(fvnet, steps=7, **kw)
    np.testing.assert_allclose(long.objective[:, :6], short.objective, rtol=1e-5, atol=1e-6)
    _, act = fvnet.probe(short.images, "conv1")
    per_channel = np.asarray(act)[np.arange(2), :, :, [2, 5]].mean(axis=(1, 2))
    np.testing.assert_allclose(long.objective[:, 6], per_channel, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(long.objective[:, -1]) > np.asarray(long.objective[:, 0]))


def test_feature_visualization_regularisers_act(fvnet):
    """lr, l2 and tv are traced: the three runs share one program. A large TV weight gives a
    smoother image, a large L2 weight an image closer to the middle of the value range."""
    kw = dict(layer="conv1", channel=[0, 3], key=jax.random.key(2), image_shape=SHAPE, steps=30,
              lr=0.1, param="pixel", jitter=0)
    free = jx.feature_visualization(fvnet, l2=0.0, tv=0.0, **kw)
    with testing.count_compiles() as c:
        smooth = jx.feature_visualization(fvnet, l2=0.0, tv=5.0, **kw)
        centred = jx.feature_visualization(fvnet, l2=50.0, tv=0.0, **kw)
    assert c["n"] == 0

    def tv(img):
        img = np.asarray(img)
        return (np.abs(np.diff(img, axis=1)).mean(axis=(1, 2, 3))
                + np.abs(np.diff(img, axis=2)).mean(axis=(1, 2, 3)))

    def dist(img):
        return np.abs(np.asarray(img) - 0.5).mean(axis=(1, 2, 3))

    assert np.all(tv(smooth.images) < 0.8 * tv(free.images)), (tv(smooth.images), tv(free.images))
    assert np.all(dist(centred.images) < 0.8 * dist(free.images))


def test_feature_visualization_deterministic_per_key_for_targets(fvnet):
    kw = dict(target=[1, 2], image_shape=SHAPE, steps=5)
    a = jx.feature_visualization(fvnet, key=jax.random.key(9), **kw)
    b = jx.feature_visualization(fvnet, key=jax.random.key(9), **kw)
    c = jx.feature_visualization(fvnet, key=jax.random.key(10), **kw)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.objective, b.objective)
    assert not np.allclose(a.images, c.images)


# ---- clear errors, from every entry point, before compiling ---------------------------------


@pytest.fixture(scope="module")
def twins():
    x = testing.random_images(1, n=2)
    v = H.init_params(testing.tiny_cnn(), x, 0)
    return jx.from_linen(testing.tiny_cnn(), v), jx.from_nnx(H.tiny_cnn_nnx(v)), x


ENTRY_POINTS = {
    "grad_cam": lambda m, x, layer: jx.grad_cam(m, x, target=0, layer=layer),
    "grad_cam_plus_plus": lambda m, x, layer: jx.grad_cam_plus_plus(m, x, target=0, layer=layer),
    "layer_gradient_x_activation":
        lambda m, x, layer: jx.layer_gradient_x_activation(m, x, target=0, layer=layer),
    "layer_integrated_gradients":
        lambda m, x, layer: jx.layer_integrated_gradients(m, x, target=0, layer=layer, steps=2),
    "layer_activations": lambda m, x, layer: jx.layer_activations(m, x, layer=layer),
    "layer_activations_input": lambda m, x, layer: jx.layer_activations(m, x, layer=layer,
                                                                         at="input"),
    "feature_maps": lambda m, x, layer: jx.feature_maps(m, x, layer=layer),
    "filters": lambda m, x, layer: jx.filters(m, layer),
    "feature_visualization": lambda m, x, layer: jx.feature_visualization(
        m, layer=layer, channel=0, key=jax.random.key(0), image_shape=SHAPE, steps=2),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_wrong_layer_name_lists_the_available_layers(twins, entry):
    lin, nx, x = twins
    call = ENTRY_POINTS[entry]
    with testing.count_compiles() as c:
        with pytest.raises(ValueError, match=r"no layer named 'conv7'; available layers: "
                                             r"'conv0', 'conv1', 'head'"):
            call(lin, x, "conv7")
        with pytest.raises(ValueError, match=r"no layer named 'convs/7'; available layers: "
                                             r"'convs/0', 'convs/1', 'head'"):
            call(nx, x, "convs/7")
    assert c["n"] == 0


def test_filters_wrong_layer_still_lists_the_available_layers(twins):
    lin, nx, _ = twins
    with pytest.raises(ValueError, match=r"layer: no layer named .*conv7.*; available layers: "
                                         r"'conv0', 'conv1', 'head'"):
        jx.filters(lin, "conv7")
    with pytest.raises(ValueError, match=r"available layers: 'convs/0', 'convs/1', 'head'"):
        jx.filters(nx, "convs/7")


def test_no_spatial_dims_and_channel_out_of_range(twins):
    lin, nx, x = twins
    with testing.count_compiles() as c:
        for fn in (jx.grad_cam, jx.grad_cam_plus_plus):
            for model in (lin, nx):
                with pytest.raises(ValueError, match=r"layer: .*spatial dims.*\(2, 3\)"):
                    fn(model, x, target=0, layer="head")
        for model, layer in ((lin, "conv1"), (nx, "convs/1")):
            for bad in (8, -1, [0, 8]):
                with pytest.raises(ValueError, match=r"channel: expected indices in \[0, 8\)"):
                    jx.feature_visualization(model, layer=layer, channel=bad,
                                             key=jax.random.key(0), image_shape=SHAPE)
        with pytest.raises(ValueError, match=r"channel: expected indices in \[0, 4\)"):
            jx.feature_visualization(lin, layer="conv0", channel=4, key=jax.random.key(0),
                                     image_shape=SHAPE)
    assert c["n"] == 0


def test_layer_access_gradients_match_finite_differences_on_relu_twins(twins):
    """Central differences of the model with the layer shifted along a random direction."""
    lin, nx, x = twins
    for model, layer in ((lin, "conv1"), (nx, "convs/1")):
        _, act = _layers.probe(model, x, layer)
        f = jax.jit(lambda d: jnp.sum(model.probe(x, layer, d)[0][:, 2]))
        g = jax.grad(f)(jnp.zeros_like(act))
        u = jax.random.normal(jax.random.key(1), act.shape)
        eps = 1e-3  # small against the distance of conv1's outputs to the relu kink
        fd = (f(eps * u) - f(-eps * u)) / (2 * eps)
        np.testing.assert_allclose(fd, jnp.vdot(g, u), rtol=5e-3, atol=1e-4)
        assert float(jnp.abs(g).max()) > 0
