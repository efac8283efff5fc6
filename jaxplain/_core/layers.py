"""Layer access for Linen and NNX models: one additive probe at a named submodule.

`probe(model, x, layer, delta, at=...)` runs the model with `delta` added at a
*site* of the submodule `layer` and returns `(outputs, activation)`, the
activation being the value at that site *before* `delta` is added. The site is
the submodule's output (`at="output"`, the default and what `Model.probe` does)
or its input (`at="input"`: the first positional argument of its `__call__`,
Captum's `attribute_to_layer_input`). Differentiating the outputs with respect
to a zero `delta` gives gradients with respect to the activation in one forward
and one backward pass, and the backward pass stops at the layer.

Both frameworks route the submodule's call through `_site_call`, the one place
that knows the sites:

- Linen: `flax.linen.intercept_methods` intercepts `__call__` of the module whose
  `path` matches; the user's module is not edited.
- NNX: the graph definition and state are merged inside the traced function and
  the named submodule of that fresh copy gets a subclass whose `__call__` goes
  through a per-instance hook; nothing outside the trace is touched.

Layer names are submodule paths: `"conv1"`, `"features/block3"`, the tuple
`("features", "block3")`, and for NNX lists `"convs/1"` or `("convs", 1)`.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from . import validate as V
from .cache import eval_shape_cached
from .types import PyTree


def layer_parts(layer: Any) -> tuple[str, ...]:
    """A layer name as a tuple of path components (strings)."""
    if isinstance(layer, str):
        parts = tuple(p for p in layer.strip("/").split("/"))
    elif isinstance(layer, (tuple, list)):
        parts = []
        for p in layer:
            if isinstance(p, bool) or not isinstance(p, (str, numbers.Integral)):
                raise TypeError(
                    f"layer: expected path components that are str or int, got {p!r} in {layer!r}"
                )
            parts.append(str(p))
        parts = tuple(parts)
    else:
        raise TypeError(
            f"layer: expected a submodule path such as 'conv1', 'features/block3' or "
            f"('features', 'block3'), got {type(layer).__name__}"
        )
    if not parts or any(p == "" for p in parts):
        raise ValueError(f"layer: expected a non-empty submodule path, got {layer!r}")
    return parts


def layer_name(parts: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in parts)


def _unknown(layer: Any, available: list[str]) -> ValueError:
    listed = ", ".join(repr(n) for n in available) or "(none)"
    return ValueError(f"layer: no layer named {layer!r}; available layers: {listed}")


class Replace:
    """A probe `delta` that sets the value at the site instead of adding to it.

    `probe(model, x, layer, Replace(a))` runs the model above the layer on `a`.
    What is computed only to feed the site (the layers below it, for a plain
    chain) then feeds nothing and XLA drops it, so a gradient with respect to `a`
    costs the layers above the site alone. Other paths from below (skip
    connections) still see `x`, exactly as with `delta = a - activation`.
    """

    __slots__ = ("value",)

    def __init__(self, value: PyTree):
        self.value = value


def _add(out: PyTree, delta: PyTree) -> PyTree:
    if delta is None:
        return out
    if isinstance(delta, Replace):
        return jax.tree.map(lambda o, v: jnp.asarray(v, o.dtype), out, delta.value)
    return jax.tree.map(lambda o, d: o + jnp.asarray(d, o.dtype), out, delta)


SITES = ("output", "input")


def check_site(at: Any) -> str:
    """Validates a probe site (`"output"` or `"input"`); raises `ValueError` naming `at`."""
    if not isinstance(at, str) or at not in SITES:
        raise ValueError(
            f"at: expected one of {SITES} (probe the layer's output or the first positional "
            f"argument of its __call__), got {at!r}"
        )
    return at


def _site_call(call: Any, args: tuple, kwargs: dict, at: str, delta: PyTree, hits: list,
               name: str) -> Any:
    """Calls the probed layer as `call(*args, **kwargs)` with `delta` added at the site `at`.

    The value at the site (before `delta`) is appended to `hits`.
    """
    if at == "output":
        out = call(*args, **kwargs)
        hits.append(out)
        return _add(out, delta)
    if not args:
        raise ValueError(
            f"layer: {name!r} was called without a positional argument (keywords "
            f"{sorted(kwargs)}); at='input' probes the first positional argument of __call__"
        )
    hits.append(args[0])
    return call(_add(args[0], delta), *args[1:], **kwargs)


def _single(layer: Any, hits: list) -> Any:
    if len(hits) > 1:
        raise ValueError(
            f"layer: {layer!r} is called {len(hits)} times in one forward pass (a shared "
            f"layer); probing it is ambiguous, choose a layer that is called once"
        )
    return hits[0]


# ---- Linen ------------------------------------------------------------------------------


def linen_layer_names(variables: PyTree) -> list[str]:
    """Submodule paths that own variables, in the order `init` created them."""
    names: dict[str, None] = {}

    def walk(tree, prefix):
        if hasattr(tree, "items"):
            for k, v in tree.items():
                if hasattr(v, "items"):
                    path = prefix + (str(k),)
                    names.setdefault(layer_name(path), None)
                    walk(v, path)

    for coll in variables.values() if hasattr(variables, "values") else ():
        walk(coll, ())
    return list(names)


def linen_probe(apply: Any, variables: PyTree, x: jax.Array, layer: Any, delta: PyTree,
                at: str = "output"):
    """`probe` for a `LinenApply`: method interception on `module.path`."""
    import flax.linen as nn

    at = check_site(at)
    target = layer_parts(layer)
    called: dict[str, None] = {}
    hits: list = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = tuple(str(p) for p in context.module.path)
        if path:
            called.setdefault(layer_name(path), None)
        if path == target:
            return _site_call(next_fun, args, kwargs, at, delta, hits, layer_name(target))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        outputs = apply(variables, x)
    if not hits:
        raise _unknown(layer_name(target), list(called))
    return outputs, _single(layer, hits)


# ---- NNX ---------------------------------------------------------------------------------

_PROBED_CLASSES: dict[type, type] = {}
_HOOKS: dict[int, Any] = {}


def _probed_class(cls: type) -> type:
    """A subclass of `cls` whose `__call__` goes through a per-instance hook.

    The hook gets `(call, args, kwargs)` with `call` the original `__call__` bound
    to the instance, so it can change the input, the output, or both.
    """
    sub = _PROBED_CLASSES.get(cls)
    if sub is None:
        def __call__(self, *args, **kwargs):
            hook = _HOOKS.get(id(self))
            if hook is None:
                return cls.__call__(self, *args, **kwargs)
            return hook(lambda *a, **k: cls.__call__(self, *a, **k), args, kwargs)

        sub = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})
        _PROBED_CLASSES[cls] = sub
    return sub


def nnx_submodules(module: Any) -> dict[str, Any]:
    """`{name: submodule}` for every callable submodule of an NNX module (not the root)."""
    from flax import nnx

    return {
        layer_name(path): sub for path, sub in nnx.iter_modules(module) if path and callable(sub)
    }


def nnx_layer_names(graphdef: Any, state: PyTree) -> list[str]:
    from flax import nnx

    return list(nnx_submodules(nnx.merge(graphdef, state)))


def nnx_probe(graphdef: Any, state: PyTree, x: jax.Array, layer: Any, delta: PyTree,
              at: str = "output"):
    """`probe` for an `NNXApply`: a recording subclass on the named submodule of a fresh merge."""
    from flax import nnx

    at = check_site(at)
    name = layer_name(layer_parts(layer))
    module = nnx.merge(graphdef, state)
    subs = nnx_submodules(module)
    if name not in subs:
        raise _unknown(name, list(subs))
    sub = subs[name]
    hits: list = []

    def hook(call, args, kwargs):
        return _site_call(call, args, kwargs, at, delta, hits, name)

    original = type(sub)
    _HOOKS[id(sub)] = hook
    object.__setattr__(sub, "__class__", _probed_class(original))
    try:
        outputs = module(x)
    finally:
        object.__setattr__(sub, "__class__", original)
        _HOOKS.pop(id(sub), None)
    if not hits:
        raise ValueError(
            f"layer: {name!r} exists but its __call__ did not run during the forward pass; "
            f"choose a layer the model calls"
        )
    return outputs, _single(layer, hits)


# ---- shared helpers for methods ----------------------------------------------------------


def probe(model: Any, x: jax.Array, layer: Any, delta: PyTree = None, *, at: str = "output"):
    """`(outputs, activation)` with `delta` added at the layer's output or input
    (`Model.probe`)."""
    return model.probe(x, layer, delta, at=at)


def activation_shape(model: Any, x: jax.Array, layer: Any, at: str = "output") -> PyTree:
    """The activation at the layer's output (or input) as `jax.ShapeDtypeStruct`s.

    No FLOPs, no compilation.

    Also validates the layer name: raises `ValueError` listing the available
    layers when it is wrong, and `ValueError` naming `x` when the model cannot
    be called on `x` (e.g. a wrong number of channels). Results are cached per
    (architecture, parameter shapes, input shape, layer), so repeated calls do
    not re-trace the model.
    """
    parts = layer_parts(layer)
    at = check_site(at)
    return V.model_call(lambda: eval_shape_cached(
        lambda m, xb: probe(m, xb, layer, at=at)[1], model, x, ("probe", parts, at)), x)


def zeros_like_shape(shape: PyTree) -> PyTree:
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)


def linen_kernel(variables: PyTree, layer: Any) -> jax.Array:
    """The `kernel` parameter of a Linen layer."""
    parts = layer_parts(layer)
    tree = variables.get("params", {}) if hasattr(variables, "get") else {}
    node = tree
    for p in parts:
        if not hasattr(node, "get") or p not in node:
            raise _unknown(layer, linen_layer_names({"params": tree}))
        node = node[p]
    if not hasattr(node, "get") or "kernel" not in node:
        raise ValueError(f"layer: {layer!r} has no 'kernel' parameter (not a conv or dense)")
    return jnp.asarray(node["kernel"])


def nnx_kernel(graphdef: Any, state: PyTree, layer: Any) -> jax.Array:
    """The `kernel` parameter of an NNX layer."""
    from flax import nnx

    subs = nnx_submodules(nnx.merge(graphdef, state))
    name = layer_name(layer_parts(layer))
    if name not in subs:
        raise _unknown(layer, list(subs))
    kernel = getattr(subs[name], "kernel", None)
    if kernel is None:
        raise ValueError(f"layer: {layer!r} has no 'kernel' parameter (not a conv or dense)")
    return jnp.asarray(kernel[...])
