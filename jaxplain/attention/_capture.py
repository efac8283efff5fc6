"""Attention weights read from the model's program: where they are, and a probe at them.

The attention weights of a layer are the output of a softmax over its last axis,
`exp(s - max s) / sum(exp(s - max s))`. That is what `jax.nn.softmax` computes,
what Flax's attention modules (`nn.MultiHeadDotProductAttention`,
`nnx.MultiHeadAttention`, `nn.dot_product_attention_weights`) call, and what a
user's own `softmax(q @ k.T / sqrt(d))` computes (masked by `jnp.where` before the
softmax, or by `jax.nn.softmax(..., where=mask)`). The model is traced to a jaxpr
and re-evaluated by the interpreter every jaxplain rewrite uses
(`jaxplain._compile.jaxpr`, as guided backprop, DeepLIFT and LRP do); each
softmax over the last axis of an array of rank 3 or more, i.e. each `div` whose
numerator is an `exp` and whose denominator is that `exp` summed over the last
axis, is an *attention site*. The user's model is not edited.

`probe(model, x, deltas)` is the layer probe of `jaxplain._core.layers` at these
sites: it returns `(outputs, weights)` with `deltas[l]` added to the weights of
site `l` after they are read, so a gradient with respect to a zero delta is the
gradient with respect to the attention weights (one forward and one backward
pass). Weights come as `(N, heads, queries, keys)`: a rank-3 softmax output
`(N, q, k)` is one head, extra leading axes are flattened into the head axis.

Sites are ordered as the program runs them (the first block first). A Linen
model names each after the module that computes it (`"block0/attn"`); other
models get `"attention0"`, `"attention1"`, ... Softmaxes inside `lax.scan`,
`while` or `cond` bodies (e.g. `nn.scan` over blocks) are not reached: a model
whose only attention is there gets a `ValueError` saying so.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from .._compile.jaxpr import JIT_CALLS, Site, bind_eqn, interpret
from .._core.cache import traced_cached
from .._core import validate as V
from .._core.models import Model

_THROUGH = ("broadcast_in_dim", "reshape", "expand_dims", "convert_element_type")
_MASKS = ("select_n", "jit", "pjit")  # jax.nn.softmax(where=...) masks the sum (a jitted where)


def _producers(jaxpr) -> dict:
    return {v: e for e in jaxpr.eqns for v in e.outvars}


def _is_softmax(eqn, producers: dict) -> bool:
    """Whether `eqn` is `exp(s) / sum_last_axis(exp(s))` on an array of rank >= 3."""
    if eqn.primitive.name != "div" or len(eqn.invars) != 2:
        return False
    num, den = eqn.invars
    if isinstance(num, jex_core.Literal) or isinstance(den, jex_core.Literal):
        return False
    e = producers.get(num)
    if e is None or e.primitive.name != "exp" or len(num.aval.shape) < 3:
        return False
    d = producers.get(den)
    while d is not None and d.primitive.name in _THROUGH:
        src = d.invars[0]
        d = None if isinstance(src, jex_core.Literal) else producers.get(src)
    if (d is None or d.primitive.name != "reduce_sum"
            or tuple(d.params["axes"]) != (len(num.aval.shape) - 1,)):
        return False
    summed = d.invars[0]
    if summed is num:
        return True
    masked = None if isinstance(summed, jex_core.Literal) else producers.get(summed)
    return (masked is not None and masked.primitive.name in _MASKS  # softmax(where=mask)
            and any(v is num for v in masked.invars))


def _site_indices(jaxpr) -> list[int]:
    producers = _producers(jaxpr)
    return [k for k, e in enumerate(jaxpr.eqns) if _is_softmax(e, producers)]


def _sub_jaxprs(eqn) -> list:
    out = []
    for v in eqn.params.values():
        for u in (v if isinstance(v, (tuple, list)) else (v,)):
            inner = getattr(u, "jaxpr", u)
            if isinstance(inner, jex_core.Jaxpr):
                out.append(inner)
    return out


def _scan(jaxpr, names: list, hidden: list) -> None:
    """Appends the sites' names (entered calls included) and the primitives hiding one."""
    sites = set(_site_indices(jaxpr))
    for k, eqn in enumerate(jaxpr.eqns):
        if k in sites:
            names.append(str(eqn.source_info.name_stack))
        elif eqn.primitive.name in JIT_CALLS:
            for inner in _sub_jaxprs(eqn)[:1]:
                _scan(inner, names, hidden)
        else:
            for inner in _sub_jaxprs(eqn):
                found: list = []
                _scan(inner, found, hidden)
                if found:
                    hidden.append(eqn.primitive.name)


def _clean(names: list[str]) -> list[str]:
    out = []
    for i, n in enumerate(names):
        parts = [p for p in n.split("/") if p and "(" not in p]
        name = "/".join(parts[1:]) if len(parts) > 1 else ""
        out.append(name if name and name not in out else f"attention{i}")
    return out


def describe(model: Model) -> str:
    """A short name of the model for messages: its module's or function's name."""
    apply = model.apply
    for inner in (getattr(apply, "module", None), getattr(apply, "fn", None)):
        if inner is not None:
            return f"{type(apply).__name__}({getattr(inner, '__name__', type(inner).__name__)})"
    graphdef = getattr(apply, "graphdef", None)
    kind = getattr(getattr(graphdef, "nodes", [None])[0], "type", None) if graphdef else None
    if kind is not None:
        return f"NNXApply({kind.__name__})"
    return getattr(apply, "__name__", None) or repr(apply)[:80]


def site_names(model: Model, x: jax.Array) -> list[str]:
    """Names of the attention sites of `model` on inputs shaped like `x` (traced, cached).

    Raises:
      ValueError: the model has no attention site (the message names the model).
    """
    def compute():
        closed = jax.make_jaxpr(lambda m, xb: m(xb))(model, x)
        names: list = []
        hidden: list = []
        _scan(closed.jaxpr, names, hidden)
        return tuple(_clean(names)), tuple(hidden)

    names, hidden = V.model_call(  # a wrong x is named as such, not as a Flax error
        lambda: traced_cached(compute, model, x, ("attention-sites",)), x)
    if not names:
        where = (f"; its softmaxes are inside {sorted(set(hidden))} bodies (e.g. nn.scan over "
                 f"blocks), which attention capture does not enter") if hidden else ""
        raise ValueError(
            f"model: {describe(model)} has no attention: no softmax over the last axis of an array of "
            f"rank >= 3 in its program (what jax.nn.softmax and Flax's attention modules "
            f"compute){where}")
    return list(names)


def probe(model: Model, x: jax.Array, deltas: Sequence[Any] | None = None):
    """`(outputs, weights)`: the model's outputs with `deltas[l]` added to the attention
    weights of site `l`, and the weights `[(N, heads, q, k), ...]` before the deltas."""
    hits: list = []

    def rule(site: Site):
        key = ("attention-sites", id(site.frame.jaxpr))
        sites = site.frame.scratch.get(key)
        if sites is None:
            sites = site.frame.scratch[key] = set(_site_indices(site.frame.jaxpr))
        if site.index not in sites:
            return None
        (w,) = bind_eqn(site.eqn, site.invals)
        l = len(hits)
        hits.append(w)
        if deltas is not None:
            w = w + jnp.reshape(jnp.asarray(deltas[l], w.dtype), w.shape)
        return [w]

    def run(m, xb):
        closed, shape = jax.make_jaxpr(lambda mm, z: mm(z), return_shape=True)(m, xb)
        outs = interpret(closed.jaxpr, closed.consts, jax.tree.leaves((m, xb)), rule,
                         calls=JIT_CALLS)
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    outputs = run(model, x)
    return outputs, [_heads(w, x.shape[0]) for w in hits]


def _heads(w: jax.Array, n: int) -> jax.Array:
    lead = 0
    while lead < w.ndim - 3 and w.shape[lead] == 1 and w.shape[0] != n:
        lead += 1  # NNX's attention adds a leading axis of one
    w = w.reshape(w.shape[lead:])
    if w.shape[0] != n:
        raise ValueError(f"model: an attention softmax of shape {tuple(w.shape)} does not put "
                         f"the batch ({n}) first")
    return w.reshape((n, -1) + w.shape[-2:])


def shapes(model: Model, x: jax.Array) -> list[jax.ShapeDtypeStruct]:
    """The captured weights' shapes `(N, heads, q, k)` (validates: see `site_names`)."""
    site_names(model, x)
    return traced_cached(lambda: jax.eval_shape(lambda m, xb: probe(m, xb)[1], model, x),
                         model, x, ("attention-shapes",))
