"""Guided backpropagation and DeconvNet: swap the backward rule of every ReLU.

The model is traced to a jaxpr and re-evaluated by the interpreter of
`jaxplain/_compile/jaxpr.py`, which replaces each ReLU (`jax.nn.relu`, hence
`flax.linen.relu` and `nnx.relu`, and `max(x, 0)`) by a function with the same forward value and a
custom VJP. This works on any JAX model without editing it: Linen, NNX or a
plain callable.
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

from .._compile.jaxpr import rewrite

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


def _relu_rule(relu):
    def rule(site):
        eqn, invals = site.eqn, site.invals
        if (eqn.primitive.name == "custom_jvp_call"
                and _is_relu_jaxpr(eqn.params["call_jaxpr"].jaxpr)):
            return [relu(invals[-1])]
        if _is_relu_max(eqn):
            operand = next(x for v, x in zip(eqn.invars, invals) if not _is_zero_literal(v))
            return [relu(operand)]
        return None

    return rule


@dataclasses.dataclass(frozen=True)
class ReluRuleApply:
    """Apply object: the wrapped apply with every ReLU's backward rule replaced."""

    inner: Any
    mode: str

    def __call__(self, params, x):
        return rewrite(self.inner, _relu_rule(_RELUS[self.mode]))(params, x)
