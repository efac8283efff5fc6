"""explain_dataset and explain_to_shards: re-chunking, compile once, keys, resumable shards,
kill-and-resume, Ctrl-C, progress after a resume, cache."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.pipeline import shards as _shards
from jaxplain._core import batching
from jaxplain._core import validate as V
from jaxplain import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup():
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = np.asarray(testing.random_images(0, n=29, size=8))
    v = m.init(jax.random.key(0), x[:1])
    return jx.from_linen(m, v), x


def stack(results, field="values"):
    return np.concatenate([getattr(r, field) for r in results], axis=0)


def ragged(x, sizes):
    """Yields x in pieces of the given sizes (cycled)."""
    i, k = 0, 0
    while i < len(x):
        s = sizes[k % len(sizes)]
        yield x[i : i + s]
        i, k = i + s, k + 1


# ---- streaming ---------------------------------------------------------------------------


def test_rechunks_ragged_stream_and_matches_direct_call(setup):
    model, x = setup
    res = list(
        jx.explain_dataset(
            jx.saliency,
            model,
            ragged(x, [3, 8, 1, 5]),
            batch_size=6,
            target="predicted",
            progress=False,
        )
    )
    assert [r.values.shape[0] for r in res] == [6, 6, 6, 6, 5]
    ref = jx.saliency(model, x, target="predicted")
    np.testing.assert_allclose(stack(res), ref.values, rtol=1e-6, atol=1e-8)


def test_whole_array_with_per_example_targets(setup):
    model, x = setup
    y = np.arange(len(x)) % 3
    res = list(
        jx.explain_dataset(
            "integrated_gradients", model, x, batch_size=8, target=y, steps=4, progress=False
        )
    )
    ref = jx.integrated_gradients(model, x, target=y, steps=4)
    np.testing.assert_allclose(stack(res), ref.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stack(res, "gap"), ref.gap, rtol=1e-4, atol=1e-6)


def test_pairs_and_dicts_carry_targets(setup):
    model, x = setup
    y = (np.arange(len(x)) * 7) % 3
    pairs = [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(x), 4)]
    dicts = [{"image": x[i : i + 5], "label": y[i : i + 5]} for i in range(0, len(x), 5)]
    a = stack(jx.explain_dataset(jx.saliency, model, iter(pairs), batch_size=7, progress=False))
    b = stack(
        jx.explain_dataset(
            jx.saliency, model, dicts, batch_size=7, keys=("image", "label"), progress=False
        )
    )
    ref = jx.saliency(model, x, target=y).values
    np.testing.assert_allclose(a, ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b, ref, rtol=1e-6, atol=1e-8)


def _compiled_names(fn):
    """Names of the XLA programs compiled while running fn (JAX's compile log)."""
    names = []

    class H(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("Finished XLA compilation of "):
                names.append(msg.split(" of ", 1)[1].split(" in ")[0])

    logger = logging.getLogger("jax")
    handler = H()
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True), testing.count_compiles() as c:
            fn()
    finally:
        logger.removeHandler(handler)
    return names, c["n"]


def test_twenty_batch_stream_compiles_each_function_once(setup):
    model, x = setup
    data = np.concatenate([x] * 7)[:197]  # 20 batches of 10, the last one padded

    def run(bs):
        return list(
            jx.explain_dataset(
                jx.integrated_gradients,
                model,
                ragged(data, [13, 4]),
                batch_size=bs,
                target="predicted",
                steps=3,
                progress=False,
            )
        )

    names, n = _compiled_names(lambda: run(10))
    assert len(run(10)) == 20
    assert len(names) == n >= 1
    assert len(set(names)) == len(names), names  # no program compiled twice
    again, n2 = _compiled_names(lambda: run(10))
    assert n2 == 0 and again == []
    new_weights = jax.tree.map(lambda a: a * 1.5, model)
    _, n3 = _compiled_names(
        lambda: list(
            jx.explain_dataset(
                jx.integrated_gradients,
                new_weights,
                data,
                batch_size=10,
                target="predicted",
                steps=3,
                progress=False,
            )
        )
    )
    assert n3 == 0


def noisy(model, x, *, target, key, batch_size=None):
    """A cheap stochastic 'method' with a closed form: x + N(0, 1) noise from the key."""
    key = V.check_key(key)
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), x.shape[1:]))(
        jnp.arange(x.shape[0])
    )
    return jx.Explanation(x + noise, n_evals=jnp.full((x.shape[0],), batch_size or -1))


def test_stochastic_keys_are_per_example(setup):
    model, x = setup
    key = jax.random.key(5)
    kw = dict(target=1, key=key, progress=False)
    a = list(jx.explain_dataset(noisy, model, x, batch_size=4, **kw))
    b = list(jx.explain_dataset(noisy, model, ragged(x, [2, 9]), batch_size=7, **kw))
    np.testing.assert_array_equal(stack(a), stack(b))  # independent of batch size
    for i in (0, 13, 28):  # example i is explained alone with fold_in(key, i)
        ref = noisy(model, x[i : i + 1], target=1, key=jax.random.fold_in(key, i))
        np.testing.assert_allclose(stack(a)[i : i + 1], ref.values, rtol=1e-6, atol=1e-6)
    # each example is one lane; lanes share the eval batch budget (default_batch_size() // 4 each)
    assert set(stack(a, "n_evals").tolist()) == {batching.default_batch_size() // 4}
    c = list(jx.explain_dataset(noisy, model, x, batch_size=4, **dict(kw, key=jax.random.key(6))))
    assert not np.allclose(stack(a), stack(c))
    with jax.disable_jit():  # jit == eager
        d = list(jx.explain_dataset(noisy, model, x[:5], batch_size=4, **kw))
    np.testing.assert_allclose(stack(a)[:5], stack(d), rtol=1e-6, atol=1e-6)


def test_smoothgrad_stream_equals_per_example_calls(setup):
    model, x = setup
    key = jax.random.key(5)
    a = stack(
        jx.explain_dataset(
            jx.smoothgrad,
            model,
            x[:6],
            batch_size=3,
            target=1,
            key=key,
            n_samples=2,
            progress=False,
        )
    )
    ref = np.concatenate(
        [
            jx.smoothgrad(
                model, x[i : i + 1], target=1, key=jax.random.fold_in(key, i), n_samples=2
            ).values
            for i in range(6)
        ]
    )
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-8)


def test_any_method_and_bare_array_results(setup):
    model, x = setup

    def squared(model, x, *, target):
        return (x**2) * target

    res = list(jx.explain_dataset(squared, model, x, batch_size=10, target=2, progress=False))
    np.testing.assert_allclose(stack(res), 2 * x**2, rtol=1e-6)

    def concrete_only(model, x, *, target):  # needs concrete inputs: run eagerly
        return jx.Explanation(np.asarray(x) * float(np.asarray(x).max() > -1))

    res = list(jx.explain_dataset(concrete_only, model, x, batch_size=10, target=0, progress=False))
    np.testing.assert_allclose(stack(res), x)


def test_generator_errors_propagate_and_early_stop_does_not_hang(setup):
    model, x = setup

    def broken():
        yield x[:4]
        raise KeyError("loader broke")

    with pytest.raises(KeyError, match="loader broke"):
        list(
            jx.explain_dataset(jx.saliency, model, broken(), batch_size=2, target=0, progress=False)
        )

    def endless():
        while True:
            yield x[:3]

    it = jx.explain_dataset(jx.saliency, model, endless(), batch_size=3, target=0, progress=False)
    first = [next(it) for _ in range(3)]
    it.close()
    assert len(first) == 3


def test_progress_bar_reports_images(setup, capsys):
    model, x = setup
    list(jx.explain_dataset(jx.saliency, model, x, batch_size=10, target=0, progress=True))
    err = capsys.readouterr().err
    assert "img/s" in err and "29/29" in err


# ---- NaN policy and bad arguments --------------------------------------------------------


def test_nan_policy(setup):
    model, x = setup
    bad = x.copy()
    bad[11, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"batches \(item 0\).*finite.*rows \[11\]"):
        list(jx.explain_dataset(jx.saliency, model, bad, batch_size=29, target=0, progress=False))
    with pytest.warns(RuntimeWarning, match="finite"):
        list(
            jx.explain_dataset(
                jx.saliency, model, bad, batch_size=29, target=0, progress=False, nan_policy="warn"
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = list(
            jx.explain_dataset(
                jx.saliency,
                model,
                bad,
                batch_size=29,
                target=0,
                progress=False,
                nan_policy="ignore",
            )
        )
    assert res[0].values.shape == x.shape  # explained anyway

    def nan_model(x):  # finite inputs, NaN outputs where the first pixel is < 0.5
        return jnp.sqrt(x[:, 0, 0, 0] - 0.5)

    with pytest.raises(ValueError, match=r"method: returned NaN/inf .* batch 0"):
        list(
            jx.explain_dataset(jx.saliency, nan_model, x, batch_size=8, target=None, progress=False)
        )


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=2.5), TypeError, "batch_size"),
        (dict(batch_size=True), TypeError, "batch_size"),
        (dict(batch_size=4, method=3), TypeError, "method"),
        (dict(batch_size=4, method="no_such_method"), ValueError, "method"),
        (dict(batch_size=4, nan_policy="skip"), ValueError, "nan_policy"),
        (dict(batch_size=4, prefetch=0), ValueError, "prefetch"),
        (dict(batch_size=4, keys="x"), TypeError, "keys"),
        (dict(batch_size=4, out="results"), TypeError, "out: .*explain_to_shards"),
        (dict(batch_size=4, devices="cpu"), TypeError, "devices"),
        (dict(batch_size=4, devices=[]), TypeError, "devices"),
        (dict(batch_size=4, mesh="m"), TypeError, "mesh"),
        (dict(batch_size=4, mesh=jax.make_mesh((1,), ("data",))), ValueError, "mesh"),
        (
            dict(batch_size=4, mesh=jax.make_mesh((1,), ("batch",)), devices=jax.devices()),
            ValueError,
            "mesh, devices",
        ),
        (dict(batch_size=4, key="k"), TypeError, "key"),
        (dict(batch_size=4, model=3), TypeError, "model"),
        (dict(batch_size=4, batches=None), TypeError, "batches"),
        (dict(batch_size=4, batches=5), TypeError, "batches"),
        (dict(batch_size=4, batches=np.ones(5, np.float32)), ValueError, "batches"),
        (dict(batch_size=4, target=np.zeros(3, np.int32)), ValueError, "target"),
        (dict(batch_size=4, eval_batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=4, eval_batch_size=None, x=1), TypeError, "x"),
    ],
)
def test_bad_arguments_fail_before_running(setup, kwargs, exc, match):
    model, x = setup
    args = dict(method=jx.saliency, model=model, batches=x, target=0, progress=False)
    args.update(kwargs)
    method, model_, batches = args.pop("method"), args.pop("model"), args.pop("batches")
    with pytest.raises(exc, match=match):
        r = jx.explain_dataset(method, model_, batches, **args)
        list(r)


@pytest.mark.parametrize(
    "items, exc, match",
    [
        (
            [np.ones((2, 8, 8, 3), np.float32), np.ones((2, 8, 8, 1), np.float32)],
            ValueError,
            r"item 1",
        ),
        ([np.ones((2, 8, 8, 3), np.uint8)], TypeError, "floating"),
        ([np.ones((0, 8, 8, 3), np.float32)], ValueError, "non-empty"),
        ([np.ones((8,), np.float32)], ValueError, "at least 2 dims"),
        (["abc"], TypeError, "item 0"),
        ([[[1.0], [1.0, 2.0]]], TypeError, "item 0"),
        ([(np.ones((2, 8, 8, 3), np.float32), np.array([0, 3]))], ValueError, r"\[0, 3\)"),
        ([(np.ones((2, 8, 8, 3), np.float32), np.array([0.0, 1.0]))], TypeError, "integer"),
        (
            [(np.ones((2, 8, 8, 3), np.float32), np.array([0, 1, 2]))],
            ValueError,
            "one target per example",
        ),
        (
            [
                (np.ones((2, 8, 8, 3), np.float32), np.array([0, 1])),
                np.ones((2, 8, 8, 3), np.float32),
            ],
            ValueError,
            "targets in every item",
        ),
        ([{"img": np.ones((2, 8, 8, 3), np.float32)}], ValueError, "key 'x'"),
        ([np.full((2, 8, 8, 3), 1e39)], ValueError, "finite"),
    ],
)
def test_bad_items_name_the_item(setup, items, exc, match):
    model, _ = setup
    with pytest.raises(exc, match=match):
        list(
            jx.explain_dataset(
                jx.saliency,
                model,
                iter(items),
                batch_size=2,
                progress=False,
                **({} if isinstance(items[0], tuple) else {"target": 0}),
            )
        )


def test_unknown_method_arguments_fail_at_call_time(setup):
    model, x = setup
    with pytest.raises(TypeError, match="stepz"):
        jx.explain_dataset(jx.integrated_gradients, model, x, batch_size=4, target=0, stepz=3)


def test_target_twice_is_an_error(setup):
    model, x = setup
    with pytest.raises(ValueError, match="target"):
        list(
            jx.explain_dataset(
                jx.saliency,
                model,
                [(x[:2], np.array([0, 1]))],
                batch_size=2,
                target=0,
                progress=False,
            )
        )


# ---- resumable output ----------------------------------------------------------------------


def test_out_writes_shards_resumes_and_loads(setup, tmp_path):
    model, x = setup
    calls = []

    def counted(model, x, **kw):
        calls.append(1)
        return jx.saliency(model, x, **kw)

    out = tmp_path / "run"
    summary = jx.explain_to_shards(
        counted, model, x, out=out, batch_size=8, target="predicted", progress=False
    )
    assert isinstance(summary, jx.RunSummary)
    assert (summary.n_examples, summary.n_batches, summary.n_computed, summary.n_skipped) == (
        29,
        4,
        4,
        0,
    )
    assert sorted(os.listdir(out)) == ["manifest.json"] + [f"shard_{i:06d}.npz" for i in range(4)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_examples"] == 29
    loaded = jx.load_results(out)
    ref = jx.saliency(model, x, target="predicted")
    np.testing.assert_allclose(loaded.values, ref.values, rtol=1e-6, atol=1e-8)
    assert loaded.n_evals.shape == (29,)
    n_traced = len(calls)
    again = jx.explain_to_shards(
        counted, model, x, out=out, batch_size=8, target="predicted", progress=False
    )
    assert (again.n_computed, again.n_skipped) == (0, 4) and len(calls) == n_traced
    # a lost shard is recomputed, the others are skipped
    os.remove(out / "shard_000002.npz")
    again = jx.explain_to_shards(
        counted, model, x, out=out, batch_size=8, target="predicted", progress=False
    )
    assert (again.n_computed, again.n_skipped) == (1, 3)
    np.testing.assert_array_equal(jx.load_results(out).values, loaded.values)


def test_out_rejects_other_runs_and_changed_data(setup, tmp_path):
    model, x = setup
    out = tmp_path / "run"
    jx.explain_to_shards(jx.saliency, model, x, out=out, batch_size=8, target=0, progress=False)
    for kw in (dict(target=1), dict(batch_size=9), dict(absolute=True)):
        args = dict(batch_size=8, target=0, out=out, progress=False)
        args.update(kw)
        with pytest.raises(ValueError, match="out: .*other arguments"):
            jx.explain_to_shards(jx.saliency, model, x, **args)
    other_weights = jax.tree.map(lambda a: a + 1.0, model)
    with pytest.raises(ValueError, match="out: .*other arguments"):
        jx.explain_to_shards(
            jx.saliency, other_weights, x, out=out, batch_size=8, target=0, progress=False
        )
    with pytest.raises(ValueError, match="batches: batch 0 differs"):
        jx.explain_to_shards(
            jx.saliency, model, x[::-1], out=out, batch_size=8, target=0, progress=False
        )
    with pytest.raises(ValueError, match="beyond"):
        jx.explain_to_shards(
            jx.saliency, model, x[:16], out=out, batch_size=8, target=0, progress=False
        )
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "shard_000000.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="no manifest"):
        jx.explain_to_shards(
            jx.saliency, model, x, out=stray, batch_size=8, target=0, progress=False
        )


def test_load_results_partial_and_errors(setup, tmp_path):
    model, x = setup
    out = tmp_path / "run"
    it = jx.explain_dataset(jx.saliency, model, x, batch_size=8, target=0, progress=False)
    first = next(it)
    it.close()
    with pytest.raises(FileNotFoundError, match="path"):
        jx.load_results(tmp_path / "nothing")
    folder = _shards.ShardFolder(str(out), "f", {})
    folder.write(0, 0, {"values": first.values}, ["values"], "d")
    folder.write(2, 16, {"values": first.values}, ["values"], "d")
    with pytest.raises(ValueError, match="not complete"):
        jx.load_results(out)
    part = jx.load_results(out, allow_partial=True)  # the leading consecutive shards only
    assert part.values.shape == (8, 8, 8, 3)


def test_both_functions_take_the_settings_of_one_run_config():
    import dataclasses
    import inspect

    from jaxplain.pipeline.config import RunConfig

    stream = inspect.signature(jx.explain_dataset).parameters
    shards = dict(inspect.signature(jx.explain_to_shards).parameters)
    assert shards.pop("out").default is inspect.Parameter.empty  # required
    assert [(p.name, p.default) for p in stream.values()] == [
        (p.name, p.default) for p in shards.values()
    ]
    settings = {f.name for f in dataclasses.fields(RunConfig)} | {"devices"}
    keyword_only = {n for n, p in stream.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == settings
    config = RunConfig(batch_size=5, keys=["a", "b"])
    assert (config.keys, config.rows, config.mesh) == (("a", "b"), 5, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 6


def test_explain_to_shards_needs_a_folder(setup, tmp_path):
    model, x = setup
    for out in (3, None):
        with pytest.raises(TypeError, match="out: expected a folder path"):
            jx.explain_to_shards(jx.saliency, model, x, out=out, batch_size=4, target=0)
    with pytest.raises(ValueError, match="batch_size"):  # the settings shared with explain_dataset
        jx.explain_to_shards(jx.saliency, model, x, out=tmp_path / "r", batch_size=0, target=0)
    assert not (tmp_path / "r").exists()  # checked before the folder is made


def test_ctrl_c_says_what_is_saved_and_the_same_call_resumes(setup, tmp_path, capsys):
    model, x = setup
    out = tmp_path / "run"

    def data(stop):
        for i in range(0, 24, 8):
            if i == 16 and stop:
                raise KeyboardInterrupt  # Ctrl-C while the loader reads the third batch
            yield x[i : i + 8]

    args = dict(out=out, batch_size=8, target=0, progress=False)  # the shape of the tests above
    with pytest.raises(KeyboardInterrupt) as info:
        jx.explain_to_shards(jx.saliency, model, data(True), **args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one line, the batch already running is saved too
    assert "interrupted: 2 batches are saved in" in lines[0] and str(out) in lines[0]
    assert "Run the same call again to resume" in lines[0]
    assert sorted(os.listdir(out)) == ["manifest.json", "shard_000000.npz", "shard_000001.npz"]
    frames = [f for f in traceback.extract_tb(info.tb) if "jaxplain" in f.filename]
    assert [f.name for f in frames] == ["explain_to_shards"]  # not the pipeline's inner frames
    assert info.value.__suppress_context__
    with pytest.raises(ValueError, match="not complete"):
        jx.load_results(out)
    again = jx.explain_to_shards(jx.saliency, model, data(False), **args)
    assert (again.n_skipped, again.n_computed, again.n_examples) == (2, 1, 24)
    ref = jx.saliency(model, x[:24], target=0).values
    np.testing.assert_allclose(jx.load_results(out).values, ref, rtol=1e-6, atol=1e-8)


@pytest.fixture
def progress_bars(monkeypatch):
    """The `Progress` objects the pipeline makes, with the count each started at."""
    from jaxplain.pipeline import progress as P, run as R

    made = []

    class Recorded(P.Progress):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.started_at = self.initial
            made.append(self)

    monkeypatch.setattr(R, "Progress", Recorded)
    return made


def test_resumed_progress_starts_at_the_saved_count_and_rates_computed_work(
    setup, tmp_path, capsys, progress_bars
):
    model, x = setup  # 29 examples: batches of 8, 8, 8 and 5
    out = tmp_path / "run"
    args = dict(out=out, batch_size=8, target=0)
    jx.explain_to_shards(jx.saliency, model, x, progress=False, **args)
    os.remove(out / "shard_000001.npz")
    capsys.readouterr()
    summary = jx.explain_to_shards(jx.saliency, model, x, progress=True, **args)
    p = progress_bars[-1]
    assert (p.started_at, p.n_computed, p.n) == (8 + 8 + 5, 8, 29)
    err = capsys.readouterr().err
    assert "| 21/29" in err and "| 0/29" not in err and "29/29" in err  # no jump from 0
    # images/second: the 8 computed examples over the time spent computing, not 29 / wall time
    assert summary.images_per_second == pytest.approx(8 / p.seconds)
    assert p.seconds <= summary.seconds and p.bar.format_dict["rate"] == p.rate
    # a stream of unknown length: saved batches are counted as full until the last one shows
    os.remove(out / "shard_000001.npz")
    jx.explain_to_shards(jx.saliency, model, ragged(x, [10]), progress=False, **args)
    p = progress_bars[-1]
    assert (p.started_at, p.initial, p.n_computed, p.n) == (24, 21, 8, 29)


KILL_DEFS = textwrap.dedent("""
    import sys, time, jax, jax.numpy as jnp, numpy as np
    import jaxplain as jx
    from jaxplain import testing

    def noisy_saliency(model, x, *, target, key):  # stochastic: one gradient at x + noise
        x = x + 0.1 * jax.random.normal(key, x.shape)
        return jx.saliency(model, x, target=target)

    def run(out, delay):
        x = np.asarray(testing.random_images(0, n=60, size=8))
        model = testing.linear_model(jnp.linspace(-1.0, 1.0, 8 * 8 * 3 * 2).reshape(8, 8, 3, 2))

        def slow():
            for i in range(0, len(x), 5):
                time.sleep(delay)
                yield x[i:i + 5] * (1 + 0.1 * np.sin(i))

        jx.explain_to_shards(noisy_saliency, model, slow(), out=out, batch_size=5,
                             target="predicted", key=jax.random.key(3), progress=False)
""")
KILL_SCRIPT = KILL_DEFS + 'run(sys.argv[1], float(sys.argv[2]))\nprint("done")\n'


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "0.3"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        shards = [n for n in os.listdir(out) if n.endswith(".npz")] if out.exists() else []
        if len(shards) >= 3:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len([n for n in os.listdir(out) if n.endswith(".npz")])
    assert 3 <= n_before < 12, n_before
    with pytest.raises(ValueError, match="not complete"):
        jx.load_results(out)
    done = subprocess.run(
        [sys.executable, str(script), str(out), "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stderr
    full = tmp_path / "full"  # an uninterrupted run (in this process)
    defs = {}
    exec(KILL_DEFS, defs)
    defs["run"](str(full), 0.0)
    names = sorted(os.listdir(out))
    assert names == ["manifest.json"] + [f"shard_{i:06d}.npz" for i in range(12)]  # no tmp files
    starts = [int(np.load(out / n)["_start"]) for n in names[1:]]
    assert starts == list(range(0, 60, 5))  # no missing or duplicate shard
    a, b = jx.load_results(out), jx.load_results(full)
    assert a.values.shape == (60, 8, 8, 3)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.n_evals, b.n_evals)


# ---- compilation cache ---------------------------------------------------------------------


CACHE_SCRIPT = textwrap.dedent("""
    import sys, json, jax, numpy as np
    import jaxplain as jx
    from jaxplain import testing
    from jax._src import monitoring
    hits = []
    monitoring.register_event_listener(
        lambda e, **kw: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None)
    jx.enable_compilation_cache(sys.argv[1])
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = np.asarray(testing.random_images(0, n=6, size=8))
    model = jx.from_linen(m, m.init(jax.random.key(0), x[:1]))
    with testing.count_compiles() as c:
        r = list(jx.explain_dataset(jx.integrated_gradients, model, x, batch_size=3, target=0, steps=4,
                                    progress=False))
    print(json.dumps({"hits": len(hits), "seconds": c["seconds"]}))
""")


def test_persistent_compilation_cache_is_used_by_a_second_process(tmp_path):
    script = tmp_path / "cache.py"
    script.write_text(CACHE_SCRIPT)
    cache = tmp_path / "cache"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    runs = []
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, str(script), str(cache)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert runs[0]["hits"] == 0 and os.listdir(cache)
    assert runs[1]["hits"] >= 1


def test_enable_compilation_cache_validates(tmp_path):
    with pytest.raises(TypeError, match="path"):
        jx.enable_compilation_cache(3)
    with pytest.raises(ValueError, match="min_compile_time_secs"):
        jx.enable_compilation_cache(tmp_path, min_compile_time_secs=-1.0)
