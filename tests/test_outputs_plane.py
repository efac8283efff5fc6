"""decision_plane: outputs on the grid equal the model at the grid points (closed form)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 3, 1, 3)).astype(np.float32)
    x = rng.uniform(size=(2, 3, 3, 1)).astype(np.float32)
    dirs = rng.normal(size=(2, 3, 3, 1)).astype(np.float32)
    return dict(model=testing.linear_model(jnp.asarray(w)), w=w, x=x, dirs=dirs)


def _grid_points(x, u, v, alpha, beta):
    return (x[None, None] + alpha[:, None, None, None, None] * u[None, None]
            + beta[None, :, None, None, None] * v[None, None])


def test_outputs_are_the_model_on_the_plane(linear):
    p = jx.decision_plane(linear["model"], linear["x"], directions=linear["dirs"],
                          limits=((-2.0, 1.0), (-1.0, 3.0)), resolution=(5, 7),
                          orthogonalize=False)
    alpha, beta = np.linspace(-2, 1, 5), np.linspace(-1, 3, 7)
    np.testing.assert_allclose(np.asarray(p.alpha), alpha, atol=1e-6)
    np.testing.assert_allclose(np.asarray(p.beta), beta, atol=1e-6)
    w = linear["w"].reshape(-1, 3)
    for i in range(2):
        pts = _grid_points(linear["x"][i], *linear["dirs"], alpha, beta)
        exact = pts.reshape(5, 7, -1) @ w
        np.testing.assert_allclose(np.asarray(p.outputs[i]), exact, rtol=1e-5, atol=1e-5)
        assert (np.asarray(p.classes[i]) == exact.argmax(-1)).all()


def test_orthogonalized_directions_and_locate(linear):
    x = linear["x"]
    cf = jx.counterfactual(linear["model"], x, target_class="other")
    u = np.asarray(cf.x) - x
    dirs = np.stack([u, np.broadcast_to(linear["dirs"][0], u.shape)], axis=1)  # (N, 2, ...)
    p = jx.decision_plane(linear["model"], x, directions=dirs, resolution=9, limits=(-1.0, 2.0))
    d = np.asarray(p.directions).reshape(2, 2, -1)
    np.testing.assert_allclose(np.einsum("nk,nk->n", d[:, 0], d[:, 1]), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d[:, 1], axis=1), np.linalg.norm(d[:, 0], axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p.locate(cf.x)), [[1, 0], [1, 0]], atol=1e-4)
    # on the line beta = 0: the class of x at alpha = 0, the counterfactual's at alpha = 1
    line = jx.decision_plane(linear["model"], x, directions=dirs, resolution=(4, 3),
                             limits=((-1.0, 2.0), (-1.0, 1.0)))
    np.testing.assert_allclose(np.asarray(line.alpha)[1:3], [0.0, 1.0], atol=1e-6)
    on_line = np.asarray(line.classes)[:, :, 1]
    assert (on_line[:, 1] == np.asarray(cf.original_class)).all()
    assert (on_line[:, 2] == np.asarray(cf.target_class)).all()


def test_chunking_and_jit_agree_and_compile_once(linear):
    model, x = linear["model"], linear["x"]
    kw = dict(directions=linear["dirs"], resolution=6)
    ref = jx.decision_plane(model, x, **kw)
    small = jx.decision_plane(model, x, batch_size=7, **kw)
    jitted = jax.jit(lambda mm, xx: jx.decision_plane(mm, xx, **kw))(model, x)
    for other in (small, jitted):
        np.testing.assert_allclose(np.asarray(other.outputs), np.asarray(ref.outputs), atol=1e-5)
    x2 = np.asarray(x) * 0.5
    with testing.count_compiles() as c:
        jx.decision_plane(model, x2, **kw)
    assert c["n"] == 0


def test_nnx_model():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(2, n=1, size=8)
    variables = m.init(jax.random.key(0), x)
    dirs = np.asarray(testing.random_images(4, n=2, size=8)) - 0.5
    a = jx.decision_plane(jx.from_linen(m, variables), x, directions=dirs, resolution=4)
    b = jx.decision_plane(testing.tiny_cnn_nnx(variables, features=(4,)), x, directions=dirs,
                          resolution=4)
    np.testing.assert_allclose(np.asarray(a.outputs), np.asarray(b.outputs), atol=1e-5)


BAD = [
    (dict(directions=None), TypeError, "directions"),
    (dict(directions=np.ones((3, 3, 3, 1), np.float32)), ValueError, "directions"),
    (dict(directions=np.ones((2, 3, 3, 1), np.float32)), ValueError, "directions"),  # parallel
    (dict(directions=np.zeros((2, 3, 3, 1), np.float32)), ValueError, "directions"),
    # on the device: checked in the call's one check program
    (dict(directions=jnp.ones((2, 3, 3, 1), jnp.float32)), ValueError, "directions"),
    (dict(directions=jnp.zeros((2, 3, 3, 1)).at[0, 0].set(1.0)), ValueError, "directions"),
    (dict(limits=(1.0, -1.0)), ValueError, "limits"),
    (dict(limits="wide"), TypeError, "limits"),
    (dict(resolution=1), ValueError, "resolution"),
    (dict(resolution=(4, 4, 4)), TypeError, "resolution"),
    (dict(orthogonalize=1), TypeError, "orthogonalize"),
    (dict(resolution=2**16), ValueError, "resolution"),
]


@pytest.mark.parametrize("kwargs, err, name", BAD)
def test_bad_inputs_raise_before_compiling(linear, kwargs, err, name):
    kw = dict(directions=linear["dirs"])
    kw.update(kwargs)
    with testing.count_compiles() as c:
        with pytest.raises(err, match=f"^{name}"):
            jx.decision_plane(linear["model"], linear["x"], **kw)
    # a device array's values are checked by the call's one check program (compiled for
    # new shapes); the method's own program never compiles
    on_device = any(isinstance(v, jax.Array) for v in kwargs.values())
    assert c["n"] <= (1 if on_device else 0)
