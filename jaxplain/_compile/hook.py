"""The one hook between jaxplain and its backend-specific machinery.

Every jitted program of jaxplain is compiled by `jit`. A call at the top level
(outside any JAX transformation) decides, from the devices its arguments live on
(or the default device), whether the XLA:CPU rewrites of `cpu.py` apply
(`switch.config`, `JAXPLAIN_CPU_REWRITES`), and traces the function with that
decision set as a *trace flag*. Code below reads the flag while it is traced:

- `tuned(fn, mode)`: `fn` with the CPU rewrites (mode `"grad"`, `"forward"` or
  `"loop"`), or `fn` itself;
- `tuned_rule(site)`, `tuned_eqn(eqn, invals)`, `pool(kind, x, tiles)`: the same
  rewrites for jaxpr interpreters (LRP, DeepLIFT);
- `default_chunk()`, `keep_numpy()`: CPU habits of chunk size and host arrays.

Each combination of flags (rewrites, progress reports, `jaxplain.plan`'s chunk
marks) is its own `jax.jit`
object with its own trace cache, so a program traced with one setting is never
reused for another. Nested calls (one jitted jaxplain function calling another
while traced) inherit the flags of the program being traced; under a caller's
own `jax.jit` with no jaxplain program around it, the default device decides.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from . import cpu
from .jaxpr import accumulator, rewrite, windows
from .switch import config


class Flags(NamedTuple):
    """What a program is traced with."""

    rewrites: bool  # the XLA:CPU rewrites of `cpu.py`
    report: bool  # chunk loops report progress to the host
    marks: bool = False  # chunk bodies are marked for `jaxplain.plan` (`_core.batching`)


_state = threading.local()


def eager() -> bool:
    """False inside any JAX transformation (a caller's jit, vmap, grad ...)."""
    with jex_core.take_current_trace() as trace:
        return type(trace).__name__ == "EvalTrace"


def rewrites_for(platform: str) -> bool:
    """Whether programs for `platform` ("cpu", "gpu", "tpu" ...) get the CPU rewrites."""
    mode = config.read("cpu_rewrites")
    return mode == "1" or (mode == "auto" and platform == "cpu")


def default_platform() -> str:
    """The platform of the default device (`jax.default_device` honoured), read now."""
    dev = jax.config.jax_default_device
    if dev is None:
        return jax.devices()[0].platform
    return dev if isinstance(dev, str) else dev.platform


def platform_of(args: tuple, kwargs: dict) -> str:
    """The platform the arguments of a call live on: the first concrete `jax.Array`'s,
    else the default device's."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
            return next(iter(a.devices())).platform
    for a in jax.tree.leaves((args, kwargs)):
        if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
            return next(iter(a.devices())).platform
    return default_platform()


def tracing() -> Flags | None:
    """The flags of the jaxplain program being traced on this thread (None: none is)."""
    return getattr(_state, "flags", None)


def active() -> bool:
    """Whether the code being traced (or run) now gets the CPU rewrites."""
    flags = tracing()
    if flags is not None:
        return flags.rewrites
    return rewrites_for(default_platform())


def reporting() -> bool:
    """Whether chunk loops traced now report progress (see `jaxplain._core.progress`)."""
    flags = tracing()
    return flags is not None and flags.report


def _requested_report() -> bool:
    return getattr(_state, "report_requested", False)


class report_requests:
    """Inside this block, top-level `jit` calls trace their reporting variant."""

    def __enter__(self):
        self._old = _requested_report()
        _state.report_requested = True

    def __exit__(self, *exc):
        _state.report_requested = self._old


def marked() -> bool:
    """Whether chunk loops traced now mark their bodies (`jaxplain.plan`, `mark_requests`)."""
    flags = tracing()
    return flags.marks if flags is not None else _requested_marks()


def _requested_marks() -> bool:
    return getattr(_state, "marks_requested", False)


class mark_requests:
    """Inside this block, `jit` programs trace their variant with marked chunk bodies: a
    plan's traces never share JAX's trace caches with the programs calls run."""

    def __enter__(self):
        self._old = _requested_marks()
        _state.marks_requested = True

    def __exit__(self, *exc):
        _state.marks_requested = self._old


# ---- the rewrites, when active ------------------------------------------------------------


def tuned(fn: Callable, mode: str) -> Callable:
    """`fn` with the CPU rewrites of `mode` (`cpu.RULES`) when active, else `fn`."""
    if not active():
        return fn
    return rewrite(fn, cpu.RULES[mode])


def tuned_rule(site: Any):
    """An interpreter rule: the `"grad"` rewrite of `site` when active, else None."""
    return cpu.GRAD_RULE(site) if active() else None


def tuned_eqn(eqn: Any, invals: list) -> list | None:
    """A convolution of few input channels as `cpu.few_channel_conv`, when active."""
    return cpu.few_channel_conv(eqn, invals) if active() else None


def pool(kind: str, x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    """Max (`"max"`) or sum (`"sum"`) over tiling windows (`jaxpr.pool_tiles`)."""
    if active():
        return cpu.pool(kind, x, tiles)
    w = windows(x, tiles)
    if kind == "max":
        return jnp.max(w, axis=-1)
    acc = accumulator(x.dtype)  # low-precision windows summed in float32
    return jnp.sum(w.astype(acc), axis=-1).astype(x.dtype)


def default_chunk() -> int | None:
    """The CPU chunk size (`cpu.CHUNK`) when the rewrites apply, else None."""
    return cpu.CHUNK if active() else None


def members_side_by_side(count: int) -> int:
    """How many stacked weight sets (ensemble members) to `vmap` at once: 1 where the CPU
    rewrites apply (`cpu.MEMBERS_IN_SEQUENCE`), all of them elsewhere."""
    return 1 if (active() and cpu.MEMBERS_IN_SEQUENCE) else count


def keep_numpy() -> bool:
    """Whether a host array may go to a top-level program as NumPy (`cpu.KEEP_NUMPY`)."""
    return (cpu.KEEP_NUMPY and eager() and not jax.config.jax_disable_jit
            and rewrites_for(default_platform()))


def compiler_options(platform: str = "cpu") -> dict[str, Any]:
    """The per-program XLA options of jaxplain's programs for `platform` (a copy)."""
    return cpu.compiler_options() if rewrites_for(platform) and platform == "cpu" else {}


# ---- jit ----------------------------------------------------------------------------------

_BEFORE_DISPATCH: list[Callable[[], None]] = []


def before_dispatch(fn: Callable[[], None]) -> Callable[[], None]:
    """Registers `fn` to run before every top-level dispatch of a `jit` program (the
    core's deferred value checks: they must raise before a method's program runs)."""
    _BEFORE_DISPATCH.append(fn)
    return fn



class _Jit:
    """`jax.jit(fun)` per (flags, top level or nested): see the module docstring.

    JAX accepts `compiler_options` only on a top-level `jax.jit`; nested, the
    function is inlined into the caller's program, compiled with its options.
    """

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun = fun
        self._kwargs = kwargs
        self._variants: dict[tuple[Flags, bool, str], Any] = {}
        functools.update_wrapper(self, fun)

    def _variant(self, flags: Flags, top: bool, platform: str):
        key = (flags, top, platform if top else "")
        v = self._variants.get(key)
        if v is None:
            fun = self._fun

            @functools.wraps(fun)
            def traced(*args, **kwargs):
                old = tracing()
                _state.flags = flags
                try:
                    return fun(*args, **kwargs)
                finally:
                    _state.flags = old

            opts = compiler_options(platform) if (top and flags.rewrites) else {}
            if opts:
                v = jax.jit(traced, compiler_options=opts, **self._kwargs)
            else:
                v = jax.jit(traced, **self._kwargs)
            self._variants[key] = v
        return v

    def _pick(self, args: tuple, kwargs: dict):
        if eager():
            for fn in _BEFORE_DISPATCH:
                fn()
            platform = platform_of(args, kwargs)
            flags = Flags(rewrites_for(platform), _requested_report(), _requested_marks())
            return self._variant(flags, True, platform)
        flags = tracing()
        if flags is None:  # a caller's own transformation, no jaxplain program around it
            flags = Flags(active(), False, _requested_marks())
        return self._variant(flags, False, "")

    def __call__(self, *args, **kwargs):
        return self._pick(args, kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._pick(args, kwargs).lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._pick(args, kwargs).trace(*args, **kwargs)

    def eval_shape(self, *args, **kwargs):
        return self._pick(args, kwargs).eval_shape(*args, **kwargs)

    def clear_cache(self):
        for v in self._variants.values():
            v.clear_cache()

    def __get__(self, obj, objtype=None):  # as a method: bind like a function would
        return self if obj is None else functools.partial(self, obj)


def jit(fun: Callable | None = None, **kwargs: Any):
    """`jax.jit(fun, **kwargs)` through the compile layer; usable as a decorator.

    >>> import jax.numpy as jnp
    >>> f = jit(lambda a: a * 2)
    >>> float(f(jnp.float32(3)))
    6.0
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _Jit(fun, kwargs)
