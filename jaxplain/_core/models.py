"""Model adapters: Linen, NNX and plain callables as one pytree type.

A `Model` holds a static, hashable *apply* object and the parameters as pytree
leaves. Passing a `Model` to a jitted function therefore traces the weights as
arguments: new weights of the same architecture reuse the compiled program, and
no weights are baked into it as constants.

Layer access (Grad-CAM, layer attribution, activations) goes through the apply
object's `layer_names`, `probe` and `kernel` (`layers.py` implements them once per
framework); a plain callable has none.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Hashable

import jax

from .._compile import config, numpy_rules
from . import layers
from .closures import FunctionSpec, Unsplittable, is_stable, split_function
from .types import PyTree


def _relaxed(fn: Callable) -> Callable:
    """`fn` (the user's model code) under JAX's default promotion rules."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with numpy_rules(False):
            return fn(*args, **kwargs)

    return call


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
        if config.read("strict_numpy") == "1":  # the user's code keeps JAX's defaults
            with numpy_rules(False):
                return self.apply(self.params, x)
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

    # ---- layer access (Linen and NNX adapters) -------------------------------------
    def _access(self, what: str) -> Callable:
        fn = getattr(self.apply, what, None)
        if fn is None:
            raise TypeError(
                f"model: layer access needs a Linen or NNX model (from_linen/from_nnx), "
                f"got {self.apply!r}"
            )
        if config.read("strict_numpy") == "1":
            return _relaxed(fn)
        return fn

    def layer_names(self) -> list[str]:
        """Names of the layers that `probe` accepts (submodule paths)."""
        return self._access("layer_names")(self.params)

    def probe(self, x: jax.Array, layer: Any, delta: Any = None,
              at: str = "output") -> tuple[Any, jax.Array]:
        """Runs the model with `delta` added at the output (or input) of `layer`.

        Returns `(outputs, activation)` where `activation` is the value at the
        site *before* `delta` is added. Gradients with respect to `delta` (at
        zero) are gradients with respect to the layer's activations. `at="input"`
        probes the first positional argument of the layer's `__call__`.
        """
        return self._access("probe")(self.params, x, layer, delta, layers.check_site(at))

    def kernel(self, layer: Any) -> jax.Array:
        """The `kernel` parameter of a layer (convolution or dense), for display."""
        return self._access("kernel")(self.params, layer)


# ---- adapters -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CallableApply:
    """Apply object for a plain callable `f(x_batch) -> outputs` (no parameters)."""

    fn: Callable

    def __call__(self, params, x):
        del params
        return self.fn(x)




@dataclasses.dataclass(frozen=True)
class ClosureApply:
    """Apply object for a Python function whose captured arrays are the model's parameters.

    Two function objects built from the same code over the same static values
    (a `lambda` written inside a loop, closing over weights) compare equal, so
    they share compiled programs instead of compiling (and caching) one each.
    """

    spec: FunctionSpec

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
        return layers.linen_layer_names(params)

    def probe(self, params, x, layer, delta=None, at="output"):
        return layers.linen_probe(self, params, x, layer, delta, at)

    def kernel(self, params, layer):
        return layers.linen_kernel(params, layer)


@dataclasses.dataclass(frozen=True)
class NNXApply:
    """Apply object for an NNX module split into a static graph definition and state."""

    graphdef: Any

    def __call__(self, params, x):
        from flax import nnx

        return nnx.merge(self.graphdef, params)(x)

    def layer_names(self, params):
        return layers.nnx_layer_names(self.graphdef, params)

    def probe(self, params, x, layer, delta=None, at="output"):
        return layers.nnx_probe(self.graphdef, params, x, layer, delta, at)

    def kernel(self, params, layer):
        return layers.nnx_kernel(self.graphdef, params, layer)


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
    if isinstance(fn, types.FunctionType) and not is_stable(fn):
        try:
            spec, arrays = split_function(fn)
        except Unsplittable:
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
