"""Plots run headless and have the expected axes; the NumPy adapter and the global view."""

import json

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import jaxplain as jx  # noqa: E402
from jaxplain import visualize as viz  # noqa: E402


def _n_axes(fig):
    return len(fig.axes)


# ---- NumPy adapter --------------------------------------------------------------------------


def test_to_numpy_round_trips_shapes_and_dtypes():
    for dtype in (jnp.float32, jnp.int32, jnp.bfloat16):
        a = jnp.ones((2, 3, 4), dtype)
        b = viz.to_numpy(a)
        assert isinstance(b, np.ndarray) and b.shape == (2, 3, 4) and b.dtype == np.dtype(a.dtype)


def test_to_numpy_on_jitted_result_and_tracer():
    e = jax.jit(lambda x: jx.Explanation(x * 2, gap=x.sum((1, 2))))(jnp.ones((2, 3, 3)))
    n = viz.to_numpy(e)
    assert isinstance(n, jx.Explanation) and isinstance(n.values, np.ndarray)
    np.testing.assert_array_equal(n.values, 2 * np.ones((2, 3, 3)))
    assert n.stderr is None and n.gap.shape == (2,)
    with pytest.raises(TypeError, match="traced"):
        jax.jit(lambda x: viz.to_numpy(x))(jnp.ones(2))


def test_reduce_channels_and_normalize():
    a = np.array([[[1.0, -3.0], [2.0, 2.0]]])  # (1, 2, 2) -> channel axis of size 2
    a = a.reshape(1, 1, 2, 2)
    np.testing.assert_allclose(viz.reduce_channels(a, "sum"), [[[-2.0, 4.0]]])
    np.testing.assert_allclose(viz.reduce_channels(a, "abs_sum"), [[[4.0, 4.0]]])
    np.testing.assert_allclose(viz.reduce_channels(a, "max_abs"), [[[3.0, 2.0]]])
    np.testing.assert_allclose(viz.reduce_channels(a, "l2"), [[[np.sqrt(10), np.sqrt(8)]]])
    with pytest.raises(ValueError, match="how"):
        viz.reduce_channels(a, "median")
    h = np.arange(-50, 51, dtype=np.float32)
    n = viz.normalize(h, "signed", percentile=100)
    assert n.min() == -1 and n.max() == 1 and n[50] == 0
    n = viz.normalize(h, "signed", percentile=50)  # clipped at the median magnitude
    assert (np.abs(n) == 1).sum() > 40
    assert viz.normalize(h, "absolute", 100).min() == 0
    assert viz.normalize(h, "positive", 100)[:50].max() == 0
    assert viz.normalize(np.zeros(4), "signed").tolist() == [0, 0, 0, 0]
    assert viz.resolve_sign(h) == "signed" and viz.resolve_sign(np.abs(h)) == "absolute"


def test_feature_map_and_upsample():
    seg = np.array([[0, 1], [1, 2]])
    np.testing.assert_array_equal(
        viz.feature_map(np.array([[1.0, 2.0, 3.0]]), seg), [[[1, 2], [2, 3]]]
    )
    np.testing.assert_array_equal(viz.feature_map(np.array([1.0, 2.0, 3.0]), seg), [[1, 2], [2, 3]])
    up = viz.upsample(np.ones((2, 4, 4)), (8, 8))
    assert up.shape == (2, 8, 8) and np.allclose(up, 1)


def test_blend_is_image_where_attribution_is_zero():
    img = np.full((6, 6, 1), 0.5, np.float32)
    heat = np.zeros((6, 6))
    heat[0, 0] = 1.0
    rgb = viz.blend(img, heat, sign="absolute", percentile=100)
    assert rgb.shape == (6, 6, 3)
    assert np.allclose(rgb[1:, 1:], rgb[5, 5])  # silent pixels: the same grey
    assert not np.allclose(rgb[0, 0], rgb[5, 5])


# ---- plots ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    return jx.testing.random_images(0, n=3, size=8)


def test_plot_attributions_axes(images):
    attrs = {
        "grad": np.random.default_rng(0).normal(size=images.shape),
        "cam": jx.Explanation(jnp.ones((3, 4, 4))),  # coarse map, upsampled
        "lime": np.arange(12.0).reshape(3, 4),  # per-feature values
    }
    seg = jx.grid_segments(8, 8, 2)
    fig = viz.plot_attributions(images, attrs, labels=["a", "b", "c"], segments=seg)
    assert isinstance(fig, Figure)
    assert _n_axes(fig) == 3 * 4 + 3  # 3 rows x (input + 3 methods) + 3 colorbars
    fig = viz.plot_attributions(images, attrs, segments=seg, colorbar=False, scale="column")
    assert _n_axes(fig) == 12
    fig.savefig(__import__("io").BytesIO(), format="png")
    with pytest.raises(ValueError, match="segments"):
        viz.plot_attributions(images, {"lime": np.ones((3, 4))})
    with pytest.raises(ValueError, match="scale"):
        viz.plot_attributions(images, attrs, segments=seg, scale="global")


def test_overlay_single_image(images):
    fig = viz.overlay(images[0], np.random.default_rng(1).normal(size=(8, 8, 3)), title="x")
    assert _n_axes(fig) == 2  # image + colorbar
    fig = viz.overlay(images[0], np.ones((4, 4)), colorbar=False)
    assert _n_axes(fig) == 1


def test_plot_segments_axes(images):
    seg = jx.grid_segments(8, 8, 2)
    w = np.array([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 2.0, 3.0]])
    fig = viz.plot_segments(images[:2], seg, w, top_k=2, titles=["a", "b"])
    assert _n_axes(fig) == 2 * 3 + 2
    fig = viz.plot_segments(images[0], seg, w[0], top_k=1, positive_only=True)
    assert _n_axes(fig) == 4


def test_plot_curves_with_auc_in_legend():
    c = np.linspace(1, 0, 5)
    curve = jx.Curve(jnp.zeros(2), jnp.stack([jnp.asarray(c)] * 2), jnp.linspace(0, 1, 5))
    fig = viz.plot_curves(deletion={"a": curve, "b": c**2}, insertion={"a": 1 - c})
    assert _n_axes(fig) == 2
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "a (AUC 0.500)" and labels[1].startswith("b (AUC 0.3")
    assert viz.auc([0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        viz.plot_curves()


def test_feature_maps_filters_visualization_importance():
    acts = np.random.default_rng(0).uniform(size=(1, 4, 4, 10))
    assert _n_axes(viz.plot_feature_maps(acts, max_maps=6)) == 6 + 1  # + the colour bar
    assert _n_axes(viz.plot_feature_maps(acts[0], image=np.ones((8, 8, 1)), max_maps=20)) == 12
    assert _n_axes(viz.plot_filters(np.ones((3, 3, 3, 5)))) == 5 + 1
    assert _n_axes(viz.plot_filters(np.ones((3, 3, 4, 40)), max_filters=16)) == 16 + 1
    assert _n_axes(viz.plot_feature_visualization(np.zeros((4, 8, 8, 3)), titles=list("abcd"))) == 4
    assert _n_axes(viz.plot_importance(np.ones((3, 8, 8)), titles=list("abc"))) == 4
    assert _n_axes(viz.plot_importance(np.ones((8, 8, 1)), shared=False)) == 1
    with pytest.raises(ValueError, match="kernel"):
        viz.plot_filters(np.ones((3, 3)))


def _colorbar(fig):
    (cb,) = [a for a in fig.axes if hasattr(a, "_colorbar")]
    return cb._colorbar


def test_feature_maps_and_filters_read_on_a_colour_bar():
    acts = np.zeros((4, 4, 3))
    acts[..., 0], acts[0, 0, 1], acts[..., 2] = 2.0, 7.0, -1.0  # channel means 2, 7/16, -1
    fig = viz.plot_feature_maps(acts, image=np.ones((8, 8, 1)))
    cb = _colorbar(fig)
    assert (cb.vmin, cb.vmax) == (-1.0, 7.0)  # one scale for every map, zero included
    maps = [a for a in fig.axes if a.get_title().startswith("ch ")]
    assert [a.get_title() for a in maps] == ["ch 0", "ch 1", "ch 2"]  # most active first
    assert all(a.images[0].norm.vmax == 7.0 for a in maps)
    own = _colorbar(viz.plot_feature_maps(acts, shared=False))
    assert (own.vmin, own.vmax) == (0.0, 1.0) and "own range" in own.ax.get_ylabel()
    k = np.zeros((3, 3, 2, 4))
    k[0, 0, :, 1] = -3.0  # the mean over input channels is drawn
    cb = _colorbar(viz.plot_filters(k))
    assert (cb.vmin, cb.vmax) == (-3.0, 3.0) and "mean over input" in cb.ax.get_ylabel()
    cb = _colorbar(viz.plot_filters(np.full((3, 3, 3, 2), 0.5)))
    assert (cb.vmin, cb.vmax) == (-0.5, 0.5) and cb.cmap.name == "gray"


def test_plot_benchmark_legend_below_the_bars_and_time_ticks():
    flat = [
        {"method": m, "library": lib, "seconds": t}
        for m, times in (("ig", (0.002, 0.04)), ("lime", (0.3, 1.5)), ("shap", (0.01, 9.0)))
        for lib, t in zip(("jaxplain", "captum"), times)
    ]
    fig = viz.plot_benchmark(flat)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    legend_box = fig.legends[0].get_window_extent()
    assert not legend_box.overlaps(ax.get_window_extent())  # nothing to cover
    labels = [t.get_text() for t in ax.get_yticklabels()
              if t.get_text() and ax.get_ylim()[0] <= t.get_position()[1] <= ax.get_ylim()[1]]
    assert {"5 ms", "10 ms", "100 ms", "1 s", "5 s"} <= set(labels), labels
    assert not any("$" in t for t in labels)  # plain text, not 10^{-2}
    from jaxplain.visualize._benchmark import time_label

    assert [time_label(v) for v in (5e-6, 0.02, 0.5, 2.0)] == ["5 µs", "20 ms", "500 ms", "2 s"]


def test_plot_benchmark_flat_and_harness_layout(tmp_path):
    flat = [
        {"method": "ig", "library": "jaxplain", "seconds": 0.1, "limit_s": 0.05},
        {"method": "ig", "library": "captum", "seconds": 0.4},
        {"method": "lime", "library": "jaxplain", "seconds": 1.0},
    ]
    fig = viz.plot_benchmark(flat)
    assert _n_axes(fig) == 1 and len(fig.axes[0].patches) == 3
    nested = {
        "results": [
            {
                "case": "ig-steps32",
                "jaxplain": {"median_s": 0.01},
                "limit": {"median_s": 0.008},
                "peers": {
                    "captum.IntegratedGradients[default]": {"median_s": 0.05},
                    "captum.IntegratedGradients[batch=64]": {"median_s": 0.03},
                    "shap.GradientExplainer": {"error": "x"},
                },
            }
        ]
    }
    p = tmp_path / "latest.json"
    p.write_text(json.dumps(nested))
    fig = viz.plot_benchmark(p)
    heights = sorted(b.get_height() for b in fig.axes[0].patches)
    assert heights == pytest.approx([0.01, 0.03])  # jaxplain and captum's best configuration
    with pytest.raises(ValueError, match="timing"):
        viz.plot_benchmark([{"method": "x"}])


# ---- global view ----------------------------------------------------------------------------


def test_global_importance_overall_and_per_class():
    a = jnp.array([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]])
    g = jx.global_importance(jx.Explanation(a), jnp.array([0, 1, 0]), n_classes=3)
    np.testing.assert_allclose(g.overall, [5 / 3, 2.0])
    np.testing.assert_allclose(g.mean, [1.0, 2 / 3])
    np.testing.assert_allclose(g.per_class, [[1.0, 3.0], [3.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(g.counts, [2, 1, 0])
    g = jx.global_importance(a)
    assert g.per_class is None
    with pytest.raises(ValueError, match="labels"):
        jx.global_importance(a, jnp.array([0, 1]))
    with pytest.raises(TypeError, match="labels"):
        jx.global_importance(a, jnp.array([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="labels"):
        jx.global_importance(a, jnp.array([0, 5, 0]), n_classes=3)


def test_global_surrogate_tabular_recovers_linear_model():
    w = jnp.array([[1.5, 0.0], [-2.0, 1.0], [0.5, 3.0]])
    model = jx.testing.linear_model(w, jnp.array([0.25, -1.0]))
    x = jax.random.normal(jax.random.key(0), (40, 3))
    for target, col in ((0, 0), (1, 1)):
        s = jx.global_surrogate(model, x, target=target, batch_size=16)
        np.testing.assert_allclose(s.coef, w[:, col], atol=1e-3)
        assert float(s.r2) == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(s.predict(x[:3]), model(x[:3])[:, col], atol=1e-3)
    # a non-linear model: fidelity below 1, same answer jitted or not and for any batch size
    f = lambda z: jnp.sin(3 * z[:, 0]) + z[:, 1] ** 2  # noqa: E731
    s1 = jx.global_surrogate(f, x, batch_size=7)
    s2 = jx.global_surrogate(f, x)
    assert 0.0 < float(s1.r2) < 0.9
    np.testing.assert_allclose(s1.coef, s2.coef, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="x"):
        jx.global_surrogate(f, x[:1])


def test_global_surrogate_coalitions_additive_model_is_exact():
    # an additive model over segments: the surrogate of coalitions is exact (R^2 = 1)
    x = jx.testing.random_images(0, n=3, size=4, channels=1)
    seg = jx.grid_segments(4, 4, 2)
    w = jnp.arange(16.0).reshape(1, 4, 4, 1) / 10
    f = lambda z: jnp.sum(z * w, axis=(1, 2, 3))  # noqa: E731
    s = jx.global_surrogate(f, x, segments=seg, key=jax.random.key(0), n_samples=64)
    expect = np.array(
        [
            (np.asarray(x)[..., 0] * np.asarray(w)[0, ..., 0])[:, seg == j].sum(1).mean()
            for j in range(4)
        ]
    )
    assert float(s.r2) > 0.8
    np.testing.assert_allclose(s.coef, expect, rtol=0.25)
    s_same = jx.global_surrogate(f, x, segments=seg, key=jax.random.key(0), n_samples=64)
    np.testing.assert_array_equal(s.coef, s_same.coef)
    assert int(s.n_evals) == 3 * 64
    with pytest.raises(TypeError, match="key"):
        jx.global_surrogate(f, x, segments=seg)
