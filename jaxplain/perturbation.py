"""The perturbation engine: coalitions -> inputs built on device -> chunked evaluation.

LIME, Shapley estimators, occlusion, RISE and the deletion/insertion metrics all
reduce to `coalition_values`: evaluate the target on `x` with some features
replaced by a baseline, for many coalitions per example, never holding more
than `batch_size` perturbed inputs at once.
"""

from __future__ import annotations

from typing import Callable

import jax

from . import batching
from .features import apply_coalitions
from .targets import Target


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
