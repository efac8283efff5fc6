"""Adaptive rounds of the sampled Shapley estimators (`shapley_sampling`, `kernel_shap`):
fixed-shape rounds of evaluations repeated inside one `lax.while_loop` until every
standard error is below `tol`, or a budget of rounds is spent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._core import validate as V

DEFAULT_ROUNDS = 20
"""With `tol=` and no `max_evals`, at most this many rounds are run."""


def check_adaptive(
    tol: Any, max_evals: Any, round_evals: int, fixed_evals: int = 2
) -> tuple[bool, float, int]:
    """Validates `tol`/`max_evals`; returns `(adaptive, tol, max_rounds)`.

    `tol` and `max_rounds` are passed traced, so changing them never recompiles.
    """
    if tol is None:
        if max_evals is not None:
            V.fail(
                "max_evals", "None unless tol= is given (it bounds adaptive stopping)", max_evals
            )
        return False, 0.0, 1
    tol = V.check_float(tol, "tol", minimum=0.0, open_min=True)
    if max_evals is None:
        return True, tol, DEFAULT_ROUNDS
    max_evals = V.check_int(max_evals, "max_evals", minimum=fixed_evals + round_evals)
    return True, tol, (max_evals - fixed_evals) // round_evals


def run_rounds(
    round_fn: Callable, stderr_fn: Callable, init: Any, adaptive: bool, tol: Any, max_rounds: Any
):
    """Runs `state = round_fn(state, r)` once, or (`adaptive`) until `max(stderr) < tol`.

    A `lax.while_loop` over fixed-shape rounds: no recompilation per round.
    Returns `(state, rounds run)`.
    """
    if not adaptive:
        return round_fn(init, jnp.int32(0)), jnp.int32(1)

    def cond(c):
        r, state = c
        se = stderr_fn(state)
        return (r < max_rounds) & ((r == 0) | ~(jnp.max(se) < tol))

    def body(c):
        r, state = c
        return r + 1, round_fn(state, r)

    r, state = jax.lax.while_loop(cond, body, (jnp.int32(0), init))
    return state, r
