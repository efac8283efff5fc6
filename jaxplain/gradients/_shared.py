"""What the layer methods share: validating a layer (site) and one pass to it.

A *site* is a layer's output (`at="output"`) or input (`at="input"`, the first
positional argument of its `__call__`); `_core.layers` probes it.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from .._core import layers as _layers
from .._core import batching
from .._core import validate as V
from .._compile import tuned
from .._core.types import ArrayLike
from .._core.models import as_model
from .._core.targets import Target, as_target


# ---- shared plumbing --------------------------------------------------------------------


def prepare_layer(model: Any, x: ArrayLike, target: Any, layer: Any, at: Any):
    """Validates the common arguments; returns (model, x, target, layer key, activation shape)."""
    _layers.check_site(at)
    model = as_model(model)
    x = V.check_array(x)
    parts = _layers.layer_parts(layer)
    shape = _layers.activation_shape(model, x, parts, at)
    t = None if target is NO_TARGET else as_target(target, model, x)
    return model, x, t, parts, shape


NO_TARGET = object()


def prepare_site(model: Any, x: ArrayLike, target: Any, layer: Any, at: Any, method: str):
    """For methods that attribute to the input or, given `layer`, to one array at a layer:
    `(model, x, target, layer key or None)`, validated before any compile."""
    if layer is None:
        _layers.check_site(at)
        model = as_model(model)
        x = V.check_array(x)
        return model, x, as_target(target, model, x), None
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    single_array(shape, layer, method)
    return model, x, t, parts


def single_array(shape: Any, layer: Any, method: str) -> jax.ShapeDtypeStruct:
    if not isinstance(shape, jax.ShapeDtypeStruct):
        V.fail("layer", f"a layer returning one array for {method}",
               f"{layer!r} returning {jax.tree.structure(shape)}")
    return shape


def check_spatial(shape: Any, layer: Any, method: str) -> jax.ShapeDtypeStruct:
    shape = single_array(shape, layer, method)
    if len(shape.shape) < 3:
        V.fail("layer", f"a layer with spatial dims (N, H, W, C) for {method}",
               f"activation shape {tuple(shape.shape)} from {layer!r} (no spatial dims; "
               f"choose a convolutional layer)")
    return shape


def upsample_size(upsample: Any, x: jax.Array,
                   shape: jax.ShapeDtypeStruct) -> tuple[int, ...] | None:
    n_spatial = len(shape.shape) - 2
    if upsample is False or upsample is None:
        return None
    if upsample is True:
        size = tuple(int(s) for s in x.shape[1:1 + n_spatial])
        if len(x.shape) != n_spatial + 2:
            V.fail("upsample", f"an explicit size with {n_spatial} entries (x has shape "
                   f"{tuple(x.shape)}, the layer {tuple(shape.shape)})", True)
        return size
    if isinstance(upsample, (tuple, list)) and len(upsample) == n_spatial and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in upsample
    ):
        return tuple(int(s) for s in upsample)
    V.fail("upsample", f"True, False or a size of {n_spatial} positive ints", repr(upsample))


def layer_vjp(model, target: Target, x: jax.Array, layer: tuple[str, ...], at: str, shape):
    """One forward and one backward pass: (scalars (N,), activations, layer gradients, target)."""
    zeros = _layers.zeros_like_shape(shape)
    probed = tuned(lambda d: _layers.probe(model, x, layer, d, at=at), "grad")
    outputs, vjp, act = jax.vjp(probed, zeros, has_aux=True)
    bound = target.bind(jax.lax.stop_gradient(outputs))
    ct = jax.grad(lambda o: jnp.sum(bound.select(o)))(outputs)
    (grads,) = vjp(ct)
    return bound.select(outputs), act, grads, bound


def over_examples(fn, x: jax.Array, target: Target | None, batch_size: int | None):
    """`fn(x_chunk, target_chunk)` over chunks of at most `batch_size` examples, its
    per-example outputs concatenated (for methods of one pass per example)."""
    def chunk(start, size):
        rows = start + jnp.arange(size, dtype=jnp.int32)
        t = None if target is None else target.take(rows)
        return fn(jax.lax.dynamic_slice_in_dim(x, start, size), t)

    return batching.chunked_map(chunk, x.shape[0], batch_size)


def n_evals(x: jax.Array, k: int) -> jax.Array:
    return jnp.full((x.shape[0],), k, jnp.int32)


# ---- input methods ------------------------------------------------------------------------


def prepare_input(model, x, target):
    """`(model, x, target)` validated, for methods that attribute to the input."""
    model = as_model(model)
    x = V.check_array(x, "x")
    return model, x, as_target(target, model, x)


def bcast(v: jax.Array, ndim: int) -> jax.Array:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def count(n: int, evals: int) -> jax.Array:
    return jnp.full((n,), evals, jnp.int32)
