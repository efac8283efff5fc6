"""Model adapters: Linen, NNX and plain callables as one pytree type.

A `Model` holds a static, hashable *apply* object and the parameters as pytree
leaves. Passing a `Model` to a jitted function therefore traces the weights as
arguments: new weights of the same architecture reuse the compiled program, and
no weights are baked into it as constants.

Layer access (Grad-CAM, layer attribution, activations) goes through
`Model.probe`, which the adapter implements once per framework.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import types
from typing import Any, Callable, Hashable

import jax
import numpy as np

from . import validate as V
from .types import PyTree


@jax.tree_util.register_pytree_node_class
class Model:
    """A model as a pytree: `apply(params, x) -> outputs` is static, `params` are leaves.

    Args:
      apply: a hashable callable `apply(params, x_batch) -> outputs`. Two models
        whose `apply` objects compare equal share compiled programs.
      params: any pytree of arrays (the weights and other state).

    Example:
      >>> import jax.numpy as jnp
      >>> m = Model(lambda p, x: x @ p, jnp.ones((3, 2)))
      >>> m(jnp.ones((4, 3))).shape
      (4, 2)
    """

    __slots__ = ("apply", "params", "_token", "__weakref__")

    def __init__(self, apply: Callable[[PyTree, jax.Array], Any], params: PyTree):
        self.apply = apply
        self.params = params
        self._token = None  # (apply, params, token): see `architecture_token`

    def __call__(self, x: jax.Array) -> Any:
        return self.apply(self.params, x)

    def replace(self, params: PyTree) -> "Model":
        """The same architecture with other parameters (no recompilation)."""
        return Model(self.apply, params)

    def tree_flatten(self):
        return (self.params,), self.apply

    @classmethod
    def tree_unflatten(cls, apply, children):
        return cls(apply, children[0])

    def __repr__(self) -> str:
        n = sum(getattr(l, "size", 1) for l in jax.tree.leaves(self.params))
        return f"Model({self.apply!r}, {n} parameters)"

    # ---- layer access -------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Names of the layers that `probe` accepts (submodule paths)."""
        fn = getattr(self.apply, "layer_names", None)
        if fn is None:
            raise TypeError(
                f"model: layer access needs a Linen or NNX model (from_linen/from_nnx), "
                f"got a plain callable {self.apply!r}"
            )
        return fn(self.params)

    def probe(self, x: jax.Array, layer: Any, delta: Any = None) -> tuple[Any, jax.Array]:
        """Runs the model with `delta` added to the output of `layer`.

        Returns `(outputs, activation)` where `activation` is the layer output
        *before* `delta` is added. Gradients with respect to `delta` (at zero)
        are gradients with respect to the layer's activations.
        """
        fn = getattr(self.apply, "probe", None)
        if fn is None:
            raise TypeError(
                f"model: layer access needs a Linen or NNX model (from_linen/from_nnx), "
                f"got a plain callable {self.apply!r}"
            )
        return fn(self.params, x, layer, delta)


# ---- shapes without FLOPs, cached --------------------------------------------------------

_SHAPE_CACHE: dict = {}
_SHAPE_CACHE_SIZE = 256


def eval_shape_cached(fn: Callable[[Model, jax.Array], Any], model: Model, x: Any, tag: Hashable) -> Any:
    """`jax.eval_shape(fn, model, x)`, cached per (architecture, parameter shapes, input, tag).

    Validation calls this on every public call; tracing a CNN costs milliseconds,
    the cache lookup microseconds. `tag` names what `fn` computes.
    """
    return traced_cached(lambda: jax.eval_shape(fn, model, x), model, x, tag)


def traced_cached(compute: Callable[[], Any], model: Model, x: Any, tag: Hashable) -> Any:
    """`compute()`, a result read from tracing `model` on inputs shaped like `x`,
    cached per (architecture, parameter shapes, input shape, tag). Traced inputs
    and unhashable apply objects bypass the cache."""
    if isinstance(x, jax.core.Tracer):
        return compute()
    arch = architecture_token(model)
    if arch is None:
        return compute()
    try:
        key = (arch, _leaf_signature([x]), tag)
        hash(key)
    except TypeError:
        return compute()
    value = _SHAPE_CACHE.get(key)
    if value is None:
        value = compute()
        if len(_SHAPE_CACHE) >= _SHAPE_CACHE_SIZE:
            _SHAPE_CACHE.pop(next(iter(_SHAPE_CACHE)))
        _SHAPE_CACHE[key] = value
    return value


_TOKENS: dict = {}
_NEXT_TOKEN = itertools.count()


def architecture_token(model: Model) -> int | None:
    """An int naming `(model.apply, parameter tree, leaf shapes and dtypes)`.

    None when a leaf is traced or `apply` is not hashable. Models of equal
    architecture and parameter shapes get the same token, so keys built from it
    hash in constant time. The token is kept on the `Model` while its `apply` and
    `params` attributes hold the same objects, and a public call does not walk
    the weights again (re-assigning `model.params` recomputes it; mutating a
    parameter dict in place to other shapes is not seen). Tokens are never reused.
    """
    apply, params = model.apply, model.params
    memo = model._token
    if memo is not None and memo[0] is apply and memo[1] is params:
        return memo[2]
    leaves, treedef = jax.tree.flatten(params)
    if any(isinstance(v, jax.core.Tracer) for v in leaves):
        return None
    key = (apply, treedef, _leaf_signature(leaves))
    try:
        token = _TOKENS.get(key)
    except TypeError:  # an unhashable apply object
        return None
    if token is None:
        if len(_TOKENS) >= _SHAPE_CACHE_SIZE:
            _TOKENS.clear()  # new tokens for old keys: misses, never a wrong hit
        token = _TOKENS[key] = next(_NEXT_TOKEN)
    model._token = (apply, params, token)
    return token


def _leaf_signature(leaves: list) -> tuple:
    try:  # arrays: their own shape and dtype (a key, so no canonical dtype is needed)
        return tuple([(v.shape, v.dtype) for v in leaves])
    except AttributeError:  # Python scalars among the leaves
        return tuple([(V.shape_of(v), V.dtype_of(v)) for v in leaves])


# ---- adapters -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CallableApply:
    """Apply object for a plain callable `f(x_batch) -> outputs` (no parameters)."""

    fn: Callable

    def __call__(self, params, x):
        del params
        return self.fn(x)


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


class _Unsplittable(Exception):
    """A captured object whose later changes a shared program could miss."""


def _is_array(v: Any) -> bool:
    """A JAX array, or a NumPy array JAX can take (not strings or objects)."""
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biufc" or v.dtype.name == "bfloat16"
    return isinstance(v, jax.Array)


def _stable(value: Any) -> bool:
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
    else (a mutable object such as an NNX module) raises `_Unsplittable`.
    """
    if _is_array(value):
        return ("tree", None), value
    if isinstance(value, _VALUES):
        return ("value", value), ()
    if _stable(value):
        return ("same", _Same(value)), ()
    if isinstance(value, types.FunctionType):
        if depth >= _MAX_DEPTH:
            raise _Unsplittable(value)
        spec, tree = _split_function(value, depth + 1)
        return ("fn", spec), tree
    if type(value) in (list, tuple, dict) or type(value).__name__ == "FrozenDict":
        leaves = jax.tree.leaves(value)
        if leaves and all(_is_array(v) for v in leaves):
            return ("tree", None), value
        if isinstance(value, tuple) and all(isinstance(v, _VALUES) for v in value):
            return ("value", value), ()
    raise _Unsplittable(value)


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> frozenset[str]:
    """Names `code` (and the functions defined in it) may read from its globals."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class _FunctionSpec:
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


def _split_function(fn: types.FunctionType, depth: int = 0) -> tuple[_FunctionSpec, tuple]:
    """`fn` as (hashable spec, the arrays it reads); raises `_Unsplittable`."""
    try:
        captured = [c.cell_contents for c in fn.__closure__ or ()]
    except ValueError:  # a cell not assigned yet
        raise _Unsplittable(fn) from None
    defaults = list(fn.__defaults__ or ())
    env = fn.__globals__
    names = tuple(sorted(n for n in _global_names(fn.__code__) if n in env))
    values = captured + defaults + [fn.__kwdefaults__] + [env[n] for n in names]
    splits = [_split(v, depth) for v in values]
    spec = _FunctionSpec(fn.__code__, _Same(env), fn.__name__, len(captured), len(defaults), names,
                         tuple(s[0] for s in splits))
    return spec, tuple(s[1] for s in splits)


@dataclasses.dataclass(frozen=True)
class ClosureApply:
    """Apply object for a Python function whose captured arrays are the model's parameters.

    Two function objects built from the same code over the same static values
    (a `lambda` written inside a loop, closing over weights) compare equal, so
    they share compiled programs instead of compiling (and caching) one each.
    """

    spec: _FunctionSpec

    def __call__(self, params, x):
        return self.spec.rebuild(params)(x)

    def __repr__(self) -> str:
        code = self.spec.code  # co_qualname is Python 3.11+; the project supports 3.10
        return f"ClosureApply({getattr(code, 'co_qualname', code.co_name)})"


@dataclasses.dataclass(frozen=True)
class LinenApply:
    """Apply object for a Linen module: `module.apply(variables, x, method=..., **kwargs)`."""

    module: Any
    method: Any = None
    kwargs: tuple[tuple[str, Hashable], ...] = ()

    def __call__(self, params, x):
        return self.module.apply(params, x, method=self.method, **dict(self.kwargs))

    def layer_names(self, params):
        from . import layers as _layers

        return _layers.linen_layer_names(params)

    def probe(self, params, x, layer, delta=None):
        from . import layers as _layers

        return _layers.linen_probe(self, params, x, layer, delta)


@dataclasses.dataclass(frozen=True)
class NNXApply:
    """Apply object for an NNX module split into a static graph definition and state."""

    graphdef: Any

    def __call__(self, params, x):
        from flax import nnx

        return nnx.merge(self.graphdef, params)(x)

    def layer_names(self, params):
        from . import layers as _layers

        return _layers.nnx_layer_names(self.graphdef, params)

    def probe(self, params, x, layer, delta=None):
        from . import layers as _layers

        return _layers.nnx_probe(self.graphdef, params, x, layer, delta)


def from_callable(fn: Callable[[jax.Array], Any]) -> Model:
    """Wraps a plain function `fn(x_batch) -> outputs`.

    For a Python function (a `def` or `lambda`), the arrays it reads, alone or in
    dicts, lists and tuples, from its closure, its defaults or the module's
    globals, become the model's parameters: they are traced, not baked into the
    program as constants. A fresh closure with the same code, e.g.
    `lambda z: net.apply(params, z)` written inside a loop, then reuses the
    compiled program instead of compiling (and keeping) one per call, and new
    arrays give new results. Numbers and strings it reads are part of the
    program; Python modules, classes, library functions and Linen modules are
    compared by identity; the functions it calls are split the same way. When
    it reads any other object (an NNX module, a mutable object whose changes a
    shared program would miss), or for other callables (bound methods, objects
    with `__call__`), the callable is used as it is: each new function object
    compiles its own program.
    """
    if not callable(fn):
        raise TypeError(f"model: expected a callable f(x_batch) -> outputs, got {type(fn).__name__}")
    if isinstance(fn, types.FunctionType) and not _stable(fn):
        try:
            spec, arrays = _split_function(fn)
        except _Unsplittable:
            return Model(CallableApply(fn), ())
        return Model(ClosureApply(spec), arrays)
    return Model(CallableApply(fn), ())


def from_linen(module: Any, variables: PyTree, *, method: Any = None, **apply_kwargs: Hashable) -> Model:
    """A Linen module and its variables as a `Model`.

    Args:
      module: a `flax.linen.Module` instance.
      variables: the variables from `module.init` (all collections: params,
        batch_stats, ...). They become the model's leaves.
      method: optional method name or function to call instead of `__call__`.
      **apply_kwargs: extra static keyword arguments for the call, e.g.
        `train=False` or `deterministic=True` so batch norm and dropout run in
        inference mode. Values must be hashable.

    Returns:
      A `Model`. Nothing is mutable during the call: batch statistics are read,
      never updated.
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a flax.linen.Module, got {type(module).__name__}")
    if not isinstance(variables, dict) and not hasattr(variables, "keys"):
        raise TypeError(f"variables: expected the dict returned by module.init, got {type(variables).__name__}")
    for k, v in apply_kwargs.items():
        try:
            hash(v)
        except TypeError:
            raise TypeError(f"{k}: apply keyword arguments must be hashable, got {type(v).__name__}") from None
    apply = LinenApply(module, method, tuple(sorted(apply_kwargs.items())))
    return Model(apply, variables)


def from_nnx(module: Any) -> Model:
    """An NNX module as a `Model`, switched to inference mode.

    The module is split into its graph definition (static) and state (leaves). A
    copy is put in evaluation mode (`.eval()`: batch norm uses running averages,
    dropout is off); the module passed in is left untouched.
    """
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise TypeError(f"module: expected a flax.nnx.Module, got {type(module).__name__}")
    graphdef, state = nnx.split(module)
    copy = nnx.merge(graphdef, state)
    copy.eval()
    graphdef, state = nnx.split(copy)
    return Model(NNXApply(graphdef), state)


def as_model(model: Any) -> Model:
    """Returns `model` as a `Model`: a `Model` as is, an NNX module, or a callable."""
    if isinstance(model, Model):
        return model
    try:
        from flax import nnx

        if isinstance(model, nnx.Module):
            return from_nnx(model)
    except ImportError:  # pragma: no cover
        pass
    try:
        import flax.linen as nn

        if isinstance(model, nn.Module):
            raise TypeError(
                "model: a Linen module needs its variables; use jaxplain.from_linen(module, variables)"
            )
    except ImportError:  # pragma: no cover
        pass
    if callable(model):
        return from_callable(model)
    raise TypeError(
        f"model: expected a jaxplain.Model, an NNX module or a callable f(x_batch) -> outputs, "
        f"got {type(model).__name__}"
    )
