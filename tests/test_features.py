"""Feature sets: superpixels, painting values back, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import features
from jaxplain import testing


def _valid(labels):
    return np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


@pytest.mark.parametrize("method", ["slic", "quickshift", "felzenszwalb"])
def test_superpixels_valid_label_maps(method):
    imgs = np.asarray(jx.testing.random_images(0, n=2, size=16))
    labels = jx.superpixels(imgs, method)
    assert labels.shape == (2, 16, 16) and labels.dtype == np.int32
    assert all(_valid(l) for l in labels)
    one = jx.superpixels(imgs[0], method)
    assert one.shape == (16, 16) and np.array_equal(one, labels[0])
    gray = jx.superpixels(imgs[..., :1], method)
    assert gray.shape == (2, 16, 16) and all(_valid(l) for l in gray)
    # the maps are accepted by the feature methods' validator
    features.check_segments(labels, imgs.shape)


def test_superpixels_kwargs_and_errors():
    img = np.asarray(jx.testing.random_images(1, n=1, size=16))[0]
    assert jx.superpixels(img, "slic", n_segments=4, compactness=100).max() + 1 <= 6
    with pytest.raises(ValueError, match="method"):
        jx.superpixels(img, "watershed")
    with pytest.raises(ValueError, match="images"):
        jx.superpixels(img[..., :2], "slic")


def test_to_pixels_paints_feature_values():
    seg = jx.grid_segments(4, 6, (2, 3))
    vals = jnp.arange(12.0).reshape(2, 6)
    out = jx.to_pixels(vals, seg)
    assert out.shape == (2, 4, 6)
    np.testing.assert_array_equal(out, np.asarray(vals)[:, seg])
    per = np.stack([seg, seg[::-1]])
    np.testing.assert_array_equal(jx.to_pixels(vals, per)[1], np.asarray(vals)[1][seg[::-1]])
    with pytest.raises(ValueError, match="values"):
        jx.to_pixels(jnp.ones(3), seg)


def test_resolve_baseline_numbers_and_arrays():
    x = jx.testing.random_images(0, n=2, size=4)
    seg = jx.grid_segments(4, 4, 2)
    np.testing.assert_array_equal(jx.resolve_baseline(0.5, x, seg), np.full(x.shape, 0.5))
    img = np.asarray(x[1])
    np.testing.assert_array_equal(jx.resolve_baseline(img, x, seg), np.broadcast_to(img, x.shape))
    np.testing.assert_array_equal(jx.resolve_baseline(x[::-1], x, seg), x[::-1])
    with pytest.raises(ValueError, match="baseline"):
        jx.resolve_baseline("zeros", x, seg)
    with pytest.raises(ValueError, match="baseline"):
        jx.resolve_baseline(jnp.ones((3, 4, 4, 3)), x, seg)


def test_mean_baseline_is_segment_mean_colour():
    x = jx.testing.random_images(3, n=2, size=6)
    seg = np.stack([jx.grid_segments(6, 6, 3), jx.grid_segments(6, 6, 2)])
    out = np.asarray(jx.resolve_baseline("mean", x, seg))
    xn = np.asarray(x)
    for n in range(2):
        for lab in range(seg[n].max() + 1):
            sel = seg[n] == lab
            np.testing.assert_allclose(out[n][sel], np.broadcast_to(xn[n][sel].mean(0), out[n][sel].shape),
                                       rtol=1e-5)


def test_blur_baseline_matches_scipy_style_gaussian():
    from skimage.filters import gaussian

    x = jx.testing.random_images(4, n=1, size=12)
    ours = np.asarray(jx.gaussian_blur(x, 1.5))[0]
    ref = gaussian(np.asarray(x[0], np.float64), sigma=1.5, mode="reflect", truncate=3.0, channel_axis=-1,
                   preserve_range=True)
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    # a constant image is unchanged, "blur" is the default-width blur
    const = jnp.full((1, 10, 10, 3), 0.3)
    np.testing.assert_allclose(jx.resolve_baseline("blur", const, jx.grid_segments(10, 10, 2)), const, rtol=1e-5)
    b = jx.resolve_baseline("blur", x, jx.grid_segments(12, 12, 2))
    np.testing.assert_allclose(b, jx.gaussian_blur(x, 1.2), rtol=1e-6)


def test_to_pixels_checks_labels_and_still_traces():
    vals = jnp.arange(8.0).reshape(2, 4)
    seg = jx.grid_segments(4, 4, 2)
    with pytest.raises(ValueError, match="segments: expected labels 0..d-1 with no gaps"):
        jx.to_pixels(vals, seg * 2)
    with pytest.raises(TypeError, match="segments: expected an integer label map"):
        jx.to_pixels(vals, "slic")
    with pytest.raises(ValueError, match="segments: expected a label map of shape"):
        jx.to_pixels(vals, np.stack([seg] * 3))
    with pytest.raises(ValueError, match="segments: expected at most 4 labels"):
        jx.to_pixels(vals, jx.pixel_segments(4, 4))
    eager = jx.to_pixels(vals, seg)
    traced = jax.jit(jx.to_pixels)(vals, seg)  # under jit only shapes are checked
    np.testing.assert_array_equal(eager, traced)
    np.testing.assert_array_equal(eager[1], np.asarray(vals[1])[seg])


def test_gaussian_blur_validates_and_keeps_the_mean():
    x = testing.random_images(0, n=2, size=8)
    with pytest.raises(ValueError, match="x: expected finite values"):
        jx.gaussian_blur(np.where(np.arange(3) == 1, np.nan, x), 1.0)
    with pytest.raises(TypeError, match="x: expected a floating array"):
        jx.gaussian_blur("img", 1.0)
    with pytest.raises(ValueError, match="sigma: expected a number >= 0.0"):
        jx.gaussian_blur(x, -1.0)
    np.testing.assert_allclose(jx.gaussian_blur(x, 0.0), x)
    np.testing.assert_allclose(jx.gaussian_blur(x, 2.0).mean((1, 2)), np.asarray(x).mean((1, 2)), atol=1e-5)


@pytest.mark.parametrize("fn", [jx.grid_segments, jx.pixel_segments])
def test_segment_builders_name_height_and_width(fn):
    with pytest.raises(ValueError, match="height: expected an int"):
        fn(0, 8)
    with pytest.raises(TypeError, match="width: expected an int"):
        fn(8, 2.5)


def test_a_device_label_map_is_read_once_for_its_checks_and_its_feature_count(monkeypatch):
    """The number of features sets shapes, so a device label map must be read; the
    registry's evaluation count (`n_features`) and the checks share one read, and a
    second call on the same array reads nothing."""
    reads = []
    labels = features._labels
    monkeypatch.setattr(features, "_labels", lambda s, hw: reads.append(1) or labels(s, hw))
    seg = jnp.asarray(jx.grid_segments(4, 4, 2))
    assert features.n_features(seg) == 4
    _, d = features.check_segments(seg, (2, 4, 4, 1))
    assert d == 4 and reads == [1]
    features.check_segments(seg, (2, 4, 4, 1))
    assert features.n_features(seg) == 4 and reads == [1]
    host = np.asarray(seg)  # a host map is read where it is, every time (it may change)
    features.n_features(host)
    features.check_segments(host, (2, 4, 4, 1))
    assert reads == [1, 1]


@pytest.mark.parametrize("dtype", [jnp.int16, jnp.int32])
@pytest.mark.parametrize("per_example", [False, True])
def test_a_device_label_map_is_converted_without_compiling(dtype, per_example):
    """A device label map that is not already int32 (N, H, W) is converted on the host,
    not by an eager XLA op: a later bad argument is still refused before any compile,
    and the conversion is done once per array."""
    x = np.asarray(jx.testing.random_images(0, n=2, size=4))
    grid = jx.grid_segments(4, 4, 2)
    host = np.stack([grid, grid[::-1]]) if per_example else grid
    seg = jax.device_put(host.astype(dtype))
    model = jx.testing.linear_model(jnp.ones((4, 4, 3, 2)))
    with jx.testing.count_compiles() as c:
        out, d = features.check_segments(seg, x.shape)
        again, _ = features.check_segments(seg, x.shape)
    assert c["n"] == 0 and d == 4 and again is out
    assert out.dtype == jnp.int32 and out.shape == (2, 4, 4)
    np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(host, (2, 4, 4)))
    jx.testing.refused_before_compiling(
        jx.kernel_shap, dict(model=model, x=x, target=0, segments=seg, key=jax.random.key(0)),
        [(dict(n_samples=-1), ValueError, "n_samples"),
         (dict(target=5), ValueError, "target")])
