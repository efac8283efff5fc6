"""The output plots draw the results' own data: class maps, differences, anchors, spreads."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import jaxplain as jx  # noqa: E402
from jaxplain import testing  # noqa: E402
from jaxplain import visualize as viz  # noqa: E402


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(6, 6, 1, 3)).astype(np.float32)
    x = rng.uniform(0.3, 0.7, size=(2, 6, 6, 1)).astype(np.float32)
    return dict(model=testing.linear_model(jnp.asarray(w)), x=x, rng=rng)


def test_decision_plane_draws_the_class_map_boundary_and_marks(linear):
    x = linear["x"]
    cf = jx.to_numpy(jx.counterfactual(linear["model"], x, target_class="other"))
    dirs = np.stack([cf.x - x, linear["rng"].normal(size=x.shape).astype(np.float32)], 1)
    plane = jx.to_numpy(jx.decision_plane(linear["model"], x, directions=dirs, resolution=(20, 15),
                                          limits=(-1.0, 2.0)))
    fig = viz.plot_decision_plane(plane, example=1, marks={"counterfactual": cf.x})
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), plane.classes[1].T)
    marks = {line.get_label(): line.get_xydata()[0] for line in ax.lines}
    np.testing.assert_allclose(marks["x"], [0, 0])
    np.testing.assert_allclose(marks["counterfactual"], [1, 0], atol=1e-4)
    # the boundary: a contour at margin 0 of the class of x, crossing alpha in (0, 1] at beta 0
    assert ax.collections, "no boundary drawn"
    verts = np.concatenate([p.vertices for c in ax.collections for p in c.get_paths()])
    near = verts[np.abs(verts[:, 1]) < 0.11]
    assert ((near[:, 0] > 0.8) & (near[:, 0] <= 1.05)).any()
    e = np.exp(plane.outputs[1] - plane.outputs[1].max(-1, keepdims=True))
    own = int(cf.original_class[1])
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), (e[..., own] / e.sum(-1)).T,
                               rtol=1e-5)


def test_counterfactual_plot_draws_the_difference(linear):
    x = linear["x"]
    cf = jx.to_numpy(jx.counterfactual(linear["model"], x, target_class=0, bounds=(0.0, 1.0)))
    fig = viz.plot_counterfactual(x, cf, class_names=["a", "b", "c"])
    axes = np.asarray(fig.axes).reshape(2, 3)
    for i in range(2):
        np.testing.assert_allclose(axes[i, 2].images[0].get_array(), (cf.x[i] - x[i]).sum(-1),
                                   atol=1e-7)
    assert axes[0, 1].get_title().startswith("-> a")


def test_anchor_plot_keeps_the_anchor_and_dims_the_rest():
    seg = jx.grid_segments(8, 8, 2)
    x = np.asarray(testing.random_images(0, n=2, size=8))
    result = jx.Anchor(np.array([[True, False, False, True], [False] * 4]), np.ones(2),
                       np.ones((2, 2)), np.array([0.25, 1.0]), np.ones((2, 2)),
                       np.array([True, True]), np.array([1, 2]), np.array([10, 10]))
    fig = viz.plot_anchor(x, seg, result)
    drawn = fig.axes[0].images[0].get_array()
    inside = np.isin(seg, [0, 3])
    inner = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & \
        np.roll(inside, -1, 1)
    np.testing.assert_allclose(drawn[inner], x[0][inner], atol=1e-6)  # kept as it is
    gray = x[0].mean(-1) * 0.25 + 0.375
    np.testing.assert_allclose(drawn[~inside], np.repeat(gray[~inside][:, None], 3, 1), atol=1e-6)
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(),
                               np.repeat((x[1].mean(-1) * 0.25 + 0.375)[..., None], 3, -1),
                               atol=1e-6)  # empty anchor: everything dimmed
    assert "prec 1.00" in fig.axes[0].get_title()


def test_ensemble_plot_draws_mean_std_and_members():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(1, n=2, size=8)
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[m.init(jax.random.key(i), x)
                                                       for i in range(3)])
    r = jx.to_numpy(jx.over_weights(jx.saliency, m.apply, stacked, x, target=0))
    fig = viz.plot_ensemble(x, r)
    axes = np.asarray(fig.axes).reshape(2, 6)
    red = r.values.sum(-1)  # (M, N, H, W)
    for i in range(2):
        np.testing.assert_allclose(axes[i, 1].images[0].get_array(), red[:, i].mean(0), atol=1e-7)
        np.testing.assert_allclose(axes[i, 2].images[0].get_array(), red[:, i].std(0), atol=1e-7)
        for j in range(3):
            np.testing.assert_allclose(axes[i, 3 + j].images[0].get_array(), red[j, i], atol=1e-7)
    agree = int((r.outputs[:, 0].argmax(-1) == r.predictive[0].argmax()).sum())
    assert f"({agree}/3 agree)" in axes[0, 0].get_title()


@pytest.mark.slow
def test_output_views_builds_every_view():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = np.asarray(testing.random_images(2, n=2, size=8))
    variables = [m.init(jax.random.key(i), x) for i in range(2)]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *variables)
    views = viz.output_views(jx.from_linen(m, variables[0]), x, segments=jx.grid_segments(8, 8, 2),
                             key=jax.random.key(0), ensemble=(m.apply, stacked), resolution=8)
    assert sorted(views) == ["anchors", "counterfactuals", "decision_plane", "ensemble"]
    for fig, caption in views.values():
        assert fig.axes and caption.endswith(".")
