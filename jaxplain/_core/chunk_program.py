"""A traced call's chunks: where they are in its program, and one of them compiled and run.

`jaxplain.plan` traces a call inside `batching.marking()`, so each chunk loop's body
is a marked nested `jit` in the program (`batching.MARK`). `marked_calls` walks the
program and returns every marked body with the shapes it really has (after `vmap`,
inside other loops) and how many times it runs: the product of the lengths of the
`scan`s around it (unknown inside a `while` loop). `compile_and_run` compiles one
chunk of each loop as one program and runs it on the device.

A body's operands are the values the program passes it. Where those are the call's
own arrays passed straight through (the weights, `x`, a key, the segments, a loop's
initial carry) the run uses them; values the program computes before the loop are
not computed (that would run the call) and are zeros of their shape and type. The
model runs on a chunk of its real size either way; a method whose work depends on
the values (an iterative search that stops early) may run longer or shorter than
it would on real values.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from .. import _compile
from . import batching

CALIBRATION_S = 0.2
"""The calibration runs the chunk in a loop of 1 and of `1 + m` iterations, `m` (at
most `MAX_EXTRA`) chosen so that the `m` extra chunks take about `CALIBRATION_S / 2`,
and repeats the pair (at most `MAX_PAIRS` times) while the pairs took less than
`CALIBRATION_S`, or less than `SECOND_PAIR_S` each when there is one pair so far: a
single difference of two timings is noisy on a busy machine."""
MAX_EXTRA = 8
MAX_PAIRS = 3
SECOND_PAIR_S = 0.5


class Marked(NamedTuple):
    """One marked chunk body in a traced program."""

    eqn: Any  # the `jit` equation (its `jaxpr` is the body)
    loop: batching.Loop
    runs: int | None  # executions per call (None: inside a `while` loop)
    sources: tuple  # per operand: its concrete value, or None (computed before the loop)
    leaf: bool  # no marked body inside it

    @property
    def widen(self) -> int:
        """How many copies of the traced body one execution runs side by side (`vmap`)."""
        outs = [v.aval.shape for v in self.eqn.outvars]
        factor = 1
        for traced, real in zip(self.loop.out_shapes, outs):
            extra = len(real) - len(traced)
            if extra > 0:
                factor = max(factor, int(np.prod(real[:extra])))
        return factor

    @property
    def rows(self) -> int:
        """Model evaluations per execution (rows of the loop, each worth `report`)."""
        return self.loop.size * max(self.loop.report, 1) * self.widen

    @property
    def covers(self) -> int:
        """Model evaluations of one pass over the loop (overlapping rows counted once)."""
        return self.loop.total * max(self.loop.report, 1) * self.widen


def marked_calls(closed: Any, args: list, loops: dict[str, batching.Loop]) -> list[Marked]:
    """Every marked chunk body of the traced program `closed` whose arguments are `args`."""
    env = dict(zip(closed.jaxpr.constvars, closed.consts))
    env.update(zip(closed.jaxpr.invars, args))
    found: list[Marked] = []
    _walk(closed.jaxpr, env, 1, loops, found)
    return found


def _walk(jaxpr: Any, env: dict, runs: int | None, loops: dict, found: list) -> bool:
    """Appends the marked bodies inside `jaxpr` to `found`; whether there were any."""
    any_mark = False
    for eqn in jaxpr.eqns:
        src = [v.val if isinstance(v, jex_core.Literal) else env.get(v) for v in eqn.invars]
        prim = eqn.primitive.name
        inner_runs = runs
        if prim == "scan":
            inner_runs = None if runs is None else runs * int(eqn.params["length"])
        elif prim == "while":
            inner_runs = None
        inside = False
        for sub, sub_env in _subprograms(eqn, src):
            inside |= _walk(sub, sub_env, inner_runs, loops, found)
        name = eqn.params.get("name")
        if isinstance(name, str) and name in loops:
            found.append(Marked(eqn, loops[name], runs, tuple(src), not inside))
            any_mark = True
        any_mark |= inside
    return any_mark


def _subprograms(eqn: Any, src: list) -> list[tuple[Any, dict]]:
    """`(jaxpr, environment)` of each program inside `eqn`: its operands' values bound to
    the inner variables they feed (a loop's constants and initial carry; not its `xs`)."""
    p, prim = eqn.params, eqn.primitive.name
    if prim == "while":
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        cond, body = p["cond_jaxpr"], p["body_jaxpr"]
        body_src = src[nc:nc + nb] + src[nc + nb:]
        return [_bound(cond, src[:nc] + src[nc + nb:]), _bound(body, body_src)]
    if prim == "cond":
        return [_bound(b, src[1:]) for b in p["branches"]]
    out = []
    for value in p.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(sub, (jex_core.ClosedJaxpr, jex_core.Jaxpr)):
                n = len(_open(sub).invars)
                # a scan's operands are its constants, carry, then xs (sliced: unknown)
                out.append(_bound(sub, src[:n] if prim != "scan" else
                                  src[:p["num_consts"] + p["num_carry"]]))
    return out


def _open(j: Any) -> Any:
    return j.jaxpr if isinstance(j, jex_core.ClosedJaxpr) else j


def _bound(j: Any, src: list) -> tuple[Any, dict]:
    inner = _open(j)
    env = dict(zip(inner.constvars, getattr(j, "consts", ())))
    env.update((v, s) for v, s in zip(inner.invars, src) if _fits(s, v.aval))
    return inner, env


def _fits(value: Any, aval: Any) -> bool:
    """Whether a known value can stand for a variable (a guard on the operand mapping)."""
    if value is None or not hasattr(aval, "shape"):
        return False
    return np.shape(value) == tuple(aval.shape) and jnp.result_type(value) == aval.dtype


# ---- one chunk, compiled and run ---------------------------------------------------------------


@dataclasses.dataclass
class Chunk:
    """One chunk of each of a call's chunk loops (or the whole call, if it has none),
    compiled together as one program and run.

    Attributes:
      peak_bytes: arguments + outputs + temporaries - aliased, from `memory_analysis()`.
      flops: one chunk of each part, from the program's `cost_analysis()`.
      shares: per part, its share of the program's FLOPs (XLA's cost model of each part
        lowered alone, not compiled); the parts' times are apportioned by it.
      compile_seconds: lowering and compiling the program.
      seconds: one chunk of each part, run inside a loop as a call's chunks are.
      fixed_seconds: what a call of one chunk costs beyond it (dispatch, allocation).
    """

    peak_bytes: int | None = None
    flops: float | None = None
    shares: tuple[float, ...] = ()
    compile_seconds: float = 0.0
    seconds: float = 0.0
    fixed_seconds: float = 0.0


def compile_and_run(parts: list[tuple[Any, list]]) -> Chunk:
    """Compiles the programs `parts`, each `(ClosedJaxpr, sources)` with per operand a
    value or None (zeros), as one program that runs all of them `k` times in a loop
    (`k` an argument: one compile), and times it (`_time`). Constants become arguments
    (not baked in), and one value feeding several parts (the weights) is one argument."""
    fns, specs, values, index = [], [], [], {}
    for closed, sources in parts:
        fn, part_specs, part_values = _part(closed, sources)
        slots = []
        for spec, value in zip(part_specs, part_values):
            key = None if value is None else (id(value), spec.shape, str(spec.dtype))
            if key is None or key not in index:
                if key is not None:
                    index[key] = len(specs)
                slots.append(len(specs))
                specs.append(spec)
                values.append(value)
            else:
                slots.append(index[key])
        fns.append((fn, slots))

    def program(k, *operands):
        def once(i):  # one chunk of each part, one part after another
            # barriers tie each part's operands to the loop index and to the part before:
            # XLA can neither hoist a chunk out of the loop nor run two parts at once (a
            # call runs its loops one after another); barriers themselves cost nothing
            outs, after = [], i
            for fn, slots in fns:
                _, ops = jax.lax.optimization_barrier((after, [operands[j] for j in slots]))
                outs.append(fn(*ops))
                after = outs[-1]
            return outs

        # the first chunk outside the loop, as a call's first program runs it (its memory
        # is the program's); `k - 1` more inside, as a call's chunk loop runs them
        return jax.lax.fori_loop(1, k, lambda i, _: once(i), once(0))

    opts = _compile.compiler_options(_compile.default_platform())
    t0 = time.perf_counter()
    k = jax.ShapeDtypeStruct((), jnp.int32)
    compiled = (jax.jit(program, compiler_options=opts) if opts else jax.jit(program)) \
        .lower(k, *specs).compile()
    out = Chunk(compile_seconds=time.perf_counter() - t0)
    out.peak_bytes, out.flops = _peak(compiled), _flops(compiled)
    if out.flops is not None:  # XLA counts a while loop's body once: the parts appear twice
        out.flops /= 2
    out.shares = _shares(fns, specs)
    operands = [jax.device_put(_operand(v, s)) for s, v in zip(specs, values)]
    out.seconds, out.fixed_seconds = _time(compiled, operands)
    return out


def _part(closed: Any, sources: list) -> tuple[Any, list, list]:
    """`(fn, operand specs, operand values)` of one program: a typed key the call
    computes is passed as zero key data and wrapped inside."""
    jaxpr, nc = closed.jaxpr, len(closed.jaxpr.constvars)
    avals = [v.aval for v in jaxpr.constvars] + [v.aval for v in jaxpr.invars]
    values = list(closed.consts) + list(sources)
    keys = {i: _key_impl(a) for i, a in enumerate(avals) if _is_key(a) and values[i] is None}

    def fn(*operands):
        ops = [jax.random.wrap_key_data(o, impl=keys[i]) if i in keys else o
               for i, o in enumerate(operands)]
        return jex_core.jaxpr_as_fun(jex_core.ClosedJaxpr(jaxpr, ops[:nc]))(*ops[nc:])

    specs = [jax.ShapeDtypeStruct(_key_data_shape(a), jnp.uint32) if i in keys
             else jax.ShapeDtypeStruct(a.shape, a.dtype) for i, a in enumerate(avals)]
    return fn, specs, values


def _shares(fns: list, specs: list) -> tuple[float, ...]:
    """Each part's share of the FLOPs, from XLA's cost model of the part lowered alone
    (no compile); equal shares where it gives none."""
    if len(fns) == 1:
        return (1.0,)
    flops = []
    for fn, slots in fns:
        try:
            cost = jax.jit(fn).lower(*[specs[i] for i in slots]).cost_analysis()
        except Exception:  # noqa: BLE001 - a backend without a cost model
            cost = None
        cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
        flops.append(max(float((cost or {}).get("flops", 0.0)), 0.0))
    total = sum(flops)
    if total <= 0:
        return tuple(1.0 / len(fns) for _ in fns)
    return tuple(f / total for f in flops)


def _operand(value: Any, spec: jax.ShapeDtypeStruct) -> Any:
    """`value` as the program's operand `spec` (zeros when unknown; converted on the host)."""
    if value is None:
        return np.zeros(spec.shape, spec.dtype)
    if isinstance(value, jax.Array) and value.dtype == spec.dtype:
        return value
    return np.asarray(value).astype(spec.dtype)


def _time(compiled: Any, operands: list) -> tuple[float, float]:
    """`(seconds per chunk, fixed seconds per call)` of a program looping over `k` chunks:
    the difference of a loop of `1 + m` and of 1 chunk, and what one chunk's call costs
    beyond its chunk (dispatch, allocation). Medians over the pairs."""
    def run(k: int) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(np.int32(k), *operands))
        return time.perf_counter() - t0

    run(1)  # warm-up: first-run allocations
    first = run(1)
    extra = int(min(MAX_EXTRA, max(1, CALIBRATION_S / 2 // max(first, 1e-9))))
    ones, per, spent, pair = [first], [], 0.0, 0.0
    while not per or (len(per) < MAX_PAIRS and (spent < CALIBRATION_S or
                                                (len(per) == 1 and pair < SECOND_PAIR_S))):
        more = run(1 + extra)
        one = run(1) if per else first
        if per:
            ones.append(one)
        per.append((more - one) / extra)
        pair = more + one
        spent += pair
    chunk = statistics.median(per)
    single = statistics.median(ones)
    if chunk <= 0:  # noise larger than a chunk: the whole call of one chunk
        return single, 0.0
    return chunk, max(single - chunk, 0.0)


def _peak(compiled: Any) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        return None
    if m is None:
        return None
    total = sum(int(getattr(m, f, 0) or 0) for f in
                ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"))
    return total - int(getattr(m, "alias_size_in_bytes", 0) or 0)


def _flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without a cost model
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return max(float(cost["flops"]), 0.0)


def _is_key(aval: Any) -> bool:
    return jnp.issubdtype(aval.dtype, jax.dtypes.prng_key)


_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def _key_impl(aval: Any) -> str:
    for impl in _IMPLS:
        if jax.eval_shape(lambda: jax.random.key(0, impl=impl)).dtype == aval.dtype:
            return impl
    raise TypeError(f"plan: a key of type {aval.dtype} that no known PRNG implementation makes")


def _key_data_shape(aval: Any) -> tuple[int, ...]:
    return jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(aval.shape, aval.dtype)).shape
