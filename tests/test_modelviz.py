"""Model visualisation: tiling, feature maps, filters, feature visualisation."""

import jax
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing

import _cnn_helpers as H

SHAPE = (8, 8, 3)
FV = dict(layer="conv1", image_shape=SHAPE, steps=40, lr=0.1)


@pytest.fixture(scope="module")
def twins():
    x = testing.random_images(0, n=2)
    net, v = H.tiny_cnn(x, seed=3)
    return jx.from_linen(net, v), jx.from_nnx(H.tiny_cnn_nnx(v)), v, x


@pytest.fixture(scope="module")
def fv(twins):
    lin = twins[0]
    return jx.feature_visualization(lin, channel=[0, 1, 2], key=jax.random.key(0), **FV)


def _unit(a):
    a = np.asarray(a, np.float64)
    return (a - a.min()) / (a.max() - a.min())


def test_tile_layout_and_normalisation():
    imgs = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    g = jx.tile(imgs, ncols=3, pad=1, pad_value=-1.0)
    assert g.shape == (2 * 2 + 1, 3 * 3 + 2)
    np.testing.assert_allclose(g[3:5, 4:7], _unit(imgs[4]))  # row 1, column 1 is image 4
    assert np.all(g[2, :] == -1.0) and np.all(g[3:5, 8:] == -1.0)  # padding and the empty slot
    g = jx.tile(imgs, ncols=5, pad=0, normalize="all")
    np.testing.assert_allclose(g[:, 3:6], imgs[1] / imgs.max())
    g = jx.tile(imgs, ncols=5, pad=0, normalize="none")
    np.testing.assert_allclose(g[:, 12:15], imgs[4])
    rgb = jx.tile(np.random.default_rng(0).uniform(size=(4, 3, 3, 3)))
    assert rgb.shape == (7, 7, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert jx.tile(np.ones((2, 3, 3))).max() == 1.0  # padding only; constant tiles map to 0
    with pytest.raises(ValueError, match="images"):
        jx.tile(np.ones((3, 3)))
    with pytest.raises(ValueError, match="normalize"):
        jx.tile(imgs, normalize="percentile")


def test_feature_maps_and_tile_maps(twins):
    lin, nx, _, x = twins
    maps = jx.feature_maps(lin, x, layer="conv1")
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 4, 4, 8)
    np.testing.assert_allclose(maps, lin.probe(x, "conv1")[1], atol=1e-6)
    np.testing.assert_allclose(jx.feature_maps(nx, x, layer="convs/1"), maps, atol=1e-6)
    grid = jx.tile_maps(maps[1], ncols=4)
    assert grid.shape == (2 * 5 - 1, 4 * 5 - 1)
    np.testing.assert_allclose(grid[5:9, 5:9], _unit(maps[1, :, :, 5]), atol=1e-6)
    with pytest.raises(ValueError, match="maps"):
        jx.tile_maps(maps)


def test_feature_maps_at_the_layer_input(twins):
    lin, nx, _, x = twins
    before = jx.feature_maps(lin, x, layer="conv0")
    pooled = np.maximum(before, 0).reshape(2, 4, 2, 4, 2, 4).mean(axis=(2, 4))
    maps = jx.feature_maps(lin, x, layer="conv1", at="input")  # avg_pool(relu(conv0))
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(maps, pooled, atol=1e-6)
    np.testing.assert_allclose(jx.feature_maps(nx, x, layer="convs/1", at="input"), maps,
                               atol=1e-6)
    np.testing.assert_array_equal(jx.feature_maps(lin, x, layer="conv0", at="input"), x)
    with pytest.raises(ValueError, match=r"at: expected one of \('output', 'input'\)"):
        jx.feature_maps(lin, x, layer="conv1", at="in")


def test_filters_linen_and_nnx(twins):
    lin, nx, v, _ = twins
    k0 = np.asarray(v["params"]["conv0"]["kernel"])  # (3, 3, 3, 4): RGB filters
    g = jx.filters(lin, "conv0", ncols=2)
    assert g.shape == (7, 7, 3)
    np.testing.assert_allclose(g[4:7, 0:3], _unit(k0[..., 2]), atol=1e-6)
    np.testing.assert_allclose(jx.filters(nx, "convs/0", ncols=2), g)
    k1 = np.asarray(v["params"]["conv1"]["kernel"])  # (3, 3, 4, 8): rows = filters, cols = inputs
    g = jx.filters(lin, "conv1")
    assert g.shape == (8 * 4 - 1, 4 * 4 - 1)
    tile_5_2 = g[4 * 5:4 * 5 + 3, 4 * 2:4 * 2 + 3]  # filter 5, input channel 2
    np.testing.assert_allclose(tile_5_2, _unit(k1[:, :, 2, 5]), atol=1e-6)
    np.testing.assert_allclose(jx.filters(nx, ("convs", 1)), g)
    with pytest.raises(ValueError, match="2-D convolution"):
        jx.filters(lin, "head")
    with pytest.raises(ValueError, match="available layers"):
        jx.filters(lin, "conv5")
    with pytest.raises(ValueError, match="available layers"):
        jx.filters(nx, "convs/5")


def test_feature_visualization_increases_the_activation(fv):
    assert fv.images.shape == (3,) + SHAPE and fv.objective.shape == (3, 40)
    quarters = np.asarray(fv.objective).reshape(3, 4, 10).mean(axis=(0, 2))
    assert np.all(np.diff(quarters) > 0), quarters
    lo, hi = float(fv.images.min()), float(fv.images.max())
    assert 0.0 <= lo and hi <= 1.0


def test_feature_visualization_objective_is_the_channel_mean(twins, fv):
    lin = twins[0]
    _, act = lin.probe(fv.images, "conv1")
    final = np.asarray(act)[np.arange(3), :, :, np.arange(3)].mean(axis=(1, 2))
    # the last recorded step is on a jittered copy before the last update; the final image
    # excites its channel at least as much as the starting point
    assert np.all(final > np.asarray(fv.objective)[:, 0])


def test_feature_visualization_deterministic_and_compiles_once(twins, fv):
    lin, _, v, _ = twins
    lin2 = lin.replace(jax.tree.map(lambda a: 1.5 * a, v))
    with testing.count_compiles() as c:
        again = jx.feature_visualization(lin, channel=[0, 1, 2], key=jax.random.key(0), **FV)
        other = jx.feature_visualization(lin, channel=[0, 1, 2], key=jax.random.key(1), **FV)
        jx.feature_visualization(lin2, channel=[2, 0, 1], key=jax.random.key(0), **FV)
    assert c["n"] == 0
    np.testing.assert_array_equal(again.images, fv.images)
    assert not np.allclose(other.images, fv.images)
    # a channel's image does not depend on which other channels are optimised with it
    alone = jx.feature_visualization(lin, channel=1, key=jax.random.key(0), **FV)
    np.testing.assert_allclose(alone.images[0], fv.images[1], atol=1e-5)


def test_feature_visualization_nnx_twin_and_targets(twins, fv):
    lin, nx, _, _ = twins
    b = jx.feature_visualization(nx, channel=[0, 1, 2], key=jax.random.key(0),
                                 **dict(FV, layer="convs/1"))
    np.testing.assert_allclose(b.images, fv.images, atol=1e-5)
    r = jx.feature_visualization(lin, target=[0, 2], key=jax.random.key(0), image_shape=SHAPE,
                                 steps=40, lr=0.1, param="pixel", jitter=0)
    logits = np.asarray(lin(r.images))
    assert np.all(logits[[0, 1], [0, 2]] > np.asarray(r.objective)[:, 0])
    quarters = np.asarray(r.objective).reshape(2, 4, 10).mean(axis=(0, 2))
    assert np.all(np.diff(quarters) > 0), quarters


def test_feature_visualization_errors(twins):
    lin = twins[0]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"channel: expected indices in \[0, 8\)"):
        jx.feature_visualization(lin, layer="conv1", channel=8, key=key, image_shape=SHAPE)
    with pytest.raises(ValueError, match=r"target: expected indices in \[0, 3\)"):
        jx.feature_visualization(lin, target=[0, 3], key=key, image_shape=SHAPE)
    with pytest.raises(ValueError, match="exactly one"):
        jx.feature_visualization(lin, layer="conv1", channel=0, target=0, key=key,
                                 image_shape=SHAPE)
    with pytest.raises(ValueError, match="layer"):
        jx.feature_visualization(lin, channel=0, key=key, image_shape=SHAPE)
    with pytest.raises(ValueError, match="available layers"):
        jx.feature_visualization(lin, layer="conv3", channel=0, key=key, image_shape=SHAPE)
    with pytest.raises(TypeError, match="key"):
        jx.feature_visualization(lin, layer="conv1", channel=0, key=None, image_shape=SHAPE)
    with pytest.raises(ValueError, match="image_shape"):
        jx.feature_visualization(lin, layer="conv1", channel=0, key=key, image_shape=(8, -8, 3))
    with pytest.raises(ValueError, match="param"):
        jx.feature_visualization(lin, layer="conv1", channel=0, key=key, image_shape=SHAPE,
                                 param="cppn")
    with pytest.raises(TypeError, match="channel"):
        jx.feature_visualization(lin, layer="conv1", channel=1.5, key=key, image_shape=SHAPE)


# ---- colour decorrelation -------------------------------------------------------------------


def test_color_sqrt_is_the_normalised_square_root_of_natural_colour_covariance():
    from skimage import data

    from jaxplain.gradients.modelviz import COLOR_SQRT

    imgs = (data.astronaut(), data.coffee(), data.chelsea())
    pixels = np.concatenate([np.asarray(im, np.float64).reshape(-1, 3) / 255.0 for im in imgs])
    cov = np.cov(pixels, rowvar=False)
    lam, vec = np.linalg.eigh(cov)
    ref = vec @ np.diag(np.sqrt(lam)) @ vec.T / np.sqrt(lam.max())
    np.testing.assert_allclose(COLOR_SQRT, ref, atol=1e-9)
    # its defining properties: symmetric, positive definite, squares to C / max eigenvalue
    np.testing.assert_array_equal(COLOR_SQRT, COLOR_SQRT.T)
    assert np.linalg.eigvalsh(COLOR_SQRT).min() > 0
    np.testing.assert_allclose(COLOR_SQRT @ COLOR_SQRT, cov / lam.max(), atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(COLOR_SQRT, 2), 1.0, atol=1e-9)


def test_color_transform_matches_definition_and_is_invertible():
    from jaxplain.gradients.modelviz import COLOR_SQRT, decorrelated_to_rgb, rgb_to_decorrelated

    z = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    rgb = decorrelated_to_rgb(z)
    np.testing.assert_allclose(rgb, np.einsum("ij,hwj->hwi", COLOR_SQRT, z), atol=1e-6)
    np.testing.assert_allclose(rgb_to_decorrelated(rgb), z, atol=1e-5)
    np.testing.assert_allclose(decorrelated_to_rgb(rgb_to_decorrelated(z)), z, atol=1e-5)
    # it never lengthens a colour vector (spectral norm 1)
    assert np.all(np.linalg.norm(rgb, axis=-1) <= np.linalg.norm(z, axis=-1) + 1e-6)


FVP = {**FV, "param": "pixel"}


@pytest.fixture(scope="module")
def fv_pixel(twins):
    return jx.feature_visualization(twins[0], channel=[0, 1, 2], key=jax.random.key(0),
                                    decorrelate=True, **FVP)


def test_decorrelated_visualization_increases_the_activation(twins, fv, fv_pixel):
    lin = twins[0]
    for r in (fv, fv_pixel):  # fv: fourier with the default (decorrelated for RGB)
        assert r.images.shape == (3,) + SHAPE
        quarters = np.asarray(r.objective).reshape(3, 4, 10).mean(axis=(0, 2))
        assert np.all(np.diff(quarters) > 0), quarters
        assert 0.0 <= float(r.images.min()) and float(r.images.max()) <= 1.0
        _, act = lin.probe(r.images, "conv1")
        final = np.asarray(act)[np.arange(3), :, :, np.arange(3)].mean(axis=(1, 2))
        assert np.all(final > np.asarray(r.objective)[:, 0])


def test_decorrelate_default_deterministic_and_compiles_once(twins, fv, fv_pixel):
    lin, _, v, _ = twins
    key = jax.random.key(0)
    lin2 = lin.replace(jax.tree.map(lambda a: 0.5 * a, v))
    plain = jx.feature_visualization(lin, channel=[0, 1, 2], key=key, decorrelate=False, **FV)
    with testing.count_compiles() as c:
        explicit = jx.feature_visualization(lin, channel=[0, 1, 2], key=key, decorrelate=True,
                                            **FV)
        again = jx.feature_visualization(lin, channel=[0, 1, 2], key=key, decorrelate=True,
                                         **FVP)
        jx.feature_visualization(lin2, channel=[0, 1, 2], key=jax.random.key(5), decorrelate=True,
                                 **FVP)
        plain_again = jx.feature_visualization(lin, channel=[0, 1, 2], key=key,
                                               decorrelate=False, **FV)
    assert c["n"] == 0  # None resolves to True for RGB: the same program as decorrelate=True
    np.testing.assert_array_equal(explicit.images, fv.images)
    np.testing.assert_array_equal(again.images, fv_pixel.images)
    np.testing.assert_array_equal(plain_again.images, plain.images)
    assert not np.allclose(plain.images, fv.images)  # the switch changes the parameterisation


def test_decorrelate_is_off_for_grey_images_and_bad_combinations_raise(twins):
    lin = twins[0]
    x1 = testing.random_images(0, n=1, channels=1)
    net, v = H.tiny_cnn(x1, seed=1)
    grey = jx.from_linen(net, v)
    kw = {"layer": "conv1", "channel": 0, "key": jax.random.key(0), "image_shape": (8, 8, 1),
          "steps": 3}
    a = jx.feature_visualization(grey, **kw)
    b = jx.feature_visualization(grey, decorrelate=False, **kw)
    np.testing.assert_array_equal(a.images, b.images)
    key = jax.random.key(0)
    with testing.count_compiles() as c:
        for shape in ((8, 8, 1), (8, 8), (8, 8, 4)):
            with pytest.raises(ValueError, match=r"decorrelate: expected False .*3 colour"):
                jx.feature_visualization(lin, layer="conv1", channel=0, key=key,
                                         image_shape=shape, decorrelate=True)
        for bad in ("yes", 1, 0.0):
            with pytest.raises(TypeError, match="decorrelate"):
                jx.feature_visualization(lin, layer="conv1", channel=0, key=key,
                                         image_shape=SHAPE, decorrelate=bad)
    assert c["n"] == 0
