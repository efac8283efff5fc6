"""A Python function as (static spec, the arrays it reads): `from_callable`'s machinery.

The arrays a function reads from its closure, defaults or module globals become
the model's parameters, so a fresh `lambda` over the same code and static values
shares compiled programs instead of compiling one per function object.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Hashable

import jax
import numpy as np

class _Same:
    """Compares and hashes by identity (and keeps the object alive)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __repr__(self) -> str:
        return f"<{type(self.obj).__name__} at {id(self.obj):#x}>"


_VALUES = (int, float, complex, bool, str, bytes, type(None), np.generic)
_LIBRARIES = frozenset({"jax", "jaxlib", "numpy", "flax", "optax", "jaxplain", "math", "functools",
                        "operator", "scipy", "einops"})
_MAX_DEPTH = 4


class Unsplittable(Exception):
    """A captured object whose later changes a shared program could miss."""


def _is_array(v: Any) -> bool:
    """A JAX array, or a NumPy array JAX can take (not strings or objects)."""
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biufc" or v.dtype.name == "bfloat16"
    return isinstance(v, jax.Array)


def is_stable(value: Any) -> bool:
    """Objects that cannot change what a trace computes while they stay the same object."""
    if isinstance(value, (types.ModuleType, type, types.BuiltinFunctionType, np.ufunc)):
        return True
    if isinstance(value, types.FunctionType):  # library functions: jnp.tanh, optax.*, ...
        return str(value.__module__ or "").split(".")[0] in _LIBRARIES
    if type(value).__module__.split(".")[0] in ("jax", "jaxlib"):
        return callable(value)  # jax.jit outputs, custom_jvp functions such as jax.nn.relu
    try:
        import flax.linen as nn

        return isinstance(value, nn.Module)  # frozen dataclasses: fields cannot change
    except ImportError:  # pragma: no cover
        return False


def _split(value: Any, depth: int) -> tuple[tuple[str, Hashable], Any]:
    """One captured value as `(static part, array pytree)`.

    Arrays, and plain containers of arrays, are lifted into the pytree; numbers and
    strings stay static by value; user functions are split recursively; modules,
    classes, library functions and Linen modules stay static by identity. Anything
    else (a mutable object such as an NNX module) raises `Unsplittable`.
    """
    if _is_array(value):
        return ("tree", None), value
    if isinstance(value, _VALUES):
        return ("value", value), ()
    if is_stable(value):
        return ("same", _Same(value)), ()
    if isinstance(value, types.FunctionType):
        if depth >= _MAX_DEPTH:
            raise Unsplittable(value)
        spec, tree = split_function(value, depth + 1)
        return ("fn", spec), tree
    if type(value) in (list, tuple, dict) or type(value).__name__ == "FrozenDict":
        leaves = jax.tree.leaves(value)
        if leaves and all(_is_array(v) for v in leaves):
            return ("tree", None), value
        if isinstance(value, tuple) and all(isinstance(v, _VALUES) for v in value):
            return ("value", value), ()
    raise Unsplittable(value)


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> frozenset[str]:
    """Names `code` (and the functions defined in it) may read from its globals."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """A Python function without its captured arrays: code, globals and static parts.

    `parts` covers the closure cells, the defaults, the keyword defaults and then
    the globals named in `global_names` that the code may read.
    """

    code: Any
    globals: _Same
    name: str
    n_cells: int
    n_defaults: int
    global_names: tuple[str, ...]
    parts: tuple

    def rebuild(self, tree: tuple) -> Callable:
        values = [_join(part, sub) for part, sub in zip(self.parts, tree)]
        k = self.n_cells + self.n_defaults
        cells = tuple(types.CellType(v) for v in values[: self.n_cells])
        env = self.globals.obj
        lifted = {n: v for n, part, v in zip(self.global_names, self.parts[k + 1 :], values[k + 1 :])
                  if part[0] in ("tree", "fn")}
        if lifted:  # the traced arrays (and rebuilt functions) in place of the module's own
            env = {**env, **lifted}
        fn = types.FunctionType(self.code, env, self.name, tuple(values[self.n_cells : k]) or None, cells)
        fn.__kwdefaults__ = values[k]
        return fn


def _join(part: tuple[str, Any], sub: Any) -> Any:
    kind, info = part
    if kind == "tree":
        return sub
    if kind == "fn":
        return info.rebuild(sub)
    return info.obj if kind == "same" else info


def split_function(fn: types.FunctionType, depth: int = 0) -> tuple[FunctionSpec, tuple]:
    """`fn` as (hashable spec, the arrays it reads); raises `Unsplittable`."""
    try:
        captured = [c.cell_contents for c in fn.__closure__ or ()]
    except ValueError:  # a cell not assigned yet
        raise Unsplittable(fn) from None
    defaults = list(fn.__defaults__ or ())
    env = fn.__globals__
    names = tuple(sorted(n for n in _global_names(fn.__code__) if n in env))
    values = captured + defaults + [fn.__kwdefaults__] + [env[n] for n in names]
    splits = [_split(v, depth) for v in values]
    spec = FunctionSpec(fn.__code__, _Same(env), fn.__name__, len(captured), len(defaults), names,
                         tuple(s[0] for s in splits))
    return spec, tuple(s[1] for s in splits)
