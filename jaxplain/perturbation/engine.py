"""The perturbation engine: coalitions -> inputs built on device -> chunked evaluation.

LIME, Shapley estimators, occlusion, RISE and the deletion/insertion metrics all
reduce to `coalition_values`: evaluate the target on `x` with some features
replaced by a baseline, for many coalitions per example, never holding more
than `batch_size` perturbed inputs at once.

Evaluation counts are honest: the rows a last chunk repeats (see `batching.fold`)
are evaluated, so the estimators' `n_evals` count them (`stream_rows`,
`values_rows`), per example, and the registry's `evals` predicts the same numbers
(`stream_evals`). They are few (fewer than the chunks of each loop), but depend on
`batch_size`: e.g. KernelSHAP with 2998 samples of one example in chunks of 64 runs
3 passes of 1000 units, each 16 chunks of 63, and reports the 3026 rows evaluated.
"""

from __future__ import annotations


from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._core.types import HIGHEST
from .._core import progress as _progress, batching, features
from .._core import validate as V
from .._core.features import apply_coalitions
from .._core.models import as_model
from .._core.targets import Target, as_target


def coalition_values(
    model: Callable,
    target: Target,
    x: jax.Array,
    baseline: jax.Array,
    segments: jax.Array,
    mask_fn: Callable[[jax.Array, jax.Array], jax.Array],
    n_samples: int,
    batch_size: int | None,
) -> jax.Array:
    """Target values of the model on perturbed copies of every example.

    Args:
      model: the model (called on batches of perturbed inputs).
      target: a bound `Target` (no unresolved "predicted").
      x: images `(N, H, W, C)`.
      baseline: replacement values, shaped like `x`.
      segments: int labels `(N, H, W)`.
      mask_fn: `mask_fn(example (b,), sample (b,)) -> (b, d)` coalition masks,
        built on device (e.g. from `jax.random.fold_in(key, sample)`).
      n_samples: coalitions per example.
      batch_size: perturbed inputs per chunk.

    Returns:
      `(N, n_samples)` target values.
    """
    n = x.shape[0]

    def chunk(start, size):
        ex, s = batching.flat_index(start, size, n_samples)
        inputs = apply_coalitions(x[ex], baseline[ex], segments[ex], mask_fn(ex, s))
        return target.take(ex).select(model(inputs))

    return batching.chunked_map(chunk, n * n_samples, batch_size).reshape(n, n_samples)


# ---- streaming engine ------------------------------------------------------------------


class Chunk(NamedTuple):
    """One chunk of evaluated units, handed to an estimator's `reduce` function.

    Attributes:
      ex0: first example index touched by the chunk (traced int).
      onehot: `(m, K)` float one-hot of `example - ex0` (K static, small): use it
        to sum per-unit statistics per example, then `add_local(acc, ex0, part)`.
        Its rows are zero for units an earlier chunk already covered (the last
        chunk overlaps its predecessor, see `batching.fold`): always sum through
        it, never by `ex` alone.
      ex: example index of each unit `(m,)`.
      unit: unit index within its example `(m,)` (offset included).
      aux: the per-row data `units_fn` returned (leaves `(m, unit_size, ...)`).
      extra: the per-unit data `units_fn` returned (leaves `(m, ...)`), or None.
      values: target values `(m, unit_size)`.
    """

    ex0: jax.Array
    onehot: jax.Array
    ex: jax.Array
    unit: jax.Array
    aux: Any
    extra: Any
    values: jax.Array


UNITS_CHUNKS = 16
"""`stream` builds the unit data (`units_fn`: coalitions, masks, weights) of up to
this many chunks in one pass, then evaluates those chunks. Small array work has a
fixed cost on XLA:CPU: KernelSHAP's coalitions (threefry draws, ranks, strata
bookkeeping) took 0.32 ms for 64 units and 1.6 ms for 1000. In one pass, KernelSHAP
with 1000 samples of 64 features on the small CNN (chunks of 64) went from 126 / 118
ms to 121 / 112 ms (average / max pooling), LIME from 121 / 112 to 117 / 112 ms,
with the same values; on a linear model KernelSHAP went from 13.3 to 8.6 ms. Memory
stays bounded by the chunk size: a pass holds at most this many chunks' unit data
(and at most `UNITS_BYTES` of it), whatever the number of samples. KernelSHAP's
program (64 features, chunks of 64, a linear model) needs 5.2 MiB of scratch
memory at 1000 samples and at 16 000, where it needed 1.8 MiB chunk by chunk."""

UNITS_BYTES = 4 * 2**20
"""The most unit data (the outputs of `units_fn`) one pass of `stream` builds."""


def stream(
    model: Callable,
    target: Target,
    n: int,
    n_units: int,
    units_fn: Callable[[jax.Array, jax.Array], Any],
    inputs_fn: Callable[[jax.Array, Any], jax.Array],
    reduce_fn: Callable[[Any, Chunk], Any],
    init: Any,
    batch_size: int | None,
    *,
    unit_size: int = 1,
    offset: jax.Array | int = 0,
) -> Any:
    """Streams `n * n_units` units of `unit_size` model evaluations each.

    Unit `u` of example `e` has flat index `e * n_units + u`; chunks hold whole
    units and at most `batch_size` model inputs (a unit larger than that is
    evaluated in sub-batches). Per unit, `units_fn(ex (m,), u (m,))` returns
    `(aux, extra)`: per-row data with leaves `(m, unit_size, ...)` (e.g. coalition
    masks) and per-unit data for the reducer (leaves `(m, ...)`, or None);
    `inputs_fn(ex_rows (b,), aux_rows)` builds the `b` model inputs of some rows
    on device; `reduce_fn(carry, Chunk)` folds the values into running
    per-example statistics. `offset` (may be traced) shifts unit indices, for
    adaptive rounds. `units_fn` runs once per block of up to `UNITS_CHUNKS`
    chunks, not once per chunk.
    """
    if n_units <= 0:
        return init
    total = n * n_units
    bs, m, block = stream_layout(n, n_units, unit_size, batch_size, unit_bytes(units_fn))
    k = min(n, (m + n_units - 2) // n_units + 1)

    def step(carry, start, size, skip, units):
        ex, u = batching.flat_index(start, size, n_units)
        u = u + offset
        aux, extra = units
        rows = size * unit_size
        ex_rows = jnp.repeat(ex, unit_size)
        aux_rows = jax.tree.map(lambda a: a.reshape((rows,) + a.shape[2:]), aux)

        def part(s, b):
            sl = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, s, b), (ex_rows, aux_rows))
            return target.take(sl[0]).select(model(inputs_fn(*sl)))

        values = batching.chunked_map(part, rows, bs, report=0)
        count, sub = batching.chunking(rows, bs)
        rows_evaluated = count * sub
        values = values.astype(batching.accumulator(values.dtype))  # low-precision models
        _progress.report(rows_evaluated)  # repeated rows too: `n_evals` counts them
        ex0 = start // n_units
        # units an earlier chunk covered (the last chunk's overlap) count for no example
        fresh = batching.fresh_rows(size, skip)[:, None]
        onehot = (((ex - ex0)[:, None] == jnp.arange(k)[None]) & fresh).astype(jnp.float32)
        return reduce_fn(
            carry, Chunk(ex0, onehot, ex, u, aux, extra, values.reshape(size, unit_size))
        )

    def block_step(carry, b0, bsize, bskip):  # one pass of units_fn, then its chunks
        ex, u = batching.flat_index(b0, bsize, n_units)
        units = units_fn(ex, u + offset)

        def chunk(carry, s, size, skip):
            part = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, s, size), units)
            # rows the block's predecessor covered are a prefix of the block, so of the chunk
            skip = jnp.maximum(skip, jnp.clip(bskip - s, 0, size))
            return step(carry, b0 + s, size, skip, part)

        return batching.fold(chunk, carry, bsize, m)

    return batching.fold(block_step, init, total, block)


def unit_bytes(units_fn: Callable) -> int:
    """Bytes of the data `units_fn` returns per unit."""
    ones = jnp.zeros((1,), jnp.int32)
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(jax.eval_shape(units_fn, ones, ones)))


def stream_layout(
    n: int, n_units: int, unit_size: int, batch_size: int | None, unit_bytes: int
) -> tuple[int, int, int]:
    """`(rows per model call, units per chunk, units per pass of units_fn)` of a `stream`.

    A pass holds up to `UNITS_CHUNKS` whole chunks, their unit data (`unit_bytes` per
    unit) within `UNITS_BYTES` (at least one chunk, at most every unit)."""
    total = n * n_units
    bs = batching.chunk_size(batch_size, total * unit_size)
    m = min(max(1, bs // unit_size), total)
    if total <= m:
        return bs, m, total
    per_chunk = max(1, unit_bytes * m)
    return bs, m, min(total, max(1, min(UNITS_CHUNKS, UNITS_BYTES // per_chunk)) * m)


def stream_rows(
    n: int, n_units: int, unit_size: int, batch_size: int | None, unit_bytes: int
) -> np.ndarray:
    """Model inputs `stream` evaluates per example, `(n,)` int: the rows a chunk repeats
    (the last chunk of a loop overlaps its predecessor, see `batching.fold`) included.

    Static (from the shapes alone): estimators report it as `n_evals`, and the
    registry's `evals` predicts it before a call."""
    counts = np.zeros(n, np.int64)
    if n_units <= 0 or n <= 0:
        return counts
    total = n * n_units
    bs, m, block = stream_layout(n, n_units, unit_size, batch_size, unit_bytes)
    nb, sb = batching.chunking(total, block)
    nc, sc = batching.chunking(sb, m)
    nr, sr = batching.chunking(sc * unit_size, bs)  # sub-batches of a chunk's rows
    per_unit = nr * sr // sc  # unit_size, more when one unit is split into sub-batches
    # Units per example, in O(n) whatever the number of blocks (a count near 2**31 must
    # not build one entry per block). Blocks 0..nb-2 tile [0, E); the last one is
    # [total - sb, total). Within each pass, its last chunk repeats the units
    # [start + sb - sc, start + (nc - 1) * sc): one interval of length `rep` at the same
    # offset in every period of sb.
    lo = np.arange(n, dtype=np.int64) * n_units
    hi = lo + n_units
    end = (nb - 1) * sb

    def overlap(a, b):
        return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0, None)

    counts = overlap(0, end) + overlap(total - sb, total)
    rep = nc * sc - sb
    if rep > 0:
        def periodic(x):  # repeated units in [0, x), for x <= end
            return (x // sb) * rep + np.clip(x % sb - (sb - sc), 0, rep)

        counts += periodic(np.minimum(hi, end)) - periodic(np.minimum(lo, end))
        counts += overlap(total - sc, total - sb + (nc - 1) * sc)
    return counts * per_unit


def values_rows(n: int, k: int, batch_size: int | None) -> np.ndarray:
    """Model inputs `batching.values_at` evaluates per example for `k` batches of `n`,
    `(n,)` int, repeated rows of its last chunk included."""
    total = n * k
    counts = np.full(n, k, np.int64)
    if total <= 0:
        return counts
    c, s = batching.chunking(total, batch_size)
    rows = np.arange(total - s, (c - 1) * s)
    np.add.at(counts, rows % n, 1)
    return counts


def n_evals(
    n: int, k: int, rounds: Any, n_units: int, unit_size: int, batch_size: int | None,
    unit_bytes: int,
) -> jax.Array:
    """`n_evals (n,)` int32 of an estimator evaluating `k` full batches (`values_at`) and
    `rounds` (may be traced) `stream`s of `n_units` units: every row evaluated counts."""
    fixed = values_rows(n, k, batch_size)
    per_round = stream_rows(n, n_units, unit_size, batch_size, unit_bytes)
    return jnp.asarray(fixed, jnp.int32) + rounds * jnp.asarray(per_round, jnp.int32)


def stream_evals(
    a: dict, k: int, n_units: int, unit_bytes: int, unit_size: int = 1, rounds: int = 1
) -> np.ndarray:
    """A registry `evals` for the bound arguments `a` of a call whose `n_evals` is
    `n_evals(n, k, rounds, n_units, unit_size, batch_size, unit_bytes)`: `(n,)` ints."""
    n = int(np.shape(a["x"])[0])
    bs = V.check_batch_size(a["batch_size"])
    return values_rows(n, k, bs) + rounds * stream_rows(n, n_units, unit_size, bs, unit_bytes)


def add_local(acc: jax.Array, ex0: jax.Array, part: jax.Array) -> jax.Array:
    """Adds per-local-example sums `part (K, ...)` into `acc (N, ...)` at rows `ex0..ex0+K-1`."""
    idx = ex0 + jnp.arange(part.shape[0])
    return acc.at[idx].add(part.astype(acc.dtype), mode="drop")


def merge_moments(stats: tuple, ex0: jax.Array, onehot: jax.Array, samples: jax.Array) -> tuple:
    """Chan's parallel update of per-example running (count, mean, M2) with a chunk.

    `stats = (count (N,), mean (N, d), m2 (N, d))`; `samples (m, d)` belong to the
    examples encoded by `onehot (m, K)` relative to `ex0`.
    """
    count, mean, m2 = stats
    n = count.shape[0]
    k = onehot.shape[1]
    nk = onehot.sum(0)
    mk = jnp.matmul(onehot.T, samples, precision=HIGHEST) / jnp.maximum(nk, 1.0)[:, None]
    local = jnp.argmax(onehot, axis=1)
    m2k = jnp.matmul(onehot.T, jnp.square(samples - mk[local]), precision=HIGHEST)
    idx = ex0 + jnp.arange(k)
    safe = jnp.clip(idx, 0, n - 1)
    c0, mu0, s0 = count[safe], mean[safe], m2[safe]
    c1 = c0 + nk
    delta = mk - mu0
    frac = (nk / jnp.maximum(c1, 1.0))[:, None]
    mu1 = mu0 + delta * frac
    s1 = s0 + m2k + jnp.square(delta) * (c0[:, None] * frac)
    return (
        count.at[idx].set(c1, mode="drop"),
        mean.at[idx].set(mu1, mode="drop"),
        m2.at[idx].set(s1, mode="drop"),
    )


def unit_keys(key: jax.Array, unit: jax.Array) -> jax.Array:
    """One PRNG key per unit index (`fold_in`), so draws never depend on `batch_size`."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(unit)


def unit_bits(key: jax.Array, unit: jax.Array, n: int) -> jax.Array:
    """`n` random uint32 words per unit, `(b, n)`, from `bits(fold_in(key, unit))`.

    One draw per unit (instead of one per distribution) keeps the compiled
    program small; use `uniform_from_bits` and `ranks_from_bits` on the words.
    """
    return jax.vmap(lambda k: jax.random.bits(k, (n,), jnp.uint32))(unit_keys(key, unit))


def uniform_from_bits(bits: jax.Array) -> jax.Array:
    """Uniform floats in [0, 1) from uint32 words (24 bits of mantissa)."""
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


PACKED_INDEX_BITS = 12
"""`ranks_from_bits` packs an item's index into the low bits of its word when an
index needs at most this many bits (up to 4096 items), leaving at least 20 random
bits to order by."""


def ranks_from_bits(bits: jax.Array) -> jax.Array:
    """A uniformly random permutation per row, as the position of each item `(b, d)`.

    Items are ordered by their words, ties broken by index (a stable sort's order).
    Up to `2**PACKED_INDEX_BITS` items the words' low `k = ceil(log2 d)` bits are
    replaced by the item's index and the row sorted as one uint32 operand: the top
    `32 - k` bits order the items, and the sorted words say which item stands where.
    XLA:CPU sorts one plain operand 4-5x faster than an argsort, which carries the
    index as a second operand through a comparator: 1000 rows of 256 items took 6.8
    ms against 29.8 ms (two argsorts), and as long as the pairwise count it replaced
    at 64 items (1.4 ms; jax 0.10.2, Xeon). Above, a stable argsort of the words.
    The positions are the sorted order inverted by one scatter (`features.positions`).
    """
    d = bits.shape[-1]
    k = max(1, (d - 1).bit_length())
    if k > PACKED_INDEX_BITS:
        order = jnp.argsort(bits, axis=-1, stable=True)
    else:
        packed = ((bits >> k) << k) | jnp.broadcast_to(jnp.arange(d, dtype=jnp.uint32), bits.shape)
        order = (jnp.sort(packed, axis=-1) & jnp.uint32((1 << k) - 1)).astype(jnp.int32)
    return features.positions(order.reshape(-1, d)).reshape(bits.shape)


def prepare(model, x, target, segments, baseline, batch_size):
    """Python-time validation shared by the feature methods (ablation, LIME, Shapley):
    `(model, x, target, segments, d, baseline mode, baseline, batch_size)`."""
    model = as_model(model)
    x = V.check_array(x, min_ndim=3)
    t = as_target(target, model, x)
    seg, d = features.check_segments(segments, x.shape)
    mode, b = features.baseline_spec(baseline, x)
    return model, x, t, seg, d, mode, b, V.check_batch_size(batch_size)
