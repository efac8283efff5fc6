"""Plain Python functions as models: the arrays they read are traced parameters.

A `lambda z: net.apply(params, z)` written inside a loop is a new function object
each time. Before, each one compiled (and kept) its own program; now equal code
over the same static values shares one program, and new arrays give new results.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain._core import models
from jaxplain import testing

W_GLOBAL = jnp.arange(12.0).reshape(4, 3)


def _fresh(w):
    return lambda z: z @ w  # the same code, a new function object per call


def _grad(w, x, t):
    return np.asarray(jax.vmap(jax.grad(lambda z: (z @ w)[t]))(x))


@pytest.fixture()
def x():
    return np.asarray(jax.random.normal(jax.random.key(0), (5, 4)), np.float32)


def test_fresh_closures_share_one_program_and_read_their_own_arrays(x):
    w1, w2 = jnp.ones((4, 3)), jnp.arange(12.0).reshape(4, 3)
    jx.saliency(_fresh(w1), x, target=1)  # warm
    with testing.count_compiles() as c:
        a = jx.saliency(_fresh(w1), x, target=1).values
        b = jx.saliency(_fresh(w2), x, target=1).values
    assert c["n"] == 0
    np.testing.assert_allclose(a, _grad(w1, x, 1), rtol=1e-6)
    np.testing.assert_allclose(b, _grad(w2, x, 1), rtol=1e-6)


def test_closure_arrays_are_leaves_not_constants(x):
    params = {"w": jnp.ones((4, 3)), "b": [jnp.zeros(3)]}
    model = jx.as_model(lambda z: z @ params["w"] + params["b"][0])
    assert isinstance(model.apply, models.ClosureApply)
    assert "ClosureApply(test_closure_arrays_are_leaves_not_constants.<locals>.<lambda>)" in repr(model)
    assert len(jax.tree.leaves(model)) == 2
    jaxpr = jax.make_jaxpr(lambda m, z: m(z))(model, x)
    assert not jaxpr.consts


def test_numbers_are_part_of_the_program(x):
    w = jnp.ones((4, 3))

    def scaled(s):
        return lambda z: s * (z @ w)

    a = jx.saliency(scaled(2.0), x, target=0).values
    b = jx.saliency(scaled(3.0), x, target=0).values
    np.testing.assert_allclose(a, 2.0 * _grad(w, x, 0), rtol=1e-6)
    np.testing.assert_allclose(b, 3.0 * _grad(w, x, 0), rtol=1e-6)


def test_globals_defaults_and_nested_functions(x):
    def inner(w):
        return lambda z: jnp.tanh(z @ w)

    def outer(w, k):
        f = inner(w)
        return lambda z, k=k: f(z) * k

    w = jnp.full((4, 3), 0.1)
    k = jnp.array([1.0, 2.0, 3.0])
    got = jx.saliency(outer(w, k), x, target=2).values
    ref = jax.vmap(jax.grad(lambda z: (jnp.tanh(z @ w) * k)[2]))(jnp.asarray(x))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    m = jx.as_model(outer(w, k))
    assert len(jax.tree.leaves(m)) == 2  # w from the nested closure, k from the default
    # an array read from the module's globals is a parameter too
    g = jx.as_model(lambda z: z @ W_GLOBAL)
    assert len(jax.tree.leaves(g)) == 1
    np.testing.assert_allclose(jx.saliency(lambda z: z @ W_GLOBAL, x, target=0).values,
                               _grad(W_GLOBAL, x, 0), rtol=1e-6)


def test_rebinding_a_global_array_gives_the_new_result(x):
    global W_GLOBAL
    old = W_GLOBAL
    try:
        a = jx.saliency(lambda z: z @ W_GLOBAL, x, target=0).values
        W_GLOBAL = old * -1.0  # a notebook's loop variable is a global
        b = jx.saliency(lambda z: z @ W_GLOBAL, x, target=0).values
    finally:
        W_GLOBAL = old
    np.testing.assert_allclose(b, -np.asarray(a), rtol=1e-6)


def test_linen_module_in_a_closure():
    m = testing.tiny_cnn()
    x = testing.random_images(0, n=2)
    v = m.init(jax.random.key(0), x)
    v2 = jax.tree.map(lambda a: a * 1.5, v)
    def net(variables):
        return lambda z: m.apply(variables, z)

    model = jx.as_model(net(v))
    assert len(jax.tree.leaves(model)) == len(jax.tree.leaves(v))
    jx.saliency(net(v), x, target=0)
    with testing.count_compiles() as c:
        a = jx.saliency(net(v2), x, target=0).values
    assert c["n"] == 0
    np.testing.assert_allclose(a, jx.saliency(jx.from_linen(m, v2), x, target=0).values, rtol=1e-5)


def test_mutable_objects_fall_back_to_the_function_itself(x):
    net = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    f = lambda z: net(z)  # noqa: E731 - an NNX module can change in place
    assert isinstance(jx.as_model(f).apply, models.CallableApply)
    before = np.asarray(jx.saliency(lambda z: net(z), x, target=0).values)
    net.kernel[...] = net.kernel[...] * 2.0
    after = np.asarray(jx.saliency(lambda z: net(z), x, target=0).values)
    np.testing.assert_allclose(after, 2.0 * before, rtol=1e-5)

    class Holder:
        w = jnp.ones((4, 3))

    h = Holder()
    assert isinstance(jx.as_model(lambda z: z @ h.w).apply, models.CallableApply)


def test_other_callables_are_used_as_they_are(x):
    w = jnp.ones((4, 3))
    jitted = jax.jit(lambda z: z @ w)
    part = functools.partial(lambda w_, z: z @ w_, w)
    for f in (jitted, part, jnp.tanh):
        assert isinstance(jx.as_model(f).apply, models.CallableApply)
    np.testing.assert_allclose(jx.saliency(part, x, target=0).values, _grad(w, x, 0), rtol=1e-6)


def test_non_numeric_arrays_fall_back(x):
    names = np.array(["cat", "dog", "eel"])
    w = jnp.ones((4, 3))
    f = lambda z: z @ w if names[0] == "cat" else -(z @ w)  # noqa: E731
    assert isinstance(jx.as_model(f).apply, models.CallableApply)
    np.testing.assert_allclose(jx.saliency(f, x, target=0).values, _grad(w, x, 0), rtol=1e-6)


def test_an_unassigned_cell_falls_back():
    def make():
        def f(z):
            return g(z)  # noqa: F821 - g is assigned after f is built

        model = jx.as_model(f)
        g = jnp.tanh  # noqa: F841
        return model

    assert isinstance(make().apply, models.CallableApply)


def test_under_an_outer_jit_the_captured_tracer_is_a_parameter(x):
    def explain(w):
        return jx.saliency(lambda z: z @ w, x, target=1).values

    w = jnp.arange(12.0).reshape(4, 3) / 10
    np.testing.assert_allclose(jax.jit(explain)(w), explain(w), rtol=1e-6)
    np.testing.assert_allclose(explain(w), _grad(w, x, 1), rtol=1e-6)


def test_perturbation_methods_on_fresh_closures_reuse_programs():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(4,)), jnp.float32)
    seg = jnp.arange(4).reshape(1, 4)
    xs = jnp.ones((1, 1, 4, 1))
    f = lambda w_: (lambda z: z[:, 0, :, 0] @ w_)  # noqa: E731
    w2 = w * 2
    ref = jx.exact_shapley(f(w), xs, target=None, segments=seg).values
    with testing.count_compiles() as c:
        got = jx.exact_shapley(f(w2), xs, target=None, segments=seg).values
    assert c["n"] == 0
    np.testing.assert_allclose(got, 2 * np.asarray(ref), rtol=1e-6)
    np.testing.assert_allclose(ref[0], np.asarray(w), rtol=1e-6)  # linear: phi_j = w_j x_j
    assert math.isclose(float(np.sum(ref)), float(np.sum(w)), rel_tol=1e-5)
