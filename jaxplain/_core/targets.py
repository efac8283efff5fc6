"""Targets: which scalar of the model output gets explained, per example.

A user passes a target as

- an int (the same class for every example),
- one int per example (an `(N,)` integer array),
- `"predicted"` (the arg-max class of the model at the explained input), or
- a callable `outputs -> (B,)` mapping a batch of outputs to one scalar per row,
- `None` when the model already returns one scalar per example `(N,)`.

`as_target` validates this once (before tracing) and returns a `Target` pytree;
methods only call `Target.bind`, `Target.take` and `Target.select`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import validate as V
from .._compile import tuned
from .cache import eval_shape_cached
from .models import Model

PREDICTED = "predicted"


@jax.tree_util.register_pytree_node_class
class Target:
    """A validated target: class indices (leaves) and/or a static selector.

    Attributes:
      index: int32 class index per example, `(N,)` (or `()` inside a vmap), or
        `None` for callable / scalar-output / not yet bound "predicted" targets.
      fn: `None`, `"predicted"` (unbound) or a callable `outputs -> (B,)`.
    """

    __slots__ = ("index", "fn")

    def __init__(self, index: jax.Array | None, fn: Any = None):
        self.index = index
        self.fn = fn

    def tree_flatten(self):
        return (self.index,), self.fn

    @classmethod
    def tree_unflatten(cls, fn, children):
        return cls(children[0], fn)

    def __repr__(self):
        return f"Target(index={self.index}, fn={self.fn!r})"

    @property
    def needs_outputs(self) -> bool:
        """True when the target is "predicted" and not yet bound to outputs."""
        return isinstance(self.fn, str) and self.fn == PREDICTED

    def bind(self, outputs: jax.Array) -> "Target":
        """Fixes a "predicted" target to the arg-max of `outputs` (the outputs at x)."""
        if self.needs_outputs:
            return Target(jnp.argmax(outputs, axis=-1).astype(jnp.int32), None)
        return self

    def resolve(self, model: Callable, x: jax.Array) -> "Target":
        """Binds a "predicted" target with one forward pass on `x` (a no-op otherwise)."""
        return self.bind(model(x)) if self.needs_outputs else self

    def take(self, rows: jax.Array) -> "Target":
        """The target for model inputs built from examples `rows` (an int array)."""
        if self.index is None or self.index.ndim == 0:
            return self
        return Target(self.index[rows], self.fn)

    def select(self, outputs: jax.Array) -> jax.Array:
        """One scalar per row of a batch of `outputs` `(B, ...)` -> `(B,)`."""
        if self.needs_outputs:
            raise RuntimeError("Target.select: bind a 'predicted' target to outputs at x first")
        if callable(self.fn):
            return self.fn(outputs)
        if self.index is None:
            return outputs.reshape(outputs.shape[0])
        if self.index.ndim == 0:
            return outputs[:, self.index]
        return jnp.take_along_axis(outputs, self.index[:, None], axis=-1)[:, 0]


def as_target(target: Any, model: Callable, x: jax.Array) -> Target:
    """Validates `target` against the model's output shape on `x` and returns a `Target`.

    Uses `jax.eval_shape` (no compilation, no FLOPs) to learn the output shape.

    Raises:
      TypeError: the target has the wrong type.
      ValueError: the target is out of range, has the wrong length, or does not
        fit the model's outputs.
    """
    if isinstance(target, Target):
        return target
    out = V.model_call(lambda: _output_shape(model, x), x,
                       lambda shape: jax.eval_shape(model, jax.ShapeDtypeStruct(shape, x.dtype)))
    if not hasattr(out, "shape"):
        raise TypeError(
            f"model: expected outputs to be one array (N, ...), got {jax.tree.structure(out)}"
        )
    n = x.shape[0]
    oshape = tuple(out.shape)
    if len(oshape) == 0 or oshape[0] != n:
        raise ValueError(
            f"model: expected outputs with the batch size {n} on axis 0, got shape {oshape}"
        )
    if target is None:
        if len(oshape) == 1 or (len(oshape) == 2 and oshape[1] == 1):
            return Target(None, None)
        raise ValueError(
            f"target: the model returns outputs of shape {oshape}; expected an int class in "
            f"[0, {oshape[-1]}), one int per example, 'predicted' or a callable outputs -> (N,)"
        )
    if isinstance(target, str):
        if target != PREDICTED:
            raise ValueError(f"target: expected an int, an int array, 'predicted' or a callable, got {target!r}")
        _need_classes(oshape, "'predicted'")
        return Target(None, PREDICTED)
    if callable(target):
        try:
            sel = jax.eval_shape(lambda z: target(model(z)), x)
        except Exception as e:  # noqa: BLE001 - surface the user's error with context
            raise ValueError(f"target: the callable failed on outputs of shape {oshape}: {e}") from e
        if getattr(sel, "shape", None) != (n,):
            raise ValueError(
                f"target: expected the callable to map outputs {oshape} to one scalar per "
                f"example (shape ({n},)), got {getattr(sel, 'shape', type(sel).__name__)}"
            )
        return Target(None, target)
    k = _need_classes(oshape, "a class index")
    index = V.check_indices(target, "target", n, k, what=("class index", "class indices"),
                            accepts="an int, an int array, 'predicted' or a callable")
    return Target(V.to_device(index), None)  # host-built: no compile


def _output_shape(model: Callable, x: jax.Array):
    if isinstance(model, Model):
        return eval_shape_cached(lambda m, z: m(z), model, x, "outputs")
    return jax.eval_shape(model, x)


def _need_classes(oshape: tuple[int, ...], what: str) -> int:
    if len(oshape) != 2:
        raise ValueError(
            f"target: {what} needs outputs of shape (N, classes), got {oshape}; "
            f"pass a callable outputs -> (N,) instead"
        )
    return oshape[1]


def value_and_grad(model: Callable, target: Target, x: jax.Array) -> tuple[jax.Array, jax.Array, Target]:
    """Per-row target scalars and their gradients w.r.t. a batch of inputs.

    One forward and one backward pass, also for "predicted" targets (the arg-max
    is read from the same forward pass). Returns `(scalars (B,), grads like x,
    bound target)`. Tiling pooling layers are differentiated as elementwise work
    (`_compile.tuned(model, "grad")`, on CPU): same values and gradients, a faster
    backward pass.
    """
    outputs, vjp = jax.vjp(tuned(model, "grad"), x)
    bound = target.bind(jax.lax.stop_gradient(outputs))
    scalars, ct = jax.value_and_grad(lambda o: jnp.sum(bound.select(o)))(outputs)
    del scalars
    (grads,) = vjp(ct)
    return bound.select(outputs), grads, bound
