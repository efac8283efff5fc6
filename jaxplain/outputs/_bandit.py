"""KL confidence bounds and the per-example decisions of the anchors search (traceable).

The search state of one example is a `Search`; `decide` advances its phase from
the counts it has (sampling candidates to a minimum, KL-LUCB rounds, verifying
the best candidate, next anchor size, done) and says which candidate each of the
round's rows samples; `record` adds the round's outcomes. Both run under
`jax.vmap` over examples.

Candidates of one size extend the current anchor `A` by one segment `i`. To give
each a first estimate, the search samples `A` itself: a perturbation of `A` that
happened to keep `i` is a perturbation of `A + {i}` (the other segments are still
kept independently), so one round counts for about `p_keep` of the candidates at
once. Samples drawn for one candidate never count for another (that would bias
its precision upwards: the extra kept segment makes the prediction easier to hold).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

INIT, LUCB, VERIFY, DONE = 0, 1, 2, 3
_EPS = 1e-7


def kl_bernoulli(p: jax.Array, q: jax.Array) -> jax.Array:
    """KL divergence between Bernoulli(p) and Bernoulli(q)."""
    p = jnp.clip(p, _EPS, 1 - _EPS)
    q = jnp.clip(q, _EPS, 1 - _EPS)
    return p * jnp.log(p / q) + (1 - p) * jnp.log((1 - p) / (1 - q))


def kl_bounds(mean: jax.Array, n: jax.Array, level: jax.Array, iters: int = 24):
    """`(lower, upper)`: the extreme `q` with `n * kl(mean, q) <= level` (bisection).

    No samples (`n = 0`) give `(0, 1)`.
    """
    budget = level / jnp.maximum(n, 1).astype(mean.dtype)

    def search(lo, hi, up):
        def body(_, c):
            lo, hi = c
            mid = 0.5 * (lo + hi)
            inside = kl_bernoulli(mean, mid) <= budget
            return (jnp.where(inside == up, mid, lo), jnp.where(inside == up, hi, mid))

        return jax.lax.fori_loop(0, iters, body, (lo, hi))

    upper = search(mean, jnp.ones_like(mean), True)[0]
    lower = search(jnp.zeros_like(mean), mean, False)[1]
    empty = n == 0
    return jnp.where(empty, 0.0, lower), jnp.where(empty, 1.0, upper)


def lucb_beta(n_arms: jax.Array, t: jax.Array, delta: jax.Array) -> jax.Array:
    """The exploration rate of KL-LUCB (Kaufmann & Kalyanakrishnan, 2013), with
    their constants `alpha = 1.1`, `k1 = 405.5`: `log(k1 K t^alpha / delta)` plus
    its logarithm."""
    v = jnp.log(405.5 * jnp.maximum(jnp.asarray(n_arms, jnp.float32), 1.0)
                * jnp.maximum(jnp.asarray(t, jnp.float32), 1.0) ** 1.1 / delta)
    return v + jnp.log(v)


class Search(NamedTuple):
    """The anchors search of one example (leaves per example; a batch under vmap)."""

    base: jax.Array  # (d,) bool: the anchor the candidates extend
    stage: jax.Array  # int: candidate size (0: the empty anchor is the only candidate)
    n: jax.Array  # (d + 1,) samples per candidate (i < d: base + {i}; d: base)
    s: jax.Array  # (d + 1,) samples that kept the prediction
    phase: jax.Array
    t: jax.Array  # KL-LUCB rounds in this stage
    chosen: jax.Array  # the candidate being verified
    result: jax.Array  # (d,) bool: the anchor returned
    res_n: jax.Array
    res_s: jax.Array
    valid: jax.Array  # bool: the result meets the precision
    n_evals: jax.Array


def start(d: int) -> Search:
    z = jnp.int32(0)
    zeros = jnp.zeros((d + 1,), jnp.int32)
    return Search(jnp.zeros((d,), bool), z, zeros, zeros, z, z, jnp.int32(d),
                  jnp.zeros((d,), bool), z, z, jnp.bool_(False), z)


def candidates(st: Search, present: jax.Array) -> jax.Array:
    """`(d + 1,)` bool: the candidates of this stage."""
    extend = jnp.concatenate([present & ~st.base, jnp.zeros((1,), bool)])
    empty = jnp.zeros_like(extend).at[-1].set(True)
    return jnp.where(st.stage == 0, empty, extend)


def mask_of(st: Search, arm: jax.Array) -> jax.Array:
    """The anchor (d,) bool of candidate `arm`."""
    d = st.base.shape[0]
    return st.base | (jnp.arange(d) == arm)


class Rule(NamedTuple):
    """The settings of the search (traced scalars, static ints)."""

    precision: jax.Array
    epsilon: jax.Array
    delta: jax.Array
    min_samples: int
    max_size: jax.Array
    rows: int


def decide(st: Search, present: jax.Array, rule: Rule) -> tuple[Search, jax.Array]:
    """Advances the phase of one example from its counts; returns it and the arms `(rows,)`."""
    valid = candidates(st, present)
    nv = jnp.sum(valid)
    mean = st.s / jnp.maximum(st.n, 1)
    fewest = jnp.min(jnp.where(valid, st.n, jnp.iinfo(jnp.int32).max))
    phase = jnp.where((st.phase == INIT) & (fewest >= rule.min_samples), LUCB, st.phase)
    # KL-LUCB: stop when the best candidate's lower bound is within epsilon of the
    # largest upper bound of the others
    lb, ub = kl_bounds(mean, st.n, lucb_beta(nv, st.t.astype(jnp.float32) + 1.0, rule.delta))
    idx = jnp.arange(mean.shape[0])
    best = jnp.argmax(jnp.where(valid, mean, -1.0))
    rival = jnp.argmax(jnp.where(valid & (idx != best), ub, -1.0))
    stop = (nv <= 1) | (ub[rival] - lb[best] <= rule.epsilon)
    to_verify = (phase == LUCB) & stop
    chosen = jnp.where(to_verify, best, st.chosen)
    phase = jnp.where(to_verify, VERIFY, phase)
    # verification (Ribeiro et al.): sample the chosen candidate until its precision
    # bounds sit epsilon away from the required precision on the side of its mean
    m, nc = mean[chosen], st.n[chosen]
    lbc, ubc = kl_bounds(m, nc, jnp.log(1.0 / rule.delta))
    tau, eps = rule.precision, rule.epsilon
    more = ((m >= tau) & (lbc < tau - eps)) | ((m < tau) & (ubc >= tau + eps))
    settle = (phase == VERIFY) & ~more
    accept = settle & (m >= tau)
    reject = settle & ~accept
    st = st._replace(phase=phase, chosen=chosen)
    st = _settle(st, settle, accept, reject, present, rule)
    return st, _arms(st, best, rival, rule.rows)


def _settle(st: Search, settle, accept, reject, present, rule: Rule) -> Search:
    """Records the verified candidate; a rejected one becomes the base of the next stage."""
    cand = mask_of(st, st.chosen)
    result = jnp.where(settle, cand, st.result)
    res_n = jnp.where(settle, st.n[st.chosen], st.res_n)
    res_s = jnp.where(settle, st.s[st.chosen], st.res_s)
    stage = jnp.where(reject, st.stage + 1, st.stage)
    base = jnp.where(reject, cand, st.base)
    exhausted = reject & ((stage > rule.max_size) | ~jnp.any(present & ~base))
    next_stage = reject & ~exhausted
    zeros = jnp.zeros_like(st.n)
    return st._replace(
        base=base, stage=stage, result=result, res_n=res_n, res_s=res_s,
        valid=st.valid | accept,
        phase=jnp.where(accept | exhausted, DONE, jnp.where(next_stage, INIT, st.phase)),
        n=jnp.where(next_stage, zeros, st.n), s=jnp.where(next_stage, zeros, st.s),
        t=jnp.where(next_stage, 0, st.t))


def _arms(st: Search, best, rival, rows: int) -> jax.Array:
    """Per row, the candidate it samples: the base anchor (index d) while candidates get
    their first samples, the best and its rival in KL-LUCB rounds, the chosen one in
    verification."""
    r = jnp.arange(rows)
    base = jnp.full_like(r, st.base.shape[0])
    lucb = jnp.where(r < rows // 2, rival, best)
    return jnp.select([st.phase == INIT, st.phase == LUCB, st.phase == VERIFY],
                      [base, lucb, jnp.full_like(r, st.chosen)], base)


def record(st: Search, arms: jax.Array, masks: jax.Array, hits: jax.Array) -> Search:
    """Adds one round: rows `arms (rows,)` drew `masks (rows, d)` and kept the prediction
    where `hits (rows,)`. A draw of the base anchor (arm d) counts for the base and for
    every candidate whose segment it kept; any other draw for its own candidate only."""
    active = st.phase != DONE
    d = masks.shape[1]
    own = arms[:, None] == jnp.arange(d + 1)[None]
    from_base = (arms == d)[:, None] & jnp.concatenate([masks, jnp.ones_like(masks[:, :1])], 1)
    counted = (own | from_base) & active
    return st._replace(
        n=st.n + jnp.sum(counted, axis=0), s=st.s + jnp.sum(counted & hits[:, None], axis=0),
        t=jnp.where(st.phase == LUCB, st.t + 1, st.t),
        n_evals=st.n_evals + jnp.where(active, arms.shape[0], 0))
