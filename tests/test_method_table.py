"""Every registered method through the same transformations (tests/_method_table.py).

For each row: jit == eager; `jax.vmap` over examples == per-example calls; the
same key gives the same result and another key another one; the result does not
depend on `batch_size`; a second call and new weights compile nothing; the CPU
rewrites off give the values of the rewrites on (float32 round-off) while the
programs differ where a rewrite applies; the registry's evaluation count is the
method's `n_evals`, and `jaxplain.plan` counts it before the call, compiling one chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from _method_table import ROWS, assert_close, eager, env, leaves
from jaxplain._compile import compiler_options

NAMES = sorted(ROWS)
MODEL_METHODS = sorted(n for n in NAMES if "model" in ROWS[n].takes)
STOCHASTIC = sorted(n for n in NAMES if ROWS[n].entry.stochastic)
CHUNKED = sorted(n for n in NAMES if "batch_size" in ROWS[n].takes)


def test_the_table_covers_every_registered_method():
    from jaxplain._core.registry import REGISTRY

    assert sorted(REGISTRY) == NAMES
    assert len(NAMES) >= 45 and STOCHASTIC and CHUNKED


@pytest.fixture(scope="module")
def results():
    """One eager result per method, computed once for the module."""
    return {}


def _eager(results, name):
    if name not in results:
        results[name] = eager(name)
    return results[name]


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name, results):
    row = ROWS[name]
    per = row.per_example()
    pos, kw = row.arguments()
    values = {n: kw.get(n, pos[row.positional.index(n)] if n in row.positional else None)
              for n in per}

    def call(*arrays):
        return row.call(**dict(zip(per, arrays)))

    jitted = jax.jit(call)(*[values[n] for n in per])
    assert_close(jitted, _eager(results, name), what=name)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_examples_equals_per_example_calls(name):
    row = ROWS[name]
    per = row.per_example()
    pos, kw = row.arguments()
    arrays = [np.asarray(kw[n] if n in kw else pos[row.positional.index(n)]) for n in per]

    def one(*rows_):
        return row.call(**{n: r[None] for n, r in zip(per, rows_)})

    mapped = jax.vmap(one)(*arrays)
    singles = [one(*[a[i] for a in arrays]) for i in range(env()["x"].shape[0])]
    stacked = jax.tree.map(lambda *v: np.stack([np.asarray(u) for u in v]), *singles)
    assert_close(mapped, stacked, rtol=5e-5, what=name)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_same_key_same_result_other_key_other_result(name, results):
    row = ROWS[name]
    first = _eager(results, name)
    again = row.call()
    for a, b in zip(leaves(first), leaves(again)):
        np.testing.assert_array_equal(a, b)
    if name in KEY_FREE_HERE:
        return
    other = row.call(key=jax.random.key(7))
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first), leaves(other))), name


KEY_FREE_HERE = {  # methods whose draws cannot change the table's result, and why
    "anchors": "the table's random tiny CNN keeps its class under every perturbation, so "
               "the anchor is empty with precision 1 whatever the draws",
}


@pytest.mark.parametrize("name", CHUNKED)
def test_result_does_not_depend_on_batch_size(name, results):
    row = ROWS[name]
    ref = _eager(results, name)
    # 5 model inputs per chunk: several chunks, the last one padded wherever the count is
    # not a multiple of 5 (a second size, 1, compiled every method again). n_evals counts
    # the rows a last chunk repeats, so it depends on the size and is set aside.
    assert_close(_counts_aside(row.call(batch_size=5)), _counts_aside(ref), rtol=5e-5,
                 what=f"{name} batch_size=5")


def _counts_aside(result):
    """`result` without its evaluation count (which counts repeated rows)."""
    if hasattr(result, "_replace") and "n_evals" in getattr(result, "_fields", ()):
        return result._replace(n_evals=None)
    return result


@pytest.mark.parametrize("name", MODEL_METHODS)
def test_compiles_once_across_calls_and_new_weights(name, results):
    row = ROWS[name]
    _eager(results, name)
    model = row.model
    heavier = model.replace(jax.tree.map(lambda p: p * 1.5, model.params))
    jax.block_until_ready(heavier.params)
    with jx.testing.count_compiles() as c:
        jax.block_until_ready(row.call())
        out = row.call(model=heavier)
        jax.block_until_ready(out)
    assert c["n"] == 0, f"{name} compiled {c['n']} programs on a warm call / new weights"


@pytest.mark.parametrize("name", MODEL_METHODS)
def test_cpu_rewrites_off_give_the_same_values(name, results):
    row = ROWS[name]
    on = _eager(results, name)
    with jx.config.override(cpu_rewrites="0"):
        off = row.call()
    assert_close(off, on, rtol=1e-4, atol=1e-5, what=name)


NO_REWRITE_HERE = {  # methods whose program on the table's model has nothing to rewrite, and why
    name: "a forward pass of the table's ViT: no pooling, and its patch embedding (a 4x4 "
          "stride-4 convolution) is not a convolution the CPU rewrites change"
    for name in ("attention_maps", "attention_rollout")
}


def _program_text(row, mode):
    """The traced program (the rewrites are made while tracing: no lowering needed)."""
    x = env()["x"]
    row.arguments()  # built outside the trace (the amortised explainer's set-up is cached)
    with jx.config.override(cpu_rewrites=mode):
        return str(jax.make_jaxpr(lambda z: row.call(x=z))(jnp.asarray(x)))


@pytest.mark.parametrize("name", [n for n in MODEL_METHODS if "x" in ROWS[n].takes])
def test_cpu_rewrites_change_the_program_where_they_apply(name):
    """The table's model has an average pool and a 3-channel first convolution, both of
    which `_compile/cpu.py` rewrites: every method evaluating it gets another program."""
    row = ROWS[name]
    if "explain" in row.takes:
        pytest.skip("the model runs inside the user's explain function")
    if name in NO_REWRITE_HERE:
        pytest.skip(NO_REWRITE_HERE[name])
    assert _program_text(row, "0") != _program_text(row, "1")


@pytest.mark.parametrize("name", [n for n in NAMES if ROWS[n].entry.evals is not None])
def test_registry_evaluation_count_is_the_methods_n_evals(name, results):
    row = ROWS[name]
    out = _eager(results, name)
    n_evals = getattr(out, "n_evals", None)
    if n_evals is None:
        pytest.skip("the result reports no n_evals")
    pos, kw = row.arguments()
    declared, used = row.entry.per_example(*pos, **kw), int(np.max(np.asarray(n_evals)))
    if row.entry.evals_bound:  # iterative methods that stop early declare their budget
        assert 0 < used <= declared, (name, used, declared)
    else:
        assert declared == used, (name, declared, used)


@pytest.mark.parametrize("name", NAMES)
def test_plan_counts_what_the_method_spends_and_compiles_one_chunk(name, results):
    row = ROWS[name]
    out = _eager(results, name)
    compiler_options()  # the compile layer's one-time probe of XLA's options, outside the count
    pos, kw = row.arguments()
    with jx.testing.count_compiles() as c:
        p = jx.plan(name, *pos, **kw)
    assert c["n"] <= 1, f"{name}: plan compiled {c['n']} programs"
    assert p.method == name and p.chunks >= 1
    assert p.seconds > 0 and p.chunk_seconds > 0 and p.flops >= 0 and p.peak_bytes > 0
    assert p.seconds >= p.chunks * p.chunk_seconds * (1 - 1e-9)
    n_evals = getattr(out, "n_evals", None)
    if row.entry.evals is None:
        assert p.evals is None
        return
    assert p.examples == env()["x"].shape[0]
    if n_evals is None:  # a result without a count (a metric's scores)
        return
    used = int(np.sum(np.asarray(n_evals)))
    if row.entry.evals_bound:
        assert p.evals_bound and 0 < used <= p.evals, (used, p.evals)
    else:
        assert not p.evals_bound and p.evals == used, (p.evals, used)
    assert p.chunks * p.chunk_size >= min(used, p.chunk_size)


class _Reads:
    """Counts device-to-host reads of concrete `jax.Array`s: `_value` (float(), int(),
    bool(), .item(), .tolist(), jax.device_get) and `np.asarray`/`np.array` (which on CPU
    read through the buffer protocol, around `_value`). On an accelerator every one of
    them is a copy and a sync."""

    def __init__(self, monkeypatch):
        from jax._src import array as jarray  # test-only: the library uses no private API

        self.n = 0
        value = jarray.ArrayImpl._value

        def counted(arr):
            self.n += 1
            return value.fget(arr)

        def wrap(f):
            def g(a, *args, **kwargs):
                if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
                    self.n += 1
                return f(a, *args, **kwargs)
            return g

        monkeypatch.setattr(jarray.ArrayImpl, "_value", property(counted))
        monkeypatch.setattr(np, "asarray", wrap(np.asarray))
        monkeypatch.setattr(np, "array", wrap(np.array))


def _on_device(row):
    """The row's arguments with every per-example array (and the references) on the
    device; label maps stay NumPy, as users build them."""
    pos, kw = row.arguments()
    put = {n for n in row.per_example()} | {"references", "concept_x", "random_x"}
    names = list(row.positional)
    pos = [jax.device_put(v) if n in put else v for n, v in zip(names, pos)]
    kw = {n: jax.device_put(v) if n in put and isinstance(v, np.ndarray) else v
          for n, v in kw.items()}
    return pos, kw


@pytest.mark.parametrize("name", NAMES)
def test_a_call_on_device_inputs_reads_back_only_its_checks(name, results, monkeypatch):
    """No host round trip inside a call on device arrays: the value checks of all its
    arguments run as one program with one read, and a second call on the same arrays
    (whose checks are remembered) reads nothing back."""
    row = ROWS[name]
    _eager(results, name)
    jax.block_until_ready(row.entry.fn(*_on_device(row)[0], **_on_device(row)[1]))
    # compiled, check program included: constants read while lowering are not the call's
    pos, kw = _on_device(row)
    jax.block_until_ready((pos, kw))
    reads = _Reads(monkeypatch)
    jax.block_until_ready(row.entry.fn(*pos, **kw))
    first = reads.n
    jax.block_until_ready(row.entry.fn(*pos, **kw))
    assert (first, reads.n - first) in {(0, 0), (1, 0)}, (
        f"{name}: {first} reads on new device arrays, {reads.n - first} on the same again")
