"""counterfactual: closed forms on linear models, brute force under bounds, flips on CNNs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxplain as jx
from jaxplain import testing


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 4, 1, 2)).astype(np.float32)
    b = np.array([0.3, -0.2], np.float32)
    x = rng.uniform(size=(6, 4, 4, 1)).astype(np.float32)
    model = testing.linear_model(jnp.asarray(w), jnp.asarray(b))
    out = np.asarray(model(x))
    wd = (w[..., 0] - w[..., 1]).reshape(-1)
    return dict(model=model, x=x, w=w, wd=wd, a=out.argmax(1), margin=np.abs(out[:, 0] - out[:, 1]))


@pytest.fixture(scope="module")
def cnn():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(1, n=4, size=8)
    variables = m.init(jax.random.key(0), x)
    return dict(module=m, variables=variables, model=jx.from_linen(m, variables), x=x)


def _flips(model, cf, goal):
    pred = np.asarray(model(cf.x)).argmax(1)
    return pred, np.asarray(goal)


@pytest.mark.parametrize("solver, tol", [("deepfool", 0.02), ("optax", 0.02)])
def test_l2_distance_is_the_closed_form_on_a_linear_model(linear, solver, tol):
    t = 1 - linear["a"]
    cf = jx.counterfactual(linear["model"], linear["x"], target_class=t, solver=solver, steps=200)
    exact = linear["margin"] / np.linalg.norm(linear["wd"])
    np.testing.assert_allclose(np.asarray(cf.distance), exact, rtol=tol)
    np.testing.assert_allclose(np.linalg.norm((cf.x - linear["x"]).reshape(6, -1), axis=1),
                               np.asarray(cf.distance), rtol=1e-5)
    pred, goal = _flips(linear["model"], cf, t)
    assert (pred == goal).all() and np.asarray(cf.success).all()
    assert (np.asarray(cf.original_class) == linear["a"]).all()
    assert (np.asarray(cf.target_class) == t).all()


def test_deepfool_solves_a_linear_model_in_one_step(linear):
    cf = jx.counterfactual(linear["model"], linear["x"], target_class="other", refine_steps=5)
    # one forward at x, one step and the check after it (2 classes: 2 backward passes
    # each), the final check, 5 bisections
    assert np.asarray(cf.n_evals).tolist() == [1 + 2 * 2 + 1 + 5] * 6
    t = jx.counterfactual(linear["model"], linear["x"], target_class=1 - linear["a"],
                          refine_steps=5)
    assert np.asarray(t.n_evals).tolist() == [1 + 2 + 1 + 5] * 6
    assert (np.asarray(cf.target_class) == 1 - linear["a"]).all()


@pytest.mark.parametrize("solver, tol", [("deepfool", 0.02), ("optax", 0.1)])
def test_l1_distance_is_the_closed_form_and_sparse(linear, solver, tol):
    cf = jx.counterfactual(linear["model"], linear["x"], target_class="other", distance="l1",
                           solver=solver, steps=300)
    exact = linear["margin"] / np.abs(linear["wd"]).max()
    np.testing.assert_allclose(np.asarray(cf.distance), exact, rtol=tol)
    assert np.asarray(cf.success).all()
    if solver == "deepfool":  # the whole change on the coordinate of largest |w_a - w_b|
        delta = np.asarray(cf.x - linear["x"]).reshape(6, -1)
        assert (np.count_nonzero(delta, axis=1) == 1).all()
        assert (np.abs(delta).argmax(1) == np.abs(linear["wd"]).argmax()).all()


def test_segment_distance_changes_one_segment(linear):
    seg = jx.grid_segments(4, 4, 2)
    cf = jx.counterfactual(linear["model"], linear["x"], target_class="other",
                           distance="segments", segments=seg)
    groups = np.array([np.linalg.norm(linear["wd"][seg.reshape(-1) == s]) for s in range(4)])
    np.testing.assert_allclose(np.asarray(cf.distance), linear["margin"] / groups.max(), rtol=0.02)
    delta = np.abs(np.asarray(cf.x - linear["x"]))[..., 0]
    changed = np.array([[delta[i][seg == s].sum() > 0 for s in range(4)] for i in range(6)])
    assert (changed.sum(1) == 1).all() and (changed.argmax(1) == groups.argmax()).all()


@pytest.mark.parametrize("solver", ["deepfool", "optax"])
def test_bounded_distance_matches_brute_force(solver):
    """2-D inputs in [0, 1]^2: the unbounded step leaves the box; brute force on a fine grid."""
    w = jnp.array([[1.0, -1.0], [0.5, -0.5]])  # class 0 - class 1 = 2 x0 + x1 - 1.8
    model = testing.linear_model(w, jnp.array([-0.9, 0.9]))
    x = np.array([[0.2, 0.99]], np.float32)
    cf = jx.counterfactual(model, x, target_class=0, bounds=(0.0, 1.0), solver=solver,
                           steps=300)
    g = np.linspace(0, 1, 2001)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    ok = 2 * pts[:, 0] + pts[:, 1] - 1.8 > 0
    best = np.linalg.norm(pts[ok] - x, axis=1).min()
    assert bool(cf.success[0])
    assert ((np.asarray(cf.x) >= 0) & (np.asarray(cf.x) <= 1)).all()
    assert float(cf.distance[0]) == pytest.approx(best, rel=0.02)
    unbounded = jx.counterfactual(model, x, target_class=0)
    assert float(unbounded.distance[0]) < 0.95 * best  # the bounds matter here


@pytest.mark.parametrize("solver", ["deepfool", "optax"])
def test_small_cnn_flips_within_bounds(cnn, solver):
    out = np.asarray(cnn["model"](cnn["x"]))
    t = (out.argmax(1) + 1) % 3
    cf = jx.counterfactual(cnn["model"], cnn["x"], target_class=t, bounds=(0.0, 1.0),
                           solver=solver, steps=100)
    assert np.asarray(cf.success).all()
    pred, goal = _flips(cnn["model"], cf, t)
    assert (pred == goal).all()
    assert float(cf.x.min()) >= 0.0 and float(cf.x.max()) <= 1.0
    # just across the boundary: halfway back to x the class is not yet reached
    half = cnn["x"] + 0.5 * (cf.x - cnn["x"])
    assert (np.asarray(cnn["model"](half)).argmax(1) != t).all()


def test_nnx_and_plain_function_models(cnn):
    nmod = testing.tiny_cnn_nnx(cnn["variables"], features=(4,))
    a = jx.counterfactual(cnn["model"], cnn["x"], target_class=2, bounds=(0.0, 1.0))
    b = jx.counterfactual(nmod, cnn["x"], target_class=2, bounds=(0.0, 1.0))
    np.testing.assert_allclose(np.asarray(a.x), np.asarray(b.x), atol=1e-5)
    w = jnp.ones((3, 2)) * jnp.array([1.0, -1.0])
    c = jx.counterfactual(lambda z: z @ w, jnp.ones((2, 3)), target_class=1)
    np.testing.assert_allclose(np.asarray(c.distance), 6 / np.sqrt(12), rtol=0.02)


@pytest.mark.slow
def test_jit_eager_batch_size_and_repeat_agree(cnn):
    kw = dict(target_class=np.array([0, 1, 2, 0]), bounds=(0.0, 1.0), steps=20)
    ref = jx.counterfactual(cnn["model"], cnn["x"], **kw)
    jitted = jax.jit(lambda m, x: jx.counterfactual(m, x, **kw))(cnn["model"], cnn["x"])
    chunked = jx.counterfactual(cnn["model"], cnn["x"], batch_size=1, **kw)
    again = jx.counterfactual(cnn["model"], cnn["x"], **kw)
    for other in (jitted, chunked, again):
        np.testing.assert_allclose(np.asarray(other.x), np.asarray(ref.x), atol=1e-5)
        assert np.array_equal(np.asarray(other.success), np.asarray(ref.success))
    other = cnn["model"].replace(jax.tree.map(lambda v: v * 1.01, cnn["model"].params))
    with testing.count_compiles() as c:
        jx.counterfactual(other, cnn["x"], **kw)
    assert c["n"] == 0  # new weights, same program


def test_custom_optimizer(linear):
    cf = jx.counterfactual(linear["model"], linear["x"], target_class="other", solver="optax",
                           optimizer=optax.sgd(0.05, momentum=0.5), steps=200)
    exact = linear["margin"] / np.linalg.norm(linear["wd"])
    np.testing.assert_allclose(np.asarray(cf.distance), exact, rtol=0.05)


BAD = [
    (dict(target_class=3), ValueError, "target_class"),
    (dict(target_class="others"), ValueError, "target_class"),
    (dict(target_class=None), TypeError, "target_class"),
    (dict(target_class=np.array([0, 1, 0])), ValueError, "target_class"),
    (dict(target_class=1, solver="adam"), ValueError, "solver"),
    (dict(target_class=1, distance="linf"), ValueError, "distance"),
    (dict(target_class=1, distance="segments"), TypeError, "segments"),
    (dict(target_class=1, segments=np.zeros((8, 8), np.int32)), ValueError, "segments"),
    (dict(target_class=1, bounds=(1.0, 0.0)), ValueError, "bounds"),
    (dict(target_class=1, bounds=(0.0, 0.5)), ValueError, "x: expected values inside bounds"),
    (dict(target_class=1, bounds=0.0), TypeError, "bounds"),
    (dict(target_class=1, steps=0), ValueError, "steps"),
    (dict(target_class=1, refine_steps=-1), ValueError, "refine_steps"),
    (dict(target_class=1, learning_rate=0.0), ValueError, "learning_rate"),
    (dict(target_class=1, optimizer="adam"), TypeError, "optimizer"),
    (dict(target_class=1, overshoot=float("nan")), ValueError, "overshoot"),
]


@pytest.mark.parametrize("kwargs, err, name", BAD)
def test_bad_inputs_raise_before_compiling(cnn, kwargs, err, name):
    x = np.asarray(cnn["x"])[:2]
    with testing.count_compiles() as c:
        with pytest.raises(err, match=f"^{name}"):
            jx.counterfactual(cnn["model"], x, **kwargs)
    assert c["n"] == 0
