"""KernelSHAP's coalition plan: which coalition sizes are enumerated, how the budget is
shared between the sampled strata, and the coalitions themselves, drawn on device
(`kernelshap.py` holds the estimator).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .engine import (
    ranks_from_bits,
    unit_bits,
)


N_GROUPS = 8
"""The fewest groups of sampled units (pairs when paired) for the jackknife standard
error: with fewer sampled units there is no stderr."""

MAX_GROUPS = 64
"""The most jackknife groups. A schedule uses as many groups as its first round has
sampled units, between `N_GROUPS` and `max_groups(d)`. More groups make the stderr
less noisy, so the Student t quantile of its interval (`stderr_df = groups - 1`)
shrinks (`t(15)/1.96 = 1.09`, `t(63)/1.96 = 1.02` instead of `t(7)/1.96 = 1.21`), and
the jackknife's own upward bias shrinks too: intervals narrow at the same coverage.
Measured against exact values (200 keys, default settings;
`benchmarks.sample_efficiency`'s games) when the stderr still included that t factor,
rms(stderr) / RMSE with 8 / 16 / 32 groups: 1.24 / 1.12 / 1.07 (d = 12,
products/maxima, 300 evaluations), 1.23 / 1.10 / 1.05 (the same, 3000), 1.21 / 1.09 /
1.04 (d = 16, products/maxima, 1000), 1.23 / 1.11 / 1.06 (d = 64, 3000), 1.45 / 1.29 /
1.23 (d = 16, smooth, 100) and 1.68 / 1.48 / 1.40 (d = 64, 300); 95% coverage
0.95-0.96 throughout (0.98-0.99 at d = 64, 300). On the d = 16 smooth game at 100
evaluations (49 sampled pairs, 100 keys), 16 / 32 / 49 groups (one pair each: the
delete-one jackknife) gave 1.29 / 1.22 / 1.21, coverage 0.96 / 0.95 / 0.95. The
delete-a-group jackknife's excess there is not the strata: replicates that re-weight
each stratum by its own remaining units gave 1.32 / 1.27 / 1.25. The linearised
(infinitesimal) jackknife, which keeps the full fit's Gram matrix in every replicate,
gave 0.89 with coverage 0.88 (d = 16) and 0.81 with coverage 0.87 (d = 64, 300): too
narrow on its own; `kernelshap.estimate` takes the geometric mean of the two. The
estimates do not depend on the groups."""

GROUP_FLOATS = 16 * 64 * 64
"""Each group holds its own `(d, d)` regression statistics per example, so the groups
are capped at `GROUP_FLOATS / d^2` (but never below 16): per example, no more memory
than 16 groups take at d = 64 (256 KiB)."""


def max_groups(d: int) -> int:
    """The most jackknife groups at `d` features: `MAX_GROUPS` (d <= 32), 16 from d = 64."""
    return min(MAX_GROUPS, max(16, GROUP_FLOATS // max(d * d, 1)))


ENUM_SHARE = 0.65
"""A coalition size is enumerated when its kernel-proportional share of the
remaining budget covers at least this fraction of its coalitions. Enumerating
removes the size's sampling error at the cost of samples for the other sizes;
on 8 CNN games and 4 random third-order games (d = 12, 60 seeds each) the
break-even share was between 0.65 and 0.77. At the budgets where 0.65 enumerates
more than shap's rule (a share of 1) does, it changed the RMSE by 0.64-1.00x on
the CNN games and 0.76-1.07x on the random ones; a share of 0.5 went up to 1.2x."""

WOR_MAX = 1 << 14
"""Sizes with at most this many coalitions (pairs when paired) are sampled
without replacement, from one random permutation of them per call (its memory
is bounded by this); larger ones draw coalitions independently, where repeats
are rare anyway."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which coalitions KernelSHAP evaluates (static, decided at Python time).

    Unit `i < n_enum` is enumerated coalition `i`: blocks of all subsets of one
    size (`block_size`, `block_start`, `block_flip` for complements, exact kernel
    weight `block_weight`). The other sizes are sampled as strata: stratum `h`
    holds the coalitions of size `strata_size[h]` (and, paired, their
    complements), `strata_pop[h]` sampling units (coalitions, or complementary
    pairs) of kernel mass `strata_mass[h]`. The first round gives stratum `h`
    `first[h]` of its `n_units - n_enum` sampled coalitions, every later
    (adaptive) round `later[h]` of `n_units`, in proportion to the mass, so
    every round is a stratified sample; `mass` is the strata's total mass.
    """

    d: int
    n_enum: int
    n_units: int
    block_start: tuple[int, ...] = ()
    block_size: tuple[int, ...] = ()
    block_flip: tuple[bool, ...] = ()
    block_weight: tuple[float, ...] = ()
    paired: bool = True
    strata_size: tuple[int, ...] = ()
    strata_pop: tuple[int, ...] = ()
    strata_mass: tuple[float, ...] = ()
    first: tuple[int, ...] = ()
    later: tuple[int, ...] = ()
    mass: float = 0.0
    n_groups: int = N_GROUPS

    @property
    def exact(self) -> bool:
        return not self.strata_size

    @property
    def per_unit(self) -> int:
        """Coalitions per sampling unit: 2 (a coalition and its complement) when paired."""
        return 2 if self.paired else 1

    @property
    def stratum_units(self) -> tuple[np.ndarray, np.ndarray]:
        """Sampling units per stratum in the first round and in every later round."""
        pu = self.per_unit
        return -(-np.asarray(self.first) // pu), -(-np.asarray(self.later) // pu)


SAMPLINGS = ("kernel", "leverage")
"""How KernelSHAP shares its budget between coalition sizes (`schedule`)."""


@functools.lru_cache(maxsize=256)
def schedule(d: int, n_samples: int, enumerate_sizes: bool = True, paired: bool = True,
             sampling: str = "kernel") -> Schedule:
    """The KernelSHAP coalition schedule for `d` features and a budget of `n_samples`.

    `sampling="kernel"` shares the budget between sizes in proportion to their
    Shapley-kernel mass (shap's and Covert & Lee's choice); `"leverage"` in
    proportion to their leverage scores, equal for every size (Musco & Witter
    2024), which samples the middle sizes more. Either way each size is a stratum
    weighted by its kernel mass, so only the variance changes.

    Cached: it depends on its arguments alone, and building it took 75 us of each
    call's host time (64 features, 1000 samples; more with a cold cache)."""
    if d < 2:
        return Schedule(d, 0, 0, paired=paired)
    mass = {s: (d - 1) / (s * (d - s)) for s in range(1, d)}
    share = mass if sampling == "kernel" else {s: 1.0 for s in range(1, d)}
    left, rem, k = n_samples, sum(share.values()), 0
    blocks = []
    for s in range(1, d // 2 + 1):
        mirrored = s != d - s
        count = math.comb(d, s) * (2 if mirrored else 1)
        m = share[s] * (2 if mirrored else 1)
        rest = sum(math.comb(d, t) for t in range(s, d - s + 1))
        fits = count <= left and (left * m / rem >= ENUM_SHARE * count * (1 - 1e-9) or rest <= left)
        if not (enumerate_sizes or rest <= left) or not fits:
            break
        start = n_samples - left
        weight = mass[s] / math.comb(d, s)
        blocks.append((start, s, False, weight))
        if mirrored:
            blocks.append((start + math.comb(d, s), s, True, weight))
        left, rem, k = left - count, rem - m, s
    n_enum = n_samples - left
    bs, bz, bf, bw = map(tuple, zip(*blocks)) if blocks else ((), (), (), ())
    if k + 1 > d - k - 1:
        return Schedule(d, n_enum, n_enum, bs, bz, bf, bw, paired)
    if paired:  # one stratum per size s <= d/2, its units complementary pairs
        sizes = list(range(k + 1, d // 2 + 1))
        pops = [math.comb(d, s) if 2 * s != d else math.comb(d, s) // 2 for s in sizes]
        masses = [mass[s] * (2 if 2 * s != d else 1) for s in sizes]
        shares = [share[s] * (2 if 2 * s != d else 1) for s in sizes]
    else:
        sizes = list(range(k + 1, d - k))
        pops = [math.comb(d, s) for s in sizes]
        masses = [mass[s] for s in sizes]
        shares = [share[s] for s in sizes]
    per_unit = 2 if paired else 1
    caps = [p * per_unit for p in pops]
    first = allocate(left, shares, caps, per_unit)
    units = sum(-(-c // per_unit) for c in first)
    return Schedule(
        d,
        n_enum,
        n_samples,
        bs,
        bz,
        bf,
        bw,
        paired,
        tuple(sizes),
        tuple(pops),
        tuple(masses),
        first,
        allocate(n_samples, shares, [n_samples] * len(shares), per_unit),  # later rounds: no caps
        float(sum(masses)),
        min(max_groups(d), max(N_GROUPS, units)),
    )


def allocate(n: int, masses: list[float], caps: list[int], per_unit: int) -> tuple[int, ...]:
    """`n` coalitions split over strata in proportion to `masses`, none above its cap.

    Whole units (`per_unit` coalitions) by largest remainder; a last coalition
    that does not fill a unit goes to the stratum with the largest remainder.
    """
    out = [0] * len(masses)
    active, left = list(range(len(masses))), n
    while active:  # water-filling: strata whose share reaches the cap take all of it
        total = sum(masses[h] for h in active)
        full = [h for h in active if left * masses[h] / total >= caps[h]]
        if not full:
            break
        for h in full:
            out[h], left = caps[h], left - caps[h]
        active = [h for h in active if h not in full]
    if not active:
        return tuple(out)
    total = sum(masses[h] for h in active)
    ideal = {h: left * masses[h] / total / per_unit for h in active}
    for h in active:
        out[h] = int(math.floor(ideal[h])) * per_unit
    spare = left - sum(out[h] for h in active)
    order = sorted(active, key=lambda h: (-(ideal[h] - math.floor(ideal[h])), h))
    for h in order:
        if spare >= per_unit and out[h] + per_unit <= caps[h]:
            out[h], spare = out[h] + per_unit, spare - per_unit
    for h in order:
        if spare > 0 and out[h] < caps[h]:
            out[h], spare = out[h] + 1, spare - 1
    return tuple(out)


def groups(sampled: int, paired: bool) -> int:
    """Sampling units (pairs when `paired`) among `sampled` coalitions: the jackknife groups they fill."""
    return (sampled + 1) // 2 if paired else sampled


def unrank(rank: jax.Array, size: jax.Array, d: int) -> jax.Array:
    """Subsets `(b, d)` bool of `size` features with lexicographic-colex index `rank` (both `(b,)`)."""
    table = np.array(
        [[min(math.comb(j, k), 2**31 - 1) for k in range(d + 1)] for j in range(d)], np.int64
    )
    table = jnp.asarray(table.astype(np.int32))

    def body(t, carry):
        r, k, mask = carry
        j = d - 1 - t
        c = table[j, k]
        take = (k > 0) & (r >= c)
        return r - jnp.where(take, c, 0), k - take.astype(k.dtype), mask.at[:, j].set(take)

    init = (rank, size, jnp.zeros(rank.shape + (d,), bool))
    return jax.lax.fori_loop(0, d, body, init)[2]


def permutations(plan: Schedule, key: jax.Array, rounds: int | None = None) -> jax.Array:
    """One random order of the units of each stratum of at most `WOR_MAX` units.

    Row `wor_row(plan)[h]` starts with a uniformly random permutation of
    `0..strata_pop[h]-1`; the rows are `(strata sampled without replacement, width)`.
    With `rounds` (static), only the prefix those rounds can reach is computed:
    its `k` smallest sort keys (`lax.top_k`), the same entries as the full order's
    first `k`. XLA:CPU's sort is a comparator loop: for 16 features and 1000
    samples, six strata of up to 11 440 coalitions took 10 ms to order in full, 1.1
    ms for the 89 each call can reach; KernelSHAP went from 121.7 to 110.2 ms on the
    small CNN and from 15.3 to 5.9 ms on a linear model (jax 0.10.2, Xeon, 2 cores).
    Adaptive calls (rounds not known when compiling) order the whole rows.
    """
    pops = [p for p in plan.strata_pop if p <= WOR_MAX] or [1]
    width = max(pops)
    rows = []
    for r, p in enumerate(pops):
        bits = jax.random.bits(jax.random.fold_in(key, 0xFFFFFFFE - r), (width,), jnp.uint32)
        # 30 random bits as the pattern of a normal positive float (no denormals to flush),
        # in the same order; entries past the stratum's size sort last
        code = jnp.where(jnp.arange(width) < p, bits >> 2, jnp.uint32((1 << 30) - 1))
        rows.append(jax.lax.bitcast_convert_type(code + jnp.uint32(1 << 23), jnp.float32))
    keys = jnp.stack(rows)
    if rounds is not None:
        uf, ul = plan.stratum_units
        reach = (uf + (rounds - 1) * ul)[[p <= WOR_MAX for p in plan.strata_pop]]
        k = min(width, max(reach.tolist() + [1]))
        if k < width:  # ties go to the lower index in both, as in a stable sort
            return jax.lax.top_k(-keys, k)[1].astype(jnp.int32)
    return jnp.argsort(keys, axis=-1, stable=True).astype(jnp.int32)


def wor_row(plan: Schedule) -> np.ndarray:
    """Each stratum's row of `permutations` (0, unused, for strata drawn independently)."""
    rows = np.cumsum([p <= WOR_MAX for p in plan.strata_pop]) - 1
    return np.where(np.asarray(plan.strata_pop, object) <= WOR_MAX, rows, 0).astype(np.int32)


def coalitions(plan: Schedule, key: jax.Array, i: jax.Array, orders: jax.Array):
    """Coalitions `(b, d)`, weights `(b,)` and jackknife group `(b,)` of units `i` (group -1: enumerated).

    `orders` is `permutations(plan, key)`. Unit `i` of round `r = i // n_units`
    (`i` counts on across adaptive rounds) is the `k`-th draw of its stratum:
    unit `k` of the stratum's random order while `k` is below its size (so no
    coalition repeats), an independent uniform draw after that. Paired units are
    a coalition of the stratum's size and its complement, in consecutive slots.
    """
    d = plan.d
    r = i // max(plan.n_units, 1)
    local = i - r * plan.n_units
    enum = (r == 0) & (local < plan.n_enum)
    if plan.block_start:
        starts = jnp.asarray(plan.block_start, jnp.int32)
        blk = jnp.clip(jnp.searchsorted(starts, i, side="right") - 1, 0, len(plan.block_start) - 1)
        e_rank, e_size = i - starts[blk], jnp.asarray(plan.block_size, jnp.int32)[blk]
        e_flip = jnp.asarray(plan.block_flip)[blk]
        e_weight = jnp.asarray(plan.block_weight, jnp.float32)[blk]
    else:
        e_rank = e_size = jnp.zeros(i.shape, jnp.int32)
        e_flip, e_weight = jnp.zeros(i.shape, bool), jnp.zeros(i.shape)
    if plan.exact:
        return unrank(e_rank, e_size, d) ^ e_flip[:, None], e_weight, jnp.full(i.shape, -1)
    pu = plan.per_unit
    first, later = np.asarray(plan.first), np.asarray(plan.later)
    later_round = r > 0
    j = jnp.where(later_round, local, jnp.maximum(local - plan.n_enum, 0))  # slot among the sampled
    starts = jnp.where(
        later_round[:, None],
        jnp.asarray(np.cumsum(later) - later, jnp.int32)[None],
        jnp.asarray(np.cumsum(first) - first, jnp.int32)[None],
    )
    h = (
        jnp.sum(starts <= j[:, None], axis=1) - 1
    )  # its stratum (an empty one is never the last match)
    within = j - jnp.take_along_axis(starts, h[:, None], 1)[:, 0]
    uf, ul = plan.stratum_units
    units_first, units_later = jnp.asarray(uf, jnp.int32), jnp.asarray(ul, jnp.int32)
    k = within // pu + jnp.where(later_round, units_first[h] + (r - 1) * units_later[h], 0)
    # jackknife group: the unit's ordinal among all sampled units, so any `n_groups`
    # consecutive units fill the groups whatever strata they belong to
    ordinal = within // pu + jnp.where(
        later_round,
        int(uf.sum()) + (r - 1) * int(ul.sum()) + jnp.asarray(np.cumsum(ul) - ul, jnp.int32)[h],
        jnp.asarray(np.cumsum(uf) - uf, jnp.int32)[h],
    )
    size = jnp.asarray(plan.strata_size, jnp.int32)[h]
    pop = jnp.asarray(np.minimum(plan.strata_pop, 2**31 - 1), jnp.int32)[h]
    # without replacement: the k-th unit of the stratum's random order, as a colex rank (a
    # middle-size pair is represented by its subset holding feature d-1: the last `pop` ranks)
    wor = (pop <= WOR_MAX) & (k < pop)
    middle = (2 * size == d) if plan.paired else jnp.zeros(i.shape, bool)
    row = jnp.asarray(wor_row(plan))[h]
    rank = orders[row, jnp.clip(k, 0, orders.shape[1] - 1)] + jnp.where(middle, pop, 0)
    picked = unrank(
        jnp.where(enum, e_rank, jnp.where(wor, rank, 0)), jnp.where(enum, e_size, size), d
    )
    drawn = ranks_from_bits(unit_bits(key, k * len(plan.strata_size) + h, d)) < size[:, None]
    flip = jnp.where(enum, e_flip, plan.paired & (within % 2 == 1))
    mask = jnp.where((enum | wor)[:, None], picked, drawn) ^ flip[:, None]
    # each stratum carries its kernel mass in every round, whatever its rounded count
    share = np.asarray(plan.strata_mass) / plan.mass
    w_first = np.where(first > 0, share * first.sum() / np.maximum(first, 1), 0.0)
    w_later = np.where(later > 0, share * later.sum() / np.maximum(later, 1), 0.0)
    weight = jnp.where(
        later_round, jnp.asarray(w_later, jnp.float32)[h], jnp.asarray(w_first, jnp.float32)[h]
    )
    return mask, jnp.where(enum, e_weight, weight), jnp.where(enum, -1, ordinal % plan.n_groups)


def finite_population(plan: Schedule, i: jax.Array) -> jax.Array:
    """`sqrt(1 - f)` per unit `i (b,)`: the finite-population correction of its stratum
    when the call's (`rounds=1`) or the unit's round's draws are a fraction `f` of it.

    Units are drawn without replacement, so a stratum sampled in full contributes no
    variance; beyond its size the extra draws are independent (`|pop - n| / max(pop, n)`).
    Without it the jackknife was 2.2-3.4x too wide where the budget covers most
    coalitions (d = 10: 300 samples with `enumerate_sizes=False`, or 1000)."""
    if plan.exact:
        return jnp.zeros(i.shape)
    r = i // max(plan.n_units, 1)
    local = i - r * plan.n_units
    first, later = np.asarray(plan.first), np.asarray(plan.later)
    j = jnp.where(r > 0, local, jnp.maximum(local - plan.n_enum, 0))
    starts = jnp.where(
        (r > 0)[:, None],
        jnp.asarray(np.cumsum(later) - later, jnp.int32)[None],
        jnp.asarray(np.cumsum(first) - first, jnp.int32)[None],
    )
    h = jnp.sum(starts <= j[:, None], axis=1) - 1
    uf, ul = plan.stratum_units
    drawn = (jnp.asarray(uf, jnp.float32)[h] + r.astype(jnp.float32) * jnp.asarray(ul, jnp.float32)[h])
    pop = jnp.asarray(np.asarray(plan.strata_pop, np.float64), jnp.float32)[h]
    return jnp.sqrt(jnp.abs(pop - drawn) / jnp.maximum(jnp.maximum(pop, drawn), 1.0))
