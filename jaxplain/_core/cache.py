"""Facts read from tracing a model, cached per architecture (no FLOPs, no compile).

Validation traces the model on every public call (output shape, a layer's
activation shape); tracing a CNN costs milliseconds, a cache lookup microseconds.
Keys are an *architecture token* (the apply object and the parameters' tree,
shapes and dtypes) and the input's shape.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Hashable

import jax

from . import validate as V


_SHAPE_CACHE: dict = {}
_SHAPE_CACHE_SIZE = 256


def eval_shape_cached(fn: Callable[[Any, jax.Array], Any], model: Any, x: Any, tag: Hashable) -> Any:
    """`jax.eval_shape(fn, model, x)`, cached per (architecture, parameter shapes, input, tag).

    Validation calls this on every public call; tracing a CNN costs milliseconds,
    the cache lookup microseconds. `tag` names what `fn` computes.
    """
    return traced_cached(lambda: jax.eval_shape(fn, model, x), model, x, tag)


def traced_cached(compute: Callable[[], Any], model: Any, x: Any, tag: Hashable) -> Any:
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


def architecture_token(model: Any) -> int | None:
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
