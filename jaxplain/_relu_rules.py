"""Guided backpropagation and DeconvNet: swap the backward rule of every ReLU.

The model is traced to a jaxpr and re-evaluated by a small interpreter that
replaces each ReLU (`jax.nn.relu`, hence `flax.linen.relu` and `nnx.relu`, and
`max(x, 0)`) by a function with the same forward value and a custom VJP. This
works on any JAX model without editing it: Linen, NNX or a plain callable.
ReLUs inside control-flow primitives (`scan`, `while`, `cond`) keep their
ordinary gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

MODES = ("guided", "deconvnet")


def _relu_fwd(x):
    return jnp.maximum(x, 0), x


def _make_relu(mode: str):
    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0)

    def bwd(x, g):
        if mode == "guided":  # positive gradients through positive inputs
            return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)
        return (jnp.maximum(g, 0),)  # deconvnet: the ReLU acts on the gradient

    relu.defvjp(_relu_fwd, bwd)
    return relu


_RELUS = {m: _make_relu(m) for m in MODES}


def _is_zero_literal(v) -> bool:
    if not isinstance(v, jex_core.Literal):
        return False
    val = np.asarray(v.val)  # NumPy, not jnp: jnp would be staged into the trace
    return val.ndim == 0 and val.dtype.kind in "fiu" and val == 0


def _is_relu_max(eqn) -> bool:
    return eqn.primitive.name == "max" and sum(_is_zero_literal(v) for v in eqn.invars) == 1


def _is_relu_jaxpr(jaxpr) -> bool:
    eqns = jaxpr.eqns
    if len(eqns) != 1:
        return False
    e = eqns[0]
    if _is_relu_max(e):
        return True
    if e.primitive.name in ("jit", "pjit"):
        return _is_relu_jaxpr(e.params["jaxpr"].jaxpr)
    return False


def _eval(jaxpr, consts, args, relu):
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "custom_jvp_call" and _is_relu_jaxpr(eqn.params["call_jaxpr"].jaxpr):
            outs = [relu(invals[-1])]
        elif _is_relu_max(eqn):
            operand = next(x for v, x in zip(eqn.invars, invals) if not _is_zero_literal(v))
            outs = [relu(operand)]
        elif name in ("jit", "pjit"):
            closed = eqn.params["jaxpr"]
            outs = _eval(closed.jaxpr, closed.consts, invals, relu)
        else:
            bind = eqn.primitive.get_bind_params(eqn.params)
            subfuns, params = bind if isinstance(bind, tuple) else ((), bind)  # older JAX: a pair
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *invals, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


@dataclasses.dataclass(frozen=True)
class ReluRuleApply:
    """Apply object: the wrapped apply with every ReLU's backward rule replaced."""

    inner: Any
    mode: str

    def __call__(self, params, x):
        closed = jax.make_jaxpr(self.inner, return_shape=True)
        closed, out_shape = closed(params, x)
        flat = jax.tree.leaves((params, x))
        outs = _eval(closed.jaxpr, closed.consts, flat, _RELUS[self.mode])
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)
