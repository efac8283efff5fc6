"""DeepLIFT's multipliers: the model evaluated on an input and its reference in lockstep.

`paired(fn)` traces `fn` to a jaxpr and evaluates every equation twice, on the
input's values and on the reference's. The input's half is differentiated; its
backward pass carries DeepLIFT multipliers instead of gradients:

- an elementwise nonlinearity of one varying operand (`max(z, 0)`, hence every
  ReLU, `tanh`, `logistic`, `exp`, `log`, `erf`, `integer_pow` ...) gets the
  *rescale* rule, the secant `(f(z) - f(z_ref)) / (z - z_ref)` (its derivative
  where `|z - z_ref| < EPS`); so does a jitted elementwise function of one
  argument as a whole, which is what `jax.nn`'s (and Flax's) activations are
  (`leaky_relu`, `elu`, `gelu`, `selu`, `silu` ..., `where` included);
- a product of two varying operands gets the exact two-player split
  `d(ab) = mean(a) db + mean(b) da` (so `x * sigmoid(x)` keeps summation to delta);
- max pooling whose windows tile the input sends `max(y, y_ref) - y_ref` to the
  input's arg-max and `y - max(y, y_ref)` to the reference's (together `y - y_ref`),
  divided by the input's difference there;
- linear equations (convolutions, matrix products, sums, reshapes, average
  pooling) keep their gradient, which is their multiplier.

With only these equations between input and output, the attributions
`(x - x_ref) * multipliers` sum to `f(x) - f(x_ref)` (summation to delta).
Anything else (a `where` written inline, a max of two activations, pooling with
overlapping windows, control flow) keeps its ordinary gradient at the input, as
in Captum.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .._compile import pool, tuned_eqn
from .._compile.jaxpr import CALLS, Site, bind_eqn, interpret, of_operand, pool_tiles, windows

EPS = 1e-10
"""Below this |z - z_ref| a rescaled nonlinearity uses its derivative (Captum's value)."""

RESCALED = frozenset(
    "max min tanh logistic exp exp2 log log1p expm1 erf erfc sin cos sqrt rsqrt cbrt abs "
    "integer_pow pow atan sinh cosh asinh".split()
)
"""Elementwise primitives that get the rescale rule when one operand varies."""

def _rescale(f: Callable[[jax.Array], jax.Array]):
    """`op(z, z_ref, f(z_ref)) = f(z)`, differentiated by the secant from `z_ref`
    (the reference's arguments get 0; `f(z_ref)` is the reference half's value)."""

    @jax.custom_vjp
    def op(z, zr, yr):
        return f(z)

    def fwd(z, zr, yr):
        y, dy = jax.jvp(f, (z,), (jnp.ones_like(z),))
        return y, (z, zr, y, yr, dy)

    def bwd(res, g):
        z, zr, y, yr, dy = res
        dz = z - zr
        small = jnp.abs(dz) < EPS
        slope = jnp.where(small, dy, (y - yr) / jnp.where(small, 1, dz))
        return g * slope.astype(g.dtype), jnp.zeros_like(zr), jnp.zeros_like(yr)

    op.defvjp(fwd, bwd)
    return op


@jax.custom_vjp
def _product(a, b, ar, br):
    return a * b


def _product_fwd(a, b, ar, br):
    return a * b, (a, b, ar, br)


def _product_bwd(res, g):
    a, b, ar, br = res
    return g * (b + br) / 2, g * (a + ar) / 2, jnp.zeros_like(ar), jnp.zeros_like(br)


_product.defvjp(_product_fwd, _product_bwd)


def _unwindows(w, tiles, shape):
    n = len(shape)
    r = w.reshape(w.shape[:n] + tuple(tiles[1::2]))
    order = sum(((i, n + i) for i in range(n)), ())
    return jnp.transpose(r, order).reshape(shape)


def _window_max_rule(tiles):
    @jax.custom_vjp
    def op(x, r):
        return pool("max", x, tiles)

    def fwd(x, r):
        return pool("max", x, tiles), (x, r)

    def bwd(res, g):
        x, r = res
        wx, wr = windows(x, tiles), windows(r, tiles)
        hx = jax.nn.one_hot(jnp.argmax(wx, axis=-1), wx.shape[-1], dtype=wx.dtype)
        hr = jax.nn.one_hot(jnp.argmax(wr, axis=-1), wr.shape[-1], dtype=wr.dtype)
        y, yr = jnp.max(wx, axis=-1), jnp.max(wr, axis=-1)
        top = jnp.maximum(y, yr)
        share = (g * (top - yr))[..., None] * hx + (g * (y - top))[..., None] * hr
        dx = wx - wr
        small = jnp.abs(dx) < EPS
        mult = jnp.where(small, g[..., None] * hx, share / jnp.where(small, 1, dx))
        return _unwindows(mult.astype(g.dtype), tiles, x.shape), jnp.zeros_like(r)

    op.defvjp(fwd, bwd)
    return op


ELEMENTWISE = RESCALED | frozenset(
    "add sub mul div neg select_n ge gt le lt eq ne and or not convert_element_type square "
    "sign stop_gradient copy clamp floor ceil round is_finite broadcast_in_dim jit pjit "
    "custom_jvp_call".split()
)
"""Primitives a jitted activation function may be made of (`jax.nn.leaky_relu`, `elu`,
`gelu`, `selu` ... are `jit` calls of these), so that it is one elementwise function."""


def _is_elementwise(jaxpr, shape) -> bool:
    for e in jaxpr.eqns:
        if e.primitive.name not in ELEMENTWISE:
            return False
        if any(getattr(v.aval, "shape", ()) not in (shape, ()) for v in e.outvars):
            return False
        for key in ("jaxpr", "call_jaxpr"):
            inner = e.params.get(key)
            if inner is not None and not _is_elementwise(getattr(inner, "jaxpr", inner), shape):
                return False
    return True


def _activation_call(eqn, varying, xs) -> bool:
    """A `jit` call that is an elementwise function of its one varying argument."""
    if eqn.primitive.name not in ("jit", "pjit") or len(varying) != 1 or len(eqn.outvars) != 1:
        return False
    shape = jnp.shape(xs[varying[0]])
    if eqn.outvars[0].aval.shape != shape:
        return False
    return _is_elementwise(eqn.params["jaxpr"].jaxpr, shape)


class _Pairs:
    """DeepLIFT's domain: a value is the pair (input's, reference's)."""

    @staticmethod
    def lift(c):
        return c, c

    @staticmethod
    def bind(eqn, pairs) -> list:
        return list(zip(bind_eqn(eqn, [p[0] for p in pairs]), bind_eqn(eqn, [p[1] for p in pairs])))


def _rule(site: Site):
    """DeepLIFT's equation for `site`, or None (enter a call, or bind it on both halves)."""
    eqn = site.eqn
    xs, rs = [p[0] for p in site.invals], [p[1] for p in site.invals]
    varying = [i for i, f in enumerate(site.varying) if f]
    if not varying:  # no input dependence: one evaluation serves both halves
        return [(o, o) for o in bind_eqn(eqn, xs)]
    name = eqn.primitive.name
    if name == "conv_general_dilated" and varying == [0]:
        # an image model's first layer, as `tuned` runs it on both halves (the CPU's
        # patch-product forward and matrix-product input gradient; None elsewhere)
        fast = tuned_eqn(eqn, xs)
        if fast is not None:
            return [(fast[0], tuned_eqn(eqn, rs)[0])]
    if name in ("reduce_window_max", "reduce_window_sum"):
        tiles = pool_tiles(eqn, xs[0])
        if tiles is None:
            return None
        with eqn.ctx.manager:
            if name == "reduce_window_sum":
                return [(pool("sum", xs[0], tiles), pool("sum", rs[0], tiles))]
            return [(_window_max_rule(tiles)(xs[0], rs[0]), pool("max", rs[0], tiles))]
    if name == "mul" and len(varying) == 2:
        a, b = xs
        if jnp.shape(a) == jnp.shape(b) and jnp.shape(rs[0]) == jnp.shape(a):
            with eqn.ctx.manager:
                return [(_product(a, b, rs[0], rs[1]), rs[0] * rs[1])]
        return None
    if (name in RESCALED and len(varying) == 1) or _activation_call(eqn, varying, xs):
        i = varying[0]
        f = of_operand(eqn, xs, i)
        with eqn.ctx.manager:
            yr = f(rs[i])
            return [(_rescale(f)(xs[i], rs[i], yr), yr)]
    return None


def paired(fn: Callable[..., Any]) -> Callable[[tuple, tuple], tuple[Any, Any]]:
    """`g(xs, rs) -> (fn(*xs), fn(*rs))` whose derivative in `xs` carries DeepLIFT's multipliers.

    `xs` and `rs` are tuples of the same structure: the input's arguments and the
    reference's (for layer attribution, the input and a zero added at the layer).
    """

    def g(xs, rs):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*xs)
        leaves = list(zip(jax.tree.leaves(xs), jax.tree.leaves(rs)))
        outs = interpret(closed.jaxpr, closed.consts, leaves, _rule, tags=[1] * len(leaves),
                         calls=CALLS, domain=_Pairs)
        tree = jax.tree.structure(out_shape)
        return (jax.tree.unflatten(tree, [o[0] for o in outs]),
                jax.tree.unflatten(tree, [o[1] for o in outs]))

    return g
