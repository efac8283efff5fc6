"""Audit of issue 7 (evaluating explanations): closed forms the other metric tests leave open.

Robustness metrics against exact values (a quadratic model), infidelity's definition
with a fixed perturbation, the best insertion curve, monotonicity's fraction,
cascading vs independent parameter randomisation on a two-layer model, the random
logit test's class swap, `evaluate` agreeing with direct calls, batch-size
independence and key determinism of every chunked / stochastic metric, and errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing

C = 1.7  # curvature of the quadratic model
D = 8 * 8 * 3


def sum_model(x):
    return x.reshape(x.shape[0], -1).sum(1)


def quad_apply(c, x):
    """f(x) = c/2 ||x||^2 per example: saliency c x, so a(x + e) - a(x) = c e exactly."""
    return 0.5 * c * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)


def cubic(x):
    """f(x) = sum(x^3) / 3: gradient x^2, and f(x) - f(x - I) = sum(x^2 I - x I^2 + I^3 / 3)."""
    return jnp.sum(x.reshape(x.shape[0], -1) ** 3, axis=1) / 3


def saliency(m, z, target):
    return jx.saliency(m, z, target=target)


@pytest.fixture(scope="module")
def quad():
    return jx.Model(quad_apply, jnp.float32(C)), testing.random_images(0, n=3)


# ---- robustness: exact values -----------------------------------------------------------------


def test_robustness_closed_forms_on_a_quadratic_model(quad):
    model, x = quad
    key = jax.random.key(3)
    kw = dict(explain=saliency, target=None, key=key, n_samples=16, radius=0.05)
    # every draw has ||a(x + e) - a(x)|| / ||e|| = C: the Lipschitz estimate is C, not a bound
    for noise in ("gaussian", "uniform"):
        lip = jx.local_lipschitz_estimate(model, x, noise=noise, **kw)
        np.testing.assert_allclose(lip, C, rtol=1e-3)
    # sensitivity = C ||e|| (absolute) and ||e|| / ||x|| (relative to ||a(x)|| = C ||x||)
    abs_max = jx.max_sensitivity(model, x, relative=False, **kw)
    rel_max = jx.max_sensitivity(model, x, **kw)
    xnorm = np.linalg.norm(np.asarray(x).reshape(3, -1), axis=1)
    np.testing.assert_allclose(rel_max * C * xnorm, abs_max, rtol=1e-4)
    abs_avg = jx.avg_sensitivity(model, x, relative=False, **kw)
    # uniform noise on [-r, r]^D: ||e|| concentrates at r sqrt(D / 3), never above r sqrt(D)
    np.testing.assert_allclose(abs_avg, C * 0.05 * np.sqrt(D / 3), rtol=0.05)
    assert np.all(abs_avg <= abs_max + 1e-6)
    assert np.all(abs_max <= C * 0.05 * np.sqrt(D) + 1e-5)
    assert np.all(abs_max > abs_avg)  # 16 different draws
    # gaussian noise of std r: ||e|| concentrates at r sqrt(D)
    g_avg = jx.avg_sensitivity(model, x, relative=False, noise="gaussian", **kw)
    np.testing.assert_allclose(g_avg, C * 0.05 * np.sqrt(D), rtol=0.05)


def test_robustness_deterministic_and_independent_of_batch_size(quad):
    model, x = quad
    # one noise for all three: they share one compiled program per batch size
    kw = dict(explain=saliency, target=None, n_samples=6, radius=0.1, noise="uniform")
    for fn in (jx.max_sensitivity, jx.avg_sensitivity, jx.local_lipschitz_estimate):
        kw_fn = dict(kw, relative=False) if fn is not jx.local_lipschitz_estimate else kw
        r1 = fn(model, x, key=jax.random.key(1), **kw_fn)
        r2 = fn(model, x, key=jax.random.key(1), batch_size=5, **kw_fn)  # ragged chunks
        r3 = fn(model, x, key=jax.random.key(1), **kw_fn)
        np.testing.assert_allclose(r1, r2, rtol=1e-5)
        np.testing.assert_array_equal(r1, r3)
        if fn is not jx.local_lipschitz_estimate:  # (that one is C for every draw)
            assert not np.allclose(r1, fn(model, x, key=jax.random.key(2), **kw_fn))


# ---- infidelity and faithfulness correlation: the definitions ------------------------------------


def test_infidelity_is_the_squared_error_for_a_fixed_perturbation():
    """With I fixed, infidelity = (I . a - (f(x) - f(x - I)))^2 exactly (cubic model, a = x^2)."""
    x = testing.random_images(1, n=2, size=4)
    i_fixed = jnp.asarray(np.random.default_rng(0).normal(0, 0.3, x.shape[1:]), jnp.float32)
    perturb = lambda k, xe: i_fixed  # noqa: E731 - ignores the key
    grad = x**2
    got = jx.infidelity(cubic, x, grad, target=None, key=jax.random.key(0), perturbation=perturb,
                        n_samples=4)
    xn, iv = np.asarray(x, np.float64), np.asarray(i_fixed, np.float64)
    ref = ((xn * iv**2 - iv**3 / 3).reshape(2, -1).sum(1)) ** 2  # (I.a - delta f)^2
    assert ref.min() > 1e-3
    np.testing.assert_allclose(got, ref, rtol=2e-3)
    # the optimal rescaling makes a single repeated perturbation exactly predictable
    scaled = jx.infidelity(cubic, x, grad, target=None, key=jax.random.key(0),
                           perturbation=perturb, n_samples=4, normalize=True)
    np.testing.assert_allclose(scaled, 0.0, atol=1e-6)


def test_infidelity_gaussian_matches_its_expectation_on_a_linear_model():
    """f = w.x, a = w + delta: E[(I.delta)^2] = s^2 ||delta||^2 for I ~ N(0, s^2)."""
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(4, 4, 1, 1)), jnp.float32)
    x = testing.random_images(2, n=2, size=4, channels=1)
    delta = jnp.asarray(rng.normal(size=(4, 4, 1)) * 0.5, jnp.float32)
    model = testing.linear_model(w)
    got = jx.infidelity(model, x, jnp.broadcast_to(w[..., 0] + delta, x.shape), target=0,
                        key=jax.random.key(5), n_samples=2048, noise_scale=0.2)
    ref = 0.2**2 * float(jnp.sum(delta**2))
    np.testing.assert_allclose(got, ref, rtol=0.12)  # Monte Carlo: sd ~ sqrt(2 / 2048)


def test_faithfulness_correlation_is_minus_one_for_negated_exact_attributions():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(8, 8, 3, 1)), jnp.float32)
    x = testing.random_images(3, n=2)
    exact = w[..., 0] * x  # zero baseline
    r = jx.faithfulness_correlation(testing.linear_model(w), x, -exact, target=0,
                                    key=jax.random.key(1), n_samples=16)
    np.testing.assert_allclose(r, -1.0, atol=1e-5)


# ---- curves: insertion optimum, monotonicity value, batch size -----------------------------------


def test_x_gives_the_best_insertion_curve_of_a_sum_model():
    x = testing.random_images(4, n=3)
    best = jx.insertion(sum_model, x, x, target=None, steps=16, baseline="zero")
    pix = np.sort(np.asarray(x).sum(-1).reshape(3, -1), axis=1)[:, ::-1]
    ks = (np.arange(17) * 64 + 8) // 16
    ref = np.array([[p[:k].sum() for k in ks] for p in pix])  # the k largest pixels inserted
    np.testing.assert_allclose(best.values, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(best.auc, np.trapezoid(ref, ks / 64, axis=1), rtol=1e-5)
    rand = np.stack([
        jx.insertion(sum_model, x, jax.random.normal(jax.random.key(s), x.shape), target=None,
                     steps=16, baseline="zero").auc for s in range(4)
    ])
    assert (rand <= np.asarray(best.auc) + 1e-4).all()
    assert rand.mean() < float(best.auc.mean()) - 0.5


def test_monotonicity_is_the_fraction_of_non_decreasing_steps():
    """f = w.x on ones, a = w: least important first, the increments are sorted(w)."""
    w = jnp.array([3.0, -1.0, 2.0, 0.5, -0.25])
    model = testing.linear_model(w[:, None])
    x = jnp.ones((1, 5))
    np.testing.assert_allclose(jx.monotonicity(model, x, w[None], target=0, steps=5), [3 / 5])
    np.testing.assert_allclose(
        jx.monotonicity(model, x, w[None], target=0, steps=5, atol=0.3), [4 / 5])
    np.testing.assert_allclose(
        jx.monotonicity(model, x, w[None], target=0, steps=5, atol=1.0), [1.0])
    # the order matters through a nonlinearity: f = relu(w.x), inserted from the zero baseline
    w6 = np.array([3.0, -1.0, 2.0, 0.5, -0.25, -2.0], np.float32)
    relu_model = lambda z: jax.nn.relu(z @ jnp.asarray(w6))  # noqa: E731
    ones = jnp.ones((1, 6))

    def ref(a):
        vals = np.maximum(np.concatenate([[0.0], np.cumsum(w6[np.argsort(a, kind="stable")])]), 0)
        return np.mean(np.diff(vals) >= 0)

    assert ref(w6) == 1.0 and ref(-w6) == 0.5
    for a in (w6, -w6):
        np.testing.assert_allclose(
            jx.monotonicity(relu_model, ones, a[None], target=None, steps=6), [ref(a)])


@pytest.fixture(scope="module")
def small_mlp():
    k1, k2 = jax.random.split(jax.random.key(7))
    params = (jax.random.normal(k1, (48, 5)) / 4, jax.random.normal(k2, (5, 3)))
    model = jx.Model(lambda p, x: jnp.tanh(x.reshape(x.shape[0], -1) @ p[0]) @ p[1], params)
    x = testing.random_images(5, n=3, size=4)
    return model, x, jax.random.normal(jax.random.key(3), x.shape)


CHUNKED = {
    "insertion": lambda m, x, a, bs: jx.insertion(m, x, a, target=1, steps=6,
                                                  batch_size=bs).values,
    "monotonicity": lambda m, x, a, bs: jx.monotonicity(m, x, a, target=1, steps=6,
                                                        batch_size=bs),
    "efficiency_gap": lambda m, x, a, bs: jx.efficiency_gap(
        m, x, a, target=1, segments=jx.grid_segments(4, 4, 2), batch_size=bs),
    "infidelity_subset": lambda m, x, a, bs: jx.infidelity(
        m, x, a, target=1, key=jax.random.key(4), perturbation="subset", n_samples=7,
        batch_size=bs),
    "faithfulness_segments": lambda m, x, a, bs: jx.faithfulness_correlation(
        m, x, a, target=1, key=jax.random.key(4), n_samples=7,
        segments=jx.grid_segments(4, 4, 2), subset_size=1, batch_size=bs),
}


@pytest.mark.parametrize("name", list(CHUNKED))
def test_chunked_metrics_are_independent_of_batch_size(small_mlp, name):
    model, x, a = small_mlp
    ref = np.asarray(CHUNKED[name](model, x, a, None))
    np.testing.assert_allclose(CHUNKED[name](model, x, a, 5), ref, rtol=1e-5, atol=1e-6)


# ---- sanity checks: cascading semantics and the class swap ---------------------------------------


def _two_layer_apply(p, x):
    h = jnp.tanh(x * p["l1"]["w"])
    return jnp.sum((h * p["l2"]["w"]).reshape(x.shape[0], -1), axis=1)


@pytest.fixture(scope="module")
def two_layer():
    rng = np.random.default_rng(0)
    p = {n: {"w": jnp.asarray(rng.normal(size=(8, 8, 3)), jnp.float32)} for n in ("l1", "l2")}
    return jx.Model(_two_layer_apply, p), testing.random_images(6, n=3)


def only_l2(m, z):
    return z * m.params["l2"]["w"]


def only_l1(m, z):
    return z * m.params["l1"]["w"]


def test_randomisation_cascades_from_the_output_layer(two_layer):
    """Stage l randomises layers 0..l (cascade) or only layer l (independent); l2 is on top."""
    model, x = two_layer
    key = jax.random.key(0)
    mpr = jx.model_parameter_randomisation
    casc2 = mpr(model, x, explain=only_l2, target=None, key=key)
    assert casc2.layers == ("l2", "l1")
    assert np.all(np.asarray(casc2.spearman) < 0.6)  # l2 is random at both stages
    indep2 = mpr(model, x, explain=only_l2, target=None, key=key, cascade=False)
    assert np.all(np.asarray(indep2.spearman[0]) < 0.6)
    np.testing.assert_allclose(indep2.spearman[1], 1.0, atol=1e-6)  # only l1 random
    np.testing.assert_allclose(indep2.ssim[1], 1.0, atol=1e-5)
    casc1 = mpr(model, x, explain=only_l1, target=None, key=key)
    np.testing.assert_allclose(casc1.spearman[0], 1.0, atol=1e-6)  # only l2 random yet
    assert np.all(np.asarray(casc1.spearman[1]) < 0.6)
    # a fixed key gives the same numbers, another key other weights
    again = mpr(model, x, explain=only_l2, target=None, key=key)
    np.testing.assert_array_equal(again.spearman, casc2.spearman)
    other = mpr(model, x, explain=only_l2, target=None, key=jax.random.key(1))
    assert not np.allclose(other.spearman, casc2.spearman)
    # given attributions of the wrong shape: a clear error
    with pytest.raises(ValueError, match="attributions: expected the shape explain"):
        mpr(model, x, x[:, :4], explain=only_l2, target=None, key=key)


def test_random_logit_explains_another_class():
    """Two classes with weights w and -w: saliency of the other class is -w, so the signed
    Spearman correlation is exactly -1 for every key (the swap never keeps the class)."""
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(8, 8, 3)), jnp.float32)
    model = testing.linear_model(jnp.stack([w, -w], axis=-1))
    x = testing.random_images(7, n=3)
    for seed in range(3):
        for target in ("predicted", 0, np.array([1, 0, 1])):
            r = jx.random_logit(model, x, explain=saliency, target=target,
                                key=jax.random.key(seed), similarity="spearman", absolute=False)
            np.testing.assert_allclose(r, -1.0, atol=1e-6)
    r = jx.random_logit(model, x, explain=saliency, target=0, key=jax.random.key(0),
                        similarity="spearman", absolute=True)
    np.testing.assert_allclose(r, 1.0, atol=1e-6)  # |w| = |-w|: the absolute maps agree
    one = testing.linear_model(w[..., None])
    with pytest.raises(ValueError, match="model: expected outputs with at least 2 classes"):
        jx.random_logit(one, x, explain=saliency, target=0, key=jax.random.key(0))


# ---- evaluate agrees with the direct calls --------------------------------------------------------


def test_evaluate_equals_direct_calls_and_table_conversions():
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(6, 6, 1, 2)), jnp.float32)
    model = testing.linear_model(w)
    x = testing.random_images(8, n=3, size=6, channels=1)
    mask = np.zeros((6, 6), bool)
    mask[:3] = True
    methods = {
        "saliency": saliency,
        "gxi": lambda m, z, target: jx.gradient_x_input(m, z, target=target),
    }
    key = jax.random.key(2)
    names = ("deletion", "infidelity", "max_sensitivity", "pointing_game", "relevance_mass",
             "completeness_gap", "sparseness")
    table = jx.evaluate(methods, model, x, target=1, key=key, mask=mask, metrics=names,
                        batch_size=4)
    for row, explain in enumerate(methods.values()):
        a = explain(model, x, target=1).values
        direct = {
            "deletion": jx.deletion(model, x, a, target=1, batch_size=4).auc,
            "infidelity": jx.infidelity(model, x, a, target=1, key=jax.random.fold_in(key, 1),
                                        batch_size=4),
            "max_sensitivity": jx.max_sensitivity(model, x, a, explain=explain, target=1,
                                                  key=jax.random.fold_in(key, 2), batch_size=4),
            "pointing_game": jx.pointing_game(a, mask),
            "relevance_mass": jx.relevance_mass(a, mask),
            "completeness_gap": jnp.abs(jx.completeness_gap(model, x, a, target=1)),
            "sparseness": jx.sparseness(a),
        }
        for m, v in direct.items():
            np.testing.assert_allclose(table[m][row], v, rtol=1e-5, atol=1e-6, err_msg=m)
    means = table.mean()
    np.testing.assert_allclose(table.to_numpy(), np.stack([means[m] for m in names], 1))
    # gradient x input is complete for a linear model without bias; saliency is not
    np.testing.assert_allclose(table["completeness_gap"][1], 0.0, atol=1e-5)
    assert table.ranking("completeness_gap") == ["gxi", "saliency"]


# ---- errors: mismatched shapes and bad masks ------------------------------------------------------


def test_mismatched_shapes_and_bad_masks_raise_clear_errors():
    x = testing.random_images(9, n=2)
    a = np.asarray(x) - 0.5
    mask = np.zeros((2, 8, 8), bool)
    mask[:, :4] = True
    with pytest.raises(ValueError, match="attributions: expected one row per example"):
        jx.completeness_gap(sum_model, x, a[:1], target=None)
    with pytest.raises(ValueError, match=r"per-feature values of shape \(2, 4\)"):
        jx.efficiency_gap(sum_model, x, np.ones((2, 3)), target=None,
                          segments=jx.grid_segments(8, 8, 2))
    for fn in (jx.pointing_game, jx.relevance_mass, jx.relevance_rank_accuracy):
        with pytest.raises(ValueError, match="attributions: expected pixel-level"):
            fn(a.reshape(2, -1), mask)
        with pytest.raises(ValueError, match=r"mask: expected a mask of shape \(8, 8\)"):
            fn(a, mask[:, :5])
        with pytest.raises(ValueError, match=r"mask: .*empty mask for examples \[1\]"):
            fn(a, mask * np.array([1, 0])[:, None, None].astype(bool))
        with pytest.raises(ValueError, match="mask: expected booleans or 0/1"):
            fn(a, mask * 3)
        with pytest.raises(TypeError, match="mask"):
            fn(a, None)
    with pytest.raises(ValueError, match="mask"):
        jx.evaluate({"x": lambda m, z: z}, sum_model, x, target=None, mask=mask[:, :5],
                    metrics=["relevance_mass"])


def test_random_subsets_are_uniform_subsets_of_the_exact_size():
    from jaxplain.metrics import base as B

    keys = B.sample_keys(jax.random.key(0), jnp.zeros(4000, jnp.int32), jnp.arange(4000))
    masks = np.asarray(jax.jit(B.random_subsets, static_argnums=(1, 2))(keys, 10, 3))
    assert (masks.sum(1) == 3).all()
    # the definition: the 3 smallest of the key's 10 uniforms
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (10,)))(keys))
    np.testing.assert_array_equal(masks, u <= np.sort(u, axis=1)[:, 2:3])
    np.testing.assert_allclose(masks.mean(0), 0.3, atol=0.03)  # every feature equally often
