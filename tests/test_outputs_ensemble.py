"""over_weights: equal to a Python loop over members, summaries, one program for new weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain import testing

M = 4


@pytest.fixture(scope="module")
def members():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(7, n=3, size=8)
    variables = [m.init(jax.random.key(i), x) for i in range(M)]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *variables)
    return dict(module=m, x=x, variables=variables, stacked=stacked)


def _loop(method, module, variables, x, **kw):
    return np.stack([np.asarray(method(jx.from_linen(module, v), x, **kw).values)
                     for v in variables])


@pytest.mark.parametrize("name, kwargs", [
    ("saliency", dict(target=1)),
    ("integrated_gradients", dict(target="predicted", steps=4)),
    ("kernel_shap", dict(target=2, n_samples=16, key=jax.random.key(3))),
])
def test_equals_a_python_loop_over_members(members, name, kwargs):
    method = getattr(jx, name)
    if name == "kernel_shap":
        kwargs = dict(kwargs, segments=jx.grid_segments(8, 8, 2))
    r = jx.over_weights(method, members["module"].apply, members["stacked"], members["x"],
                        **kwargs)
    loop = _loop(method, members["module"], members["variables"], members["x"], **kwargs)
    scale = np.abs(loop).max()
    np.testing.assert_allclose(np.asarray(r.values), loop, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(np.asarray(r.mean), loop.mean(0), rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(np.asarray(r.std), loop.std(0), rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_array_equal(np.asarray(r.results.values), np.asarray(r.values))


@pytest.mark.parametrize("member_batch", [1, 3, M])
def test_members_side_by_side_or_in_turn_agree(members, member_batch):
    """`member_batch`: vmap over groups, lax.map over the groups (3 does not divide 4)."""
    kw = dict(target=1)
    r = jx.over_weights(jx.saliency, members["module"].apply, members["stacked"], members["x"],
                        member_batch=member_batch, **kw)
    loop = _loop(jx.saliency, members["module"], members["variables"], members["x"], **kw)
    np.testing.assert_allclose(np.asarray(r.values), loop, rtol=1e-5,
                               atol=1e-6 * np.abs(loop).max())


def test_prediction_and_predictive_distribution(members):
    r = jx.over_weights(None, members["module"].apply, members["stacked"], members["x"])
    outs = np.stack([np.asarray(members["module"].apply(v, members["x"]))
                     for v in members["variables"]])
    np.testing.assert_allclose(np.asarray(r.outputs), outs, rtol=1e-5, atol=1e-6)
    probs = np.exp(outs - outs.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(r.predictive), probs.mean(0), rtol=1e-5, atol=1e-7)
    assert r.results is None and r.values is None and r.mean is None
    same = jx.over_weights(None, members["module"].apply, members["stacked"], members["x"],
                           link="identity")
    np.testing.assert_allclose(np.asarray(same.predictive), outs.mean(0), rtol=1e-5, atol=1e-6)


def test_new_weights_reuse_the_program(members):
    kw = dict(target=0)
    jx.over_weights(jx.saliency, members["module"].apply, members["stacked"], members["x"], **kw)
    other = jax.tree.map(lambda v: v[::-1] * 1.5, members["stacked"])
    x2 = np.asarray(members["x"]) * 0.5
    with testing.count_compiles() as c:
        r = jx.over_weights(jx.saliency, members["module"].apply, other, x2, **kw)
    assert c["n"] == 0
    first = jax.tree.map(lambda v: v[0], other)
    ref = jx.saliency(jx.from_linen(members["module"], first), x2, **kw).values
    np.testing.assert_allclose(np.asarray(r.values[0]), np.asarray(ref), rtol=1e-5, atol=1e-7)


def test_nnx_members_and_plain_function_members(members):
    graphdef, _ = nnx.split(testing.tiny_cnn_nnx(members["variables"][0], features=(4,)))
    states = [nnx.split(testing.tiny_cnn_nnx(v, features=(4,)))[1] for v in members["variables"]]
    stacked = jax.tree.map(lambda *s: jnp.stack(s), *states)

    def nnx_fn(state, z):
        return nnx.merge(graphdef, state)(z)

    r = jx.over_weights(jx.saliency, nnx_fn, stacked, members["x"], target=1)
    loop = _loop(jx.saliency, members["module"], members["variables"], members["x"], target=1)
    np.testing.assert_allclose(np.asarray(r.values), loop, rtol=1e-4, atol=1e-6)

    ws = jnp.stack([jnp.eye(3) * (i + 1) for i in range(3)])  # f(z) = z @ W_m
    lin = jx.over_weights(jx.integrated_gradients, lambda w, z: z @ w, ws, jnp.ones((2, 3)),
                          target=0, steps=4)
    # IG on a linear model is w_m[:, 0] * x exactly
    np.testing.assert_allclose(np.asarray(lin.values[:, 0]), [[1, 0, 0], [2, 0, 0], [3, 0, 0]],
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(lin.std[0]), [np.std([1, 2, 3]), 0, 0], atol=1e-6)


def test_mc_dropout_masks_as_members():
    """Members that differ by a dropout mask on the input features."""
    w = jnp.arange(8.0).reshape(4, 2)
    masks = jnp.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 1, 1]], jnp.float32)
    r = jx.over_weights(jx.saliency, lambda mask, z: (z * mask) @ w, masks, jnp.ones((1, 4)),
                        target=1)
    np.testing.assert_allclose(np.asarray(r.values[:, 0]), np.asarray(masks * w[:, 1]))


BAD = [
    (dict(method=3), TypeError, "method"),
    (dict(model_fn=None), TypeError, "model_fn"),
    (dict(stacked_params={"a": np.ones((3, 2)), "b": np.ones((2, 2))}), ValueError,
     "stacked_params"),
    (dict(stacked_params={}), TypeError, "stacked_params"),
    (dict(stacked_params=np.float32(1.0)), ValueError, "stacked_params"),
    (dict(x=np.ones((2, 5), np.float32)), ValueError, "x"),
    (dict(link="probit"), ValueError, "link"),
    (dict(member_batch=0), ValueError, "member_batch"),
    (dict(x=np.full((2, 2), np.nan, np.float32)), ValueError, "x"),
]


@pytest.mark.parametrize("kwargs, err, name", BAD)
def test_bad_inputs_raise_before_compiling(kwargs, err, name):
    args = dict(method=jx.saliency, model_fn=lambda w, z: z @ w, stacked_params=np.ones((3, 2, 2),
                np.float32), x=np.ones((2, 2), np.float32))
    args.update(kwargs)
    with testing.count_compiles() as c:
        with pytest.raises(err, match=f"^{name}"):
            jx.over_weights(args.pop("method"), args.pop("model_fn"), args.pop("stacked_params"),
                            args.pop("x"), target=0, **args)
    assert c["n"] == 0
