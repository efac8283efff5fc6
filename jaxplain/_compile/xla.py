"""`jit`: `jax.jit` with jaxplain's XLA compiler options, chosen once per process.

Every jitted program in jaxplain (and the benchmark harness's physical limits)
compiles through `jit`, so they all run with the same options and no global
state is touched: the options are per-executable `compiler_options`, not
`XLA_FLAGS`, and they change nothing for the user's own `jax.jit` programs.

The one option today turns off XLA:CPU's YNNPACK fusions
(`xla_cpu_experimental_ynn_fusion_type=`, an empty list). With them, jax 0.10.2
fuses a whole small CNN into one YNNPACK graph that, at some batch sizes, runs on
one core: forward+backward of the benchmark CNN on 800 images went from 490 ms to
284 ms without them, a 64-image forward from 16 ms to 8 ms (2 cores, Xeon with
AVX-512). The option is an XLA:CPU debug option; other backends ignore it.

It is applied only when the installed jaxlib accepts it (probed once, by
compiling a one-op program on the default backend), and not when the user's
`XLA_FLAGS` already set it. `JAXPLAIN_XLA_OPTIONS=none` turns it off.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

CPU_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""The options jaxplain asks for, before the support probe."""


def compiler_options() -> dict[str, Any]:
    """The compiler options jaxplain's programs use (a copy; empty when none apply)."""
    return dict(_probe())


@functools.lru_cache(maxsize=None)
def _probe() -> dict[str, Any]:
    """The supported subset of `CPU_OPTIONS`, decided once per process."""
    if os.environ.get("JAXPLAIN_XLA_OPTIONS", "").strip().lower() in ("none", "0", "off"):
        return {}
    user_flags = os.environ.get("XLA_FLAGS", "")
    wanted = {k: v for k, v in CPU_OPTIONS.items() if k not in user_flags}
    if not wanted:
        return {}
    try:  # an older or newer jaxlib without the option: compile without it
        jax.jit(lambda a: a + 1, compiler_options=wanted).lower(jnp.float32(0)).compile()
    except Exception:  # noqa: BLE001 - any failure means "not supported here"
        return {}
    return wanted


def eager() -> bool:
    """False inside any JAX transformation (a caller's jit, vmap, grad ...)."""
    try:
        from jax._src import core  # no public equivalent as of jax 0.10

        return bool(core.trace_state_clean())
    except (ImportError, AttributeError):  # pragma: no cover - be conservative when unsure
        return False


class _Jit:
    """`jax.jit(fun)` twice: with the options at the top level, plain when nested.

    JAX accepts `compiler_options` only on a top-level `jax.jit`; under a caller's
    transformation the function is inlined into the caller's program, which the
    caller compiles with its own options. Both variants are built on first use,
    once the backend (and so the options) are known.
    """

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun = fun
        self._kwargs = kwargs
        self._plain = jax.jit(fun, **kwargs)
        self._tuned = None
        functools.update_wrapper(self, fun)

    def _top(self):
        if self._tuned is None:
            opts = compiler_options()
            self._tuned = (
                jax.jit(self._fun, compiler_options=opts, **self._kwargs) if opts else self._plain
            )
        return self._tuned

    def __call__(self, *args, **kwargs):
        return (self._top() if eager() else self._plain)(*args, **kwargs)

    def __getattr__(self, name: str):  # lower, trace, eval_shape, clear_cache, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._top() if eager() else self._plain, name)

    def __get__(self, obj, objtype=None):  # as a method: bind like a function would
        return self if obj is None else functools.partial(self, obj)


def jit(fun: Callable | None = None, **kwargs: Any):
    """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`; usable as a decorator.

    >>> import jax.numpy as jnp
    >>> f = jit(lambda a: a * 2)
    >>> float(f(jnp.float32(3)))
    6.0
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _Jit(fun, kwargs)
