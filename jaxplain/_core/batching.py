"""Chunked evaluation: bound how many model inputs exist at once.

Every method that needs many model evaluations enumerates them as one flat
range `0..total-1` (for example `example * steps + step`), and processes that
range in chunks of `batch_size` with `lax.scan`. Each chunk builds its model
inputs on device from the chunk's indices, evaluates the model, and folds the
results into a running accumulator. Peak memory therefore depends on
`batch_size`, not on the number of steps or samples.

The chunks are the fewest of at most `batch_size` rows, all of one size, and
run inside one `lax.scan`, whose memory is one chunk's whatever the count (a
single chunk runs without a loop). When the size does not divide `total`, the
last chunk ends at `total` and overlaps the one before it by fewer rows than
there are chunks; those rows are evaluated twice and counted once. A separate
shorter last chunk would be a second copy of the model and of the method in the
program: the small benchmark CNN's `kernel_shap` with 1000 samples (7 chunks of
128 and one of 104) compiled in 2.6 s, with 1024 samples (8 of 128) in 1.7 s.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .._compile import OPAQUE, default_chunk, marked, tuned
from .._compile import accumulator as accumulator  # the dtype sums run in, re-exported
from . import progress

ACCELERATOR_BATCH_SIZE = 256
"""Model inputs per chunk for `batch_size=None` in programs without the CPU rewrites
(accelerators, or `JAXPLAIN_CPU_REWRITES=0`); on CPU the compile layer's cache-sized
default applies (`_compile.default_chunk`)."""


def default_batch_size() -> int:
    """Model inputs per chunk for `batch_size=None`, for the program being traced."""
    return default_chunk() or ACCELERATOR_BATCH_SIZE


MAX_UNROLL = 1
"""Up to this many chunks are laid out one after another in the program;
more run inside one `lax.scan`, whose memory is one chunk's whatever the count.
Every chunk goes through `_compile.tuned(body, "loop")`, whose canonical kernels
(on CPU) matter in loops: without them XLA:CPU ran the input-gradient
convolutions inside a while-loop body 3-5x slower than outside (jax 0.10.2),
which once made 8 unrolled chunks the faster layout. With them the scan is as
fast (IG, 16 images x 50 steps, chunks of 128: 276 ms scanned vs 288 ms
unrolled) and compiles a smaller program."""


def chunk_size(batch_size: int | None, total: int) -> int:
    """The largest chunk allowed for `total` evaluations (`batch_size`, at most `total`)."""
    if batch_size is None:
        batch_size = default_batch_size()
    return max(1, min(int(batch_size), int(total)))


def chunking(total: int, batch_size: int | None) -> tuple[int, int]:
    """`(count, size)`: the fewest chunks of at most `batch_size` rows, of equal size.

    `count * size - total < count` rows are evaluated twice (the last chunk
    overlaps the one before it), e.g. 1000 rows in chunks of at most 128 are 8
    chunks of 125, and 800 rows are 7 chunks of 115 (5 rows twice).
    """
    bs = chunk_size(batch_size, total)
    count = -(-int(total) // bs)
    return count, -(-int(total) // count)


def _over_chunks(fn: Callable[[Any, jax.Array, int, jax.Array], tuple[Any, Any]], init: Any,
                 total: int, batch_size: int | None, report: int = 0,
                 repeats: bool = False) -> tuple[Any, Any, int, int]:
    """`carry, y = fn(carry, start, size, skip)` over the chunks of `fold`.

    Returns `(carry, ys, count, size)`, the `y`s stacked along a new leading axis.
    Each chunk reports `report` model evaluations per new row to a progress bar
    (`progress.report`; nothing unless a bar asked for it), and with `repeats` also
    for the rows it repeats (where the method's `n_evals` counts them).
    """
    count, size = chunking(total, batch_size)
    last = total - size

    def counted(state, start, skip):
        out = fn(state, start, size, skip)
        if report:
            progress.report((size - (0 if repeats else skip)) * report)
        return out

    step = _marked(tuned(counted, "loop"), Loop(count, size, total, report))
    if count <= MAX_UNROLL:
        carry, ys = init, []
        for i in range(count):
            start = min(i * size, last)
            carry, y = step(carry, jnp.int32(start), jnp.int32(i * size - start))
            ys.append(y)
        return carry, jax.tree.map(lambda *p: jnp.stack(p), *ys), count, size

    def body(c, _):  # the chunk counter rides in the carry: no (count,) index array
        state, i = c
        start = jnp.minimum(i * size, last)
        state, y = step(state, start, i * size - start)
        return (state, i + 1), y

    (carry, _), ys = jax.lax.scan(body, (init, jnp.int32(0)), None, length=count)
    return carry, ys, count, size


# ---- chunk marks: how `jaxplain.plan` finds a call's chunks in its traced program ---------------

MARK = OPAQUE + "chunk_"
"""The name prefix of a marked chunk body (a nested `jax.jit` the compile layer's
rewrites bind as it is, see `_compile.jaxpr.OPAQUE`)."""


class Loop(NamedTuple):
    """One chunk loop as traced: `count` chunks of `size` rows covering `total` rows, each
    row `report` model evaluations (0: the loop does not count them itself)."""

    count: int
    size: int
    total: int
    report: int
    out_shapes: tuple = ()
    """Shapes of the body's outputs as traced (under `vmap` the program's are larger)."""


LOOPS: dict[str, Loop] = {}
"""Every marked chunk body traced in this process, by name. A program JAX has cached
keeps the marks it was traced with, so a later plan of the same call finds them here."""
_mark_ids = itertools.count()


def _marked(step: Callable, loop: Loop) -> Callable:
    """`step` itself, or where chunk bodies are marked (`_compile.mark_requests`, the
    programs `jaxplain.plan` traces) `step` as a nested `jax.jit` named `MARK + <id>`
    whose `Loop` is recorded in `LOOPS`."""
    if not marked():
        return step
    name = f"{MARK}{next(_mark_ids)}"

    def body(*args):
        out = step(*args)
        LOOPS[name] = loop._replace(out_shapes=tuple(jnp.shape(o) for o in jax.tree.leaves(out)))
        return out

    body.__name__ = body.__qualname__ = name
    return jax.jit(body)


def fold(fn: Callable[[Any, jax.Array, int, jax.Array], Any], init: Any, total: int,
         batch_size: int | None, *, report: int = 0) -> Any:
    """`carry = fn(carry, start, size, skip)` over equal chunks covering `range(total)`.

    Chunk `i` holds rows `[start, start + size)` with `start = min(i * size,
    total - size)`: every row is a real one, and the last chunk may overlap its
    predecessor. Its first `skip` rows (a traced int32, 0 except in the last
    chunk) were covered before; `fn` must leave them out of `carry`. `start` is
    a traced int32 scalar, `size` a static Python int. All chunks share one loop
    body, so the program holds a single copy of the model.
    """
    step = lambda carry, start, size, skip: (fn(carry, start, size, skip), None)  # noqa: E731
    return _over_chunks(step, init, total, batch_size, report)[0]


def fresh_rows(size: int, skip: jax.Array) -> jax.Array:
    """`(size,)` bool: the rows of a chunk that no earlier chunk covered (see `fold`)."""
    return jnp.arange(size, dtype=jnp.int32) >= skip


def _fresh_only(rows: jax.Array, skip: jax.Array) -> jax.Array:
    """`rows (size, ...)` with the rows an earlier chunk covered set to 0."""
    keep = fresh_rows(rows.shape[0], skip)
    return jnp.where(keep.reshape((-1,) + (1,) * (rows.ndim - 1)), rows, 0)


def chunked_sum(fn: Callable[[jax.Array, int], Any], total: int, batch_size: int | None, *,
                report: int = 1) -> Any:
    """Sum over rows `0..total-1` of `fn(start, size)`, whose leaves are per row `(size, ...)`."""
    _, size = chunking(total, batch_size)
    shapes = jax.eval_shape(lambda start: fn(start, size), jnp.int32(0))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape[1:], accumulator(s.dtype)), shapes)

    def add(carry, start, size, skip):
        return jax.tree.map(lambda c, r: c + jnp.sum(_fresh_only(r, skip).astype(c.dtype), 0),
                            carry, fn(start, size))

    return fold(add, init, total, batch_size, report=report)


def chunked_map(fn: Callable[[jax.Array, int], Any], total: int, batch_size: int | None, *,
                report: int = 1, repeats: bool = False) -> Any:
    """Concatenation over chunks of `fn(start, size)`, each leaf shaped `(size, ...)`.

    Use it for small per-evaluation outputs (one scalar per model call); the model
    inputs themselves never exist for more than one chunk. Chunks as in `fold`:
    the rows the last chunk repeats are dropped from its output.
    """
    _, ys, count, size = _over_chunks(
        lambda carry, start, size, skip: (carry, fn(start, size)), None, total, batch_size, report,
        repeats)
    repeated = count * size - total

    def join(y):
        if count == 1:
            return y[0]
        flat = y[:-1].reshape(((count - 1) * size,) + y.shape[2:])
        return jnp.concatenate([flat, y[-1, repeated:]], axis=0)

    return jax.tree.map(join, ys)


def chunked_apply(fn: Callable[[jax.Array], Any], z: jax.Array, batch_size: int | None, *,
                  repeats: bool = False) -> Any:
    """`fn(z)` for a row-wise `fn` (a model), evaluated `batch_size` rows at a time."""
    return chunked_map(lambda s, size: fn(jax.lax.dynamic_slice_in_dim(z, s, size)), z.shape[0],
                       batch_size, repeats=repeats)


def flat_index(start: jax.Array, size: int, per_example: int) -> tuple[jax.Array, jax.Array]:
    """Splits flat indices `start..start+size-1` into `(example, sample)` index arrays."""
    k = start + jnp.arange(size, dtype=jnp.int32)
    return k // per_example, k % per_example


def per_example_sum(fn: Callable[[jax.Array, jax.Array], Any], n: int, samples: int,
                    batch_size: int | None) -> Any:
    """`sum_s fn(example, s)` for every example, streaming `n * samples` evaluations.

    `fn(ex, s)` receives int arrays `(b,)` of example and sample indices and
    returns a pytree with leading dim `b` (e.g. weighted gradients). Returns leaves
    shaped `(n, ...)`. When chunks of whole examples fit (`batch_size >= samples`)
    and evaluate no more rows than chunks of rows, the sum is a reshape;
    otherwise chunks straddle examples and rows are scatter-added. Either way
    at most `batch_size` rows exist at once.
    """
    bs = chunk_size(batch_size, n * samples)
    if bs >= samples and _whole_examples_waste_least(n, samples, bs):
        def whole(start, size):
            ex = jnp.repeat(start + jnp.arange(size, dtype=jnp.int32), samples)
            s = jnp.tile(jnp.arange(samples, dtype=jnp.int32), size)
            out = fn(ex, s)
            return jax.tree.map(
                lambda o: o.astype(accumulator(o.dtype)).reshape((size, samples) + o.shape[1:]).sum(1),
                out)

        return chunked_map(whole, n, bs // samples, report=samples)

    zeros = jnp.zeros((bs,), jnp.int32)
    shapes = jax.eval_shape(fn, zeros, zeros)
    init = jax.tree.map(lambda sh: jnp.zeros((n,) + sh.shape[1:], accumulator(sh.dtype)), shapes)

    def part(acc, start, size, skip):
        ex, s = flat_index(start, size, samples)
        return jax.tree.map(lambda a, o: a.at[ex].add(_fresh_only(o, skip).astype(a.dtype)), acc,
                            fn(ex, s))

    return fold(part, init, n * samples, bs, report=1)


def _whole_examples_waste_least(n: int, samples: int, bs: int) -> bool:
    """Whether chunks of whole examples evaluate no more rows than chunks of rows.

    Equal chunks overlap when their size does not divide the total: 8 examples
    of 20 samples in chunks of at most 64 rows are 3 chunks of 3 examples (180
    rows) but 3 chunks of 54 rows (162). The layer path methods (8 images x 20
    steps, small CNN) took 10-12% longer with whole examples there.
    """
    count, size = chunking(n, bs // samples)
    rows_count, rows_size = chunking(n * samples, bs)
    return count * size * samples <= rows_count * rows_size


def values_at(model: Callable, target: Any, xs: list[jax.Array], batch_size: int | None, *,
              repeats: bool = False):
    """Target values at a few full batches `xs` (each `(N, ...)`), resolving "predicted" at `xs[0]`.

    Returns `(list of (N,) values, bound target)`; evaluates `len(xs) * N` inputs
    in chunks of at most `batch_size` (`repeats`: the progress bar also counts the rows the
    last chunk repeats, for methods whose `n_evals` counts them).
    """
    n = xs[0].shape[0]
    allx = jnp.concatenate(xs, axis=0) if len(xs) > 1 else xs[0]
    outs = chunked_apply(model, allx, batch_size, repeats=repeats)
    bound = target.bind(outs[:n])
    return [bound.select(outs[i * n : (i + 1) * n]) for i in range(len(xs))], bound
