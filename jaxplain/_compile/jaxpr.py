"""Re-evaluating a function's jaxpr with some equations replaced.

One interpreter serves every rewrite jaxplain makes without editing the user's
model. `interpret(jaxpr, consts, args, rule)` evaluates the jaxpr again and asks
`rule(site)` first for every equation (`None` means "the default": enter a call,
or bind the equation as it is). A `Site` gives the rule the equation, its
operands' values, which flagged arguments each operand depends on (`tags`), the
equation's position and a `Frame` (the jaxpr, who reads each variable, scratch
space for a look-ahead). A `domain` says what a value is: plain arrays, or
DeepLIFT's (input, reference) pairs. Calls to sub-jaxprs named in `calls` (by
default `jit`/`pjit`) are entered, so a rule also sees the equations inside
them; other higher-order primitives (`scan`, `while`, `cond`, ...) are bound
unchanged.

Built on it: the ReLU backward rules of guided backprop / DeconvNet, DeepLIFT's
paired evaluation and LRP (`jaxplain/gradients/`), and the XLA:CPU rewrites of
`cpu.py`. Nothing here depends on the backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

JIT_CALLS = {"jit": "jaxpr", "pjit": "jaxpr"}
"""Call primitives (name -> the parameter holding the inner jaxpr) entered by default."""

OPAQUE = "jaxplain_opaque_"
"""A `jit` call whose name starts with this is bound as it is, never entered: its body
was rewritten when it was traced (`jaxplain.plan` marks chunk bodies this way to find
them in a call's program, `_core.batching.marking`)."""

CALLS = {**JIT_CALLS, "closed_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr"}
"""Also the custom-derivative calls: entering them replaces their derivative rules."""


def bind_eqn(eqn, invals: Sequence[Any]) -> list:
    """Binds `eqn`'s primitive to `invals` as the jaxpr did: the list of its outputs."""
    bind = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bind if isinstance(bind, tuple) else ((), bind)  # older JAX
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*subfuns, *invals, **params)
    return outs if eqn.primitive.multiple_results else [outs]


def of_operand(eqn, invals: Sequence[Any], i: int) -> Callable[[Any], Any]:
    """`z -> eqn(invals with operand i replaced by z)`, the equation's first output."""

    def f(z):
        args = list(invals)
        args[i] = z
        return bind_eqn(eqn, args)[0]

    return f


class Plain:
    """The default domain: a value is the array itself."""

    @staticmethod
    def lift(c):
        """A constant or literal as a value of this domain."""
        return c

    @staticmethod
    def bind(eqn, invals: Sequence[Any]) -> list:
        """`eqn` evaluated as it is on values of this domain."""
        return bind_eqn(eqn, invals)


class Frame:
    """One evaluation of one jaxpr, shared by the sites of its equations."""

    def __init__(self, jaxpr):
        self.jaxpr = jaxpr
        self.tags: dict = {}  # variable -> bit mask of the flagged arguments it depends on
        self.scratch: dict = {}  # for rules that look ahead (LRP's bias adds)
        self._uses: dict | None = None

    def tag(self, v) -> int:
        return 0 if isinstance(v, jex_core.Literal) else self.tags.get(v, 0)

    def uses(self, v) -> list[int]:
        """Positions of the equations reading `v`; -1 when it is an output of the jaxpr."""
        if self._uses is None:
            self._uses = {}
            for k, e in enumerate(self.jaxpr.eqns):
                for u in e.invars:
                    if not isinstance(u, jex_core.Literal):
                        self._uses.setdefault(u, []).append(k)
            for u in self.jaxpr.outvars:
                if not isinstance(u, jex_core.Literal):
                    self._uses.setdefault(u, []).append(-1)
        return self._uses.get(v, [])


@dataclasses.dataclass(frozen=True)
class Site:
    """One equation as a rule sees it: `frame.jaxpr.eqns[index]` with its operands' values."""

    eqn: Any
    invals: list
    tags: tuple[int, ...]  # per operand, the flagged arguments it depends on (0: none)
    index: int
    frame: Frame

    @property
    def varying(self) -> list[bool]:
        """Per operand, whether it depends on a flagged argument."""
        return [t != 0 for t in self.tags]


Rule = Callable[[Site], "Sequence[Any] | None"]


def interpret(jaxpr, consts: Sequence[Any], args: Sequence[Any], rule: Rule, *,
              tags: Sequence[int] | None = None, calls: Mapping[str, str] = JIT_CALLS,
              domain: Any = Plain) -> list:
    """Evaluates `jaxpr` on `args`, replacing the equations `rule` answers for.

    `tags[i]` flags argument `i` (a bit mask; the default flags none); every
    site's `tags` are the union of the flags its operands depend on.
    """
    frame = Frame(jaxpr)
    env: dict = {v: domain.lift(c) for v, c in zip(jaxpr.constvars, consts)}
    env.update(zip(jaxpr.invars, args))
    frame.tags.update((v, t) for v, t in zip(jaxpr.invars, tags or ()) if t)

    def read(v):
        return domain.lift(v.val) if isinstance(v, jex_core.Literal) else env[v]

    for k, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        ts = tuple(frame.tag(v) for v in eqn.invars)
        outs = rule(Site(eqn, invals, ts, k, frame))
        if outs is None:
            key = calls.get(eqn.primitive.name)
            if key is not None and key in eqn.params and not _opaque(eqn):
                closed = eqn.params[key]
                inner = getattr(closed, "jaxpr", closed)
                skip = len(invals) - len(inner.invars)  # custom_vjp: leading consts
                outs = interpret(inner, getattr(closed, "consts", ()), invals[skip:], rule,
                                 tags=ts[skip:], calls=calls, domain=domain)
            else:
                outs = domain.bind(eqn, invals)
        out_tag = 0
        for t in ts:
            out_tag |= t
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
            if out_tag:
                frame.tags[v] = out_tag
    return [read(v) for v in jaxpr.outvars]


def _opaque(eqn) -> bool:
    name = eqn.params.get("name")
    return isinstance(name, str) and name.startswith(OPAQUE)


def rewrite(fn: Callable, rule: Rule) -> Callable:
    """`fn` (positional pytree arguments) with its equations passed through `rule`."""

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = interpret(closed.jaxpr, closed.consts, jax.tree.leaves(args), rule)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


# ---- tiling windows (pooling whose window equals its stride) ----------------------------------


def windows(x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    """`(out..., k)`: the entries of each tile of `x` along a last axis (row-major order)."""
    n = x.ndim
    r = jnp.transpose(x.reshape(tiles), tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2)))
    return r.reshape(r.shape[:n] + (-1,))



def pool_tiles(eqn, x) -> tuple[int, ...] | None:
    """`(n0, w0, n1, w1, ...)` when a `reduce_window` eqn's windows tile `x` (window =
    stride, no padding or dilation, sizes divisible), so `x.reshape(tiles)` holds one
    window per pair of axes; None otherwise."""
    p = eqn.params
    win, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    if (
        win != strides
        or any(tuple(pad) != (0, 0) for pad in p["padding"])
        or any(d != 1 for d in p["base_dilation"])
        or any(d != 1 for d in p["window_dilation"])
        or any(s % w for s, w in zip(x.shape, win))
    ):
        return None
    return sum(((s // w, w) for s, w in zip(x.shape, win)), ())


def accumulator(dtype: Any) -> Any:
    """The dtype sums of `dtype` values run in: float32 for narrower floating types
    (bfloat16, float16), the type itself otherwise. Written without JAX's promotion
    rules, which refuse bfloat16 with float32 when dtype promotion is strict."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype
