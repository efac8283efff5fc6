"""The streaming engine, occlusion, feature ablation and RISE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.perturbation import engine as perturbation
from jaxplain.perturbation import occlusion
from jaxplain import testing


def _linear(seed=0, size=6, channels=2, k=2):
    w = jax.random.normal(jax.random.key(seed), (size, size, channels, k))
    return testing.linear_model(w), w


def _occlusion_reference(f, x, window, strides, baseline):
    """Brute force (NumPy loops), Captum's definition."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    cnt = np.zeros(x.shape[1:])
    fx = np.asarray(f(jnp.asarray(x)))
    win = tuple(window) + (x.shape[-1],) * (3 - len(window))
    st = tuple(strides) + (1,) * (3 - len(strides))
    for i in range(0, x.shape[1] - win[0] + 1, st[0]):
        for j in range(0, x.shape[2] - win[1] + 1, st[1]):
            for c in range(0, x.shape[3] - win[2] + 1, st[2]):
                z = x.copy()
                z[:, i:i + win[0], j:j + win[1], c:c + win[2]] = baseline
                drop = fx - np.asarray(f(jnp.asarray(z)))
                out[:, i:i + win[0], j:j + win[1], c:c + win[2]] += drop[:, None, None, None]
                cnt[i:i + win[0], j:j + win[1], c:c + win[2]] += 1
    return np.where(cnt > 0, out / np.maximum(cnt, 1), 0.0)


def test_occlusion_single_pixels_on_linear_model_is_w_times_x():
    m, w = _linear()
    x = testing.random_images(0, n=3, size=6, channels=2)
    e = jx.occlusion(m, x, target=1, window=1)
    np.testing.assert_allclose(e.values, np.broadcast_to((w[..., 1] * x).sum(-1, keepdims=True), x.shape),
                               atol=1e-5)
    per_channel = jx.occlusion(m, x, target=1, window=(1, 1, 1), baseline=0.25)
    np.testing.assert_allclose(per_channel.values, w[..., 1] * (x - 0.25), atol=1e-5)
    assert e.n_evals.tolist() == [37] * 3


@pytest.mark.parametrize("window,strides", [((3, 2), (2, 1)), ((2, 3, 1), (1, 2, 1)), ((4, 4), (3, 3))])
def test_occlusion_matches_brute_force(window, strides):
    f = lambda z: jnp.tanh(z.sum((1, 2, 3)) - 0.3 * z[:, 1, 2, 0] * z[:, 3, 3, 1])  # noqa: E731
    x = testing.random_images(1, n=2, size=6, channels=2)
    e = jx.occlusion(f, x, target=None, window=window, strides=strides, baseline=0.1, batch_size=5)
    np.testing.assert_allclose(e.values, _occlusion_reference(f, x, window, strides, 0.1), atol=1e-5)


def test_occlusion_errors():
    m, _ = _linear()
    x = testing.random_images(0, n=1, size=6, channels=2)
    with pytest.raises(ValueError, match="window"):
        jx.occlusion(m, x, target=0, window=7)
    with pytest.raises(TypeError, match="strides"):
        jx.occlusion(m, x, target=0, window=2, strides=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="baseline"):
        jx.occlusion(m, x, target=0, baseline="mean")


# ---- feature ablation ----------------------------------------------------------------------


def _ablation_reference(f, x, seg, baseline):
    """Brute force: `f(x) - f(x with feature j set to the baseline)`, one NumPy input at a time."""
    x, b = np.asarray(x), np.broadcast_to(np.asarray(baseline, np.float32), np.shape(x))
    seg = np.broadcast_to(np.asarray(seg), x.shape[:3])
    d = int(seg.max()) + 1
    out = np.zeros((x.shape[0], d), np.float32)
    for i in range(x.shape[0]):
        fx = float(np.asarray(f(jnp.asarray(x[i : i + 1])))[0])
        for j in range(d):
            if not (seg[i] == j).any():
                continue
            z = np.where((seg[i] == j)[..., None], b[i], x[i])
            out[i, j] = fx - float(np.asarray(f(jnp.asarray(z[None])))[0])
    return out


def test_feature_ablation_on_linear_model_is_w_times_x_minus_baseline_per_feature():
    m, w = _linear(size=6, channels=2)
    x = testing.random_images(0, n=3, size=6, channels=2)
    seg = jx.grid_segments(6, 6, 3)  # 9 cells of 2x2
    b = testing.random_images(5, n=1, size=6, channels=2)[0]
    e = jx.feature_ablation(m, x, target=1, segments=seg, baseline=b)
    per_pixel = np.asarray((w[..., 1] * (x - b)).sum(-1))  # (N, H, W)
    expected = np.stack([[per_pixel[i][seg == j].sum() for j in range(9)] for i in range(3)])
    np.testing.assert_allclose(e.values, expected, atol=1e-5)
    assert e.n_evals.tolist() == [10] * 3
    # additive in the features, so ablation is the Shapley value (efficiency holds too)
    exact = jx.exact_shapley(m, x, target=1, segments=seg, baseline=b)
    np.testing.assert_allclose(e.values, exact.values, atol=1e-5)


@pytest.mark.parametrize("baseline", [0.1, "blur", "mean"])
def test_feature_ablation_matches_brute_force_with_per_example_segments(baseline):
    f = lambda z: jnp.tanh(z.sum((1, 2, 3)) - 0.3 * z[:, 1, 2, 0] * z[:, 3, 3, 1])  # noqa: E731
    x = testing.random_images(1, n=3, size=6, channels=2)
    rng = np.random.default_rng(0)
    seg = np.stack([rng.permutation(np.arange(36) % k).reshape(6, 6) for k in (5, 7, 3)])
    e = jx.feature_ablation(f, x, target=None, segments=seg, baseline=baseline, batch_size=5)
    b = jx.resolve_baseline(baseline, x, seg)
    ref = _ablation_reference(f, x, seg, b)
    np.testing.assert_allclose(e.values, ref, atol=1e-5)
    assert e.values.shape == (3, 7)
    # labels an example lacks get exactly 0
    assert (np.asarray(e.values)[0, 5:] == 0).all() and (np.asarray(e.values)[2, 3:] == 0).all()


def test_feature_ablation_equals_tiling_occlusion_and_ignores_batch_size_and_jit():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = testing.random_images(2, n=3, size=8)
    model = jx.from_linen(m, m.init(jax.random.key(0), x[:1]))
    seg = jx.grid_segments(8, 8, 4)  # 2x2 cells, the windows of a tiling occlusion
    ref = jx.feature_ablation(model, x, target="predicted", segments=seg, baseline=0.2)
    occ = jx.occlusion(model, x, target="predicted", window=2, strides=2, baseline=0.2)
    np.testing.assert_allclose(jx.to_pixels(ref.values, seg), occ.values[..., 0], atol=1e-5)
    for bs in (1, 7, 16, 1000):
        e = jx.feature_ablation(model, x, target="predicted", segments=seg, baseline=0.2, batch_size=bs)
        np.testing.assert_allclose(e.values, ref.values, atol=1e-6)
    jitted = jax.jit(lambda mm, xx: jx.feature_ablation(mm, xx, target="predicted", segments=seg,
                                                        baseline=0.2).values)
    np.testing.assert_allclose(jitted(model, x), ref.values, atol=1e-6)
    with testing.count_compiles() as c:  # new weights, same shapes: no recompilation
        model2 = jx.from_linen(m, m.init(jax.random.key(1), x[:1]))
        jx.feature_ablation(model2, x, target="predicted", segments=seg, baseline=0.2).values.block_until_ready()
    assert c["n"] == 0


def test_feature_ablation_errors():
    m, _ = _linear()
    x = testing.random_images(0, n=1, size=6, channels=2)
    seg = jx.grid_segments(6, 6, 2)
    gaps = np.where(seg == 1, 2, seg)  # label 1 missing
    with pytest.raises(ValueError, match="segments"):
        jx.feature_ablation(m, x, target=0, segments=gaps)
    with pytest.raises(ValueError, match="segments"):
        jx.feature_ablation(m, x, target=0, segments=seg[:5])
    with pytest.raises(ValueError, match="baseline"):
        jx.feature_ablation(m, x, target=0, segments=seg, baseline=np.zeros((4, 6, 2)))
    with pytest.raises(ValueError, match="target"):
        jx.feature_ablation(m, x, target=5, segments=seg)


def test_rise_masks_and_reproducibility():
    masks_of = jax.jit(occlusion.rise_masks, static_argnums=(2, 3, 5))  # one program, not op by op
    masks = masks_of(jax.random.key(0), jnp.arange(2000), 12, 10, 0.3, 4)
    assert masks.shape == (2000, 12, 10)
    assert float(masks.min()) >= 0.0 and float(masks.max()) <= 1.0
    assert abs(float(masks.mean()) - 0.3) < 0.02
    f = lambda z: jnp.sin(z.sum((1, 2, 3)))  # noqa: E731
    x = testing.random_images(2, n=2, size=8, channels=1)
    key = jax.random.key(3)
    a = jx.rise(f, x, target=None, key=key, n_masks=64, batch_size=16)
    b = jx.rise(f, x, target=None, key=key, n_masks=64, batch_size=64)
    c = jx.rise(f, x, target=None, key=jax.random.key(4), n_masks=64)
    assert a.values.shape == (2, 8, 8) and a.n_evals.tolist() == [64, 64]
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.values, c.values)
    # the definition: sum_i f(b + M_i (x - b)) M_i / (n p), masks shared by examples
    m = masks_of(key, jnp.arange(64), 8, 8, 0.5, 7)
    fi = jax.jit(jax.vmap(lambda mi: f(x * mi[None, :, :, None])))(m)  # (64, N)
    np.testing.assert_allclose(a.values, jnp.einsum("in,ihw->nhw", fi, m) / 32.0, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="key"):
        jx.rise(f, x, target=None)
    with pytest.raises(ValueError, match="p"):
        jx.rise(f, x, target=None, key=key, p=0.0)


def test_stream_splits_units_larger_than_batch_and_merges_moments():
    # units of 5 evaluations with batch_size 2: sub-batches inside a unit.
    x = testing.random_images(0, n=3, size=2, channels=1)
    f = lambda z: z.sum((1, 2, 3))  # noqa: E731
    t = jx.as_target(None, jx.as_model(f), x)
    samples = np.random.default_rng(0).normal(size=(3, 7, 4)).astype(np.float32)

    def units_fn(ex, u):
        return jnp.broadcast_to(u[:, None, None].astype(jnp.float32), (u.shape[0], 5, 1)), None

    def inputs_fn(ex, aux):
        return x[ex] * aux[:, :, None, None]

    def reduce_fn(carry, c):
        moments, tot = carry
        moments = perturbation.merge_moments(moments, c.ex0, c.onehot, jnp.asarray(samples)[c.ex, c.unit])
        return moments, perturbation.add_local(tot, c.ex0, c.onehot.T @ c.values.sum(1))

    init = ((jnp.zeros(3), jnp.zeros((3, 4)), jnp.zeros((3, 4))), jnp.zeros(3))
    for bs in (2, 7, 100):
        (count, mean, m2), tot = perturbation.stream(jx.as_model(f), t, 3, 7, units_fn, inputs_fn, reduce_fn,
                                                     init, bs, unit_size=5)
        np.testing.assert_allclose(count, 7)
        np.testing.assert_allclose(mean, samples.mean(1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m2 / 6, samples.var(1, ddof=1), rtol=1e-4)
        np.testing.assert_allclose(tot, np.asarray(f(x)) * 5 * 21, rtol=1e-5)


@pytest.mark.parametrize("units_chunks", [1, 3, 16])
@pytest.mark.parametrize("batch_size,unit_size", [(1, 1), (5, 1), (6, 2), (3, 4)])
def test_stream_visits_every_unit_once_with_its_own_data(monkeypatch, units_chunks, batch_size,
                                                          unit_size):
    # unit data built a block of chunks at a time: blocks and chunks both overlap
    # their predecessors (37 units per example do not divide evenly); every unit must
    # be counted exactly once, with the data units_fn made for it
    monkeypatch.setattr(perturbation, "UNITS_CHUNKS", units_chunks)
    n, n_units, offset = 3, 37, 5
    x = jnp.zeros((n, 2, 2, 1))
    f = lambda z: z.mean((1, 2, 3))  # noqa: E731
    t = jx.as_target(None, jx.as_model(f), x)

    def units_fn(ex, u):
        code = (ex * 1000 + u).astype(jnp.float32)
        return jnp.broadcast_to(code[:, None], (u.shape[0], unit_size)), u

    def inputs_fn(ex, aux):
        return x[ex] + aux[:, None, None, None]

    def reduce_fn(carry, c):
        visits, wrong = carry
        fresh = c.onehot.sum(1)
        visits = visits.at[c.ex, c.unit - offset].add(fresh)
        expect = (c.ex * 1000 + c.extra).astype(jnp.float32)[:, None]
        return visits, wrong + jnp.sum(fresh[:, None] * jnp.abs(c.values - expect))

    init = (jnp.zeros((n, n_units)), jnp.zeros(()))
    visits, wrong = jax.jit(lambda: perturbation.stream(
        jx.as_model(f), t, n, n_units, units_fn, inputs_fn, reduce_fn, init, batch_size,
        unit_size=unit_size, offset=offset))()
    np.testing.assert_array_equal(visits, 1.0)
    assert float(wrong) == 0.0


def test_unit_blocks_change_no_value(monkeypatch):
    from jaxplain._core import features
    from jaxplain.perturbation import kernelshap

    x = testing.random_images(0, n=2, size=8, channels=1)
    f = lambda z: jnp.tanh(z.sum((1, 2, 3)))[:, None] * jnp.array([1.0, -2.0])  # noqa: E731
    m = jx.as_model(f)
    seg, d = features.check_segments(jx.grid_segments(8, 8, 4), x.shape)
    plan = kernelshap.schedule(d, 300)
    raw = kernelshap._kernel_shap.__wrapped__
    static = ("plan", "mode", "adaptive", "with_stderr", "batch_size")
    out = {}
    # 600 units in chunks of 24: a pass per chunk, or 9 overlapping passes of 3 overlapping
    # chunks (LIME and the other estimators share this stream)
    for chunks in (1, 3):
        monkeypatch.setattr(perturbation, "UNITS_CHUNKS", chunks)
        # a new function per setting: the block is decided when traced, and jit caches
        # traces per function (a global jax.clear_caches() would slow the tests after)
        fresh = lambda *a, **k: raw(*a, **k)  # noqa: E731
        out[chunks] = jax.jit(fresh, static_argnames=static)(
            m, x, jx.as_target(0, m, x), seg, jnp.zeros_like(x), jax.random.key(3), 0.0, 1,
            plan=plan, mode=None, adaptive=False, batch_size=24)
    np.testing.assert_allclose(out[1].values, out[3].values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1].stderr, out[3].stderr, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("d", [1, 2, 7, 64, 129, 300, 5000])
def test_ranks_from_bits_are_a_stable_order_of_the_words_top_bits(d):
    from jaxplain.perturbation import engine as P

    k = max(1, (d - 1).bit_length())
    kb = jax.random.split(jax.random.key(d))
    # many ties in the top bits; the low bits (the packed index's place) must not matter
    b = (jax.random.bits(kb[0], (40, d), jnp.uint32) % jnp.uint32(3)) << 24
    b = b | (jax.random.bits(kb[1], (40, d), jnp.uint32) & jnp.uint32((1 << k) - 1))
    key = b >> k if k <= P.PACKED_INDEX_BITS else b  # above, the whole word orders
    ref = jnp.argsort(jnp.argsort(key, axis=-1, stable=True), axis=-1, stable=True)
    got = jax.jit(P.ranks_from_bits)(b)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(np.sort(np.asarray(got), axis=-1), np.tile(np.arange(d), (40, 1)))
    np.testing.assert_array_equal(P.ranks_from_bits(b[:2, None]), got[:2, None])  # any leading axes