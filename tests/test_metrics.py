"""Metrics: faithfulness, robustness, localisation, complexity, axiom gaps and `evaluate`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

import jaxplain as jx
from jaxplain import testing


def sum_model(x):
    return x.reshape(x.shape[0], -1).sum(1)


@pytest.fixture(scope="module")
def cnn():
    m = testing.tiny_cnn()
    x = testing.random_images(0, n=3)
    return jx.from_linen(m, m.init(jax.random.key(0), x)), x


def _mlp_apply(params, x):
    w1, w2 = params
    return jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


@pytest.fixture(scope="module")
def smooth():
    """A small nonlinear model that compiles fast: tanh(flatten(x) @ W1) @ W2, 3 outputs."""
    k1, k2 = jax.random.split(jax.random.key(7))
    params = (jax.random.normal(k1, (192, 6)) / 8, jax.random.normal(k2, (6, 3)))
    return jx.Model(_mlp_apply, params), testing.random_images(2, n=3)


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(8, 8, 3, 2)), jnp.float32)
    x = testing.random_images(1, n=3)
    b = jnp.asarray(rng.uniform(size=(8, 8, 3)), jnp.float32)
    return testing.linear_model(w, 0.5), w, x, b


def np_deletion(f, x, vals, seg, steps, base, insert=False):
    """Reference: the curve built and evaluated one step at a time in NumPy."""
    n, d = vals.shape
    ks = [int(np.floor(s * d / steps + 0.5)) for s in range(steps + 1)]
    curve = np.zeros((n, steps + 1))
    for i in range(n):
        order = np.argsort(-vals[i], kind="stable")
        for j, k in enumerate(ks):
            keep = np.zeros(d, bool)
            if insert:
                keep[order[:k]] = True
            else:
                keep[order[k:]] = True
            xi = np.where(keep[seg][..., None], x[i], base[i])
            curve[i, j] = f(xi[None])[0]
    frac = np.asarray(ks) / d
    return curve, np.trapezoid(curve, frac, axis=1)


# ---- deletion / insertion --------------------------------------------------------------------


def test_deletion_with_x_is_optimal_for_sum_model():
    x = testing.random_images(3, n=4)
    best = jx.deletion(sum_model, x, x, target=None, steps=16)
    # optimal: remaining mass after removing the k largest pixels (channel sums)
    pix = np.sort(np.asarray(x).sum(-1).reshape(4, -1), axis=1)[:, ::-1]
    ks = (np.arange(17) * 64 + 8) // 16
    ref = np.array([[p[k:].sum() for k in ks] for p in pix])
    np.testing.assert_allclose(best.values, ref, rtol=1e-5)
    rand = [
        jx.deletion(
            sum_model, x, jax.random.normal(jax.random.key(s), x.shape), target=None, steps=16
        ).auc
        for s in range(5)
    ]
    rand = np.stack(rand)
    assert (rand >= np.asarray(best.auc) - 1e-4).all()
    assert rand.mean() > float(best.auc.mean()) + 0.5
    ins_best = jx.insertion(sum_model, x, x, target=None, steps=16, baseline="zero")
    ins_rand = jx.insertion(sum_model, x, -x, target=None, steps=16, baseline="zero")
    assert (ins_best.auc > ins_rand.auc).all()


@pytest.mark.parametrize("insert", [False, True])
def test_curves_match_numpy_reference(cnn, insert):
    model, x = cnn
    seg = jx.grid_segments(8, 8, (3, 4))
    a = jax.random.normal(jax.random.key(1), x.shape)
    fn = jx.insertion if insert else jx.deletion
    c = fn(model, x, a, target=1, steps=5, baseline=0.25, segments=seg, softmax=False)
    assert c.scale == "raw"
    vals = np.asarray(
        jax.vmap(lambda p: jax.ops.segment_sum(p.ravel(), seg.ravel(), 12))(a.sum(-1))
    )
    fj = jax.jit(lambda z: model(z)[:, 1])
    f = lambda z: np.asarray(fj(jnp.asarray(z, jnp.float32)))
    curve, auc = np_deletion(f, np.asarray(x), vals, seg, 5, np.full(x.shape, 0.25), insert)
    np.testing.assert_allclose(c.values, curve, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.auc, auc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.fractions, np.array([0, 2, 5, 7, 10, 12]) / 12, rtol=1e-6)


def test_curves_follow_probabilities_of_classifiers_by_default():
    """softmax="auto": the target's probability for (N, K > 1) outputs, said on the result;
    a model that already outputs probabilities is not squashed twice; one output stays raw."""
    w = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 1, 3)) / 2, jnp.float32)
    logits = testing.linear_model(w, 0.1)
    probs = jx.Model(lambda p, z: jax.nn.softmax(logits.apply(p, z), -1), logits.params)
    x = testing.random_images(6, n=2, size=4, channels=1)
    a = x * w[..., 1]
    seg = np.arange(16).reshape(4, 4)
    vals = np.asarray(a.reshape(2, 16))
    p1 = jax.jit(lambda z: jax.nn.softmax(logits(z), -1)[:, 1])
    ref, auc = np_deletion(lambda z: np.asarray(p1(jnp.asarray(z, jnp.float32))),
                           np.asarray(x), vals, seg, 4, np.zeros(x.shape))
    for model in (logits, probs):
        c = jx.deletion(model, x, a, target=1, steps=4)
        assert c.scale == "probability"
        np.testing.assert_allclose(c.values, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c.auc, auc, rtol=1e-5, atol=1e-6)
        jitted = jax.jit(lambda m, z, aa: jx.deletion(m, z, aa, target=1, steps=4))(model, x, a)
        assert jitted.scale == "probability"
        np.testing.assert_allclose(jitted.values, ref, rtol=1e-5, atol=1e-6)
    raw = jx.deletion(logits, x, a, target=1, steps=4, softmax=False)
    assert raw.scale == "raw" and float(raw.values[0, 0]) == pytest.approx(
        float(logits(x[:1])[0, 1]), rel=1e-5)
    twice = jx.insertion(probs, x, a, target=1, steps=4, softmax=True)  # asked for: applied
    assert twice.scale == "probability" and float(jnp.max(twice.values)) < 0.6
    assert jx.insertion(sum_model, x, x, target=None, steps=4).scale == "raw"
    own = jx.deletion(logits, x, a, target=lambda o: o[:, 0] - o[:, 2], steps=4)
    assert own.scale == "raw"  # a callable target keeps its own scale
    with pytest.raises(TypeError, match="softmax"):
        jx.deletion(logits, x, a, target=1, softmax="yes")


def test_features_given_as_values_or_pixels_agree(cnn):
    model, x = cnn
    seg = jx.grid_segments(8, 8, 4)
    a = jax.random.normal(jax.random.key(2), x.shape)
    per = jax.vmap(lambda p: jax.ops.segment_sum(p.ravel(), jnp.asarray(seg).ravel(), 16))(
        a.sum(-1)
    )
    c1 = jx.deletion(model, x, a, target="predicted", steps=8, segments=seg)
    c2 = jx.deletion(model, x, jx.Explanation(per), target="predicted", steps=8, segments=seg)
    c3 = jx.deletion(model, x, a.sum(-1), target="predicted", steps=8, segments=seg)
    np.testing.assert_allclose(c1.values, c2.values, rtol=1e-6)
    np.testing.assert_allclose(c1.values, c3.values, rtol=1e-6)


def test_curves_independent_of_batch_size_and_jit(smooth):
    model, x = smooth
    a = jax.random.normal(jax.random.key(3), x.shape)
    ref = jx.deletion(model, x, a, target=2, steps=10, baseline="blur")
    for bs in (7, 33):
        np.testing.assert_allclose(
            jx.deletion(model, x, a, target=2, steps=10, baseline="blur", batch_size=bs).values,
            ref.values,
            rtol=1e-5,
        )
    a2 = a * 2
    with testing.count_compiles() as c:
        jx.deletion(model, x, a2, target=2, steps=10, baseline="blur")
    assert c["n"] == 0
    # eager (no jit anywhere) == jitted, on a tiny problem
    f = lambda z: jnp.tanh(z).reshape(z.shape[0], -1).sum(1)
    xs, sa = x[:1, :4, :4, :1], a[:1, :4, :4, :1]
    jitted = jx.insertion(f, xs, sa, target=None, steps=3, baseline="mean")
    with jax.disable_jit():
        eager = jx.insertion(f, xs, sa, target=None, steps=3, baseline="mean")
    np.testing.assert_allclose(eager.values, jitted.values, rtol=1e-5, atol=1e-6)


def test_baselines():
    x = testing.random_images(4, n=2, size=9)
    blurred = jx.gaussian_blur(x, 1.0)
    ref = scipy.ndimage.gaussian_filter(
        np.asarray(x), sigma=(0, 1, 1, 0), mode="reflect", truncate=3.0
    )
    np.testing.assert_allclose(blurred, ref, atol=1e-5)
    a = jnp.ones_like(x)
    for name, expect in (
        ("blur", jnp.asarray(ref)),
        ("mean", x.mean((1, 2), keepdims=True)),
        ("zero", 0.0),
    ):
        c = jx.deletion(sum_model, x, a, target=None, steps=1, baseline=name, blur_sigma=1.0)
        np.testing.assert_allclose(
            c.values[:, 1], sum_model(jnp.broadcast_to(expect, x.shape)), rtol=1e-5
        )


def test_tabular_inputs():
    w = jnp.array([3.0, -1.0, 2.0, 0.5])
    model = testing.linear_model(w[:, None])
    x = jnp.ones((2, 4))
    c = jx.deletion(model, x, x * w, target=0, steps=4)
    np.testing.assert_allclose(c.values[0], [4.5, 1.5, -0.5, -1.0, 0.0])


def test_monotonicity():
    x = testing.random_images(5, n=3)
    assert np.all(jx.monotonicity(sum_model, x, x, target=None, steps=16) == 1.0)
    assert np.all(jx.monotonicity(lambda z: -sum_model(z), x, x, target=None, steps=16) == 0.0)


# ---- random coalitions -------------------------------------------------------------------------


def test_infidelity_zero_for_matching_perturbations(linear):
    model, w, x, b = linear
    ig = jx.integrated_gradients(model, x, target=1, baseline=b, steps=4)
    np.testing.assert_allclose(ig.values, w[..., 1] * (x - b), rtol=1e-4, atol=1e-5)
    key = jax.random.key(0)
    inf = jx.infidelity(
        model, x, ig, target=1, key=key, perturbation="subset", baseline=b, n_samples=16
    )
    assert float(jnp.max(inf)) < 1e-6
    sal = jx.saliency(model, x, target=1)
    assert float(jnp.max(jx.infidelity(model, x, sal, target=1, key=key, n_samples=16))) < 1e-6
    bad = jx.infidelity(model, x, sal.values[:, ::-1], target=1, key=key, n_samples=16)
    assert float(jnp.min(bad)) > 1e-2
    # a custom perturbation distribution: single-pixel spikes
    spike = lambda k, xe: (
        jnp.zeros_like(xe)
        .at[jnp.unravel_index(jax.random.randint(k, (), 0, xe.size), xe.shape)]
        .set(1.0)
    )
    assert (
        float(jnp.max(jx.infidelity(model, x, sal, target=1, key=key, perturbation=spike))) < 1e-6
    )
    # normalize rescales attributions: 3 * saliency is as good as saliency
    np.testing.assert_allclose(
        jx.infidelity(model, x, 3 * sal.values, target=1, key=key, normalize=True), 0, atol=1e-5
    )


def test_random_metrics_keys_and_batch_size(smooth):
    model, x = smooth
    a = jax.random.normal(jax.random.key(3), x.shape)
    for fn in (jx.faithfulness_correlation, jx.infidelity):
        r1 = fn(model, x, a, target=0, key=jax.random.key(1), n_samples=20)
        r2 = fn(model, x, a, target=0, key=jax.random.key(1), n_samples=20, batch_size=7)
        r3 = fn(model, x, a, target=0, key=jax.random.key(2), n_samples=20)
        np.testing.assert_allclose(r1, r2, rtol=1e-4, atol=1e-5)
        assert not np.allclose(r1, r3)
    inf = jx.infidelity(model, x, a, target=0, key=1, perturbation="subset", n_samples=20)
    np.testing.assert_allclose(
        inf,
        jx.infidelity(
            model, x, a, target=0, key=jax.random.key(1), perturbation="subset", n_samples=20
        ),
        rtol=1e-5,
    )


def test_faithfulness_correlation(linear):
    model, w, x, b = linear
    exact = w[..., 0] * (x - b)
    key = jax.random.key(4)
    r = jx.faithfulness_correlation(model, x, exact, target=0, key=key, baseline=b, n_samples=32)
    np.testing.assert_allclose(r, 1.0, atol=1e-5)
    noise = jax.random.normal(jax.random.key(5), x.shape)
    r2 = jx.faithfulness_correlation(model, x, noise, target=0, key=key, baseline=b, n_samples=32)
    assert float(r2.mean()) < 0.5


# ---- robustness -------------------------------------------------------------------------------


def explain_saliency(m, x, target):
    return jx.saliency(m, x, target=target)


def test_sensitivity_of_gradients_on_linear_model_is_zero(linear, smooth):
    model, w, x, _ = linear
    key = jax.random.key(0)
    for fn in (jx.max_sensitivity, jx.avg_sensitivity):
        np.testing.assert_allclose(
            fn(model, x, explain=explain_saliency, target=1, key=key), 0, atol=1e-6
        )
    gxi = lambda m, z: jx.gradient_x_input(m, z, target=1)
    lip = jx.local_lipschitz_estimate(model, x, explain=gxi, target=1, key=key, n_samples=32)
    wmax = float(jnp.abs(w[..., 1]).max())
    assert (lip <= wmax + 1e-4).all() and (lip > 0.5 * float(jnp.abs(w[..., 1]).mean())).all()
    cmodel, cx = smooth
    s_max = jx.max_sensitivity(cmodel, cx, explain=explain_saliency, target=0, key=key, radius=0.2)
    s_avg = jx.avg_sensitivity(cmodel, cx, explain=explain_saliency, target=0, key=key, radius=0.2)
    assert (s_max > 0).all() and (s_avg <= s_max + 1e-6).all()


def test_sensitivity_deterministic_and_batch_size_free(smooth):
    model, x = smooth
    kw = {"explain": explain_saliency, "target": "predicted", "n_samples": 6, "radius": 0.3}
    r1 = jx.max_sensitivity(model, x, key=jax.random.key(1), **kw)
    a0 = explain_saliency(model, x, target=jx.as_target("predicted", model, x).resolve(model, x))
    r2 = jx.max_sensitivity(model, x, a0, key=jax.random.key(1), batch_size=4, **kw)
    r3 = jx.max_sensitivity(model, x, key=jax.random.key(2), **kw)
    np.testing.assert_allclose(r1, r2, rtol=1e-5)
    assert not np.allclose(r1, r3)
    x2, k3 = x * 0.9, jax.random.key(3)
    with testing.count_compiles() as c:
        jx.max_sensitivity(model, x2, key=k3, **kw)
    assert c["n"] == 0


# ---- localisation and complexity ------------------------------------------------------------


def test_localisation():
    a = np.zeros((2, 6, 6, 2), np.float32)
    a[0, 1, 1] = 5.0  # inside
    a[1, 5, 5] = 5.0  # outside, 2 px from the mask corner (3, 3) -> dist sqrt(8)
    a[1, 0, 0] = -9.0
    mask = np.zeros((6, 6), bool)
    mask[:4, :4] = True
    np.testing.assert_array_equal(jx.pointing_game(a, mask), [1.0, 0.0])
    np.testing.assert_array_equal(jx.pointing_game(a, mask, tolerance=2), [1.0, 0.0])
    np.testing.assert_array_equal(jx.pointing_game(a, mask, tolerance=3), [1.0, 1.0])
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 6, 6)).astype(np.float32)
    masks = rng.uniform(size=(3, 6, 6)) < 0.3
    pos = np.maximum(a, 0)
    np.testing.assert_allclose(
        jx.relevance_mass(a, masks), (pos * masks).sum((1, 2)) / pos.sum((1, 2)), rtol=1e-6
    )
    ref = []
    for ai, mi in zip(a, masks):
        k = mi.sum()
        top = np.argsort(-ai.ravel())[:k]
        ref.append(mi.ravel()[top].mean())
    np.testing.assert_allclose(
        jx.relevance_rank_accuracy(a, masks.astype(np.int32)), ref, rtol=1e-6
    )


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.zeros((6, 6), bool), "empty mask"),
        (np.ones((5, 6), bool), "shape"),
        (np.full((6, 6), 2), "0/1"),
        (np.stack([np.ones((6, 6)), np.zeros((6, 6))]), r"examples \[1\]"),
        ("all", "boolean mask"),
    ],
)
@pytest.mark.parametrize("on_device", [False, True])
def test_bad_masks(mask, match, on_device):
    """A host mask is checked where it is; a device mask on the device, in the call's one
    check program (the same answers)."""
    if on_device and isinstance(mask, np.ndarray):
        mask = jnp.asarray(mask)
    with pytest.raises((ValueError, TypeError), match=match):
        jx.pointing_game(np.ones((2, 6, 6), np.float32), mask)


def test_sparseness_and_complexity():
    one_hot = jnp.zeros((1, 10)).at[0, 3].set(-2.0)
    flat = jnp.ones((1, 10))
    np.testing.assert_allclose(jx.sparseness(one_hot), 0.9, rtol=1e-6)
    np.testing.assert_allclose(jx.sparseness(flat), 0.0, atol=1e-6)
    np.testing.assert_allclose(jx.complexity(one_hot), 0.0, atol=1e-6)
    np.testing.assert_allclose(jx.complexity(flat), np.log(10), rtol=1e-6)
    a = np.random.default_rng(1).normal(size=(4, 5, 5, 2)).astype(np.float32)
    v = np.sort(np.abs(a.reshape(4, -1)), axis=1)
    n = v.shape[1]
    gini = ((2 * np.arange(1, n + 1) - n - 1) * v).sum(1) / (n * v.sum(1))
    np.testing.assert_allclose(jx.sparseness(a), gini, rtol=1e-5)
    p = np.abs(a.reshape(4, -1)) / np.abs(a.reshape(4, -1)).sum(1, keepdims=True)
    np.testing.assert_allclose(
        jx.complexity(jx.Explanation(jnp.asarray(a))), -(p * np.log(p)).sum(1), rtol=1e-5
    )
    np.testing.assert_allclose(jx.sparseness(jnp.zeros((2, 3))), 0.0)


# ---- axioms ---------------------------------------------------------------------------------------


def test_completeness_and_efficiency_gaps(linear, cnn):
    model, w, x, b = linear
    exact = w[..., 1] * (x - b)
    np.testing.assert_allclose(
        jx.completeness_gap(model, x, exact, target=1, baseline=b), 0, atol=1e-4
    )
    seg = jx.grid_segments(8, 8, 2)
    phi = jax.vmap(lambda p: jax.ops.segment_sum(p.ravel(), jnp.asarray(seg).ravel(), 4))(
        exact.sum(-1)
    )
    np.testing.assert_allclose(
        jx.efficiency_gap(model, x, phi, target=1, baseline=b, segments=seg), 0, atol=1e-4
    )
    np.testing.assert_allclose(
        jx.efficiency_gap(model, x, exact + 1.0 / 192, target=1, baseline=b), 1.0, atol=1e-4
    )
    cm, cx = cnn
    ig = jx.integrated_gradients(cm, cx, target=2, steps=64)
    gap = jx.completeness_gap(cm, cx, ig, target=2)
    np.testing.assert_allclose(gap, ig.gap, atol=1e-5)
    assert float(jnp.abs(gap).max()) < 1e-2


# ---- validation -----------------------------------------------------------------------------------


def test_errors(cnn):
    model, x = cnn
    a = jnp.ones_like(x)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="attributions: expected an array shaped like x"):
        jx.deletion(model, x, a[:, :4], target=0)
    with pytest.raises(ValueError, match="need segments="):
        jx.deletion(model, x, jnp.ones((3, 16)), target=0)
    with pytest.raises(ValueError, match=r"per-feature values of shape \(3, 4\)"):
        jx.deletion(model, x, jnp.ones((3, 5)), target=0, segments=jx.grid_segments(8, 8, 2))
    with pytest.raises(ValueError, match="baseline: expected one of"):
        jx.insertion(model, x, a, target=0, baseline="gray")
    with pytest.raises(ValueError, match="baseline: expected a scalar"):
        jx.deletion(model, x, a, target=0, baseline=jnp.ones((5, 5)))
    with pytest.raises(ValueError, match="steps"):
        jx.deletion(model, x, a, target=0, steps=0)
    with pytest.raises(TypeError, match="key"):
        jx.faithfulness_correlation(model, x, a, target=0, key=None)
    with pytest.raises(ValueError, match="subset_size"):
        jx.faithfulness_correlation(model, x, a, target=0, key=key, subset_size=100)
    with pytest.raises(ValueError, match="perturbation"):
        jx.infidelity(model, x, a, target=0, key=key, perturbation="salt")
    with pytest.raises(ValueError, match="shaped like x"):
        jx.infidelity(model, x, a.sum(-1), target=0, key=key)
    with pytest.raises(ValueError, match="attributions: expected the shape explain"):
        jx.max_sensitivity(model, x, a[:, :4], explain=explain_saliency, target=0, key=key)
    with pytest.raises(TypeError, match="explain"):
        jx.avg_sensitivity(model, x, explain="saliency", target=0, key=key)
    with pytest.raises(ValueError, match="target"):
        jx.deletion(model, x, a, target=7)
    with pytest.raises(ValueError, match="attributions: expected finite"):
        jx.deletion(model, x, a.at[0, 0, 0, 0].set(jnp.nan), target=0)


# ---- evaluate --------------------------------------------------------------------------------------


def test_evaluate_ranks_methods():
    x = testing.random_images(6, n=4)
    methods = {
        "random": lambda m, z: jax.random.normal(jax.random.key(0), z.shape),
        "input": lambda m, z: z,
    }
    table = jx.evaluate(
        methods,
        sum_model,
        x,
        target=None,
        key=jax.random.key(0),
        metrics=("deletion", "insertion", "faithfulness_correlation", "sparseness", "complexity"),
    )
    assert table.methods == ("random", "input")
    assert table["deletion"].shape == (2, 4)
    assert table.ranking("deletion") == ["input", "random"]
    assert table.ranking("faithfulness_correlation") == ["input", "random"]
    assert table.to_numpy().shape == (2, 5)
    text = str(table)
    assert "input" in text and "deletion (-)" in text and "*" in text
    # direct calls agree with the table
    np.testing.assert_allclose(
        table["deletion"][1], jx.deletion(sum_model, x, x, target=None).auc, rtol=1e-6
    )
    more = jx.evaluate(
        methods,
        sum_model,
        x,
        target=None,
        key=jax.random.key(1),
        metrics={"gap": "completeness_gap", "sens": "max_sensitivity"},
    )
    np.testing.assert_allclose(more["gap"][1], 0.0, atol=1e-4)  # x is complete for a sum
    assert more.ranking("sens") == ["input", "random"]  # x moves by eps; the noise is new
    custom = jx.evaluate(
        methods,
        sum_model,
        x,
        target=None,
        metrics={"mean_attr": (lambda model, x, a: a.mean((1, 2, 3)), True)},
    )
    np.testing.assert_allclose(custom["mean_attr"][1], x.mean((1, 2, 3)), rtol=1e-6)
    with pytest.raises(TypeError, match="key"):
        jx.evaluate(methods, sum_model, x, target=None, metrics=["infidelity"])
    with pytest.raises(ValueError, match="metrics"):
        jx.evaluate(methods, sum_model, x, target=None, metrics=["accuracy"])
    with pytest.raises(TypeError, match="mask"):
        jx.evaluate(methods, sum_model, x, target=None, metrics=["pointing_game"])
