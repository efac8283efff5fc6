"""Adapters, targets, chunked evaluation and feature sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import batching, features, targets
from jaxplain import testing


@pytest.fixture(scope="module")
def cnn():
    m = testing.tiny_cnn()
    x = testing.random_images(0, n=3)
    v = m.init(jax.random.key(0), x)
    return m, v, x


def test_linen_and_nnx_twins_agree(cnn):
    m, v, x = cnn
    a = jx.from_linen(m, v)(x)
    b = jx.from_nnx(testing.tiny_cnn_nnx(v))(x)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_new_weights_do_not_recompile(cnn):
    m, v, x = cnn
    f = jax.jit(lambda model, x: model(x))
    v2 = jax.tree.map(lambda a: a * 2.0, v)
    m1, m2 = jx.from_linen(m, v), jx.from_linen(m, v2)
    n1, n2 = jx.from_nnx(testing.tiny_cnn_nnx(v)), jx.from_nnx(testing.tiny_cnn_nnx(v2))
    with testing.count_compiles() as c:
        o1, o2 = f(m1, x), f(m2, x)
    assert c["n"] == 1
    assert not np.allclose(o1, o2)
    with testing.count_compiles() as c:
        f(n1, x), f(n2, x)
    assert c["n"] == 1


def test_model_leaves_are_the_weights(cnn):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    assert len(jax.tree.leaves(model)) == len(jax.tree.leaves(v))
    jaxpr = jax.make_jaxpr(lambda mod, x: mod(x))(model, x)
    assert not jaxpr.consts  # weights are arguments, not constants


def test_from_nnx_runs_in_eval_mode_and_leaves_module_alone():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(4, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.drop = nnx.Dropout(0.9, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.bn(self.lin(x)))

    net = Net(nnx.Rngs(0))
    model = jx.from_nnx(net)
    x = jnp.ones((5, 4))
    # deterministic (no dropout) and uses running stats (mean 0, var 1)
    np.testing.assert_allclose(model(x), model(x))
    expected = net.lin(x) / jnp.sqrt(1 + net.bn.epsilon) * net.bn.scale[...] + net.bn.bias[...]
    np.testing.assert_allclose(model(x), expected, rtol=1e-5)
    assert net.bn.use_running_average is False  # untouched


def test_as_model_errors():
    import flax.linen as nn

    with pytest.raises(TypeError, match="from_linen"):
        jx.as_model(nn.Dense(3))
    with pytest.raises(TypeError, match="model"):
        jx.as_model(3)


@pytest.mark.parametrize(
    "target, expected",
    [(1, [1, 1, 1]), (np.array([0, 2, 1]), [0, 2, 1])],
)
def test_targets_select(cnn, target, expected):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    t = jx.as_target(target, model, x)
    out = model(x)
    np.testing.assert_allclose(t.select(out), out[np.arange(3), expected])


def test_target_predicted_and_callable(cnn):
    m, v, x = cnn
    model = jx.from_linen(m, v)
    out = model(x)
    t = jx.as_target("predicted", model, x).resolve(model, x)
    np.testing.assert_allclose(t.select(out), out.max(-1))
    t = jx.as_target(lambda o: o[:, 0] - o[:, 1], model, x)
    np.testing.assert_allclose(t.select(out), out[:, 0] - out[:, 1])
    s, g, bound = targets.value_and_grad(model, jx.as_target("predicted", model, x), x)
    np.testing.assert_allclose(s, out.max(-1), rtol=1e-5, atol=1e-6)  # another program: round-off
    g_ref = jax.grad(lambda z: jnp.sum(model(z)[jnp.arange(3), out.argmax(-1)]))(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "target, err, match",
    [
        (3, ValueError, r"\[0, 3\)"),
        (-1, ValueError, r"\[0, 3\)"),
        (np.array([0, 1]), ValueError, "shape \\(3,\\)"),
        (np.array([0, 1, 5]), ValueError, "class indices in"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "integer"),
        ("best", ValueError, "predicted"),
        (True, TypeError, "bool"),
        (None, ValueError, "outputs of shape"),
        (lambda o: o, ValueError, "one scalar per example"),
    ],
)
def test_target_errors(cnn, target, err, match):
    m, v, x = cnn
    with pytest.raises(err, match=match):
        jx.as_target(target, jx.from_linen(m, v), x)


@pytest.mark.parametrize("unroll", [1, 8])
@pytest.mark.parametrize(
    "total, bs", [(10, 3), (10, 10), (10, 5), (10, 4), (7, 100), (1, 1), (800, 128), (1000, 128)]
)
def test_chunked_sum_and_map(total, bs, unroll, monkeypatch):
    monkeypatch.setattr(batching, "MAX_UNROLL", unroll)
    f = lambda start, size: start + jnp.arange(size, dtype=jnp.float32)  # noqa: E731
    np.testing.assert_array_equal(batching.chunked_map(f, total, bs), np.arange(total))
    s = batching.chunked_sum(f, total, bs)
    assert float(s) == total * (total - 1) / 2

    def count(acc, start, size, skip):  # every row exactly once, however the chunks overlap
        rows = start + jnp.arange(size)
        return acc.at[rows].add(batching.fresh_rows(size, skip).astype(jnp.int32))

    np.testing.assert_array_equal(
        jax.jit(lambda: batching.fold(count, jnp.zeros(total, jnp.int32), total, bs))(),
        np.ones(total),
    )


@pytest.mark.parametrize(
    "total, bs, expected",
    [(1000, 128, (8, 125)), (800, 128, (7, 115)), (1024, 128, (8, 128)), (7, 100, (1, 7)),
     (10, 4, (3, 4)), (1, 1, (1, 1))],
)
def test_chunking_is_balanced(total, bs, expected):
    count, size = batching.chunking(total, bs)
    assert (count, size) == expected
    assert size <= bs and 0 <= count * size - total < count


@pytest.mark.parametrize("n, samples, bs, rows", [(8, 20, 64, 162), (16, 50, 64, 800),
                                                   (16, 16, 64, 256), (3, 5, 7, 15)])
def test_per_example_sum_takes_the_layout_that_evaluates_fewest_rows(n, samples, bs, rows):
    # 8 x 20 in chunks of 64: whole examples would be 3 chunks of 3 (180 rows), rows
    # 3 chunks of 54 (162); both layouts must give the same sums
    seen = []

    def fn(ex, s):
        seen.append(ex.shape[0])
        return (ex * 100 + s).astype(jnp.float32)[:, None] * jnp.ones((1, 2))

    got = jax.jit(lambda: batching.per_example_sum(fn, n, samples, bs))()
    count = -(-n * samples // seen[-1])
    assert count * seen[-1] == rows
    expect = np.arange(n)[:, None] * 100 * samples + samples * (samples - 1) / 2
    np.testing.assert_allclose(got, np.broadcast_to(expect, (n, 2)))


def test_chunks_share_one_loop_body():
    # a separate last chunk would put a second copy of the model into the program
    traced = []

    def f(start, size):
        traced.append(size)
        return start + jnp.arange(size, dtype=jnp.float32)

    jax.jit(lambda: batching.chunked_map(f, 1000, 128))()
    jax.jit(lambda: batching.chunked_sum(f, 1000, 128))()
    assert traced.count(125) >= 2 and set(traced) == {125}


def test_grid_and_segments_validation():
    g = jx.grid_segments(6, 6, 3)
    assert g.max() == 8 and (np.bincount(g.ravel()) == 4).all()
    seg, d = features.check_segments(g, (2, 6, 6, 3))
    assert d == 9 and seg.shape == (2, 6, 6)
    bad = g.copy()
    bad[bad == 4] = 0
    with pytest.raises(ValueError, match="no gaps"):
        features.check_segments(bad, (2, 6, 6, 3))
    with pytest.raises(ValueError, match="shape"):
        features.check_segments(g[:5], (2, 6, 6, 3))
    with pytest.raises(TypeError, match="integer"):
        features.check_segments(g.astype(float), (2, 6, 6, 3))


def test_apply_coalitions_exact_selection():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    seg = jnp.asarray(jx.grid_segments(4, 4, 2))
    masks = jnp.array([[True, False, False, True], [False, True, True, False]])
    out = jx.apply_coalitions(x, -1.0, seg, masks)
    keep = np.asarray(masks)[np.arange(2)[:, None, None], np.asarray(seg)[None]]
    np.testing.assert_array_equal(out[..., 0], np.where(keep, x[..., 0], -1.0))
    soft = jx.apply_coalitions(x, 0.0, seg, masks.astype(jnp.float32) * 0.5)
    np.testing.assert_allclose(soft[..., 0], np.where(keep, x[..., 0] * 0.5, 0.0))


def test_to_numpy_roundtrip():
    e = jx.Explanation(jnp.ones((2, 3)), gap=jnp.zeros(2))
    n = jax.jit(lambda e: e)(e)
    out = jx.to_numpy(n)
    assert isinstance(out.values, np.ndarray) and out.values.dtype == np.float32
    assert out.stderr is None and out.gap.shape == (2,)


@pytest.mark.parametrize("value", [
    np.zeros((2, 3), np.float64), np.zeros((2,), np.int64), np.zeros(2, np.uint8),
    np.zeros(2, np.complex128), np.zeros(2, jnp.bfloat16), np.float32(1.0),
    jnp.zeros((2, 2), jnp.float16), jnp.arange(3), 3, 2.5, True,
])
def test_dtype_of_matches_result_type(value):
    """The validation's fast dtype read agrees with `jnp.result_type` on every kind of input."""
    from jaxplain._core.validate import dtype_of, shape_of

    assert dtype_of(value) == jnp.result_type(value)
    assert shape_of(value) == np.shape(value)
    with pytest.raises(TypeError):  # what check_array turns into its own TypeError
        dtype_of([1.0, 2.0])


def test_shape_cache_keys_on_shapes_and_survives_scalar_leaves():
    """`traced_cached` reuses a result for equal parameter and input shapes, and recomputes
    when a shape or dtype changes, also when the parameters include Python scalars."""
    from jaxplain._core.cache import traced_cached
    from jaxplain._core.models import Model

    calls = []

    def apply(params, z):
        return z * params["w"] + params["b"]

    for params in ({"w": jnp.ones(3), "b": 0.5}, {"w": np.ones(3, np.float32), "b": jnp.zeros(3)}):
        model = Model(apply, params)
        calls.clear()
        compute = lambda: calls.append(1) or len(calls)
        x = jnp.ones((2, 3))
        assert traced_cached(compute, model, x, "t") == traced_cached(compute, model, x + 1, "t")
        assert len(calls) == 1
        traced_cached(compute, model, jnp.ones((4, 3)), "t")  # new input shape
        traced_cached(compute, model, jnp.ones((2, 3), jnp.float16), "t")  # new dtype
        traced_cached(compute, model, x, "other")  # new tag
        assert len(calls) == 4


def test_architecture_token_follows_the_parameters_it_was_computed_for():
    """The token is kept on the `Model` only while `apply` and `params` are the same
    objects: new parameter shapes give a new token (and a fresh shape evaluation), and
    models of one architecture share theirs."""
    from jaxplain._core.cache import architecture_token, traced_cached
    from jaxplain._core.models import Model

    apply = lambda p, z: z @ p["w"]  # noqa: E731
    m = Model(apply, {"w": jnp.ones((3, 2))})
    tok = architecture_token(m)
    assert architecture_token(m) == tok
    assert architecture_token(Model(apply, {"w": jnp.zeros((3, 2))})) == tok
    m.params = {"w": jnp.ones((3, 5))}
    assert architecture_token(m) != tok
    out = traced_cached(lambda: jax.eval_shape(m, jnp.ones((4, 3))), m, jnp.ones((4, 3)), "o")
    assert out.shape == (4, 5)
    assert architecture_token(Model(lambda p, z: z, {"w": jnp.ones((3, 2))})) != tok  # other apply


def test_finite_scan_is_remembered_for_device_arrays_only(monkeypatch):
    """A finite `jax.Array` is checked once, on the device (it cannot change); a NumPy
    array on every call, on the host (it can change in place, so a NaN written later is
    still caught), and a non-finite array is never remembered."""
    from jaxplain._core import validate as V
    from jaxplain._core import values

    device, host = [], []
    run, count = values._run, values.count_nonfinite
    monkeypatch.setattr(values, "_run", lambda checks: device.append(len(checks)) or run(checks))
    monkeypatch.setattr(values, "count_nonfinite", lambda a: host.append(1) or count(a))
    dev = jnp.ones((2, 3))
    V.check_array(dev)
    V.check_array(dev)
    assert device == [1] and host == []
    V.check_array(dev + 0)  # another array of equal value: checked
    assert device == [1, 1]
    arr = np.ones((2, 3), np.float32)
    V.check_array(arr)
    arr[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        V.check_array(arr)
    assert host == [1, 1]
    bad = jnp.array([[1.0, jnp.nan]])
    for _ in range(2):
        with pytest.raises(ValueError, match="non-finite"):
            V.check_array(bad)


def test_device_checks_of_one_call_are_one_read_before_its_program(monkeypatch):
    """Inside a public call, the device checks of x, baseline and target run as one
    program with one read, before the method's program is dispatched: a NaN baseline
    raises without running (or compiling) the method."""
    from jaxplain._core import values

    runs = []
    run = values._run
    monkeypatch.setattr(values, "_run", lambda checks: runs.append([c.name for c in checks])
                        or run(checks))
    m = jx.testing.linear_model(jnp.ones((3, 2)))
    x, t = jnp.ones((4, 3)), jnp.array([0, 1, 1, 0])
    jx.integrated_gradients(m, x, target=t, baseline=jnp.zeros((4, 3)), steps=2)
    assert runs == [["x", "target", "baseline"]]
    jx.integrated_gradients(m, x, target=t, baseline=jnp.zeros((4, 3)) + 0, steps=2)
    assert runs[1:] == [["baseline"]]  # x and target were remembered
    nan = jnp.full((4, 3), jnp.nan, jnp.float32)
    with jx.testing.count_compiles() as c, pytest.raises(ValueError, match="baseline: expected finite"):
        jx.integrated_gradients(m, x, target=t, baseline=nan, steps=3)  # steps=3: a new program
    assert c["n"] == 0  # the check program was compiled for these shapes; the method never


def test_target_range_is_remembered_for_device_arrays_only():
    """A device target is read back once and then stays on the device; a NumPy target
    is read on every call, so an out-of-range value written in place is caught."""
    from jaxplain._core import validate as V

    def check(t, k=4):
        return V.check_indices(t, "target", 3, k, what=("class", "classes"), accepts="")

    dev = jnp.array([0, 3, 1], jnp.int32)
    assert check(dev) is dev and check(dev) is dev
    for _ in range(2):  # the remembered range is compared with each call's class count
        with pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
            check(dev, k=3)
    host = np.array([0, 3, 1])
    np.testing.assert_array_equal(check(host), host)
    host[1] = 7
    with pytest.raises(ValueError, match="target: expected classes in"):
        check(host)


def test_baseline_is_validated_unbroadcast_and_explained_as_broadcast():
    """`check_baseline` keeps a baseline's own size (a scalar crosses to the device as one
    number); the methods broadcast it, so a scalar, an image and a full batch of the same
    value give the same attributions."""
    from jaxplain._core import validate as V

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32))
    assert V.check_baseline(0.5, x).shape == (1, 1, 1, 1)
    assert V.check_baseline(np.full((4, 4, 2), 0.5), x).shape == (1, 4, 4, 2)
    assert V.check_baseline(np.full(x.shape, 0.5), x).shape == x.shape
    module = jx.testing.tiny_cnn(n_classes=3)
    model = jx.from_linen(module, module.init(jax.random.key(0), x))
    forms = (0.5, np.full((4, 4, 2), 0.5, np.float32), jnp.full(x.shape, 0.5))
    for method in (jx.integrated_gradients, jx.deeplift):
        vals = [np.asarray(method(model, x, target=1, baseline=b).values) for b in forms]
        np.testing.assert_allclose(vals[0], vals[1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(vals[0], vals[2], rtol=1e-6, atol=1e-7)


def test_config_update_override_snapshot_and_restore(monkeypatch):
    monkeypatch.setenv("JAXPLAIN_CPU_REWRITES", "0")
    saved = jx.config.snapshot()
    assert jx.config.read("cpu_rewrites") == "0"  # the environment, when nothing is set
    jx.config.update("cpu_rewrites", "1")
    assert jx.config.read("cpu_rewrites") == "1"
    with jx.config.override(cpu_rewrites="auto"):
        assert jx.config.read("cpu_rewrites") == "auto"
    assert jx.config.read("cpu_rewrites") == "1"
    jx.config.restore(saved)
    assert jx.config.read("cpu_rewrites") == "0" and jx.config.snapshot() == saved
    with pytest.raises(ValueError, match="name: expected one of"):
        jx.config.restore({"cpu_rewrite": "1"})
    with pytest.raises(ValueError, match="cpu_rewrites"):
        jx.config.update("cpu_rewrites", "sometimes")
