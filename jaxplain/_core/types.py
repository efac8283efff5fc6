"""Shared types: the one result type every method returns, aliases, and `to_numpy`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

ArrayLike = jax.typing.ArrayLike
Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

HIGHEST = jax.lax.Precision.HIGHEST
"""The matmul precision of statistics (Gram matrices, least squares, moments): explicit,
so a backend whose default is lower (TF32 on GPUs, bfloat16 passes on TPUs) cannot
change the estimators."""


class Explanation(NamedTuple):
    """What every attribution method returns: values plus optional diagnostics.

    A `NamedTuple`, hence a pytree: it passes through `jax.jit`, `jax.vmap` and
    `jax.tree.map`; fields a method does not fill stay `None` (an empty subtree).

    Attributes:
      values: the attributions, shaped like the inputs `(N, ...)` for gradient
        methods, `(N, d)` for feature methods (one value per feature).
      stderr: standard error of each value (sampling methods), same shape.
      gap: per-example axiom gap, `(N,)`: for integrated gradients the completeness
        gap `sum(values) - (f(x) - f(baseline))`; for Shapley estimators the
        efficiency gap.
      score: per-example fit score of a surrogate `(N,)` (LIME's weighted R^2).
      intercept: per-example intercept of a surrogate `(N,)`.
      n_evals: number of model evaluations spent per example (an int array).
    """

    values: Array
    stderr: Array | None = None
    gap: Array | None = None
    score: Array | None = None
    intercept: Array | None = None
    n_evals: Array | None = None


def to_numpy(result: Explanation | ArrayLike | PyTree) -> np.ndarray | PyTree:
    """Moves a result (or a bare array, or any pytree of arrays) to host NumPy.

    An `Explanation` becomes an `Explanation` of NumPy arrays; a bare array a
    `np.ndarray`. Works on results returned by jitted functions.

    >>> import jax.numpy as jnp
    >>> to_numpy(jnp.ones((2, 3))).shape
    (2, 3)
    """
    if isinstance(result, jax.core.Tracer):
        raise TypeError(
            "to_numpy: got a traced value; call it outside jax.jit/vmap on the returned result"
        )
    return jax.tree.map(np.asarray, jax.device_get(result))
