"""The amortised Shapley explainer (FastSHAP): `fit_amortised` and `amortised_shap`.

One small linear model (4x4 grey images, a 2x2 grid: d = 4 features, 2 outputs),
whose Shapley values have a closed form: `phi_j = sum_{pixels in j} w_k (x - b)`.
Every training below has the same static settings, so the training program
compiles once for the module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import testing

H = W = 4
STEPS = 40  # one block of `eval_every` steps: every fit below shares its program
SETTINGS = dict(batch=16, n_coalitions=8, features=(8,), hidden=32, learning_rate=1e-2,
                eval_every=STEPS)


def _data():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(H, W, 1, 2)).astype(np.float32)
    x = rng.uniform(size=(264, H, W, 1)).astype(np.float32)
    return testing.linear_model(jnp.asarray(w)), w, x, np.asarray(jx.grid_segments(H, W, 2))


MODEL, WEIGHTS, X, SEG = _data()
X_TRAIN, X_VAL = X[:256], X[256:]


def closed_form(x, k, baseline=0.0):
    """Shapley values of output `k` of the linear model: `(N, 4)`."""
    contrib = (WEIGHTS[None, ..., k] * (x - baseline))[..., 0]  # (N, H, W)
    return np.stack([contrib[:, SEG == j].sum(1) for j in range(4)], axis=1)


@pytest.fixture(scope="module")
def fitted():
    """Trained for 5 blocks, validated against the closed form of output 1."""
    return jx.fit_amortised(MODEL, X_TRAIN, SEG, key=jax.random.key(0), steps=5 * STEPS,
                            validation=(X_VAL, 1, closed_form(X_VAL, 1)), progress=False,
                            **SETTINGS)


def test_efficiency_holds_exactly_for_every_target(fitted):
    f = np.asarray(MODEL(jnp.asarray(X_VAL)))
    f0 = np.asarray(MODEL(jnp.zeros_like(X_VAL)))
    for target in (0, 1, "predicted", np.array([0, 1] * 4)):
        e = jx.amortised_shap(MODEL, X_VAL, target=target, explainer=fitted.explainer)
        k = np.broadcast_to(np.argmax(f, 1) if isinstance(target, str) else target, (8,))
        delta = f[np.arange(8), k] - f0[np.arange(8), k]
        np.testing.assert_allclose(np.asarray(e.values).sum(1), delta, atol=1e-5)
        assert np.abs(np.asarray(e.gap)).max() < 1e-5
        assert np.asarray(e.n_evals).tolist() == [2] * 8  # f(x), f(baseline)


def test_short_training_reaches_the_closed_form(fitted):
    # 200 steps of 16 images x 8 coalitions (+2): RMSE 0.033 and 0.039 (outputs 0, 1)
    # against values of RMS 0.55 (measured); the untrained explainer (the uniform split)
    # is off by 0.63
    errors = [err for _, err in fitted.history]
    assert fitted.steps == 5 * STEPS and len(errors) == 5 and errors[-1] < errors[0]
    rmse = {}
    for k in (0, 1):  # both outputs were learned, not only the validated one
        e = jx.amortised_shap(MODEL, X_VAL, target=k, explainer=fitted.explainer)
        rmse[k] = float(np.sqrt(np.mean((np.asarray(e.values) - closed_form(X_VAL, k)) ** 2)))
    assert max(rmse.values()) < 0.08, rmse
    assert errors[-1] == pytest.approx(rmse[1], rel=1e-5)  # the validation is that RMSE
    assert fitted.n_evals == 5 * STEPS * 16 * (8 + 2) + 5 * 16  # training + validations


def test_untrained_explainer_is_the_uniform_split():
    fit = jx.fit_amortised(MODEL, X_TRAIN, SEG, key=jax.random.key(0), steps=0, progress=False,
                           **SETTINGS)
    e = jx.amortised_shap(MODEL, X_VAL, target=1, explainer=fit.explainer)
    delta = np.asarray(MODEL(jnp.asarray(X_VAL)))[:, 1] - np.asarray(MODEL(jnp.zeros_like(X_VAL)))[:, 1]
    np.testing.assert_allclose(np.asarray(e.values), np.repeat(delta[:, None] / 4, 4, 1),
                               atol=1e-5)
    assert fit.steps == 0 and fit.n_evals == 0


def test_checkpoint_round_trip_gives_identical_outputs(fitted, tmp_path):
    path = fitted.explainer.save(tmp_path / "explainer.jxs")
    loaded = jx.AmortisedExplainer.load(path)
    assert repr(loaded) == repr(fitted.explainer)
    a = jx.amortised_shap(MODEL, X_VAL, target="predicted", explainer=fitted.explainer)
    b = jx.amortised_shap(MODEL, X_VAL, target="predicted", explainer=loaded)
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values))
    (tmp_path / "other.txt").write_text("{}\n")
    with pytest.raises(ValueError, match="path: expected a file written by jaxplain"):
        jx.AmortisedExplainer.load(tmp_path / "other.txt")


def test_same_key_same_weights_other_key_other_weights():
    def fit(seed):
        out = jx.fit_amortised(MODEL, X_TRAIN, SEG, key=jax.random.key(seed), steps=STEPS,
                               progress=False, **SETTINGS)
        return jax.tree.leaves(out.explainer.params)

    a, b, c = fit(0), fit(0), fit(1)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_weight_average_is_the_running_mean_of_the_iterates():
    # average=0 keeps the last iterate (the same weights as no average); a decay keeps
    # an exponential moving average of the iterates, which is not the last one
    kw = dict(key=jax.random.key(0), steps=STEPS, progress=False, **SETTINGS)
    last = jax.tree.leaves(jx.fit_amortised(MODEL, X_TRAIN, SEG, **kw).explainer.params)
    zero = jax.tree.leaves(jx.fit_amortised(MODEL, X_TRAIN, SEG, average=0.0,
                                            **kw).explainer.params)
    mean = jax.tree.leaves(jx.fit_amortised(MODEL, X_TRAIN, SEG, average=0.9,
                                            **kw).explainer.params)
    assert all(np.array_equal(u, v) for u, v in zip(last, zero))
    assert any(not np.allclose(u, v) for u, v in zip(last, mean))
    # the output layer starts at zero and moves every step: the mean lags behind
    out = [np.abs(np.asarray(p)).sum() for p in (last[-1], mean[-1])]
    assert 0 < out[1] < out[0]
    with pytest.raises(ValueError, match=r"average: expected a decay in \[0, 1\)"):
        jx.fit_amortised(MODEL, X_TRAIN, SEG, average=1.0, **kw)


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    ckpt = tmp_path / "fit.ckpt"
    kw = dict(key=jax.random.key(3), validation=X_VAL, progress=False, average=0.9,
              **SETTINGS)  # the average is part of the state the checkpoint resumes
    first = jx.fit_amortised(MODEL, X_TRAIN, SEG, steps=STEPS, checkpoint=ckpt, **kw)
    resumed = jx.fit_amortised(MODEL, X_TRAIN, SEG, steps=2 * STEPS, checkpoint=ckpt, **kw)
    whole = jx.fit_amortised(MODEL, X_TRAIN, SEG, steps=2 * STEPS, **kw)
    assert first.steps == STEPS and resumed.steps == whole.steps == 2 * STEPS
    assert 2 * resumed.n_evals == whole.n_evals  # this call's half (one validation each)
    for u, v in zip(jax.tree.leaves(resumed.explainer.params),
                    jax.tree.leaves(whole.explainer.params)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-7)
    assert [s for s, _ in resumed.history] == [STEPS, 2 * STEPS]
    assert resumed.history[-1][1] == pytest.approx(whole.history[-1][1], rel=1e-5)
    with pytest.raises(ValueError, match=r"checkpoint: .*differs in \['batch'"):
        jx.fit_amortised(MODEL, X_TRAIN, SEG, steps=STEPS, checkpoint=ckpt,
                         **dict(kw, batch=4))


def test_target_error_stops_at_the_first_validation_reaching_it():
    fit = jx.fit_amortised(MODEL, X_TRAIN, SEG, key=jax.random.key(0), steps=10 * STEPS,
                           validation=X_VAL, target_error=1e6, progress=False, **SETTINGS)
    assert fit.reached and fit.steps == STEPS and len(fit.history) == 1


def test_bad_inputs_fail_before_any_compile(fitted, tmp_path):
    ex = fitted.explainer
    three = testing.linear_model(jnp.ones((H, W, 1, 3)))
    calls = [
        (TypeError, "explainer: expected an AmortisedExplainer",
         lambda: jx.amortised_shap(MODEL, X_VAL, target=0, explainer="net")),
        (ValueError, r"x: expected images of shape \(N, 4, 4, 1\)",
         lambda: jx.amortised_shap(MODEL, np.zeros((2, 8, 8, 1), np.float32), target=0,
                                   explainer=ex)),
        (ValueError, "explainer: expected one trained on a model with 3 outputs",
         lambda: jx.amortised_shap(three, X_VAL, target=0, explainer=ex)),
        (TypeError, "target: expected a class index",
         lambda: jx.amortised_shap(MODEL, X_VAL, target=lambda o: o[:, 0], explainer=ex)),
        (ValueError, r"target: expected a class index in \[0, 2\)",
         lambda: jx.amortised_shap(MODEL, X_VAL, target=5, explainer=ex)),
    ]
    fit = lambda **kw: jx.fit_amortised(MODEL, X_TRAIN, **dict(dict(  # noqa: E731
        segments=SEG, key=jax.random.key(0), steps=1, progress=False), **kw))
    calls += [
        (ValueError, "segments: expected one label map", lambda: fit(
            segments=np.broadcast_to(SEG, (256, H, W)))),
        (ValueError, "segments: expected at least 2 features", lambda: fit(
            segments=np.zeros((H, W), np.int32))),
        (TypeError, "key: expected a PRNG key", lambda: fit(key=None)),
        (ValueError, "n_coalitions: expected an even number", lambda: fit(n_coalitions=7)),
        (ValueError, r"batch: expected an int >= 1", lambda: fit(batch=0)),
        (ValueError, "baseline: expected a scalar", lambda: fit(
            baseline=np.zeros((256, H, W, 1), np.float32))),
        (ValueError, "target_error: expected a validation set", lambda: fit(target_error=0.1)),
        (ValueError, r"validation values: expected reference Shapley values \(8, 4\)",
         lambda: fit(validation=(X_VAL, 0, np.zeros((8, 3), np.float32)))),
        (ValueError, "validation: expected images shaped like x_train", lambda: fit(
            validation=np.zeros((2, 8, 8, 1), np.float32))),
        (TypeError, "features: expected a tuple", lambda: fit(features=16)),
        (TypeError, "learning_rate: expected a real number", lambda: fit(learning_rate="1")),
        (TypeError, "progress: expected True, False or 'auto'", lambda: fit(progress="yes")),
        (TypeError, "x_train: expected a floating-point array", lambda: jx.fit_amortised(
            MODEL, X_TRAIN.astype(np.int32), SEG, key=0)),
    ]
    for cls, msg, call in calls:
        with testing.count_compiles() as c, pytest.raises(cls, match=msg):
            call()
        assert c["n"] == 0, msg


def test_the_pipeline_streams_it_and_equals_direct_calls(fitted):
    import hashlib

    from jaxplain.pipeline import shards

    data = X[200:220]  # 20 images in batches of 8: the last one is padded

    def stream(explainer):
        parts = list(jx.explain_dataset(jx.amortised_shap, MODEL, data, batch_size=8,
                                        target="predicted", explainer=explainer,
                                        progress=False))
        return jax.tree.map(lambda *a: np.concatenate(a), *parts)

    got = stream(fitted.explainer)
    direct = jx.amortised_shap(MODEL, data, target="predicted", explainer=fitted.explainer)
    np.testing.assert_allclose(got.values, np.asarray(direct.values), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.gap, np.asarray(direct.gap), atol=1e-5)
    assert got.n_evals.tolist() == [2] * 20
    # another explainer of the same architecture: its own values (its weights are traced
    # arguments of the cached runner, not constants of it), and nothing compiles again
    other = jx.fit_amortised(MODEL, X_TRAIN, SEG, key=jax.random.key(1), steps=0,
                             progress=False, **SETTINGS).explainer
    with testing.count_compiles() as c:
        again = stream(other)
    assert c["n"] == 0
    want = jx.amortised_shap(MODEL, data, target="predicted", explainer=other).values
    np.testing.assert_allclose(again.values, np.asarray(want), rtol=1e-5, atol=1e-6)
    assert not np.allclose(again.values, got.values)
    # resumable shards fingerprint the explainer by its weights, not by its repr
    digests = [shards.describe(e, hashlib.blake2b()) for e in (fitted.explainer, other)]
    assert repr(fitted.explainer) == repr(other) and digests[0] != digests[1]


@pytest.mark.slow  # compiles the reporting variant of the training program; the evaluation
# counts themselves are checked by test_short_training_reaches_the_closed_form
def test_progress_bar_counts_the_training_evaluations(monkeypatch):
    import tqdm.auto

    updates, finals = [], []

    class Recording(tqdm.auto.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

        def close(self):
            if not self.disable:
                finals.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    fit = jx.fit_amortised(MODEL, X_TRAIN, SEG, key=jax.random.key(0), steps=4, batch=2,
                           n_coalitions=2, features=(2,), hidden=4, eval_every=2,
                           validation=X_VAL, progress=True)
    # 4 steps of 2 x (2 + 2) rows and 2 validations of 8 x (2 + 2), reported by the
    # chunk loops as they ran (a bar that had to be filled at the end would show one update)
    assert fit.n_evals == 4 * 2 * 4 + 2 * 8 * 4
    assert finals == [(fit.n_evals, fit.n_evals)] and len(updates) > 2


def test_benchmark_payoff_and_table_from_a_result():
    from benchmarks import amortised_bench as ab

    rows = [{"method": f"KernelSHAP-{b}", "evals": b, "rmse": r, "images_per_s": 1000 / b}
            for b, r in ((64, 0.16), (256, 0.04), (1000, 0.01), (3000, 0.006))]
    rows.append({"method": "amortised (FastSHAP)", "evals": 2, "rmse": 0.08,
                 "images_per_s": 2000.0, "gap_max": 1e-6})
    res = dict(dataset="digits", image_shape=[8, 8, 1], d=16, accuracy=0.95, n_test=32,
               n_val=8, exact_seconds=60.0, rows=rows, forward_images_per_s=5000.0,
               validation_goal=0.012, fit=dict(steps=2000, n_evals=2_000_000, seconds=100.0,
                                               reached=False, history=((1000, 0.1),)),
               settings=dict(train_batch=32, coalitions=32, lr=3e-3, features=[32, 64],
                             hidden=256), machine=dict(cpus=2, platform="linux"))
    p = ab.payoff(res)
    assert p["speedup"] == pytest.approx(2000.0)  # 2000 vs 1 image/s
    # 100 s of training, each image saves 1 - 1/2000 s; 2e6 evaluations, 998 saved each
    assert p["images_seconds"] == pytest.approx(100 / (1 - 1 / 2000))
    assert p["images_evals"] == pytest.approx(2e6 / 998)
    # 0.08 lies halfway (in logs) between 0.16 at 64 and 0.04 at 256: sqrt(64 * 256) = 128
    assert p["equal_budget"] == pytest.approx(128.0)
    text = ab.markdown(res)
    assert "| amortised (FastSHAP) | 2 | 0.0800 | 2,000 | 2,000.0x |" in text
    assert "at about 128 model evaluations per image" in text


def test_benchmark_readme_summary_shows_each_dataset_and_the_goal():
    from benchmarks import amortised_bench as ab

    def result(k_rmse, a_rmse, a_rate):
        rows = [{"method": "KernelSHAP-1000", "evals": 1000, "rmse": k_rmse,
                 "images_per_s": 10.0},
                {"method": "amortised (FastSHAP)", "evals": 2, "rmse": a_rmse,
                 "images_per_s": a_rate}]
        return dict(rows=rows, fit=dict(seconds=10.0, n_evals=1000))

    res = {"digits": result(0.02, 0.08, 2000.0), "fashion-mnist": result(0.02, 0.019, 1500.0)}
    text = ab.readme_summary(res)
    assert "| amortised (FastSHAP) | 0.0800 | 2,000 | 0.0190 | 1,500 |" in text
    assert "digits: 200x KernelSHAP-1000's throughput at 4.00x its RMSE (not met)" in text
    assert "Fashion-MNIST: 150x KernelSHAP-1000's throughput at 0.95x its RMSE (met)" in text
    assert "(benchmarks/results/amortised_bench_fashion-mnist.md)" in text
    assert ab.readme_summary({"digits": res["digits"]}).count("Fashion") == 0
