"""Anchors: the smallest set of segments that, kept, holds the prediction with high precision.

The search of Ribeiro et al. (greedy, one candidate kept per anchor size) runs as
one jitted program: a `lax.while_loop` over rounds in which every example picks
which candidate anchors to sample (`_bandit.decide`: a minimum of samples per
candidate, KL-LUCB rounds, verification of the best), the round's perturbed
inputs of all examples are built on device and evaluated in chunks of
`batch_size`, and the counts are updated. Perturbations depend on the key, the
round and the row only, so an example gets the same anchor alone or in a batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import batching, features, registry
from .._core import validate as V
from .._core.models import as_model
from .._core.types import Array, ArrayLike
from ._bandit import DONE, Rule, candidates, decide, kl_bounds, mask_of, record, start
from ._common import n_classes


class Anchor(NamedTuple):
    """What `anchors` returns: one rule per example (a pytree).

    A rule is a set of segments, not an attribution, hence its own type.

    Attributes:
      anchor: `(N, d)` bool, the segments the rule keeps (all False: the prediction
        holds whatever is removed).
      precision: `(N,)` estimated probability that the prediction holds when the
        anchor's segments are kept and every other segment is kept with
        probability `p_keep` (else replaced by the baseline).
      precision_bounds: `(N, 2)` KL confidence bounds of the precision at level `delta`.
      coverage: `(N,)` estimated probability that a random perturbation keeps the
        whole anchor (how general the rule is).
      coverage_bounds: `(N, 2)` KL confidence bounds of the coverage.
      valid: `(N,)` bool, the search met the required precision (else `anchor` is the
        best rule it reached).
      predicted_class: `(N,)` the class the rule holds.
      n_evals: `(N,)` model evaluations spent.
    """

    anchor: Array
    precision: Array
    precision_bounds: Array
    coverage: Array
    coverage_bounds: Array
    valid: Array
    predicted_class: Array
    n_evals: Array


@registry.method(
    "outputs",
    evals=lambda a: a["max_rounds"] * a["samples_per_round"] + 1,
    evals_bound=True,
    cheap={"samples_per_round": 8, "min_samples": 8, "max_rounds": 6, "n_coverage": 64},
)
def anchors(
    model: Callable,
    x: ArrayLike,
    *,
    segments: ArrayLike,
    precision: float = 0.95,
    key: Any,
    baseline: Any = "mean",
    p_keep: float = 0.5,
    delta: float = 0.1,
    epsilon: float = 0.15,
    samples_per_round: int = 100,
    min_samples: int = 100,
    max_anchor_size: int | None = None,
    max_rounds: int = 1000,
    n_coverage: int = 10_000,
    batch_size: int | None = None,
) -> Anchor:
    """Anchors over superpixels: high-precision rules that hold the predicted class.

    An anchor is a set of segments; a perturbation keeps it and keeps every other
    segment with probability `p_keep` (else fills it with the baseline). Its
    precision is the probability that the model still predicts the class it
    predicts at `x`. Greedy search over anchor sizes: at each size, every
    extension of the current anchor by one segment gets at least `min_samples`
    samples (perturbations of the current anchor that kept its segment), KL-LUCB (Kaufmann & Kalyanakrishnan) samples the best candidate and its
    strongest rival until their confidence bounds separate by `epsilon`, then the
    best candidate is sampled until its precision bounds sit `epsilon` away from
    `precision`: it is the anchor if its estimated precision reaches `precision`,
    otherwise the base of the next size. All examples advance together, one batch
    of `samples_per_round` perturbations each per round.

    Args:
      model: a `Model`, NNX module or callable returning `(N, classes)` outputs.
      x: images `(N, H, W, C)`.
      segments: labels `(H, W)` or `(N, H, W)`, `0..d-1` (`superpixels`, ...).
      precision: the precision an anchor must reach (Ribeiro et al.'s tau).
      key: a `jax.random.key` (required).
      baseline: what removed segments become (as in `lime`): a number, an image,
        one per example, `"blur"` or `"mean"` (each segment's mean colour, the
        anchor package's default).
      p_keep: probability that a segment outside the anchor is kept.
      delta: confidence level of the bounds.
      epsilon: the tolerance of the bandit and of the verification.
      samples_per_round: perturbations per example and round.
      min_samples: samples every candidate gets before the bandit starts.
      max_anchor_size: the largest anchor tried (None: every segment).
      max_rounds: the most rounds (`max_rounds * samples_per_round` evaluations per
        example at most); examples still searching return their best rule with
        `valid=False`.
      n_coverage: perturbations drawn (no model evaluations) to estimate coverage.
      batch_size: model inputs per chunk.

    Returns:
      An `Anchor(anchor, precision, precision_bounds, coverage, coverage_bounds,
      valid, predicted_class, n_evals)`.

    Raises:
      ValueError, TypeError: invalid arguments (before anything compiles).

    References:
      Ribeiro, Singh & Guestrin, "Anchors: High-Precision Model-Agnostic
      Explanations", AAAI 2018. Kaufmann & Kalyanakrishnan, "Information Complexity
      in Bandit Subset Selection", COLT 2013.

    >>> import jax, jax.numpy as jnp
    >>> def model(z):  # class 1 exactly when the left half is kept
    ...     left = z[:, :, :2, 0].mean(axis=(1, 2)) > 0.5
    ...     return jnp.stack([~left, left], axis=-1).astype(jnp.float32)
    >>> seg = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    >>> a = anchors(model, jnp.ones((1, 2, 4, 1)), segments=seg, key=jax.random.key(0),
    ...             baseline=0.0)
    >>> a.anchor[0].tolist(), float(a.precision[0])
    ([True, False], 1.0)
    """
    model = as_model(model)
    x = V.check_array(x, min_ndim=3)
    seg, d = features.check_segments(segments, x.shape)
    mode, b = features.baseline_spec(baseline, x)
    key = V.check_key(key)
    precision = V.check_float(precision, "precision", minimum=0.0, maximum=1.0, open_min=True)
    p_keep = _open_unit(p_keep, "p_keep")
    delta = _open_unit(delta, "delta")
    epsilon = V.check_float(epsilon, "epsilon", minimum=0.0, maximum=1.0)
    rows = V.check_int(samples_per_round, "samples_per_round", minimum=2)
    min_samples = V.check_int(min_samples, "min_samples", minimum=1)
    max_size = d if max_anchor_size is None else V.check_int(
        max_anchor_size, "max_anchor_size", minimum=0)
    max_rounds = V.check_budget(max_rounds, "max_rounds", x.shape[0], per_unit=rows, fixed=1)
    n_coverage = V.check_count(n_coverage, "n_coverage")
    batch_size = V.check_batch_size(batch_size)
    n_classes(model, x)
    return _anchors(model, x, seg, b, key, precision, epsilon, delta, p_keep,
                    np.int32(min(max_size, d)), np.int32(max_rounds),
                    d=d, mode=mode, rows=rows, min_samples=min_samples, n_coverage=n_coverage,
                    batch_size=batch_size)


def _open_unit(v: Any, name: str) -> float:
    v = V.check_float(v, name, minimum=0.0, open_min=True)
    if v >= 1.0:
        V.fail(name, "a number in (0, 1)", v)
    return v


@functools.partial(jit, static_argnames=("d", "mode", "rows", "min_samples", "n_coverage",
                                         "batch_size"))
def _anchors(model, x, seg, b, key, precision, epsilon, delta, p_keep, max_size, max_rounds, *,
             d, mode, rows, min_samples, n_coverage, batch_size):
    n = x.shape[0]
    b = features.make_baseline(mode, b, x, seg, d)
    present = features.feature_counts(seg, d) > 0
    pred = jnp.argmax(batching.chunked_apply(model, x, batch_size), axis=-1)
    rule = Rule(precision, epsilon, delta, min_samples, max_size, rows)
    k_rounds, k_cover = jax.random.split(key)

    def body(carry):
        st, r = carry
        st, arms = jax.vmap(decide, in_axes=(0, 0, None))(st, present, rule)
        keep = jax.random.uniform(jax.random.fold_in(k_rounds, r), (rows, d)) < p_keep
        masks = jax.vmap(lambda s, a: jax.vmap(mask_of, in_axes=(None, 0))(s, a) | keep)(st, arms)
        masks = masks.reshape(n * rows, d)

        def chunk(start, size):
            ex = (start + jnp.arange(size, dtype=jnp.int32)) // rows
            m = jax.lax.dynamic_slice_in_dim(masks, start, size)
            out = model(features.apply_coalitions(x[ex], b[ex], seg[ex], m))
            return jnp.argmax(out, axis=-1) == pred[ex]

        hits = batching.chunked_map(chunk, n * rows, batch_size).reshape(n, rows)
        return jax.vmap(record)(st, arms, masks.reshape(n, rows, d), hits), r + 1

    def cond(carry):
        st, r = carry
        return (r < max_rounds) & jnp.any(st.phase != DONE)

    st0 = jax.vmap(lambda _: start(d))(jnp.arange(n))
    st, _ = jax.lax.while_loop(cond, body, (st0, jnp.int32(0)))
    return _finish(st, present, pred, k_cover, p_keep, delta, n_coverage)


def _finish(st, present, pred, key, p_keep, delta, n_coverage) -> Anchor:
    """The rule of every example (the best candidate where the rounds ran out) and its
    precision and coverage with KL bounds."""
    d = present.shape[1]

    def best(s, pres):
        valid = candidates(s, pres)
        arm = jnp.argmax(jnp.where(valid, s.s / jnp.maximum(s.n, 1), -1.0))
        return mask_of(s, arm), s.n[arm], s.s[arm]

    fb_mask, fb_n, fb_s = jax.vmap(best)(st, present)
    done = st.phase == DONE
    anchor = jnp.where(done[:, None], st.result, fb_mask)
    n_p = jnp.where(done, st.res_n, fb_n)
    s_p = jnp.where(done, st.res_s, fb_s)
    prec = s_p / jnp.maximum(n_p, 1)
    level = jnp.log(1.0 / delta)
    plo, phi = kl_bounds(prec, n_p, level)
    draws = (jax.random.uniform(key, (n_coverage, d)) < p_keep).astype(jnp.float32)
    kept = jnp.einsum("nd,md->nm", anchor.astype(jnp.float32), draws,
                      precision=jax.lax.Precision.HIGHEST)
    cov = jnp.mean(kept >= jnp.sum(anchor.astype(jnp.float32), axis=1, keepdims=True) - 0.5,
                   axis=1)
    clo, chi = kl_bounds(cov, jnp.full_like(n_p, n_coverage), level)
    return Anchor(anchor, prec, jnp.stack([plo, phi], -1), cov, jnp.stack([clo, chi], -1),
                  st.valid & done, pred.astype(jnp.int32), st.n_evals + 1)
