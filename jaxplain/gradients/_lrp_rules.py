"""Layer-wise relevance propagation read from the model's jaxpr.

`propagated(fn, rules)` traces `fn` to a jaxpr and evaluates it again with
the same forward values; its backward pass carries `c = R / a`, the relevance of
each activation `a` divided by `a`, so that the relevance at the input is
`x * c` (the "gradient trick" of Montavon et al.). On the way down:

- a *linear layer* is a convolution or matrix product with one operand that
  depends on the input (the weight does not), together with the bias `add` that
  follows it when there is one. Its rule (`Epsilon`, `Gamma`, `AlphaBeta`,
  `ZBox`) maps the output's relevance `R_z = z * c_z` to its input's; layers are
  numbered in the order the forward pass meets them;
- an activation (a `jax.nn` / Flax activation taken whole, or `max`, `min`,
  `tanh`, `logistic` of one varying operand) passes relevance through unchanged,
  `R_in = R_out` (`c_in = c_out * f(z) / z`); for ReLU this is its gradient;
- everything else keeps its gradient: pooling (the arg-max takes all of a max
  pool's relevance; average pooling and sums are LRP-0), reshapes, scaling.

Tiling pools are differentiated as elementwise work and the input gradient of
few-channel convolutions as a matrix product, as in every jaxplain backward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._deeplift_rules import _activation_call, _rescale
from .._compile import tuned_eqn, tuned_rule
from .._compile.jaxpr import CALLS, Site, bind_eqn, interpret, of_operand
from ._relu_rules import _is_relu_max

LINEAR = ("conv_general_dilated", "dot_general")
PASSED = frozenset(("max", "min", "tanh", "logistic"))
"""Primitives of one varying operand that pass relevance through (besides jitted activations)."""

TINY = 1e-12
"""Every denominator is kept at least this far from 0 (on the side of its sign)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """A linear layer as the rules see it: position, count, `"conv"` or `"dense"`."""

    index: int
    count: int
    kind: str


def stabilise(z: jax.Array, eps: float) -> jax.Array:
    """`z + eps * sign(z)` with sign(0) = +1, and never closer to 0 than `TINY`."""
    sign = jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype)
    return z + sign * max(float(eps), TINY)


def _pos(v):
    return jnp.maximum(v, 0)


def _neg(v):
    return jnp.minimum(v, 0)


class _Linear:
    """`L(a, w)`: the layer's equation with operand `i` (the activation) and weight `w`."""

    def __init__(self, eqn, i: int):
        self.eqn, self.i = eqn, i

    def __call__(self, a, w):
        args = [w, w]
        args[self.i] = a
        out = tuned_eqn(self.eqn, args)  # its input gradient as a matrix product on CPU
        return (out if out is not None else bind_eqn(self.eqn, args))[0]

    def t(self, w, a, s):
        """`L(., w)^T s`, the transpose in the activation."""
        _, vjp = jax.vjp(lambda a_: self(a_, w), a)
        return vjp(s.astype(a.dtype))[0]


def _layer_op(lin: _Linear, rule: Any):
    """`op(a, w, b, low, high) = L(a, w) + b`, whose VJP applies `rule` (see `relevance.py`)."""

    @jax.custom_vjp
    def op(a, w, b, low, high):
        return lin(a, w) + b

    def fwd(a, w, b, low, high):
        z = lin(a, w) + b
        return z, (a, w, b, z, low, high)

    def bwd(res, g):
        a, w, b, z, low, high = res
        r = z * g  # relevance of the layer's output
        rest = (jnp.zeros_like(w), jnp.zeros_like(b), jnp.zeros_like(low), jnp.zeros_like(high))
        name = rule.name
        if name == "epsilon":
            return (lin.t(w, a, r / stabilise(z, rule.epsilon)), *rest)
        if name == "gamma":
            wg, bg = w + rule.gamma * _pos(w), (b + rule.gamma * _pos(b)) if rule.gamma_bias else b
            s = r / stabilise(lin(a, wg) + bg, rule.epsilon)
            return (lin.t(wg, a, s), *rest)
        if name == "alpha_beta":
            wp, wn, ap, an = _pos(w), _neg(w), _pos(a), _neg(a)
            zp = lin(ap, wp) + lin(an, wn)  # the positive contributions' sum
            zn = z - b - zp  # and the negative ones'
            if rule.bias:  # the bias's sign decides its denominator (Zennit's, Captum's)
                zp, zn = zp + _pos(b), zn + _neg(b)
            sp = rule.alpha * r / stabilise(zp, rule.epsilon)
            sn = rule.beta * r / stabilise(zn, rule.epsilon)
            up = lin.t(wp, a, sp) - lin.t(wn, a, sn)  # where a > 0
            un = lin.t(wn, a, sp) - lin.t(wp, a, sn)  # where a < 0
            return (jnp.where(a > 0, up, un), *rest)
        # "box": the first layer's inputs bounded by low <= a <= high
        wp, wn = _pos(w), _neg(w)
        s = r / stabilise(lin(a, w) - lin(low, wp) - lin(high, wn), rule.epsilon)
        return (lin.t(w, a, s), *rest[:2], -lin.t(wp, low, s), -lin.t(wn, high, s))

    op.defvjp(fwd, bwd)
    return op


def _is_relu(eqn) -> bool:
    """`max(z, 0)`, or a call (`jax.nn.relu`: jit of custom_jvp of max) of only that."""
    if eqn.primitive.name in ("jit", "pjit", "custom_jvp_call"):
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        eqns = getattr(inner, "jaxpr", inner).eqns if inner is not None else ()
        return len(eqns) == 1 and _is_relu(eqns[0])
    return _is_relu_max(eqn)


INPUT, PROBE = 1, 2
"""Tags: what depends on the model's input, and on a layer probe's zero."""


class _Propagation:
    """The interpreter's rule for one propagation: rules, box bounds, the layers met."""

    def __init__(self, rules: Callable[[int, str], Any], low, high):
        self.rules, self.low, self.high = rules, low, high
        self.layers: list[str] = []

    def layer(self, eqn, i, a, w, b, probed: bool):
        kind = "conv" if eqn.primitive.name == "conv_general_dilated" else "dense"
        index = len(self.layers)
        self.layers.append(kind)
        rule = self.rules(index, kind)
        if rule.name == "box" and probed:
            raise ValueError(
                "rule: ZBox on a layer at or above the probed `layer`: the box rule's input "
                "relevance is not activation x gradient; ask for the input's relevance "
                "(layer=None) or probe a layer above it")
        if rule.name == "box":
            low, high = (jnp.broadcast_to(v, a.shape).astype(a.dtype)
                         for v in (self.low, self.high))
        else:
            low = high = jnp.zeros((), a.dtype)
        b = jnp.zeros((), a.dtype) if b is None else b
        with eqn.ctx.manager:
            return _layer_op(_Linear(eqn, i), rule)(a, w, b, low, high)

    def __call__(self, site: Site):
        eqn, invals, frame = site.eqn, site.invals, site.frame
        deferred = frame.scratch  # bias add position -> (linear eqn, operand, a, w, side, probed)
        if site.index in deferred:
            lin_eqn, i, a, w, pos, probed = deferred.pop(site.index)
            return [self.layer(lin_eqn, i, a, w, invals[1 - pos], probed)]
        vary = site.varying
        if not any(vary):
            return bind_eqn(eqn, invals)
        name = eqn.primitive.name
        if name in LINEAR and sum(vary) == 1:
            i = vary.index(True)
            a, w = invals[i], invals[1 - i]
            probed = bool(site.tags[i] & PROBE)
            (u,) = eqn.outvars
            nxt = frame.uses(u)
            if len(nxt) == 1 and nxt[0] > site.index:
                add = frame.jaxpr.eqns[nxt[0]]
                if add.primitive.name == "add":
                    pos = list(add.invars).index(u)
                    other = add.invars[1 - pos]
                    if other is not u and not frame.tag(other):
                        deferred[nxt[0]] = (eqn, i, a, w, pos, probed)
                        # never read: the add takes over
                        return [jnp.zeros(u.aval.shape, u.aval.dtype)]
            return [self.layer(eqn, i, a, w, None, probed)]
        varied = [j for j, f in enumerate(vary) if f]
        if _is_relu(eqn):
            return bind_eqn(eqn, invals)  # passing relevance through a ReLU is its gradient
        if (name in PASSED and len(varied) == 1) or _activation_call(eqn, varied, invals):
            j = varied[0]
            with eqn.ctx.manager:
                zero = jnp.zeros_like(invals[j])
                # the secant from the origin: f(z) / z
                return [_rescale(of_operand(eqn, invals, j))(invals[j], zero, zero)]
        return tuned_rule(site)  # None: enter a call, or bind as it is


def propagated(fn: Callable[..., Any], rules: Callable[[int, str], Any]):
    """`g(args, low, high) -> fn(*args)` whose VJP carries LRP's `R / a`.

    Every argument in the tuple `args` is an input relevance flows to: the
    model's input, and for layer relevance the zero added at the layer (any
    argument after the first is such a probe).
    `rules(index, kind)` gives each linear layer's rule; `low`, `high` are the
    bounds of a `ZBox` layer's input (broadcast to it). After a call, `g.layers`
    holds the kinds of the layers met, in order.
    """

    def g(args, low, high):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        rule = _Propagation(rules, low, high)
        leaves = jax.tree.leaves(args)
        n_in = len(jax.tree.leaves(args[0]))
        tags = [INPUT if i < n_in else INPUT | PROBE for i in range(len(leaves))]
        outs = interpret(closed.jaxpr, closed.consts, leaves, rule, tags=tags, calls=CALLS)
        g.layers = tuple(rule.layers)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    g.layers = ()
    return g
