"""The XLA:CPU machinery of `jaxplain/_compile/cpu.py`: per-program XLA options and the
program rewrites, each checked for equal values (and derivatives) against plain JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxplain as jx


def _forced(mode):
    def make(f):
        with _compile.config.override(cpu_rewrites="1"):
            return _compile.tuned(f, mode)

    return make


fast_model, fast_forward, loop_body = _forced("grad"), _forced("forward"), _forced("loop")
from jaxplain import _compile
from jaxplain._compile import cpu
from jaxplain._core import batching
from jaxplain import testing


# ---- compiler options ------------------------------------------------------------------


def test_options_are_probed_and_can_be_turned_off(monkeypatch):
    probe = cpu._probe.__wrapped__  # uncached
    monkeypatch.delenv("JAXPLAIN_XLA_OPTIONS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    opts = probe()
    assert set(opts) <= set(cpu.CPU_OPTIONS)
    cpu.compiler_options()["mutated"] = 1  # callers get a copy
    assert "mutated" not in cpu.compiler_options()
    if jax.default_backend() == "cpu" and jax.__version__.startswith("0.10."):
        assert opts == cpu.CPU_OPTIONS  # the jaxlib this project pins accepts it
    monkeypatch.setenv("JAXPLAIN_XLA_OPTIONS", "none")
    assert probe() == {}
    monkeypatch.setenv("JAXPLAIN_XLA_OPTIONS", "")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")  # the user's word wins
    assert probe() == {}


def test_jit_top_level_nested_and_aot_agree():
    x = testing.random_images(0, n=5, size=8)
    m = testing.tiny_cnn(n_classes=3)
    model = jx.from_linen(m, m.init(jax.random.key(0), x))
    f = lambda mm, z: jax.grad(lambda q: mm(q)[:, 1].sum())(z)
    ours = _compile.jit(f)
    top = ours(model, x)
    nested = jax.jit(lambda mm, z: ours(mm, z))(model, x)  # inlined: no options allowed there
    aot = ours.lower(model, x).compile()(model, x)
    plain = jax.jit(f)(model, x)
    np.testing.assert_allclose(top, aot, rtol=0, atol=0)
    for other in (nested, plain):
        np.testing.assert_allclose(top, other, rtol=2e-5, atol=1e-6)
    assert ours.__name__ == "<lambda>" and ours.__wrapped__ is f


def test_jit_as_decorator_with_static_args():
    @_compile.jit(static_argnames=("k",))
    def g(a, k):
        return a * k

    assert float(g(jnp.float32(2), k=3)) == 6.0
    with testing.count_compiles() as c:
        g(jnp.float32(5), k=3)
    assert c["n"] == 0


# ---- canonical conv kernels in loop bodies ------------------------------------------------


def _conv_specs(fn, *args):
    """The (lhs, rhs) specs of every convolution in `fn`'s jaxpr, sub-jaxprs included."""
    specs = []

    def walk(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name == "conv_general_dilated":
                dn = e.params["dimension_numbers"]
                specs.append((tuple(dn.lhs_spec), tuple(dn.rhs_spec)))
            for p in e.params.values():
                sub = getattr(p, "jaxpr", None)
                if sub is not None:
                    walk(getattr(sub, "jaxpr", sub))

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return specs


def _net(dn, groups=1, ndim=2):
    k1 = jax.random.normal(jax.random.key(1), (3,) * ndim + (4 // groups, 6)) * 0.3
    k2 = jax.random.normal(jax.random.key(2), (3,) * ndim + (6, 5)) * 0.3
    if dn[1] == "OIHW":
        k1, k2 = jnp.transpose(k1, (3, 2, 0, 1)), jnp.transpose(k2, (3, 2, 0, 1))

    def f(x):
        h = lax.conv_general_dilated(x, k1, (1,) * ndim, "SAME", dimension_numbers=dn,
                                     feature_group_count=groups)
        h = jnp.tanh(h)
        return lax.conv_general_dilated(h, k2, (2,) * ndim, "SAME", dimension_numbers=dn).sum()

    return f


@pytest.mark.parametrize(
    "dn, groups, ndim, shape",
    [
        (("NHWC", "HWIO", "NHWC"), 1, 2, (2, 7, 6, 4)),
        (("NHWC", "HWIO", "NHWC"), 2, 2, (2, 6, 6, 4)),  # grouped
        (("NWC", "WIO", "NWC"), 1, 1, (3, 9, 4)),  # 1-D
        (("NCHW", "OIHW", "NCHW"), 1, 2, (2, 4, 6, 6)),  # channels-first: left alone
    ],
)
def test_loop_body_keep_values_and_fix_kernel_layout(dn, groups, ndim, shape):
    f = _net(dn, groups, ndim)
    x = jax.random.normal(jax.random.key(0), shape)
    g = jax.grad(f)
    g2 = loop_body(g)
    # compiled, not op by op: these tests are about the rewrite, which a method always
    # runs under jit (eager use of a rewritten model is checked once, further down)
    np.testing.assert_allclose(jax.jit(g2)(x), jax.jit(g)(x), rtol=1e-5, atol=1e-6)
    n = len(shape)
    canon = (n - 1, n - 2) + tuple(range(n - 2))
    before, after = _conv_specs(g, x), _conv_specs(g2, x)
    # the first layer's forward convolution (4 channels, stride 1, 2-D, ungrouped) becomes
    # a patch-matrix product
    patched = dn[0] == "NHWC" and groups == 1
    assert len(before) - patched == len(after) >= 2
    if dn[0].endswith("C"):
        assert any(r != canon for _, r in before)  # the input gradient swaps in/out
        assert all(r == canon for _, r in after)
    else:
        assert before == after


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_loop_body_pools_as_reshape_and_reduce_with_the_same_values(pool):
    """Forward-only chunks (LIME, KernelSHAP, occlusion ...) get the tiling-pool rewrite
    too; values, and gradients taken through it (ties to the first maximum), are kept."""
    x = testing.random_images(8, n=3, size=8)
    x = x.at[0, :4, :4].set(0.5)  # flat windows: ties
    m = testing.tiny_cnn(n_classes=3, pool=pool)
    model = jx.from_linen(m, m.init(jax.random.key(2), x))
    body = loop_body(model)
    np.testing.assert_allclose(jax.jit(body)(x), jax.jit(model)(x), rtol=1e-5, atol=1e-6)
    f = lambda z: model(z)[:, 1].sum()  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(loop_body(f)))(x), jax.jit(jax.grad(f))(x),
                               rtol=1e-5, atol=1e-6)
    hlo = lambda g: jax.jit(g).lower(x).as_text()  # noqa: E731
    assert "reduce_window" in hlo(model) and "reduce_window" not in hlo(body)


def test_scanned_chunks_equal_one_chunk_for_cnn_gradients(monkeypatch):
    x = testing.random_images(1, n=3, size=8)
    m = testing.tiny_cnn(n_classes=3)
    model = jx.from_linen(m, m.init(jax.random.key(0), x))
    one = jx.integrated_gradients(model, x, target=1, steps=8, batch_size=24).values
    scanned = jx.integrated_gradients(model, x, target=1, steps=8, batch_size=5).values
    monkeypatch.setattr(batching, "MAX_UNROLL", 8)  # the unrolled layout gives the same sums
    unrolled = jx.integrated_gradients(model, x, target=1, steps=8, batch_size=6).values
    np.testing.assert_allclose(scanned, one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unrolled, one, rtol=1e-5, atol=1e-6)


# ---- tiling pools differentiated as reshape + reduce ----------------------------------------


def _pool_net(pool, window, stride, padding="VALID", relu=True):
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4)) * 0.5

    def f(x):
        h = lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(h) if relu else h
        if pool == "max":
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1,) + window + (1,), (1,) + stride + (1,), padding)
        else:
            h = lax.reduce_window(h, 0.0, lax.add, (1,) + window + (1,), (1,) + stride + (1,), padding)
        return h.reshape(h.shape[0], -1)[:, :5]

    return f


def _prims(fn, *args):
    return {e.primitive.name for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


@pytest.mark.parametrize("pool", ["max", "sum"])
@pytest.mark.parametrize("relu, window", [(True, (2, 2)), (False, (2, 2)), (True, (4, 6))])
def test_fast_model_pools_same_values_and_gradients(pool, relu, window):
    # (2, 2) windows are computed from strided slices; (4, 6) ones (24 entries, above
    # `SLICED_WINDOW`) as a reduction over the windows
    f = _pool_net(pool, window, window, relu=relu)
    x = jax.random.normal(jax.random.key(0), (3, 8, 6, 3))
    g = fast_model(f)
    np.testing.assert_allclose(jax.jit(g)(x), jax.jit(f)(x), rtol=1e-6, atol=1e-6)
    grad = lambda h: jax.grad(lambda z: jnp.sum(h(z) * jnp.arange(5.0)))
    np.testing.assert_allclose(jax.jit(grad(g))(x), jax.jit(grad(f))(x), rtol=1e-5, atol=1e-6)
    slow = {"select_and_scatter_add", "select_and_gather_add", "reduce_window_max", "reduce_window_sum"}
    assert _prims(grad(f), x) & slow  # the rule had something to replace ...
    assert not _prims(grad(g), x) & slow  # ... and replaced it


def test_fast_model_pools_route_ties_to_the_first_maximum_like_xla():
    x = jnp.array([[[[1.0], [1.0]], [[0.5], [1.0]]], [[[0.0], [0.0]], [[0.0], [0.0]]]])
    pool = lambda z: lax.reduce_window(z, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID").sum()
    g = jax.grad(fast_model(pool))(x)
    np.testing.assert_array_equal(g, jax.grad(pool)(x))  # select_and_scatter's choice
    np.testing.assert_array_equal(g[:, :, :, 0], [[[1, 0], [0, 0]], [[1, 0], [0, 0]]])


@pytest.mark.parametrize("window", [(2, 2), (4, 8)])  # sliced, and over the windows
def test_pool_derivatives_in_both_modes_go_to_the_first_maximum(window):
    x = jnp.tile(jnp.asarray([[1.0, 3.0], [3.0, 2.0]]), (4, 4))[None, :, :, None]  # (1, 8, 8, 1)
    pool = lambda z: lax.reduce_window(z, -jnp.inf, lax.max, (1,) + window + (1,),  # noqa: E731
                                       (1,) + window + (1,), "VALID")
    fast = fast_model(pool)
    ct = jax.random.normal(jax.random.key(0), pool(x).shape)
    got = jax.jit(jax.grad(lambda z: jnp.sum(fast(z) * ct)))(x)
    np.testing.assert_array_equal(got, jax.grad(lambda z: jnp.sum(pool(z) * ct))(x))
    assert int((got != 0).sum()) == ct.size  # one entry per window, the first of the 3s
    t = jax.random.normal(jax.random.key(1), x.shape)
    value, tangent = jax.jit(lambda a, b: jax.jvp(fast_forward(pool), (a,), (b,)))(x, t)
    np.testing.assert_array_equal(value, pool(x))
    np.testing.assert_array_equal(tangent, t[:, 0::window[0], 1::window[1]])  # the first 3


def test_fast_model_pools_on_a_constant_image_match_plain_autodiff():
    """The all-zero baseline makes every pooling window a tie."""
    m = testing.tiny_cnn(n_classes=3, pool="max")
    x = jnp.zeros((2, 8, 8, 3))
    model = jx.from_linen(m, m.init(jax.random.key(0), x + 1.0))
    plain = jax.grad(lambda z: model(z)[:, 1].sum())(x)
    np.testing.assert_allclose(jx.saliency(model, x, target=1).values, plain, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("window, stride, padding", [((3, 3), (2, 2), "VALID"), ((2, 2), (2, 2), "SAME"),
                                                     ((2, 2), (1, 1), "VALID")])
def test_fast_model_leaves_overlapping_or_padded_pools_alone(window, stride, padding):
    f = _pool_net("max", window, stride, padding)
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))  # 7 is not a multiple of 2: SAME pads
    g = fast_model(f)
    assert "reduce_window_max" in _prims(g, x)
    np.testing.assert_allclose(g(x), f(x), rtol=1e-5, atol=1e-6)  # its conv is a patch product


@pytest.mark.parametrize(
    "cin, kernel, padding, spec",
    [
        (3, (3, 3), "SAME", "HWIO"),
        (1, (5, 5), "SAME", "HWIO"),
        (3, (3, 5), ((2, 0), (1, 3)), "HWIO"),  # uneven explicit padding
        (2, (3, 3), "VALID", "OIHW"),  # another kernel layout
        (4, (1, 1), "SAME", "HWIO"),
    ],
)
def test_fast_model_few_channel_convs_same_values_and_gradients(cin, kernel, padding, spec):
    kx, kw, kg = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (3, 9, 7, cin))
    shape = kernel + (cin, 6) if spec == "HWIO" else (6, cin) + kernel
    k = jax.random.normal(kw, shape)

    def f(x, k):
        dn = ("NHWC", spec, "NHWC")
        h = lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=dn)
        return jnp.tanh(h).reshape(x.shape[0], -1)

    g = fast_model(f)
    want = jax.jit(f)(x, k)
    np.testing.assert_allclose(jax.jit(g)(x, k), want, rtol=1e-5, atol=1e-5)  # a patch product
    ct = jax.random.normal(kg, want.shape)
    loss = lambda h: lambda x_, k_: jnp.sum(h(x_, k_) * ct)
    compiled = {}
    for argnum in (0, 1):  # input and kernel gradients
        for name, h in (("f", f), ("g", g)):
            compiled[name, argnum] = jax.jit(jax.grad(loss(h), argnum)).lower(x, k).compile()
        want = compiled["f", argnum](x, k)
        got = compiled["g", argnum](x, k)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
    # the compiled input gradient has no convolution left: the forward one is a patch
    # product, the transposed one is gone, and so is the kernel gradient the custom rule
    # could compute but nobody uses
    n_convs = lambda h: compiled[h, 0].as_text().count(" convolution(")  # noqa: E731
    if kernel != (1, 1):  # XLA writes 1x1 convolutions as dots anyway
        assert n_convs("f") == 2 and n_convs("g") == 0


@pytest.mark.parametrize(
    "cin, kernel, padding, spec, dtype",
    [
        (3, (3, 3), "SAME", "HWIO", jnp.float32),
        (1, (5, 5), "VALID", "HWIO", jnp.float32),
        (3, (2, 4), ((0, 3), (2, 1)), "OIHW", jnp.float32),  # even, uneven, another layout
        (2, (3, 3), "SAME", "HWIO", jnp.bfloat16),
    ],
)
def test_few_channel_forward_is_a_patch_product_with_the_same_values(
    cin, kernel, padding, spec, dtype, monkeypatch
):
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (4, 10, 9, cin)).astype(dtype)
    shape = kernel + (cin, 5) if spec == "HWIO" else (5, cin) + kernel
    k = jax.random.normal(kw, shape).astype(dtype)
    f = lambda x, k: lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), padding, dimension_numbers=("NHWC", spec, "NHWC")
    )
    # the library convolution in float32 as reference: the patch order (dy, dx, c) must
    # match the kernel's
    want = np.asarray(f(x.astype(jnp.float32), k.astype(jnp.float32)), np.float64)
    body = loop_body(f)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    for g in (jax.jit(fast_model(f)), jax.jit(body)):
        got = g(x, k)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol,
                                   atol=tol * np.abs(want).max())
    n_convs = lambda h: jax.jit(h).lower(x, k).compile().as_text().count(" convolution(")
    assert n_convs(f) == 1 and n_convs(body) == 0
    # above the patch budget the library convolution is kept
    monkeypatch.setattr(cpu, "PATCH_BYTES", 64)
    assert n_convs(loop_body(f)) == 1
    np.testing.assert_allclose(np.asarray(loop_body(f)(x, k), np.float64), want,
                               rtol=tol, atol=tol * np.abs(want).max())


def test_patch_product_first_layer_keeps_cnn_outputs_and_chunking_invariance():
    x = testing.random_images(5, n=6, size=8)
    m = testing.tiny_cnn(n_classes=3)
    model = jx.from_linen(m, m.init(jax.random.key(0), x))
    want = model(x)
    np.testing.assert_allclose(fast_model(model)(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loop_body(model)(x), want, rtol=1e-5, atol=1e-6)
    # chunked evaluation (one chunk unrolled, or scanned) is the model, whatever batch_size
    for bs in (6, 4, 1):
        got = batching.chunked_apply(model, x, bs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_fast_forward_keeps_values_and_forward_mode_derivatives(pool):
    """`fast_forward` is `fast_model` for `jax.jvp`: the same primal and tangent as the
    plain model, with no library convolution from 3 channels and no `reduce_window`."""
    x = testing.random_images(6, n=4, size=8)
    m = testing.tiny_cnn(n_classes=3, pool=pool)
    model = jx.from_linen(m, m.init(jax.random.key(1), x))
    v = testing.random_images(7, n=4, size=8) - 0.5
    jvp = lambda f: jax.jit(lambda a, b: jax.jvp(f, (a,), (b,)))  # noqa: E731
    fast = fast_forward(model)
    (want, want_t), (got, got_t) = jvp(model)(x, v), jvp(fast)(x, v)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-5, atol=1e-6)
    hlo = lambda f: jvp(f).lower(x, v).as_text()  # noqa: E731
    fast_hlo, plain_hlo = hlo(fast), hlo(model)
    assert "reduce_window" in plain_hlo and "reduce_window" not in fast_hlo
    # both convolutions take at most 4 channels: primals and tangents are patch products
    conv = "stablehlo.convolution"
    assert fast_hlo.count(conv) == 0 and plain_hlo.count(conv) == 4
    with pytest.raises(TypeError):  # what fast_forward is for: custom VJPs refuse forward mode
        jax.jvp(fast_model(model), (x,), (v,))


@pytest.mark.parametrize(
    "cin, strides, groups",
    [(8, (1, 1), 1), (3, (2, 2), 1), (4, (1, 1), 2)],  # many channels, strided, grouped
)
def test_fast_model_leaves_other_convs_alone(cin, strides, groups):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, cin))
    k = jax.random.normal(jax.random.key(1), (3, 3, cin // groups, 4))

    def f(z):
        dn = ("NHWC", "HWIO", "NHWC")
        return lax.conv_general_dilated(
            z, k, strides, "SAME", dimension_numbers=dn, feature_group_count=groups
        ).sum()

    g = fast_model(f)
    assert str(jax.make_jaxpr(jax.grad(g))(x)) == str(jax.make_jaxpr(jax.grad(f))(x))


def test_max_pool_cnn_methods_match_plain_autodiff():
    x = testing.random_images(2, n=3, size=8)
    m = testing.tiny_cnn(n_classes=3, pool="max")
    model = jx.from_linen(m, m.init(jax.random.key(0), x))
    plain = jax.grad(lambda z: model(z)[:, 2].sum())(x)
    assert "select_and_scatter_add" in {e.primitive.name for e in jax.make_jaxpr(
        jax.grad(lambda z: model(z)[:, 2].sum()))(x).jaxpr.eqns}  # flax's max_pool: a reduce_window
    np.testing.assert_allclose(jx.saliency(model, x, target=2).values, plain, rtol=1e-5, atol=1e-6)
    cam = jx.grad_cam(model, x, target=2, layer="conv1", upsample=False).values
    a = jx.layer_activations(model, x, layer="conv1").values
    ga = jax.grad(lambda d: model.probe(x, "conv1", d)[0][:, 2].sum())(jnp.zeros_like(a))
    ref = jax.nn.relu(jnp.sum(ga.mean((1, 2), keepdims=True) * a, -1))
    np.testing.assert_allclose(cam, ref, rtol=1e-5, atol=1e-6)
