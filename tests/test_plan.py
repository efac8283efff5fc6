"""`jaxplain.plan`: the cost of a call before it runs (evaluations, chunks, memory, FLOPs, time).

Every registered method is planned in tests/test_method_table.py (its cheap call:
the plan compiles at most one program, its chunk, and counts the evaluations the
method's result reports). Integrated gradients on a
linear model checks the chunking against its closed form. No timing is asserted
(the machine is shared); `benchmarks/plan_bench.py` compares times with calls.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from _method_table import env

# Every registered method's plan is checked in tests/test_method_table.py, where the
# method's own result is already computed once for the other transformations.


# ---- closed forms on a linear model --------------------------------------------------------

D = 4
LINEAR = jx.testing.linear_model(jnp.arange(1.0, D + 1.0).reshape(D, 1))


def _xs(n):
    return np.asarray(np.random.default_rng(0).uniform(size=(n, D)), np.float32)


@pytest.mark.parametrize("n,steps,bs", [(3, 10, 8), (3, 10, 7), (2, 5, 5), (1, 12, 64)])
def test_integrated_gradients_chunks_in_closed_form(n, steps, bs):
    """`steps` evaluations per example stream in the fewest equal chunks of at most
    `batch_size` rows (whole examples per chunk when those waste no more rows), and the
    two endpoint evaluations per example are counted: `evals = n * (steps + 2)`."""
    p = jx.plan("integrated_gradients", LINEAR, _xs(n), target=0, steps=steps, batch_size=bs)
    rows = n * steps
    assert p.evals == n * (steps + 2) and p.examples == n and not p.evals_bound
    if bs >= steps and math.ceil(n / (bs // steps)) * steps <= math.ceil(rows / bs) * bs:
        per = bs // steps  # whole examples
        chunks = math.ceil(n / per)
        assert (p.chunks, p.chunk_size) == (chunks, math.ceil(n / chunks) * steps)
    else:
        chunks = math.ceil(rows / bs)
        assert (p.chunks, p.chunk_size) == (chunks, math.ceil(rows / chunks))
    run = jx.integrated_gradients(LINEAR, _xs(n), target=0, steps=steps, batch_size=bs)
    assert p.evals == int(np.sum(np.asarray(run.n_evals)))


def test_memory_follows_the_chunk_not_the_steps_and_flops_add_up():
    """Chunks run one at a time: more steps in chunks of the same size is the same chunk
    program (the same memory but for the quadrature nodes it reads, the same FLOPs per
    chunk), run more times; f(x) and f(baseline) are one more chunk, of a forward pass."""
    x = _xs(1)
    plans = [jx.plan("integrated_gradients", LINEAR, x, target=0, steps=s, batch_size=5)
             for s in (10, 40, 70)]
    assert [(p.chunks, p.chunk_size, p.evals) for p in plans] == [(2, 5, 12), (8, 5, 42),
                                                                 (14, 5, 72)]
    assert 0 <= plans[2].peak_bytes - plans[0].peak_bytes <= 2 * 4 * (70 - 10)  # the nodes
    f = [p.flops for p in plans]
    np.testing.assert_allclose(f[2] - f[1], f[1] - f[0], rtol=1e-6)  # 6 more chunks each
    assert f[0] > 2 * (f[1] - f[0]) / 6 > 0  # the endpoint chunk adds FLOPs of its own
    for p in plans:
        assert p.seconds > p.chunks * p.chunk_seconds
    bigger = jx.plan("integrated_gradients", LINEAR, x, target=0, steps=40, batch_size=20)
    assert (bigger.chunks, bigger.chunk_size) == (2, 20)
    assert bigger.peak_bytes > plans[1].peak_bytes


def test_flops_of_a_linear_model_grow_with_its_size():
    """The chunk's FLOPs come from XLA's cost model of the real program: a 16x wider
    linear model costs more per evaluation (at least 4x: the matmuls dominate)."""
    wide = jx.testing.linear_model(jnp.ones((16 * D, 1)))
    x = _xs(2)
    small = jx.plan("saliency", LINEAR, x, target=0)
    large = jx.plan("saliency", wide, np.tile(x, (1, 16)), target=0)
    assert (small.evals, small.chunks, small.chunk_size) == (2, 1, 2)
    assert large.flops >= 4 * small.flops > 0


def test_flops_of_a_one_chunk_call_are_the_calls_own():
    """A call of one chunk: the plan's FLOPs are XLA's count for the call's own program
    (one forward and backward pass of the CNN dominate either way)."""
    model, x = env()["model"], env()["x"]
    p = jx.plan("saliency", model, x, target=1)
    assert (p.chunks, p.chunk_size) == (1, x.shape[0])
    call = jax.jit(lambda m, z: jx.saliency(m, z, target=1).values)
    direct = call.lower(model, x).compile().cost_analysis()
    direct = direct[0] if isinstance(direct, (list, tuple)) else direct
    np.testing.assert_allclose(p.flops, direct["flops"], rtol=0.1)


# ---- the same call, the same checks --------------------------------------------------------


def test_a_second_plan_reuses_the_traced_call():
    x = _xs(2)
    first = jx.plan(jx.integrated_gradients, LINEAR, x, target=0, steps=6, batch_size=4)
    with jx.testing.count_compiles() as c:
        again = jx.plan("integrated_gradients", LINEAR, x, target=0, steps=6, batch_size=4)
    assert c["n"] <= 1
    assert (again.evals, again.chunks, again.chunk_size, again.peak_bytes) == \
           (first.evals, first.chunks, first.chunk_size, first.peak_bytes)


def test_plan_leaves_the_methods_programs_as_they_were():
    """Plans trace their own variant of a method's program: a call after a plan compiles
    and runs the program it would have without it (same values, no marks)."""
    x = _xs(2)
    jx.plan("integrated_gradients", LINEAR, x, target=0, steps=3, batch_size=2)
    text = jax.jit(lambda z: jx.integrated_gradients(LINEAR, z, target=0, steps=3,
                                                     batch_size=2).values).lower(x).as_text()
    assert "jaxplain_opaque" not in text


def test_unknown_method_and_keywords_are_named():
    x = _xs(2)
    with pytest.raises(ValueError, match=r"method: expected one of \[.*'saliency'"):
        jx.plan("salience", LINEAR, x, target=0)
    with pytest.raises(TypeError, match=r"integrated_gradients: unexpected keyword argument\(s\) "
                                        r"\['stpes'\]; it takes \[.*'steps'"):
        jx.plan("integrated_gradients", LINEAR, x, target=0, stpes=10)
    with pytest.raises(TypeError, match="lime: missing a required argument: 'segments'"):
        jx.plan("lime", LINEAR, x, target=0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="method: expected a registered method"):
        jx.plan(lambda m, x: x, LINEAR, x)
    with pytest.raises(TypeError, match="plan: expected a call outside jax.jit"):
        jax.jit(lambda z: jx.plan("saliency", LINEAR, z, target=0).evals)(x)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(rule="simpson"), dict(batch_size=0),
                                    dict(baseline=np.zeros((3,), np.float32))])
def test_bad_settings_raise_what_the_method_raises(kwargs):
    x = _xs(2)
    args = {**dict(target=0, steps=4), **kwargs}
    with pytest.raises((ValueError, TypeError)) as by_method:
        jx.integrated_gradients(LINEAR, x, **args)
    with jx.testing.count_compiles() as c, pytest.raises(type(by_method.value)) as by_plan:
        jx.plan("integrated_gradients", LINEAR, x, **args)
    assert str(by_plan.value) == str(by_method.value)
    assert c["n"] == 0, "a bad setting must raise before anything compiles"


def test_one_example_without_its_batch_axis_gets_the_methods_hint():
    square = jx.testing.linear_model(jnp.ones((2, 2, 1)))  # one example is (2, 2)
    one = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError) as by_method:
        jx.saliency(square, one, target=0)
    with pytest.raises(ValueError) as by_plan:
        jx.plan("saliency", square, one, target=0)
    assert str(by_plan.value) == str(by_method.value) and "x[None]" in str(by_plan.value)


def test_the_summary_reads_as_a_few_lines():
    p = jx.plan("integrated_gradients", LINEAR, _xs(3), target=0, steps=10, batch_size=8)
    text = str(p)
    assert text.splitlines()[0] == "plan integrated_gradients on 3 example(s): 36 model evaluations"
    assert "4 chunk(s) of 8 evaluations" in text and "per warm call" in text
    assert len(text.splitlines()) == 3
    with pytest.raises(dataclasses_frozen_error()):
        p.chunks = 1  # a Plan is a frozen record


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError
