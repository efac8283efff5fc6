"""Re-evaluating a function's jaxpr with some equations replaced.

One interpreter serves every rewrite jaxplain makes without editing the user's
model. `interpret(jaxpr, consts, args, rule)` evaluates the jaxpr again and asks
`rule(site)` first for every equation (`None` means "the default": enter a call,
or bind the equation as it is). A `Site` gives the rule the equation, its
operands' values, which flagged arguments each operand depends on (`tags`), the
equation's position and a `Frame` (the jaxpr, who reads each variable, scratch
space for a look-ahead). A `domain` says what a value is: plain arrays, or
DeepLIFT's (input, reference) pairs. Calls to sub-jaxprs named in `calls` (by
default `jit`/`pjit`) are entered, so a rule also sees the equations inside
them; other higher-order primitives (`scan`, `while`, `cond`, ...) are bound
unchanged.

Built on it: the ReLU backward rules of guided backprop / DeconvNet
(`_relu_rules.py`), DeepLIFT's paired evaluation (`_deeplift.py`), LRP
(`_lrp.py`), and `loop_body` and `fast_model` below.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex_core

JIT_CALLS = {"jit": "jaxpr", "pjit": "jaxpr"}
"""Call primitives (name -> the parameter holding the inner jaxpr) entered by default."""

CALLS = {**JIT_CALLS, "closed_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr"}
"""Also the custom-derivative calls: entering them replaces their derivative rules."""


def bind_eqn(eqn, invals: Sequence[Any]) -> list:
    """Binds `eqn`'s primitive to `invals` as the jaxpr did: the list of its outputs."""
    bind = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bind if isinstance(bind, tuple) else ((), bind)  # older JAX
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*subfuns, *invals, **params)
    return outs if eqn.primitive.multiple_results else [outs]


def of_operand(eqn, invals: Sequence[Any], i: int) -> Callable[[Any], Any]:
    """`z -> eqn(invals with operand i replaced by z)`, the equation's first output."""

    def f(z):
        args = list(invals)
        args[i] = z
        return bind_eqn(eqn, args)[0]

    return f


class Plain:
    """The default domain: a value is the array itself."""

    @staticmethod
    def lift(c):
        """A constant or literal as a value of this domain."""
        return c

    @staticmethod
    def bind(eqn, invals: Sequence[Any]) -> list:
        """`eqn` evaluated as it is on values of this domain."""
        return bind_eqn(eqn, invals)


class Frame:
    """One evaluation of one jaxpr, shared by the sites of its equations."""

    def __init__(self, jaxpr):
        self.jaxpr = jaxpr
        self.tags: dict = {}  # variable -> bit mask of the flagged arguments it depends on
        self.scratch: dict = {}  # for rules that look ahead (LRP's bias adds)
        self._uses: dict | None = None

    def tag(self, v) -> int:
        return 0 if isinstance(v, jex_core.Literal) else self.tags.get(v, 0)

    def uses(self, v) -> list[int]:
        """Positions of the equations reading `v`; -1 when it is an output of the jaxpr."""
        if self._uses is None:
            self._uses = {}
            for k, e in enumerate(self.jaxpr.eqns):
                for u in e.invars:
                    if not isinstance(u, jex_core.Literal):
                        self._uses.setdefault(u, []).append(k)
            for u in self.jaxpr.outvars:
                if not isinstance(u, jex_core.Literal):
                    self._uses.setdefault(u, []).append(-1)
        return self._uses.get(v, [])


@dataclasses.dataclass(frozen=True)
class Site:
    """One equation as a rule sees it: `frame.jaxpr.eqns[index]` with its operands' values."""

    eqn: Any
    invals: list
    tags: tuple[int, ...]  # per operand, the flagged arguments it depends on (0: none)
    index: int
    frame: Frame

    @property
    def varying(self) -> list[bool]:
        """Per operand, whether it depends on a flagged argument."""
        return [t != 0 for t in self.tags]


Rule = Callable[[Site], "Sequence[Any] | None"]


def interpret(jaxpr, consts: Sequence[Any], args: Sequence[Any], rule: Rule, *,
              tags: Sequence[int] | None = None, calls: Mapping[str, str] = JIT_CALLS,
              domain: Any = Plain) -> list:
    """Evaluates `jaxpr` on `args`, replacing the equations `rule` answers for.

    `tags[i]` flags argument `i` (a bit mask; the default flags none); every
    site's `tags` are the union of the flags its operands depend on.
    """
    frame = Frame(jaxpr)
    env: dict = {v: domain.lift(c) for v, c in zip(jaxpr.constvars, consts)}
    env.update(zip(jaxpr.invars, args))
    frame.tags.update((v, t) for v, t in zip(jaxpr.invars, tags or ()) if t)

    def read(v):
        return domain.lift(v.val) if isinstance(v, jex_core.Literal) else env[v]

    for k, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        ts = tuple(frame.tag(v) for v in eqn.invars)
        outs = rule(Site(eqn, invals, ts, k, frame))
        if outs is None:
            key = calls.get(eqn.primitive.name)
            if key is not None and key in eqn.params:
                closed = eqn.params[key]
                inner = getattr(closed, "jaxpr", closed)
                skip = len(invals) - len(inner.invars)  # custom_vjp: leading consts
                outs = interpret(inner, getattr(closed, "consts", ()), invals[skip:], rule,
                                 tags=ts[skip:], calls=calls, domain=domain)
            else:
                outs = domain.bind(eqn, invals)
        out_tag = 0
        for t in ts:
            out_tag |= t
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
            if out_tag:
                frame.tags[v] = out_tag
    return [read(v) for v in jaxpr.outvars]


def rewrite(fn: Callable, rule: Rule) -> Callable:
    """`fn` (positional pytree arguments) with its equations passed through `rule`."""

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = interpret(closed.jaxpr, closed.consts, jax.tree.leaves(args), rule)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


# ---- canonical convolution kernels ---------------------------------------------------------


def _to_hwio(dn) -> tuple[int, ...]:
    """The kernel permutation to (spatial..., in, out) for dimension numbers `dn`."""
    return tuple(dn.rhs_spec[2:]) + (dn.rhs_spec[1], dn.rhs_spec[0])


def _canonical_dn(dn, n: int):
    """`dn` with the kernel laid out (spatial..., in, out)."""
    return lax.ConvDimensionNumbers(dn.lhs_spec, (n - 1, n - 2) + tuple(range(n - 2)), dn.out_spec)


def _canonical_conv(eqn, invals):
    """A channels-last convolution whose kernel is not laid out (spatial..., in, out).

    JAX's transpose rule for a convolution (the input gradient) swaps the kernel's
    in/out roles through the dimension numbers. At the top level of a program
    XLA:CPU re-lays such a kernel out, but inside a while-loop body (a `lax.scan`
    over chunks) it runs that convolution on a slow generic path, 3-5x slower
    (jax 0.10.2). Transposing the kernel explicitly gives the loop the fast
    convolution; the arithmetic is the same, only the kernel's axis order changes.
    """
    if eqn.primitive.name != "conv_general_dilated":
        return None
    dn = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    n = len(rhs_spec)
    if lhs_spec[1] != n - 1 or out_spec[1] != n - 1:  # only channels-last activations
        return None
    perm = _to_hwio(dn)
    if perm == tuple(range(n)):
        return None
    lhs, rhs = invals
    params = dict(eqn.params, dimension_numbers=_canonical_dn(dn, n))
    with eqn.ctx.manager:
        return [eqn.primitive.bind(lhs, lax.transpose(rhs, perm), **params)]


def loop_body(fn: Callable) -> Callable:
    """`fn` with its convolutions and pools laid out for XLA:CPU, the same values.

    Applied to loop bodies (chunked evaluation, optimisation steps), which are
    often already differentiated: every channels-last convolution's kernel is laid
    out (spatial..., in, out) (`_canonical_conv`), a convolution of few input
    channels (an image model's first layer) runs as a product of its patch matrix
    (`_few_channel_conv`), and tiling pools as elementwise work (`_tiled_pool`, as
    in `fast_model`). Without the pools, the forward-only chunks of LIME and
    KernelSHAP (1000 samples, small CNN) took 136 / 143 ms instead of 122 / 127
    (average pooling) and 132 / 140 instead of 124 / 128 ms (max pooling).
    """
    return rewrite(fn, _body_rule)


# ---- non-overlapping pooling as elementwise work ----------------------------------------------


def windows(x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    """`(out..., k)`: the entries of each tile of `x` along a last axis (row-major order)."""
    n = x.ndim
    r = jnp.transpose(x.reshape(tiles), tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2)))
    return r.reshape(r.shape[:n] + (-1,))


SLICED_WINDOW = 16
"""Tiling pools whose windows hold at most this many entries (2x2, 3x3 ...) get
their values from one strided slice of the input per window offset, elementwise.

Written as a reshape and a reduction over the window axes instead, XLA:CPU's
fusion emitter ran them slower. Chunked forwards (chunks of 64, one process,
medians of 21, Xeon 2 cores, jax 0.10.2), reduction -> slices: small benchmark
CNN, 1000 images, 101.8 -> 95.4 ms (average pooling) and 105.0 -> 98.9 ms (max);
large CNN, 250 images, 96.1 -> 90.1 and 102.5 -> 92.7 ms. Input gradients were
unchanged (400 small: 80.2 -> 77.3, 85.8 -> 85.6 ms). Larger windows (a global
pool written as `reduce_window`) keep the reduction."""


def window_slices(x: jax.Array, tiles: tuple[int, ...]) -> list[jax.Array]:
    """One strided slice of `x` per window offset, in row-major window order: entry
    `[i...]` of slice `k` is the `k`-th entry of window `[i...]`."""
    outs, win = tiles[0::2], tiles[1::2]
    return [
        lax.slice(x, off, tuple(o + (n - 1) * w + 1 for o, n, w in zip(off, outs, win)), win)
        for off in itertools.product(*(range(w) for w in win))
    ]


def _window_size(tiles: tuple[int, ...]) -> int:
    return math.prod(tiles[1::2])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _window_max(x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    """Max over each tile, its derivative routed to the tile's first maximum.

    The first maximum in row-major window order, as XLA's `select_and_scatter`
    and PyTorch do; a plain `max` would split the gradient between tied entries,
    and ties are common: a flat image region (or the all-zero baseline) gives
    every window of a feature map the same value. The value comes from slices
    (`SLICED_WINDOW`); the derivative selects from the windows laid out along a
    last axis, whose transpose (the gradient) ran 10% faster than that of the
    slices (max-pool CNN, 400 input gradients in chunks of 64).
    """
    if _window_size(tiles) <= SLICED_WINDOW:
        return functools.reduce(jnp.maximum, window_slices(x, tiles))
    return jnp.max(windows(x, tiles), axis=-1)


@_window_max.defjvp
def _window_max_jvp(tiles, primals, tangents):
    (x,), (t,) = primals, tangents
    flat = windows(x, tiles)
    hit = jnp.arange(flat.shape[-1]) == jnp.argmax(flat, axis=-1)[..., None]
    tangent = jnp.sum(jnp.where(hit, windows(t, tiles), jnp.zeros((), t.dtype)), axis=-1)
    return _window_max(x, tiles), tangent


def _window_sum(x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    if _window_size(tiles) <= SLICED_WINDOW:
        acc = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 windows summed in float32
        return functools.reduce(jnp.add, [p.astype(acc) for p in window_slices(x, tiles)]).astype(
            x.dtype
        )
    return jnp.sum(x.reshape(tiles), axis=tuple(range(1, 2 * x.ndim, 2))).astype(x.dtype)


_POOLS = {"reduce_window_max": _window_max, "reduce_window_sum": _window_sum}


def pool_tiles(eqn, x) -> tuple[int, ...] | None:
    """`(n0, w0, n1, w1, ...)` when a `reduce_window` eqn's windows tile `x` (window =
    stride, no padding or dilation, sizes divisible), so `x.reshape(tiles)` holds one
    window per pair of axes; None otherwise."""
    p = eqn.params
    win, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    if (
        win != strides
        or any(tuple(pad) != (0, 0) for pad in p["padding"])
        or any(d != 1 for d in p["base_dilation"])
        or any(d != 1 for d in p["window_dilation"])
        or any(s % w for s, w in zip(x.shape, win))
    ):
        return None
    return sum(((s // w, w) for s, w in zip(x.shape, win)), ())


def _tiled_pool(eqn, invals):
    """Max / sum pooling whose windows tile the input (window = stride, no padding).

    Written as elementwise work over the windows (strided slices, or a reshape and
    a reduction: `SLICED_WINDOW`), its gradient is elementwise too; as a
    `reduce_window`, the max-pool gradient is XLA's `select_and_scatter`, which
    ran a max-pool CNN's backward pass 2x slower on CPU (jax 0.10.2). Same
    forward values, and the same gradients (ties go to the first maximum).
    """
    reduce = _POOLS.get(eqn.primitive.name)
    if reduce is None:
        return None
    (x,) = invals
    tiles = pool_tiles(eqn, x)
    if tiles is None:
        return None
    with eqn.ctx.manager:
        return [reduce(x, tiles)]


# ---- convolutions of few input channels: their input gradient as a matrix product --------------

FEW_CHANNELS = 4
"""A convolution whose input has at most this many channels (an image model's
first layer: RGB or grey) gets its input gradient from `_few_channel_input_grad`."""


def _few_channel_input_grad(g, w, x_shape, padding, precision):
    """Input gradient of a stride-1 NHWC / HWIO convolution with explicit padding.

    `out[n, i, j] = sum_{dy, dx} xpad[n, i + dy, j + dx] @ w[dy, dx]`, so every
    output pixel sends `g[n, i, j] @ w[dy, dx].T` back to input pixel
    `(i + dy, j + dx)`: one matrix product for all kernel offsets, then one
    shifted sum per offset.
    """
    kh, kw = w.shape[:2]
    n, ho, wo, _ = g.shape
    (plo_h, phi_h), (plo_w, phi_w) = padding
    hp, wp = x_shape[1] + plo_h + phi_h, x_shape[2] + plo_w + phi_w
    t = jnp.einsum("nijo,yxco->nijyxc", g, w, precision=precision)
    gp = sum(
        jnp.pad(t[:, :, :, dy, dx], ((0, 0), (dy, hp - ho - dy), (dx, wp - wo - dx), (0, 0)))
        for dy in range(kh)
        for dx in range(kw)
    )
    return gp[:, plo_h : plo_h + x_shape[1], plo_w : plo_w + x_shape[2]]


PATCH_BYTES = 16 * 2**20
"""The largest patch matrix `_few_channel_conv` builds for its forward convolution.

Measured on a 2-core AMD EPYC (32 MiB L3, jax 0.10.2), 3x3 convolutions from 3
channels to 32 with bias and ReLU, patches / library convolution: 0.58x at 128
images of 32x32 (13.5 MiB of patches), 0.39x with 1 channel (4.5 MiB), but 1.3-2.6x
from 18 MiB up (128 images of 64x64: 54 MiB), where the patches fall out of cache."""


def _patch_conv(x, w, padding, precision, preferred):
    """A stride-1 NHWC / HWIO convolution with explicit padding, as one matrix product.

    The patch matrix `(n, ho, wo, kh * kw * c)` is built by shifts along the width
    then along the height, so its last axis is ordered `(dy, dx, c)`, as
    `w.reshape(-1, out)` is. XLA:CPU's library convolution with 3 input channels ran
    at a quarter of the speed of the following layers (46 vs 176-195 GFLOP/s), its
    contraction of length 27 being too short; the product of the patch matrix is not.
    """
    kh, kw = w.shape[:2]
    (plo_h, phi_h), (plo_w, phi_w) = padding
    xp = jnp.pad(x, ((0, 0), (plo_h, phi_h), (plo_w, phi_w), (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    cols = jnp.concatenate([xp[:, :, dx : dx + wo] for dx in range(kw)], axis=-1)
    patches = jnp.concatenate([cols[:, dy : dy + ho] for dy in range(kh)], axis=-1)
    return lax.dot_general(patches, w.reshape(-1, w.shape[-1]), (((3,), (0,)), ((), ())),
                           precision=precision, preferred_element_type=preferred)


def _few_channel_plan(eqn, invals):
    """`(to_hwio, patch_bytes)` for a convolution `_few_channel_conv` takes, else None:
    the kernel permutation to HWIO and the size of its patch matrix."""
    if eqn.primitive.name != "conv_general_dilated" or jax.default_backend() != "cpu":
        return None
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs, rhs = invals
    if (
        lhs.ndim != 4
        or tuple(dn.lhs_spec) != (0, 3, 1, 2)
        or tuple(dn.out_spec) != (0, 3, 1, 2)
        or lhs.shape[3] > FEW_CHANNELS
        or any(s != 1 for s in p["window_strides"])
        or any(d != 1 for d in p["lhs_dilation"])
        or any(d != 1 for d in p["rhs_dilation"])
        or p["feature_group_count"] != 1
        or p["batch_group_count"] != 1
        or any(lo < 0 or hi < 0 for lo, hi in p["padding"])
    ):
        return None
    to_hwio = _to_hwio(dn)
    (kh, kw), ((plo_h, phi_h), (plo_w, phi_w)) = (rhs.shape[i] for i in to_hwio[:2]), p["padding"]
    ho, wo = lhs.shape[1] + plo_h + phi_h - kh + 1, lhs.shape[2] + plo_w + phi_w - kw + 1
    patch_bytes = lhs.shape[0] * ho * wo * kh * kw * lhs.shape[3] * jnp.dtype(lhs.dtype).itemsize
    return to_hwio, patch_bytes


def _few_channel_conv(eqn, invals):
    """A stride-1, undilated, ungrouped NHWC convolution of at most `FEW_CHANNELS` inputs.

    Its input gradient (the transposed convolution to 3 or 1 channels) becomes a
    matrix product and shifted sums: XLA:CPU ran that transposed convolution 3x
    slower (16 images of 64x64, 32 -> 3 channels: 4.3 ms vs 1.3 ms; 128 of 32x32:
    8.5 ms vs 2.7 ms, jax 0.10.2). The forward convolution becomes a product of the
    patch matrix (`_patch_conv`) when that matrix is at most `PATCH_BYTES`. Same
    values up to rounding. Applied on the CPU backend only: elsewhere the library
    convolution is left alone.
    """
    plan = _few_channel_plan(eqn, invals)
    if plan is None:
        return None
    to_hwio, patch_bytes = plan
    prim, p = eqn.primitive, eqn.params
    params = dict(p)
    hwio = _canonical_dn(p["dimension_numbers"], 4)

    @jax.custom_vjp
    def conv(x, w):
        w = lax.transpose(w, to_hwio)  # the canonical kernel (see `_canonical_conv`)
        if patch_bytes <= PATCH_BYTES:
            return _patch_conv(x, w, p["padding"], p["precision"], p["preferred_element_type"])
        return prim.bind(x, w, **dict(params, dimension_numbers=hwio))

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        gx = _few_channel_input_grad(
            g, lax.transpose(w, to_hwio), x.shape, p["padding"], p["precision"]
        )
        # the kernel gradient as usual: the convolution is linear in the kernel, so
        # transposing it needs no forward pass (and it is dead code when unused)
        (gw,) = jax.linear_transpose(lambda w_: prim.bind(x, w_, **params), w)(g)
        return gx.astype(x.dtype), gw

    conv.defvjp(fwd, bwd)
    with eqn.ctx.manager:
        return [conv(*invals)]


def _few_channel_forward(eqn, invals):
    """`_few_channel_conv`'s patch-matrix forward as plain ops, so forward mode
    (`jax.jvp`) enters it: a custom VJP cannot be, and the tangent of XLA:CPU's
    library convolution from 3 channels is its slow path again."""
    plan = _few_channel_plan(eqn, invals)
    if plan is None or plan[1] > PATCH_BYTES:
        return None
    p = eqn.params
    x, w = invals
    with eqn.ctx.manager:
        return [_patch_conv(x, lax.transpose(w, plan[0]), p["padding"], p["precision"],
                            p["preferred_element_type"])]


def _first_of(*rewrites: Callable[[Any, Sequence[Any]], "list | None"]) -> Rule:
    """A `Rule` answering with the first of `rewrites(eqn, invals)` that answers."""

    def rule(site: Site):
        for rewrite_eqn in rewrites:
            out = rewrite_eqn(site.eqn, site.invals)
            if out is not None:
                return out
        return None

    return rule


_fast_rule = _first_of(_tiled_pool, _few_channel_conv)
"""`fast_model`'s rewrites (also LRP's default for the equations it has no rule for)."""
_forward_rule = _first_of(_tiled_pool, _few_channel_forward)
"""`fast_forward`'s: the same, with no custom derivatives."""
_body_rule = _first_of(_tiled_pool, _few_channel_conv, _canonical_conv)
"""`loop_body`'s: `fast_model`'s, and canonical kernels for the other convolutions."""


def fast_forward(fn: Callable) -> Callable:
    """`fn` rewritten as `fast_model` does, for forward mode: tiling pools as
    elementwise work and few-channel convolutions as patch-matrix products, with no
    custom VJP rules, so `jax.jvp` goes through them (a max pool's first-maximum
    rule is a custom JVP)."""
    return rewrite(fn, _forward_rule)


def fast_model(fn: Callable) -> Callable:
    """`fn` rewritten to run faster on XLA:CPU, with the same values and gradients.

    Tiling max / sum pooling becomes elementwise work (`_tiled_pool`), and
    convolutions of few input channels get a patch-matrix forward and a
    matrix-product input gradient (`_few_channel_conv`). Applied to the model
    before evaluating or differentiating it.
    """
    return rewrite(fn, _fast_rule)
