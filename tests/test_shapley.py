"""Shapley estimators: closed forms, axioms, convergence to enumeration, transformations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import features
from jaxplain.perturbation import kernelshap
from jaxplain import testing

X4 = testing.random_images(0, n=3, size=4, channels=1)
SEG6 = jx.grid_segments(4, 4, (2, 3))  # d = 6
X6 = testing.random_images(1, n=3, size=6, channels=1)
SEG10 = jx.grid_segments(6, 6, (2, 5))  # d = 10


def f(z):
    flat = z.reshape(z.shape[0], -1)
    lin = flat @ jnp.linspace(-1.0, 1.0, flat.shape[1])
    return jnp.tanh(2.0 * lin) + 2.0 * flat[:, 0] * flat[:, -1] - jnp.square(flat[:, 3] + flat[:, 7])


def _per_feature(w, x, b, seg):
    contrib = np.asarray((w[..., 0] * (x - b)).sum(-1))
    seg = np.broadcast_to(np.asarray(seg), contrib.shape)
    return np.stack([np.bincount(s.ravel(), c.ravel(), minlength=seg.max() + 1) for s, c in zip(seg, contrib)])


def test_linear_model_all_estimators_give_w_times_x_minus_b():
    w = jax.random.normal(jax.random.key(0), (4, 4, 1, 1))
    m = testing.linear_model(w, 0.7)
    truth = _per_feature(w, X4, 0.3, SEG6)
    key = jax.random.key(0)
    ex = jx.exact_shapley(m, X4, target=0, segments=SEG6, baseline=0.3)
    ks = jx.kernel_shap(m, X4, target=0, segments=SEG6, baseline=0.3, key=key, n_samples=30)
    ss = jx.shapley_sampling(m, X4, target=0, segments=SEG6, baseline=0.3, key=key, n_permutations=4)
    for e in (ex, ks, ss):
        np.testing.assert_allclose(e.values, truth, atol=1e-5)
    np.testing.assert_allclose(ss.stderr, 0.0, atol=1e-5)
    assert np.abs(ex.gap).max() < 1e-5 and np.abs(ks.gap).max() < 1e-5
    assert ex.n_evals.tolist() == [64] * 3 and ks.n_evals.tolist() == [32] * 3
    assert ss.n_evals.tolist() == [2 + 4 * 5] * 3


def test_efficiency_on_a_nonlinear_model():
    delta = np.asarray(f(X6) - f(jnp.zeros_like(X6)))
    ex = jx.exact_shapley(f, X6, target=None, segments=SEG10)
    ks = jx.kernel_shap(f, X6, target=None, segments=SEG10, key=jax.random.key(0), n_samples=100)
    for e in (ex, ks):
        np.testing.assert_allclose(e.values.sum(-1), delta, atol=1e-5)
        assert np.abs(e.gap).max() < 1e-5


def test_exact_matches_brute_force_definition():
    d = 6
    ex = jx.exact_shapley(f, X4, target=None, segments=SEG6)
    z = np.array([[(i >> j) & 1 for j in range(d)] for i in range(2**d)], bool)
    vals = np.stack([np.asarray(f(jx.apply_coalitions(X4, 0.0, jnp.asarray(SEG6), jnp.broadcast_to(zi, (3, d)))))
                     for zi in z])  # (2^d, N)
    ref = np.zeros((3, d))
    for i, zi in enumerate(z):
        s = zi.sum()
        for j in np.flatnonzero(~zi):
            wgt = math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
            ref[:, j] += wgt * (vals[i | (1 << j)] - vals[i])
    np.testing.assert_allclose(ex.values, ref, atol=1e-5)


def test_sampled_estimators_converge_to_exact_within_reported_stderr():
    exact = np.asarray(jx.exact_shapley(f, X6, target=None, segments=SEG10).values)
    errs, inside, total = {}, 0, 0
    for name, fn, small, large in [
        ("kernel", jx.kernel_shap, dict(n_samples=100), dict(n_samples=600)),
        ("perm", jx.shapley_sampling, dict(n_permutations=10), dict(n_permutations=60)),
    ]:
        for size, cfg in (("small", small), ("large", large)):
            e_all = []
            for seed in range(8):
                e = fn(f, X6, target=None, segments=SEG10, key=jax.random.key(seed), **cfg)
                e_all.append(np.abs(np.asarray(e.values) - exact).mean())
                if size == "small":
                    z = np.abs(np.asarray(e.values) - exact) / np.asarray(e.stderr)
                    inside += int((z <= 3).sum())
                    total += z.size
            errs[name, size] = np.mean(e_all)
        assert errs[name, "large"] < 0.6 * errs[name, "small"], errs
    assert inside / total >= 0.95, inside / total


def test_symmetry_and_dummy_axioms():
    x = jnp.full((1, 4, 4, 1), 0.5)
    seg = jx.grid_segments(4, 4, 2)  # 4 features of 4 pixels; feature 2 is never read

    def g(z):
        s = jnp.stack([z[:, :2, :2].sum((1, 2, 3)), z[:, :2, 2:].sum((1, 2, 3)), z[:, 2:, 2:].sum((1, 2, 3))], -1)
        return jnp.tanh(s[:, 0] + s[:, 1]) * (1.0 + s[:, 2]) + s[:, 0] * s[:, 1]

    key = jax.random.key(2)
    ex = jx.exact_shapley(g, x, target=None, segments=seg)
    full = jx.kernel_shap(g, x, target=None, segments=seg, key=key, n_samples=100)
    perm = jx.shapley_sampling(g, x, target=None, segments=seg, key=key, n_permutations=6)
    for e in (ex, full):
        np.testing.assert_allclose(e.values[0, 0], e.values[0, 1], atol=1e-5)
        assert abs(float(e.values[0, 2])) < 1e-5  # float32 rounding of a 2^d-term sum
    np.testing.assert_allclose(full.values, ex.values, atol=1e-5)
    # the dummy's estimate is exact, but its stderr is moderated towards the other features'
    # (three pairs cannot tell a dummy from a feature that matters rarely): finite, not 0
    assert float(perm.values[0, 2]) == 0.0 and np.isfinite(float(perm.stderr[0, 2]))
    assert full.n_evals.tolist() == [16] and float(full.stderr.max()) == 0.0


def test_kernel_schedule_enumerates_every_subset_once():
    d = 6
    plan = kernelshap.schedule(d, 1000)
    assert plan.exact and plan.n_units == 2**d - 2
    coalitions = jax.jit(kernelshap.coalitions, static_argnums=0)
    masks, weights, groups = coalitions(plan, jax.random.key(0), jnp.arange(plan.n_units), None)
    codes = np.asarray(masks) @ (1 << np.arange(d))
    assert sorted(codes.tolist()) == list(range(1, 2**d - 1))
    sizes = np.asarray(masks).sum(1)
    expect = (d - 1) / (np.array([math.comb(d, s) for s in sizes]) * sizes * (d - sizes))
    np.testing.assert_allclose(weights, expect, rtol=1e-6)
    assert (np.asarray(groups) == -1).all()


def _sampled(plan, rounds=1, seed=0):
    orders = kernelshap.permutations(plan, jax.random.key(seed))
    out = jax.jit(kernelshap.coalitions, static_argnums=0)(
        plan, jax.random.key(seed), jnp.arange(rounds * plan.n_units), orders)
    return [np.asarray(a) for a in out]


@pytest.mark.parametrize("d,n", [(10, 100), (12, 40), (12, 44), (12, 352), (7, 60), (64, 1000)])
def test_kernel_schedule_strata(d, n):
    plan = kernelshap.schedule(d, n)
    assert plan.n_enum + sum(plan.first) == n and sum(plan.later) == n
    # sizes whose kernel share covers ENUM_SHARE of their coalitions are enumerated
    enumerated = set(plan.block_size)
    assert enumerated == set(range(1, min(plan.strata_size)))
    masks, weights, groups = _sampled(plan, rounds=2)
    m, sizes = masks[plan.n_enum:], masks[plan.n_enum:].sum(1)
    # complementary pairs, each of a stratum's size
    np.testing.assert_array_equal(m[0:len(m) - 1:2], ~m[1::2])
    assert set(np.minimum(sizes, d - sizes).tolist()) <= set(plan.strata_size)
    # no coalition repeats while its stratum has unused ones (sampling without replacement)
    assert len({row.tobytes() for row in masks[:n]}) == n
    # every stratum carries its kernel mass: sum of weights per stratum proportional to it
    w = weights[plan.n_enum:n]
    per = np.array([w[np.minimum(sizes[:n - plan.n_enum], d - sizes[:n - plan.n_enum]) == s].sum()
                    for s in plan.strata_size])
    np.testing.assert_allclose(per / per.sum(), np.array(plan.strata_mass) / plan.mass, rtol=1e-5)
    # as many groups as first-round units (pairs), between N_GROUPS and max_groups(d),
    # all filled within the first round
    units = sum(-(-c // 2) for c in plan.first)
    assert plan.n_groups == min(max(units, kernelshap.N_GROUPS), kernelshap.max_groups(d))
    assert len(set(groups[plan.n_enum:n].tolist())) == min(units, plan.n_groups)
    assert (groups[:plan.n_enum] == -1).all()


def test_kernel_permutation_prefix_is_the_full_order_s_prefix():
    plan = kernelshap.schedule(16, 1000)  # six strata of up to 11 440 coalitions
    key = jax.random.key(3)
    full = np.asarray(jax.jit(kernelshap.permutations, static_argnums=(0, 2))(plan, key, None))
    one = np.asarray(jax.jit(kernelshap.permutations, static_argnums=(0, 2))(plan, key, 1))
    two = np.asarray(jax.jit(kernelshap.permutations, static_argnums=(0, 2))(plan, key, 2))
    pops = [p for p in plan.strata_pop if p <= kernelshap.WOR_MAX]
    assert full.shape == (len(pops), max(pops)) and 1 < one.shape[1] < two.shape[1] < full.shape[1]
    for row, p in zip(full, pops):
        assert sorted(row[:p].tolist()) == list(range(p))  # a permutation of the stratum
    np.testing.assert_array_equal(one, full[:, : one.shape[1]])
    np.testing.assert_array_equal(two, full[:, : two.shape[1]])
    # a one-round call reads no further than its prefix: the same coalitions
    i = jnp.arange(plan.n_units)
    coal = jax.jit(kernelshap.coalitions, static_argnums=0)
    for a, b in zip(coal(plan, key, i, jnp.asarray(one)), coal(plan, key, i, jnp.asarray(full))):
        np.testing.assert_array_equal(a, b)


def test_kernel_allocation_water_fills():
    out = kernelshap.allocate(100, [1.0, 1.0, 8.0], [6, 1000, 1000], 2)
    assert out == (6, 10, 84)  # the capped stratum takes all 6, the rest split 1:8 in whole pairs
    assert sum(kernelshap.allocate(101, [1.0, 2.0], [1000, 1000], 2)) == 101  # a lone last coalition
    assert kernelshap.allocate(10, [1.0, 1.0], [4, 4], 2) == (4, 4)  # everything covered


def test_per_example_segments_match_each_example_alone():
    seg = np.stack([SEG6, jx.grid_segments(4, 4, 2), jx.grid_segments(4, 4, (1, 2))])  # d = 6, 4, 2
    ex = jx.exact_shapley(f, X4, target=None, segments=seg)
    for i in (1, 2):
        alone = jx.exact_shapley(f, X4[i:i + 1], target=None, segments=seg[i])
        d = alone.values.shape[1]
        np.testing.assert_allclose(ex.values[i, :d], alone.values[0], atol=1e-5)
        assert (np.asarray(ex.values[i, d:]) == 0).all()
    ks = jx.kernel_shap(f, X4, target=None, segments=seg, key=jax.random.key(0), n_samples=30)
    assert float(ks.values[2, 2:].max()) == 0.0 and np.abs(ks.gap).max() < 1e-5


@pytest.mark.parametrize("method,cfg", [("kernel_shap", dict(n_samples=30)),
                                        ("shapley_sampling", dict(n_permutations=4)),
                                        ("shapley_sampling", dict(n_permutations=64,
                                                                  control="cubic"))])
def test_batch_size_independence_reproducibility_and_jit(method, cfg):
    fn = getattr(jx, method)
    kw = dict(target=None, segments=SEG6, baseline="mean", **cfg)
    a = fn(f, X4, key=jax.random.key(0), batch_size=7, **kw)
    b = fn(f, X4, key=jax.random.key(0), **kw)
    c = fn(f, X4, key=jax.random.key(1), **kw)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-3, atol=1e-5)
    assert not np.allclose(a.values, c.values)
    alone = fn(f, X4[2:], key=jax.random.key(0), **kw)
    np.testing.assert_allclose(alone.values[0], b.values[2], rtol=1e-4, atol=1e-5)
    jitted = jax.jit(lambda x, k: fn(f, x, key=k, **kw))(X4, jax.random.key(0))
    np.testing.assert_allclose(jitted.values, b.values, rtol=1e-4, atol=1e-5)
    with testing.count_compiles() as count:
        fn(f, X4, key=jax.random.key(5), **kw).values.block_until_ready()
    assert count["n"] == 0


def test_adaptive_stopping():
    kw = dict(target=None, segments=SEG10, key=jax.random.key(0), n_permutations=10)
    loose = jx.shapley_sampling(f, X6, tol=0.2, max_evals=2 + 20 * 90, **kw)
    rounds = (int(loose.n_evals[0]) - 2) // 90
    assert 1 < rounds < 20 and float(loose.stderr.max()) < 0.2
    # the same permutations as one fixed run of that size
    fixed = jx.shapley_sampling(f, X6, target=None, segments=SEG10, key=jax.random.key(0),
                                n_permutations=10 * rounds)
    np.testing.assert_allclose(loose.values, fixed.values, rtol=1e-4, atol=1e-5)
    with testing.count_compiles() as count:
        tight = jx.shapley_sampling(f, X6, tol=1e-6, max_evals=2 + 20 * 90, **kw)
    # the whole budget, per example; rows the last chunk of a pass repeats are counted on
    # top (the default chunk size, and so which example they fall on, depends on the
    # CPU rewrites switch)
    assert count["n"] == 0 and int(tight.n_evals.min()) == 2 + 20 * 90
    assert int(tight.n_evals.max()) <= 2 + 20 * 90 + 4 * 90
    ks = jx.kernel_shap(f, X6, target=None, segments=SEG10, key=jax.random.key(0), n_samples=100, tol=0.1,
                        max_evals=2 + 30 * 100)
    assert float(ks.stderr.max()) < 0.1 and 2 + 100 < int(ks.n_evals[0]) < 2 + 30 * 100
    assert np.abs(ks.gap).max() < 1e-5


def test_memory_does_not_grow_with_samples():
    m = jx.as_model(f)
    t = jx.as_target(None, m, X6)
    seg, d = features.check_segments(jx.pixel_segments(6, 6), X6.shape)  # d = 36: never exact
    k_sizes = {}
    # 3 examples: 768 and 76 800 units, in passes of 16 chunks of 16 (`stream`'s
    # UNITS_CHUNKS): one pass holds as many units at either size
    for n in (256, 25600):
        plan = kernelshap.schedule(d, n)
        lowered = kernelshap._kernel_shap.lower(m, X6, t, seg, jnp.zeros_like(X6), jax.random.key(0), 0.0, 1,
                                                plan=plan, mode=None, adaptive=False, batch_size=16)
        k_sizes[n] = lowered.compile().memory_analysis().temp_size_in_bytes
    # 100x the samples: at most 10% more (5.9% with the CPU rewrites off, 0% on)
    assert k_sizes[25600] <= k_sizes[256] * 1.10 + 1024, k_sizes


def test_bad_inputs():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at most 16 features"):
        jx.exact_shapley(f, X6, target=None, segments=jx.pixel_segments(6, 6))
    with pytest.raises(TypeError, match="key"):
        jx.kernel_shap(f, X4, target=None, segments=SEG6)
    with pytest.raises(TypeError, match="key"):
        jx.shapley_sampling(f, X4, target=None, segments=SEG6)
    with pytest.raises(ValueError, match="n_samples"):
        jx.kernel_shap(f, X4, target=None, segments=SEG6, key=key, n_samples=0)
    with pytest.raises(ValueError, match="n_permutations.*even"):
        jx.shapley_sampling(f, X4, target=None, segments=SEG6, key=key, n_permutations=3)
    with pytest.raises(ValueError, match="max_evals"):
        jx.shapley_sampling(f, X4, target=None, segments=SEG6, key=key, max_evals=100)
    with pytest.raises(ValueError, match="max_evals"):
        jx.kernel_shap(f, X4, target=None, segments=SEG6, key=key, n_samples=50, tol=0.1, max_evals=20)
    with pytest.raises(ValueError, match="tol"):
        jx.kernel_shap(f, X4, target=None, segments=SEG6, key=key, tol=-1.0)
    with pytest.raises(ValueError, match="segments.*gaps"):
        jx.exact_shapley(f, X4, target=None, segments=np.where(SEG6 == 0, 6, SEG6))
    with pytest.raises(ValueError, match="segments"):
        jx.exact_shapley(f, X4, target=None, segments=np.stack([SEG6] * 2))
    with pytest.raises(ValueError, match="baseline"):
        jx.exact_shapley(f, X4, target=None, segments=SEG6, baseline="noise")


@pytest.mark.parametrize("n_samples", [1, 2, 8])
def test_kernel_shap_too_few_samples_for_a_stderr_gives_none(n_samples):
    """Fewer than N_GROUPS sampled pairs cannot fill the jackknife: stderr None, never NaN."""
    e = jx.kernel_shap(f, X4, target=None, segments=SEG6, key=jax.random.key(0), n_samples=n_samples)
    assert e.stderr is None
    assert np.isfinite(np.asarray(e.values)).all()
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-5)  # efficiency holds for any budget
    full = jx.kernel_shap(f, X4, target=None, segments=SEG6, key=jax.random.key(0), n_samples=40)
    assert full.stderr is not None and np.isfinite(np.asarray(full.stderr)).all()


def test_kernel_shap_tol_needs_rounds_that_fill_the_jackknife():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="max_evals: expected at least 18"):
        jx.kernel_shap(f, X4, target=None, segments=SEG6, key=key, n_samples=2, tol=1e-3, max_evals=10)
    e = jx.kernel_shap(f, X4, target=None, segments=SEG6, key=key, n_samples=2, tol=1e-3, max_evals=18)
    assert np.isfinite(np.asarray(e.stderr)).all()


@pytest.mark.parametrize("n, antithetic, has_stderr",
                         [(1, False, False), (2, True, False), (2, False, True), (4, True, True)])
def test_shapley_sampling_stderr_needs_two_samples(n, antithetic, has_stderr):
    e = jx.shapley_sampling(f, X4, target=None, segments=SEG6, key=jax.random.key(0), n_permutations=n,
                            antithetic=antithetic)
    assert (e.stderr is not None) == has_stderr
    if has_stderr:
        assert np.isfinite(np.asarray(e.stderr)).all() and (np.asarray(e.stderr) > 0).any()
    np.testing.assert_allclose(e.gap, 0.0, atol=1e-5)


def test_shapley_sampling_tol_needs_two_rounds():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="max_evals: expected at least 22"):
        jx.shapley_sampling(f, X4, target=None, segments=SEG6, key=key, n_permutations=2, tol=1e-3, max_evals=12)
    e = jx.shapley_sampling(f, X4, target=None, segments=SEG6, key=key, n_permutations=2, tol=1e-3)
    assert np.isfinite(np.asarray(e.stderr)).all()


@pytest.mark.parametrize("paired,enumerate_sizes", [(False, True), (True, False), (False, False)])
def test_kernel_shap_variants_converge_and_keep_efficiency(paired, enumerate_sizes):
    # a third-order game on d = 8 features, played from a table of its 256 values
    d, rng = 8, np.random.default_rng(3)
    z = (np.arange(2**d)[:, None] >> np.arange(d)) & 1
    v = z @ rng.normal(size=d) + 0.8 * z[:, 0] * z[:, 1] * z[:, 2] - 0.5 * z[:, 3] * z[:, 5]
    table, bits = jnp.asarray(v, jnp.float32), jnp.asarray(1 << np.arange(d))
    game = lambda x: table[jnp.round(x.reshape(x.shape[0], d)).astype(jnp.int32) @ bits]
    x, seg = jnp.ones((1, 1, d, 1)), np.arange(d).reshape(1, d)
    exact = np.asarray(jx.exact_shapley(game, x, target=None, segments=seg).values)[0]
    kw = dict(target=None, segments=seg, paired=paired, enumerate_sizes=enumerate_sizes)
    plan = kernelshap.schedule(d, 120, enumerate_sizes, paired)
    assert plan.paired == paired and bool(plan.block_size) == enumerate_sizes
    masks, weights, _ = _sampled(plan)
    if not paired:  # unpaired strata are single sizes on both sides of d/2
        assert max(plan.strata_size) > d // 2
    assert len({row.tobytes() for row in masks}) == 120  # without replacement
    sizes = masks[plan.n_enum:].sum(1)
    stratum = sizes if not paired else np.minimum(sizes, d - sizes)
    per = np.array([weights[plan.n_enum:][stratum == s].sum() for s in plan.strata_size])
    np.testing.assert_allclose(per / per.sum(), np.array(plan.strata_mass) / plan.mass, rtol=1e-5)
    errs = []
    for s in range(12):
        r = jx.kernel_shap(game, x, key=jax.random.key(s), n_samples=120, **kw)
        assert abs(float(r.gap[0])) < 1e-5  # efficiency exactly
        errs.append(np.asarray(r.values)[0] - exact)
    rmse = float(np.sqrt(np.mean(np.square(errs))))
    assert rmse < 0.03 * float(np.sqrt(np.mean(exact**2))), rmse  # measured 0.012-0.020
    full = jx.kernel_shap(game, x, key=jax.random.key(0), n_samples=254, **kw)
    np.testing.assert_allclose(np.asarray(full.values)[0], exact, atol=1e-4)  # every coalition: exact


@pytest.mark.parametrize("n", [40, 44, 60])
def test_kernel_shap_small_budgets_report_finite_stderr(n):
    # few sampled pairs spread over many strata: each jackknife group must still get some
    d = 12
    g = lambda z: jnp.sum(z.reshape(z.shape[0], -1) ** 2, -1) * jnp.prod(z.reshape(z.shape[0], -1)[:, :3] + 1, -1)
    r = jx.kernel_shap(g, jnp.ones((1, 1, d, 1)), target=None, segments=np.arange(d).reshape(1, d),
                       key=jax.random.key(0), n_samples=n)
    assert r.stderr is not None and np.isfinite(np.asarray(r.stderr)).all()
    assert float(np.asarray(r.stderr).max()) > 0
