"""The jaxpr interpreter under guided backprop, DeepLIFT and LRP: tags, calls, frames, domains."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain._compile import jaxpr as _jaxpr
from jaxplain.gradients._deeplift_rules import _Pairs


def _record(seen):
    def rule(site):
        seen.append((site.eqn.primitive.name, site.tags, site.index))
        return None

    return rule


def _run(fn, args, rule, **kw):
    closed = jax.make_jaxpr(fn)(*args)
    return _jaxpr.interpret(closed.jaxpr, closed.consts, list(args), rule, **kw)


def test_tags_are_the_union_of_the_flagged_arguments_each_operand_depends_on():
    def f(x, y, z):
        a = jnp.sin(x)
        b = a * y
        return b + 1.0, z * 2.0

    seen = []
    x = jnp.arange(3.0)
    outs = _run(f, (x, x + 1, x + 2), _record(seen), tags=[1, 2, 0])
    tags = {name: t for name, t, _ in seen}
    assert tags["sin"] == (1,)
    assert [t for n, t, _ in seen if n == "mul"] == [(1, 2), (0, 0)]  # a * y, then z * 2
    assert tags["add"] == (3, 0)  # the literal 1.0 depends on nothing
    np.testing.assert_allclose(outs[0], np.sin(x) * (x + 1) + 1.0)
    np.testing.assert_allclose(outs[1], (x + 2) * 2.0)


def test_no_tags_by_default():
    seen = []
    _run(lambda x: jnp.cos(x) * x, (jnp.ones(2),), _record(seen))
    assert all(t == (0,) * len(t) for _, t, _ in seen)


def test_jit_calls_are_entered_with_their_tags_and_custom_derivatives_only_when_asked():
    @jax.jit
    def inner(u):
        return jnp.exp(u)

    def f(x, y):
        return inner(x) + jax.nn.relu(y)

    args = (jnp.ones(2), jnp.ones(2))
    seen = []
    _run(f, args, _record(seen), tags=[1, 2])
    names = [n for n, _, _ in seen]
    assert ("exp", (1,)) in [(n, t) for n, t, _ in seen]  # inside the jit call, x's tag
    assert "custom_jvp_call" in names and "max" not in names  # relu's custom_jvp is bound whole
    seen = []
    _run(f, args, _record(seen), tags=[1, 2], calls=_jaxpr.CALLS)
    assert ("max", (2, 0)) in [(n, t) for n, t, _ in seen]  # now entered: relu is max(y, 0)


def test_frame_uses_and_scratch_belong_to_one_evaluation():
    def f(x):
        a = x * 3.0
        return a + 1.0, a

    frames = []

    def rule(site):
        frames.append(site.frame)
        if site.eqn.primitive.name == "mul":
            (a,) = site.eqn.outvars
            assert site.frame.uses(a) == [site.index + 1, -1]  # read by the add, and an output
            site.frame.scratch["seen"] = site.index
        return None

    _run(f, (jnp.ones(2),), rule)
    assert len({id(fr) for fr in frames}) == 1 and frames[0].scratch == {"seen": 0}


def test_a_rule_that_answers_nothing_keeps_values_and_gradients_jit_or_not():
    def f(x):
        return jnp.sum(jnp.tanh(x) ** 2 * jnp.maximum(x, 0.0))

    g = _jaxpr.rewrite(f, lambda site: None)
    x = jnp.linspace(-1.0, 2.0, 7)
    for h in (g, jax.jit(g)):
        np.testing.assert_allclose(h(x), f(x), rtol=1e-6)
        np.testing.assert_allclose(jax.grad(h)(x), jax.grad(f)(x), rtol=1e-6)


def test_a_rule_replaces_what_it_answers_for():
    def swap_sin(site):
        if site.eqn.primitive.name == "sin":
            return [jnp.cos(site.invals[0])]
        return None

    x = jnp.linspace(0.0, 1.0, 5)
    out = _jaxpr.rewrite(lambda v: jnp.sin(v) + v, swap_sin)(x)
    np.testing.assert_allclose(out, np.cos(x) + x, rtol=1e-6)


def test_a_pair_domain_lifts_constants_and_literals_to_both_halves():
    w = jnp.array([2.0, -1.0])

    def f(x):
        return jnp.tanh(x * w) + 0.5

    x, r = jnp.array([0.3, 0.7]), jnp.array([-1.0, 0.1])
    closed = jax.make_jaxpr(f)(x)
    (out,) = _jaxpr.interpret(closed.jaxpr, closed.consts, [(x, r)], lambda s: None,
                              tags=[1], domain=_Pairs)
    np.testing.assert_allclose(out[0], f(x), rtol=1e-6)
    np.testing.assert_allclose(out[1], f(r), rtol=1e-6)
