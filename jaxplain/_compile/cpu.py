"""Everything jaxplain does only because of XLA:CPU, in one place.

Reached only through the hook in `jaxplain._compile` (`tuned`, `tuned_rule`,
`tuned_eqn`, `pool`, `jit`'s compiler options, `keep_numpy`, `default_chunk`,
`members_side_by_side`), and only when `JAXPLAIN_CPU_REWRITES` says so for the
program being traced (`auto`: programs for CPU devices). Every rewrite keeps the
values (float32 round-off) and the derivatives; with the switch off, programs are
plain JAX: per-program XLA options, tiling pools as elementwise work (first-maximum
derivative by a custom JVP), canonical convolution kernels in loop bodies,
few-channel convolutions as patch products, cache-sized chunks, NumPy hand-off of
host inputs, ensemble members one after another.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .jaxpr import Rule, Site, accumulator, pool_tiles, windows

# ---- canonical convolution kernels ---------------------------------------------------------


def _to_hwio(dn) -> tuple[int, ...]:
    """The kernel permutation to (spatial..., in, out) for dimension numbers `dn`."""
    return tuple(dn.rhs_spec[2:]) + (dn.rhs_spec[1], dn.rhs_spec[0])


def _canonical_dn(dn, n: int):
    """`dn` with the kernel laid out (spatial..., in, out)."""
    return lax.ConvDimensionNumbers(dn.lhs_spec, (n - 1, n - 2) + tuple(range(n - 2)), dn.out_spec)


def canonical_conv(eqn, invals):
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


# ---- non-overlapping pooling as elementwise work ----------------------------------------------


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
def window_max(x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
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


@window_max.defjvp
def _window_max_jvp(tiles, primals, tangents):
    (x,), (t,) = primals, tangents
    flat = windows(x, tiles)
    hit = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=jnp.bool_)
    tangent = jnp.sum(jnp.where(hit, windows(t, tiles), jnp.zeros((), t.dtype)), axis=-1)
    return window_max(x, tiles), tangent


def window_sum(x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    if _window_size(tiles) <= SLICED_WINDOW:
        acc = accumulator(x.dtype)  # bfloat16 windows summed in float32
        return functools.reduce(jnp.add, [p.astype(acc) for p in window_slices(x, tiles)]).astype(
            x.dtype
        )
    return jnp.sum(x.reshape(tiles), axis=tuple(range(1, 2 * x.ndim, 2))).astype(x.dtype)


_POOLS = {"reduce_window_max": window_max, "reduce_window_sum": window_sum}




def tiled_pool(eqn, invals):
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
"""The largest patch matrix `few_channel_conv` builds for its forward convolution.

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
    """`(to_hwio, patch_bytes)` for a convolution `few_channel_conv` takes, else None:
    the kernel permutation to HWIO and the size of its patch matrix."""
    if eqn.primitive.name != "conv_general_dilated":
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


def few_channel_conv(eqn, invals):
    """A stride-1, undilated, ungrouped NHWC convolution of at most `FEW_CHANNELS` inputs.

    Its input gradient (the transposed convolution to 3 or 1 channels) becomes a
    matrix product and shifted sums: XLA:CPU ran that transposed convolution 3x
    slower (16 images of 64x64, 32 -> 3 channels: 4.3 ms vs 1.3 ms; 128 of 32x32:
    8.5 ms vs 2.7 ms, jax 0.10.2). The forward convolution becomes a product of the
    patch matrix (`_patch_conv`) when that matrix is at most `PATCH_BYTES`. Same
    values up to rounding.
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
        w = lax.transpose(w, to_hwio)  # the canonical kernel (see `canonical_conv`)
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


def few_channel_forward(eqn, invals):
    """`few_channel_conv`'s patch-matrix forward as plain ops, so forward mode
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


GRAD_RULE = _first_of(tiled_pool, few_channel_conv)
"""A model about to be evaluated or differentiated: tiling pools as elementwise work,
few-channel convolutions as patch products (also LRP's default equation rule)."""
FORWARD_RULE = _first_of(tiled_pool, few_channel_forward)
"""The same for forward mode (`jax.jvp`): no custom VJPs (a max pool's first-maximum
rule is a custom JVP, which forward mode enters)."""
LOOP_RULE = _first_of(tiled_pool, few_channel_conv, canonical_conv)
"""A chunk loop's body, often already differentiated: `GRAD_RULE`, and canonical
kernels for the other convolutions. Without the pools, the forward-only chunks of
LIME and KernelSHAP (1000 samples, small CNN) took 136 / 143 ms instead of 122 /
127 (average pooling) and 132 / 140 instead of 124 / 128 ms (max pooling)."""

RULES = {"grad": GRAD_RULE, "forward": FORWARD_RULE, "loop": LOOP_RULE}
"""The rewrite of each `jaxplain._compile.tuned` mode:

- `"grad"`: a model about to be evaluated or differentiated (reverse mode);
- `"forward"`: the same for forward mode (`jax.jvp`): no custom VJPs;
- `"loop"`: a chunk loop's body, often already differentiated: also canonical
  convolution kernels (`canonical_conv`)."""


def pool(kind: str, x: jax.Array, tiles: tuple[int, ...]) -> jax.Array:
    """Max (`kind="max"`) or sum over tiling windows, as `tiled_pool` computes them."""
    return (window_max if kind == "max" else window_sum)(x, tiles)


# ---- per-program XLA options --------------------------------------------------------------

CPU_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""The options jaxplain asks for, before the support probe.

The one option today turns off XLA:CPU's YNNPACK fusions (an empty list). With
them, jax 0.10.2 fuses a whole small CNN into one YNNPACK graph that, at some
batch sizes, runs on one core: forward+backward of the benchmark CNN on 800
images went from 490 ms to 284 ms without them, a 64-image forward from 16 ms to
8 ms (2 cores, Xeon with AVX-512). It is applied only when the installed jaxlib
accepts it (probed once, by compiling a one-op program for a CPU device), and not
when the user's `XLA_FLAGS` already set it. `JAXPLAIN_XLA_OPTIONS=none` turns it
off alone; `JAXPLAIN_CPU_REWRITES=0` turns it off with everything else here."""


def compiler_options() -> dict[str, Any]:
    """The compiler options of jaxplain's CPU programs (a copy; empty when none apply)."""
    return dict(_probe())


@functools.lru_cache(maxsize=None)
def _probe() -> dict[str, Any]:
    """The supported subset of `CPU_OPTIONS`, decided once per process."""
    if os.environ.get("JAXPLAIN_XLA_OPTIONS", "").strip().lower() in ("none", "0", "off"):
        return {}
    user_flags = os.environ.get("XLA_FLAGS", "")
    wanted = {k: v for k, v in CPU_OPTIONS.items() if k not in user_flags}
    if not wanted:
        return {}
    try:  # an older or newer jaxlib without the option: compile without it
        cpu = jax.devices("cpu")[0]
        arg = jax.device_put(jnp.float32(0), cpu)
        jax.jit(lambda a: a + 1, compiler_options=wanted).lower(arg).compile()
    except Exception:  # noqa: BLE001 - any failure means "not supported here"
        return {}
    return wanted


# ---- host-side habits -------------------------------------------------------------------------

CHUNK = 64
"""Model inputs per chunk when a method is called with `batch_size=None` on CPU.

Cache-sized chunks run fastest on CPU. With the first layer as a patch product
(`PATCH_BYTES`), on the small benchmark CNN (2-core AMD EPYC, jax 0.10.2, medians
over alternating rounds): LIME with 1000 samples 160 ms in chunks of 64, 178 ms
in chunks of 128 (and of 32); KernelSHAP 174 vs 211 ms; IG (16 images x 50
steps) 261 vs 258 ms. On a 2-core Xeon (AVX-512, 2 MiB L2 per core), chunks of
128 were 4-5% faster for KernelSHAP, LIME and IG and 5% slower for SmoothGrad
(jax 0.10.2, 2026-12-05): 64 stays, the better choice across both machines."""

KEEP_NUMPY = True
"""Host (NumPy) inputs go to a top-level program as NumPy arrays, not through
`jax.device_put`. Its copy runs on another thread: a program called right after
it waits for that hand-off, about 0.3 ms per array on CPU, plus 0.14 ms of
Python (16 images of the small benchmark CNN take 8 ms in all); the jitted
program takes a NumPy array in about 0.03 ms. On an accelerator the several
programs of one call should share one device copy instead."""

MEMBERS_IN_SEQUENCE = True
"""`over_weights` runs ensemble members one after another (`lax.map`) on CPU: a `vmap`
over stacked weights becomes a grouped convolution, which XLA:CPU ran 5-9x slower
than the members' convolutions one by one (digits CNN, 5 members, jax 0.10.2).
Elsewhere the members run side by side."""
