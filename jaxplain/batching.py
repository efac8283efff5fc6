"""Chunked evaluation: bound how many model inputs exist at once.

Every method that needs many model evaluations enumerates them as one flat
range `0..total-1` (for example `example * steps + step`), and processes that
range in chunks of `batch_size` with `lax.scan`. Each chunk builds its model
inputs on device from the chunk's indices, evaluates the model, and folds the
results into a running accumulator. Peak memory therefore depends on
`batch_size`, not on the number of steps or samples.

Several full chunks run inside one `lax.scan`, whose memory is one chunk's
whatever the count (a single chunk runs without a loop). A final
shorter chunk (when `batch_size` does not divide `total`) runs once after them,
so no evaluation is wasted on padding.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ._jaxpr import canonical_convs

DEFAULT_BATCH_SIZE = 128
"""Model inputs per chunk when a method is called with `batch_size=None`.

Cache-sized chunks run fastest on CPU: 1000 forwards of the small benchmark CNN
took 124 ms in chunks of 125 and 172 ms in chunks of 250 (2 cores, jax 0.10.2,
YNNPACK fusions off); pass a larger `batch_size` on accelerators."""

MAX_UNROLL = 1
"""Up to this many full chunks are laid out one after another in the program;
more run inside one `lax.scan`, whose memory is one chunk's whatever the count.
Loop bodies go through `_jaxpr.canonical_convs`: without it XLA:CPU ran the
input-gradient convolutions inside a while-loop body 3-5x slower than outside
(jax 0.10.2), which once made 8 unrolled chunks the faster layout. With it the
scan is as fast (IG, 16 images x 50 steps, chunks of 128: 276 ms scanned vs
288 ms unrolled) and compiles a smaller program."""


def chunk_size(batch_size: int | None, total: int) -> int:
    """The chunk size actually used for `total` evaluations."""
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    return max(1, min(int(batch_size), int(total)))


def fold(fn: Callable[[Any, jax.Array, int], Any], init: Any, total: int, batch_size: int | None) -> Any:
    """`carry = fn(carry, start, size)` over chunks `[start, start + size)` of `range(total)`.

    `start` is a traced int32 scalar, `size` a static Python int.
    """
    bs = chunk_size(batch_size, total)
    n_full, rem = divmod(total, bs)
    carry = init
    if n_full <= MAX_UNROLL:
        for i in range(n_full):
            carry = fn(carry, jnp.int32(i * bs), bs)
    else:
        step = canonical_convs(lambda state, start: fn(state, start, bs))

        def body(c, _):  # the chunk counter rides in the carry: no (n_full,) index array
            state, i = c
            return (step(state, i * bs), i + 1), None

        (carry, _), _ = jax.lax.scan(body, (carry, jnp.int32(0)), None, length=n_full)
    if rem:
        carry = fn(carry, jnp.int32(n_full * bs), rem)
    return carry


def chunked_sum(fn: Callable[[jax.Array, int], Any], total: int, batch_size: int | None) -> Any:
    """Sum over chunks of `fn(start, size)` (any pytree); the chunk sums are added up."""
    bs = chunk_size(batch_size, total)
    shapes = jax.eval_shape(lambda start: fn(start, bs), jnp.int32(0))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return fold(lambda c, start, size: jax.tree.map(jnp.add, c, fn(start, size)), init, total, batch_size)


def chunked_map(fn: Callable[[jax.Array, int], Any], total: int, batch_size: int | None) -> Any:
    """Concatenation over chunks of `fn(start, size)`, each leaf shaped `(size, ...)`.

    Use it for small per-evaluation outputs (one scalar per model call); the model
    inputs themselves never exist for more than one chunk.
    """
    bs = chunk_size(batch_size, total)
    n_full, rem = divmod(total, bs)
    parts = []
    if n_full <= MAX_UNROLL:
        parts.extend(fn(jnp.int32(i * bs), bs) for i in range(n_full))
    else:
        step = canonical_convs(lambda start: fn(start, bs))
        _, ys = jax.lax.scan(lambda c, i: (c, step(i * bs)), None, jnp.arange(n_full, dtype=jnp.int32))
        parts.append(jax.tree.map(lambda y: y.reshape((n_full * bs,) + y.shape[2:]), ys))
    if rem:
        parts.append(fn(jnp.int32(n_full * bs), rem))
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *ys: jnp.concatenate(ys, axis=0), *parts)


def flat_index(start: jax.Array, size: int, per_example: int) -> tuple[jax.Array, jax.Array]:
    """Splits flat indices `start..start+size-1` into `(example, sample)` index arrays."""
    k = start + jnp.arange(size, dtype=jnp.int32)
    return k // per_example, k % per_example


def per_example_sum(fn: Callable[[jax.Array, jax.Array], Any], n: int, samples: int,
                    batch_size: int | None) -> Any:
    """`sum_s fn(example, s)` for every example, streaming `n * samples` evaluations.

    `fn(ex, s)` receives int arrays `(b,)` of example and sample indices and
    returns a pytree with leading dim `b` (e.g. weighted gradients). Returns leaves
    shaped `(n, ...)`. When a chunk holds whole examples (`batch_size >= samples`)
    the sum is a reshape; otherwise chunks straddle examples and rows are
    scatter-added. Either way at most `batch_size` rows exist at once.
    """
    bs = chunk_size(batch_size, n * samples)
    if bs >= samples:
        def whole(start, size):
            ex = jnp.repeat(start + jnp.arange(size, dtype=jnp.int32), samples)
            s = jnp.tile(jnp.arange(samples, dtype=jnp.int32), size)
            out = fn(ex, s)
            return jax.tree.map(lambda o: o.reshape((size, samples) + o.shape[1:]).sum(1), out)

        return chunked_map(whole, n, bs // samples)

    zeros = jnp.zeros((bs,), jnp.int32)
    shapes = jax.eval_shape(fn, zeros, zeros)
    init = jax.tree.map(lambda sh: jnp.zeros((n,) + sh.shape[1:], sh.dtype), shapes)

    def part(acc, start, size):
        ex, s = flat_index(start, size, samples)
        return jax.tree.map(lambda a, o: a.at[ex].add(o), acc, fn(ex, s))

    return fold(part, init, n * samples, bs)
