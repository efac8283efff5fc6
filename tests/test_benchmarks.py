"""The benchmark harness itself (tiny settings; no timing assertions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds benchmarks/
from benchmarks import cases, execute, extras, limits, readme, report, run, tables, twins
from benchmarks import record as R
from benchmarks import harness as H

# ---- twins ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    spec = twins.Spec("small", "avg")
    module, variables = twins.flax_model(spec)
    return spec, module, variables, twins.images(2, spec.size)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_twins_agree_and_mismatch_is_refused(pool):
    pytest.importorskip("torch")
    spec = twins.Spec("small", pool)
    module, variables = twins.flax_model(spec)
    x = twins.images(2, spec.size)
    f = lambda z: module.apply(variables, z)
    assert twins.check_twins(f, twins.torch_twin(spec, variables), x) < 1e-5
    # One changed conv weight in the twin: refused.
    p = variables["params"]
    bad = {
        "params": {
            **p,
            "conv1": {**p["conv1"], "kernel": p["conv1"]["kernel"].at[0, 0, 0, 0].add(0.5)},
        }
    }
    with pytest.raises(twins.TwinMismatch, match="refusing to time"):
        twins.check_twins(f, twins.torch_twin(spec, bad), x)
    # Kernels copied without the HWIO -> OIHW transpose of the spatial axes: refused.
    flipped = {"params": {**p, "conv0": {**p["conv0"], "kernel": p["conv0"]["kernel"][::-1, ::-1]}}}
    with pytest.raises(twins.TwinMismatch):
        twins.check_twins(f, twins.torch_twin(spec, flipped), x)


def test_flax_model_split_matches_call(small):
    spec, module, variables, x = small
    a = module.apply(variables, x, method=twins.BenchCNN.last_conv)
    assert a.shape == (2, 8, 8, 128)
    np.testing.assert_allclose(
        module.apply(variables, a, method=twins.BenchCNN.head_from),
        module.apply(variables, x),
        rtol=1e-6,
        atol=1e-6,
    )


# ---- limit and arithmetic -------------------------------------------------------------


def test_limit_forward_backward_sums_per_example_gradients():
    w = jax.random.normal(jax.random.key(0), (4, 4, 3, 5))
    model = jx.testing.linear_model(w)
    inputs = jax.random.uniform(jax.random.key(1), (6, 4, 4, 3))
    t = jnp.array([1, 1, 1, 4, 4, 4])
    g = limits.limit_forward_backward(model, inputs, t, n_out=2)
    np.testing.assert_allclose(g[0], 3 * w[..., 1], rtol=1e-5)
    np.testing.assert_allclose(g[1], 3 * w[..., 4], rtol=1e-5)
    np.testing.assert_allclose(
        limits.limit_forward(model, inputs, t),
        jnp.take_along_axis(model(inputs), t[:, None], 1)[:, 0],
        rtol=1e-6,
    )


def test_ratio_arithmetic():
    jt, lt = {"median_s": 2.0}, {"median_s": 1.6}
    peers = {
        "a.X[k=1 (default)]": {"median_s": 6.0},
        "a.X[k=8]": {"median_s": 3.0},
        "a.X[k=64]": {"median_s": 5.0},
        "b.Y": {"median_s": 1.0},
        "c.Z[k=2]": {"error": "boom"},
    }
    ratios, best = H.compute_ratios(jt, lt, peers)
    assert ratios["jaxplain/limit"] == pytest.approx(1.25)
    assert best == {"a.X": "a.X[k=8]", "b.Y": "b.Y"}
    assert ratios["a.X:best/jaxplain"] == pytest.approx(1.5)
    assert ratios["a.X:default/jaxplain"] == pytest.approx(3.0)
    assert ratios["b.Y:best/jaxplain"] == pytest.approx(0.5)
    assert ratios["b.Y:default/jaxplain"] == pytest.approx(0.5)
    assert not any(k.startswith("c.Z") for k in ratios)
    assert H.ratio(None, lt) is None and H.ratio(jt, {"error": "x"}) is None


class FakeClock:
    """A virtual `time` for the harness: contenders "take" exactly the seconds they sleep.

    Real sleeps overshoot by milliseconds on a loaded CI worker, which flipped these
    tests' round counts and best settings; the harness only reads `perf_counter`.
    """

    def __init__(self):
        self.t = 0.0
        self.events = []

    def perf_counter(self):
        return self.t

    def sleep(self, s):  # the harness's pauses
        self.events.append("pause")
        self.t += s

    def advance(self, s):
        self.t += s

    def work(self, name, s):
        """A contender's call: it is logged and takes `s` seconds."""
        def f():
            self.events.append(name)
            self.t += s

        return f


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(H, "time", c)
    return c


def test_measure_gives_cheap_contenders_more_rounds(monkeypatch, clock):
    monkeypatch.setattr(H, "SETTLE_S", 0.0)
    monkeypatch.setattr(H, "MAX_ROUNDS", 7)
    monkeypatch.setattr(H, "PEER_MAX_ROUNDS", 6)
    out = H.measure(
        {
            "jaxplain": clock.work("j", 0.001),
            "limit": clock.work("l", 0.02),
            "peer": clock.work("p", 0.001),
            "slow_peer": clock.work("s", 0.05),
            "over_budget": clock.work("o", 0.02),
        },
        repeats=4,
        keep=("jaxplain", "limit"),
        min_timed_s=0.11,
        budget_s=0.07,
    )
    assert len(out["jaxplain"]["times_s"]) == 7  # cheap: capped at MAX_ROUNDS
    assert len(out["limit"]["times_s"]) == 6  # ceil(min_timed_s / 0.02 s)
    assert len(out["peer"]["times_s"]) == 6  # peers too, up to their own cap
    assert len(out["slow_peer"]["times_s"]) == 1  # the budget still caps peers
    assert len(out["over_budget"]["times_s"]) == 3  # 0.07 s of 0.02 s calls, not 6
    capped = H.measure({"jaxplain": clock.work("j", 0.001), "off": clock.work("o", 0.05),
                        "off_cheap": clock.work("c", 0.001)}, repeats=4,
                       keep=("jaxplain", "off", "off_cheap"), min_timed_s=0.11, budget_s=0.07,
                       capped=("off", "off_cheap"))
    assert len(capped["off"]["times_s"]) == H.CAPPED_MIN_ROUNDS  # in keep, yet over budget
    assert len(capped["off_cheap"]["times_s"]) == 7  # within budget: like any keep contender
    exact = H.measure({"jaxplain": clock.work("j", 0.001), "peer": clock.work("p", 0.001)},
                      repeats=4)
    assert [len(v["times_s"]) for v in exact.values()] == [4, 4]  # min_timed_s=0: exactly


def test_measure_blocks_rewarm_and_rotate(monkeypatch, clock):
    """Keep contenders interleave in one block, peers get blocks of their own, every
    block starts with a pause and re-warm calls, and the passes rotate the blocks."""
    monkeypatch.setattr(H, "REWARM_S", 0.005)  # one untimed call of each per block

    def boom():
        raise RuntimeError("peer broke")

    contenders = {k: clock.work(k, 0.01) for k in ("a", "b", "p")}
    out = H.measure({**contenders, "bad": boom}, repeats=3, keep=("a", "b"))
    assert "error" in out["bad"] and "peer broke" in out["bad"]["error"]
    for k in "abp":
        assert out[k]["times_s"] == pytest.approx([0.01] * 3), k
        assert set(R.TIMING_FIELDS[:5]) <= set(out[k])
        assert out[k]["median_s"] == pytest.approx(0.01)
    warmup = ["a", "a", "b", "b", "p", "p"]  # first call and warm call each
    ab, p = ["pause", "a", "b"], ["pause", "p"]  # a block's pause and re-warm
    assert clock.events == warmup + (
        ab + ["a", "b"] + p + ["p"]  # pass 1
        + p + ["p"] + ab + ["b", "a"]  # pass 2: blocks rotated; rounds rotate in the block
        + ab + ["a", "b"] + p + ["p"]  # pass 3
    )


def test_measure_rewarms_only_cheap_contenders(clock):
    out = H.measure({"jaxplain": clock.work("j", 0.02), "slow": clock.work("s", 0.5)},
                    repeats=1, keep=("jaxplain",))
    after_warmup = clock.events[4:]
    # 0.05 s of re-warm is three 20 ms calls; the 0.5 s call is never run untimed
    assert after_warmup == ["pause", "j", "j", "j", "j", "pause", "s"]
    assert len(out["jaxplain"]["times_s"]) == len(out["slow"]["times_s"]) == 1
    # nor before a slow suspect's second look: first, warm and re-check calls only
    clock.events.clear()
    H.measure({"jaxplain": clock.work("j", 0.02), "p[n=1 (default)]": clock.work("d", 0.35),
               "p[n=8]": clock.work("s", 0.5)}, repeats=1, keep=("jaxplain",))
    assert clock.events.count("s") == 3


def test_measure_screens_out_slow_sweep_settings_but_keeps_defaults(monkeypatch, clock):
    monkeypatch.setattr(H, "SETTLE_S", 0.0)
    monkeypatch.setattr(H, "REWARM_S", 0.0)  # count only first, warm, re-check and timed calls
    calls = {}

    def peer(name, s):
        def f():
            calls[name] = calls.get(name, 0) + 1
            clock.advance(s)

        return f

    def spiky(name, s, spike):
        def f():  # its warm-up call (the second) is slow, every other call fast
            calls[name] = calls.get(name, 0) + 1
            clock.advance(spike if calls[name] == 2 else s)

        return f

    names = {
        "p[n=1 (default)]": 0.06,  # slowest, but the default: always timed
        "p[n=8]": 0.03,
        "p[n=64]": 0.033,  # within SCREEN of the fastest: timed
        "p[n=512]": 0.09,  # 3x the fastest warm call: screened out
        "q": 0.03,  # another group, alone in it
    }
    out = H.measure(
        {
            "jaxplain": clock.work("j", 0.01),  # a ratio needs a nonzero time
            **{k: peer(k, v) for k, v in names.items()},
            "p[n=32]": spiky("p[n=32]", 0.032, 0.15),  # one slow warm call: kept
        },
        repeats=3,
    )
    assert "screened_out" in out["p[n=512]"] and "median_s" not in out["p[n=512]"]
    assert calls["p[n=512]"] == 3 and out["p[n=512]"]["times_s"] == []  # first + 2 warm only
    assert out["p[n=512]"]["warm_s"] == pytest.approx(0.09)
    for k in ("p[n=1 (default)]", "p[n=8]", "p[n=64]", "p[n=32]", "q"):
        assert "screened_out" not in out[k] and len(out[k]["times_s"]) == 3, k
    assert calls["p[n=8]"] == 5 and calls["p[n=32]"] == 6  # only the suspect is called again
    assert out["p[n=32]"]["warm_s"] < 0.09
    name, _ = H.best_of(out, "p")
    assert name == "p[n=8]"
    ratios, best = H.compute_ratios(out["jaxplain"], out["jaxplain"], {
        k: v for k, v in out.items() if k != "jaxplain"})
    assert best["p"] == "p[n=8]" and ratios["p:default/jaxplain"] is not None


def test_header_says_which_contenders_got_extra_rounds():
    args = {"repeats": 4, "min_timed_s": 0.6, "max_rounds": 15}
    m = {"machine": {"load_avg_start": [1.0, 1.0, 1.0]}}
    new = report.header({**m, "args": {**args, "extended": "all"}})
    old = report.header({**m, "args": args})  # from before every contender was extended
    assert "every contender: more when cheap, up to 15" in new
    split = report.header({**m, "args": {**args, "extended": "all", "peer_max_rounds": 9}})
    assert "up to 15 for jaxplain and its limits, 9 for peers" in split
    assert "jaxplain and its limit: more when cheap" in old and "every contender" not in old
    exact = report.header({**m, "args": {"repeats": 4, "min_timed_s": 0.0}})
    assert "4 interleaved rounds" in exact and "more when cheap" not in exact
    blocks = report.header({**m, "args": {**args, "extended": "all", "passes": 3,
                                          "rewarm_s": 0.05}})
    assert "4 timed calls each in 3 passes of blocks" in blocks and "50 ms of untimed" in blocks
    assert "interleaved rounds" not in blocks


def test_exact_shapley_enumeration_on_a_linear_model():
    w = jax.random.normal(jax.random.key(0), (8, 8, 3, 2))
    model = jx.testing.linear_model(w, 0.3)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (1, 8, 8, 3)))
    seg = np.asarray(jx.grid_segments(8, 8, 2))
    phi = extras.exact_shapley_values(model, x, 1, seg)
    contrib = (np.asarray(w[..., 1]) * x[0]).sum(-1)
    expected = np.array([contrib[seg == j].sum() for j in range(4)])
    np.testing.assert_allclose(phi, expected, rtol=1e-4, atol=1e-5)


# ---- JSON and markdown ----------------------------------------------------------------


def _fake_result(case="integrated_gradients", jx_s=0.22, lim_s=0.2, model="small-avg"):
    jt = {"first_s": 3.0, "compile_s": 2.5, "median_s": jx_s, "min_s": jx_s, "times_s": [jx_s]}
    lt = {"first_s": 1.0, "compile_s": 0.5, "median_s": lim_s, "min_s": lim_s, "times_s": [lim_s]}
    peers = {
        "captum.IntegratedGradients[internal_batch_size=None (default)]": {"median_s": 0.66},
        "captum.IntegratedGradients[internal_batch_size=160]": {"median_s": 0.44},
        "shap.GradientExplainer[batch_size=50 (default)]": {"median_s": 0.33},
    }
    timings = {"jaxplain": jt, "limit": lt, "limit_chunked": {"median_s": 0.2 * lim_s / 0.2 * 1.1},
               "limit_dispatch": {"median_s": 0.11},
               "jaxplain_program": {"median_s": 0.19 * lim_s / 0.2},
               "jaxplain_rewrites_off": {"median_s": 1.5 * jx_s}, **peers}
    bench = cases.Bench(16, 800, {}, lambda: None, np.zeros(1), np.zeros(1))
    res = execute.collect(timings, 3.0, 2.5, 512, 800, bench)
    res["limit_dispatch"]["batch"] = 256
    return {"case": case, "method": case, "family": "gradients", "model": model, "kind": "fwdbwd",
            "n_images": 16, "n_evals": 800, "n_evals_reported": 832, "n_evals_declared": 832,
            "settings": {"steps": 50}, **res,
            "agreement": [{"check": "ig", "vs": "captum", "rel_err": 2e-6, "tol": 1e-4,
                           "pass": True}],
            "note": "", "phases_s": {"setup": 4.0, "timing": 9.0, "memory": 1.0, "agreement": 2.0}}


def test_collect_computes_every_ratio_from_one_set_of_rounds():
    res = _fake_result()
    r = res["ratios"]
    assert r["jaxplain/limit"] == pytest.approx(1.1)
    assert r["jaxplain/limit_chunked"] == pytest.approx(1.0)
    assert r["jaxplain/limit_dispatch"] == pytest.approx(2.0)
    assert r["program/limit"] == pytest.approx(0.95)
    assert r["rewrites_off/on"] == pytest.approx(1.5)
    assert res["best_peer"] == {
        "captum.IntegratedGradients": "captum.IntegratedGradients[internal_batch_size=160]",
        "shap.GradientExplainer": "shap.GradientExplainer[batch_size=50 (default)]"}
    assert res["limit_chunked"]["chunk"] == 512 and res["jaxplain"]["first_s"] == 3.0
    # one chunk holds every evaluation: the chunked limit is the one-batch program, said so
    one = execute.collect({"jaxplain": {"median_s": 2.0}, "limit": {"median_s": 1.0}}, 1.0, 0.5, 64,
                          64, cases.Bench(64, 64, {}, lambda: None, np.zeros(1), np.zeros(1)))
    assert one["limit_chunked"] == {"chunk": 64, "same_as": "limit"}
    assert one["ratios"]["jaxplain/limit_chunked"] == one["ratios"]["jaxplain/limit"] == 2.0
    assert one["ratios"]["rewrites_off/on"] is None and one["jaxplain_rewrites_off"] is None


def test_markdown_table_and_readme_section(tmp_path):
    record = R.new_record({"quick": True, "repeats": 3})
    record["results"].append(_fake_result())
    record["agreement"].extend(record["results"][0]["agreement"])
    table = report.main_table(record)
    row = table.splitlines()[2]
    assert "`integrated_gradients`" in row and "800 (fwdbwd; declared 832)" in row
    assert "**1.10×** (1.00× chunked 512, 2.00× dispatch 256, program 0.95×) | 1.50× |" in row
    assert "captum.IntegratedGradients 2.00× best (internal_batch_size=160), 3.00× default" in row
    assert "✓ 2.0e-06" in row
    path = tmp_path / "README.md"
    path.write_text(f"# x\n\nbefore\n{readme.BENCH_START}\nOLD-SECTION\n{readme.BENCH_END}\n"
                    "after\n")
    assert readme.update_readme(record, path)
    text = path.read_text()
    assert "OLD-SECTION" not in text and "before" in text and "after" in text
    # the compact row: limit, fastest peer (shap here: 0.33 s / 0.22 s), rewrites
    assert "| `integrated_gradients` | 1.10 | 1.50 shap | 1.50 |" in text
    assert "1 of 1 agreement checks pass" in text and "table.md" in text
    assert text.count(readme.BENCH_START) == 1 and text.count(readme.BENCH_END) == 1
    no_markers = tmp_path / "R2.md"
    no_markers.write_text("nothing here\n")
    assert not readme.update_readme(record, no_markers)
    assert no_markers.read_text() == "nothing here\n"


def test_readme_section_fits_its_budget_for_every_case_and_model():
    """A full run (every case on every model it runs on) keeps the README section compact."""
    record = R.new_record({"quick": False, "repeats": 4})
    record["machine"]["cpu"] = "AMD EPYC 7B13 64-Core Processor with a long marketing name"
    for c in cases.CASES:
        for arch in c.archs:
            for pool in ("avg", "max"):
                res = _fake_result(c.name, jx_s=0.123 if pool == "avg" else 0.234,
                                   model=f"{arch}-{pool}")  # two values in every cell
                res["ratios"]["rewrites_off/on"] = 1.5 if pool == "avg" else 12.25
                record["results"].append(res)
                record["agreement"] += res["agreement"] * 3
    record["no_case"] = [{"method": f"method_{i}", "family": "metrics"} for i in range(30)]
    text = readme.readme_section(record)
    assert len(text.encode()) <= readme.MAX_SECTION_BYTES, len(text.encode())
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    # one per README case on the small CNN, each named once; the rest is in table.md
    assert sorted(r.split("`")[1] for r in rows) == sorted(
        c.name for c in cases.CASES if c.name in readme.README_CASES and "small" in c.archs)
    assert set(readme.README_CASES) <= {c.name for c in cases.CASES}
    assert "30 registered methods without a benchmark case" in text


def test_write_all_json_has_every_field(tmp_path):
    record = R.new_record({"quick": True, "repeats": 1})
    record["results"].append(_fake_result())
    record["sample_efficiency"] = [
        {
            "estimator": "jaxplain.shapley_sampling",
            "budget": 90,
            "n_evals": 90,
            "rmse": 0.1,
            "rmse_rel": 0.2,
            "seeds": 3,
        },
        {
            "estimator": "captum.ShapleyValueSampling",
            "budget": 90,
            "n_evals": 85,
            "rmse": 0.2,
            "rmse_rel": 0.4,
            "seeds": 3,
        },
    ]
    record["scaling"] = [
        {
            "sweep": "steps",
            "method": "integrated_gradients",
            "value": s,
            "n_evals": 4 * s,
            "median_s": 0.01 * s,
            "xla_mb": 12.0,
        }
        for s in (25, 50)
    ]
    paths = report.write_all(record, tmp_path)
    names = {p.name for p in paths}
    assert {"latest.json", "table.md", "ratios.png", "scaling.png"} <= names
    data = json.loads((tmp_path / "latest.json").read_text())
    assert {
        "schema",
        "args",
        "machine",
        "peers_available",
        "twins",
        "results",
        "agreement",
        "sample_efficiency",
        "scaling",
        "skipped",
        "wall_s",
    } <= set(data)
    assert {"date_utc", "cpu", "cpus_usable", "versions", "jax_backend"} <= set(data["machine"])
    assert set(R.RESULT_FIELDS) <= set(data["results"][0])
    assert tables.efficiency_ratios(data)[
        ("jaxplain.shapley_sampling", "captum.ShapleyValueSampling", 90)
    ] == pytest.approx(0.5)
    assert "0.50×" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_main_end_to_end_tiny(tmp_path, monkeypatch):
    """`main` with one cheap case and no peers writes a complete record to `--out` only."""
    # The program is timed only when its first run is under a wall-clock threshold; on a
    # loaded CI worker saliency's first run took over 50 ms and the record had no program
    # row. Lift the threshold so the record's shape does not depend on the machine's load.
    monkeypatch.setattr(execute, "PROGRAM_TIMED_BELOW_S", float("inf"))
    for peer in ("torch", "captum", "shap", "lime", "quantus"):  # as if not installed
        monkeypatch.setitem(sys.modules, peer, None)
    published = tmp_path / "published"
    rc = run.main(["--quick", "--only", "saliency", "--no-peers", "--repeats", "1", "--out",
                   str(tmp_path / "out"), "--results-dir", str(published)])
    assert rc == 0 and not published.exists()  # nothing published without --publish
    data = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert data["args"]["only"] == ["saliency"]
    assert data["twins"]["small-avg"]["verified"] is False  # --no-peers
    dev = data["device"]
    assert dev["platform"] == jax.devices()[0].platform and dev["device_kind"]
    assert "memory_stats" in dev and "memory_stats_end" in dev and dev["torch"] is None
    (res,) = data["results"]
    assert set(R.RESULT_FIELDS) <= set(res)
    assert res["n_evals"] == 16 and res["peers"] == {}
    assert res["n_evals_declared"] == 16  # the registry's evals: one per example
    assert 0 < res["wall_s"] < data["wall_s"]
    phases = res["phases_s"]
    assert set(phases) == {"setup", "timing", "memory", "agreement"}
    assert min(phases.values()) >= 0 and sum(phases.values()) <= res["wall_s"]
    for side in ("jaxplain", "limit", "jaxplain_program", "jaxplain_rewrites_off"):
        assert res[side]["median_s"] > 0 and len(res[side]["times_s"]) == 1
    r = res["ratios"]
    assert r["jaxplain/limit"] == pytest.approx(
        res["jaxplain"]["median_s"] / res["limit"]["median_s"])
    assert r["program/limit"] == pytest.approx(
        res["jaxplain_program"]["median_s"] / res["limit"]["median_s"])
    assert r["rewrites_off/on"] == pytest.approx(
        res["jaxplain_rewrites_off"]["median_s"] / res["jaxplain"]["median_s"])
    assert res["limit_chunked"] == {"chunk": dev["default_batch_size"], "same_as": "limit"}
    (same,) = res["agreement"]  # no peers: jaxplain's values with the rewrites off vs on
    assert same["check"] == "saliency rewrites off == on" and same["pass"], same
    assert res["jaxplain"]["xla_mb"] > 0  # from the program's own compile
    covered = {c.name for c in cases.CASES}
    assert {d["method"] for d in data["no_case"]} == {e.name for e in registry.entries()} - covered
    assert "`deconvnet`" in (tmp_path / "out" / "table.md").read_text()
    assert run.main(["--only", "no_such_method", "--out", str(tmp_path)]) == 2


def test_max_minutes_lists_what_it_did_not_start(tmp_path):
    assert run.main(["--quick", "--no-peers", "--max-minutes", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    quick = [c.name for c in cases.CASES if c.quick] + ["sample_efficiency"]
    assert data["results"] == [] and [s["case"] for s in data["skipped"]] == quick
    assert all("time budget (--max-minutes 0) reached" == s["reason"] for s in data["skipped"])


def test_cases_are_keyed_by_the_registry():
    matched, uncovered = cases.plan()
    assert [c.name for c, _ in matched] == [c.name for c in cases.CASES]
    assert all(e is registry.get(c.name) for c, e in matched)
    names = {e.name for e in uncovered}
    assert "deconvnet" in names and "saliency" not in names
    bogus = cases.Case("not_a_method", "fwd", lambda ctx, fn: None)
    with pytest.raises(ValueError, match="registered methods.*not_a_method"):
        cases.plan(cases.CASES + (bogus,))
    with pytest.raises(ValueError, match="one case per method"):
        cases.plan(cases.CASES + (cases.CASES[0],))


def test_an_unregistered_case_stops_the_run(monkeypatch, tmp_path, capsys):
    bogus = cases.Case("not_a_method", "fwd", lambda ctx, fn: None)
    monkeypatch.setattr(cases, "CASES", cases.CASES + (bogus,))
    assert run.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "not_a_method" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_only_publish_writes_the_results_folder_and_readme(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "OUT_DIR", tmp_path / "adhoc")
    readme_path, published = tmp_path / "README.md", tmp_path / "published"
    readme_path.write_text(f"intro\n{readme.BENCH_START}\nOLD-SECTION\n{readme.BENCH_END}\n")
    full = R.new_record({"quick": False, "repeats": 4})
    full["results"].append(_fake_result())
    src = R.write_json(full, tmp_path / "full.json")
    common = ["--readme", str(readme_path), "--results-dir", str(published)]
    assert run.main(["--from-json", str(src), *common]) == 0  # ad hoc: the git-ignored folder
    assert (tmp_path / "adhoc" / "full" / "table.md").is_file() and not published.exists()
    assert "OLD-SECTION" in readme_path.read_text()
    assert run.main(["--from-json", str(src), "--publish", *common]) == 0
    assert {p.name for p in published.iterdir()} >= {"latest.json", "table.md", "ratios.png"}
    text = readme_path.read_text()
    assert "OLD-SECTION" not in text and "`integrated_gradients`" in text
    quick = R.write_json({**full, "args": {"quick": True}}, tmp_path / "quick.json")
    assert run.main(["--from-json", str(quick), "--publish", *common]) == 2  # never a quick run
    assert run.main(["--quick", "--publish", *common]) == 2
    assert "--publish: expected a full run" in capsys.readouterr().err


def test_full_precision_turns_tf32_off_on_both_sides_and_restores():
    before = jax.config.jax_default_matmul_precision
    torch = pytest.importorskip("torch")
    cudnn = torch.backends.cudnn.allow_tf32
    with execute.full_precision(jax_side=True):
        assert jax.config.jax_default_matmul_precision == "highest"
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert jax.config.jax_default_matmul_precision == before
    assert torch.backends.cudnn.allow_tf32 == cudnn
    with execute.full_precision():  # on CPU, XLA's float32 products are full precision already
        assert jax.config.jax_default_matmul_precision == (before if jax.default_backend() == "cpu"
                                                           else "highest")


def test_rewrites_off_runs_the_call_without_the_cpu_rewrites(monkeypatch):
    seen = []
    call = lambda: seen.append(jx.config.read("cpu_rewrites"))
    off = execute.rewrites_off(call)
    if jax.default_backend() != "cpu":  # under auto they are off already: nothing to compare
        assert off is None
        return
    off()
    call()
    assert seen == ["0", "auto"]
    monkeypatch.setenv("JAXPLAIN_CPU_REWRITES", "0")
    assert execute.rewrites_off(call) is None  # the timed call has them off already


def test_rewrites_check_sets_aside_one_image_of_a_batch_only():
    on = np.ones((16, 4, 4))
    near = on + 1e-7
    assert execute.rewrites_check("m", near, on)["pass"]
    one = near.copy()
    one[7, 2, 2] += 2e-3  # a kink at one evaluation of one image
    check = execute.rewrites_check("m", one, on)
    assert check["pass"] and check["off_images"] == 1 and check["rel_err_other_images"] < 1e-6
    two = one.copy()
    two[3] += 2e-3
    assert not execute.rewrites_check("m", two, on)["pass"]
    assert not execute.rewrites_check("m", one[7:8], on[7:8])["pass"]  # one image: no allowance
    table = report.agreement_table({"agreement": [check]})
    assert "1 image(s) off" in table and "rewrites off == on check above tolerance" in table


@pytest.mark.slow
def test_accelerator_script_smoke_run(tmp_path):
    """`benchmarks/accelerator.sh --smoke` runs end to end without peers and writes its table."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    p = subprocess.run(["bash", str(root / "benchmarks" / "accelerator.sh"), "--smoke",
                        str(tmp_path / "acc")], env={**env, "PYTHON": sys.executable},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    table = (tmp_path / "acc" / "table.md").read_text()
    assert "`saliency`" in table and "Device: " in table
    data = json.loads((tmp_path / "acc" / "latest.json").read_text())
    assert data["args"]["no_peers"] and len(data["results"]) == 1
    assert f"{tmp_path / 'acc'}/table.md" in p.stdout


# ---- metric cases (deletion vs Quantus, ROAD) --------------------------------------------


def test_distinct_ranks_keep_jaxplain_order_and_break_ties():
    from benchmarks import peers as P
    from jaxplain.metrics import base as B

    a = np.array([[[0.5, 0.0], [0.0, 0.5]], [[1.0, -1.0], [2.0, 0.0]]], np.float32)
    r = P.distinct_ranks(a)
    assert all(len(np.unique(v)) == v.size for v in r)
    np.testing.assert_array_equal(
        B.ranks_desc(jnp.asarray(r.reshape(2, -1))), B.ranks_desc(jnp.asarray(a.reshape(2, -1)))
    )


@pytest.mark.slow
def test_deletion_case_agrees_with_quantus():
    pytest.importorskip("torch")
    pytest.importorskip("quantus")
    from benchmarks.cases import metrics

    ctx = cases.Ctx(twins.Spec("small", "avg"), quick=True)
    ctx.torch_model = twins.torch_twin(ctx.spec, ctx.variables)
    b = metrics.deletion(ctx, jx.deletion)
    (name,) = b.peers
    assert name == "quantus.PixelFlipping" and b.peer_evals[name] == 16 * 64
    out = np.asarray(b.jaxplain().values)
    (check,) = b.agreement(out, execute.LazyOutputs(b.peers))
    assert check["pass"], check


@pytest.mark.slow
def test_road_case_builds_without_peers():
    from benchmarks.cases import metrics

    ctx = cases.Ctx(twins.Spec("small", "avg"), quick=True)  # no torch twin: no peers
    b = metrics.road(ctx, jx.road)
    assert b.peers == {} and b.n_evals == 16 * 10
    assert "road" in {c.name for c in cases.CASES}
    c = b.jaxplain()
    assert c.values.shape == (16, 10) and np.isfinite(np.asarray(c.auc)).all()


def test_ratio_intervals_bracket_the_ratio_and_shrink_with_seeds():
    def rec(n, spread):
        rng = np.random.default_rng(1)
        rows = []
        for name, scale in (("jaxplain.kernel_shap", 1.0), ("shap.KernelExplainer[l1_reg=auto]", 4.0)):
            mse = scale * (1 + spread * rng.standard_normal(n)) ** 2
            rows.append({"estimator": name, "budget": 46, "n_evals": 46, "rmse": float(np.sqrt(mse.mean())),
                         "rmse_rel": 0.0, "seeds": n, "seed_mse": mse.tolist()})
        return {"sample_efficiency": rows}

    key = ("jaxplain.kernel_shap", "shap.KernelExplainer[l1_reg=auto]", 46)
    few, many = rec(8, 0.3), rec(200, 0.3)
    for r in (few, many):
        lo, hi = tables.ratio_intervals(r)[key]
        assert lo < tables.efficiency_ratios(r)[key] < hi
    width = lambda r: np.subtract(*tables.ratio_intervals(r)[key][::-1])
    assert width(many) < width(few) / 2
    assert abs(tables.efficiency_ratios(many)[key] - 0.5) < 0.05
    no_seeds = {"sample_efficiency": [{k: v for k, v in row.items() if k != "seed_mse"}
                                      for row in few["sample_efficiency"]]}
    assert tables.ratio_intervals(no_seeds) == {}


def test_stored_games_play_like_the_model():
    from benchmarks import games

    rng = np.random.default_rng(0)
    d = 5
    w, w2 = rng.normal(size=d), rng.normal()
    codes = np.arange(2**d)
    z = (codes[:, None] >> np.arange(d)) & 1
    values = z @ w + w2 * z[:, 0] * z[:, 1]  # an interaction shared equally by features 0 and 1
    phi = extras.shapley_from_values(values)
    np.testing.assert_allclose(phi, w + w2 / 2 * (np.arange(d) < 2), atol=1e-12)
    model, x, seg = games.lookup(values)
    exact = jx.exact_shapley(model, x, target=None, segments=seg)
    np.testing.assert_allclose(np.asarray(exact.values)[0], phi, atol=1e-5)
    # the full budget enumerates every coalition: kernel_shap is exact on the stored game
    assert games.rmse(values, games.ESTIMATORS["kernel_shap"], 2**d, seeds=2) < 1e-5
    assert games.rmse(values, games.ESTIMATORS["shapley_sampling"], 20, seeds=3) < 1e-5  # 2nd order: exact


def test_ig_agreement_table_reports_the_ties_it_set_aside():
    row = {
        "check": "integrated_gradients[riemann_trapezoid]",
        "vs": "captum.IntegratedGradients",
        "rel_err": 1.6e-4,
        "tol": 1e-4,
        "pass": True,
        "steps": 50,
        "kink_nodes": 1,
        "ties": 2,
        "ties_explained": 2,
        "rel_err_other_nodes": 2.2e-7,
        "model": "large-avg",
    }
    plain = {k: v for k, v in row.items()
             if k not in ("kink_nodes", "ties", "ties_explained", "rel_err_other_nodes")}
    plain.update(rel_err=2e-7, check="saliency")
    table = report.agreement_table({"agreement": [row, plain]})
    assert ("yes (1 of 50 path nodes differ at 2 (node, image) pairs, 2 shown to be ties; "
            "the other nodes 2.2e-07)") in table
    assert "every disagreeing (node, image) is shown to be such a tie" in table
    assert "node by node" not in report.agreement_table({"agreement": [plain]})


def test_layer_agreement_sets_aside_one_image_only_when_other_nodes_agree():
    from benchmarks.cases import layer as C

    ref = np.ones((4, 3, 3, 2))
    near = ref + 1e-7
    one_off = near.copy()
    one_off[2] += 1e-3
    calls = []

    def nodes(agree):
        def f(rows):
            calls.append(list(rows))
            return ref[rows], ref[rows] + (0.0 if agree else 1e-3)

        return f

    ok = C._layer_agreement("m", "peer", near, ref, nodes(True))
    assert ok["pass"] and "off_images" not in ok and calls == []
    kink = C._layer_agreement("m", "peer", one_off, ref, nodes(True))
    assert kink["pass"] and kink["off_images"] == 1 and calls == [[2]]
    assert kink["rel_err"] == pytest.approx(1e-3, rel=1e-3) and kink["rel_err_other_images"] < 1e-5
    real = C._layer_agreement("m", "peer", one_off, ref, nodes(False))
    assert not real["pass"] and real["rel_err_off_images_other_nodes"] == pytest.approx(1e-3)
    two_off = one_off.copy()
    two_off[0] += 1e-3
    calls.clear()
    assert not C._layer_agreement("m", "peer", two_off, ref, nodes(True))["pass"] and calls == []


def test_plan_bench_table_shows_predicted_against_measured():
    """The plan section's table (no timing: a hand-made row)."""
    from benchmarks import plan_bench

    row = dict(evals_predicted=832, evals_measured=832, chunks=16, chunk_size=50,
               peak_mb_predicted=17.0, peak_mb_measured=18.4, memory_ratio=17.0 / 18.4,
               seconds_predicted=0.5, seconds_predicted_min=0.45, seconds_predicted_max=0.6,
               seconds_measured=0.52, time_ratio=0.5 / 0.52, gflops=30.4)
    lines = plan_bench.table({"integrated_gradients": row}).splitlines()
    assert len(lines) == 3 and lines[0].startswith("| case | evals plan / run")
    assert lines[2] == ("| integrated_gradients | 832 / 832 | 16 x 50 | 17.00 / 18.40 (0.92) | "
                        "500.0 / 520.0 ms (0.96) | 450.0-600.0 ms | 30.40 |")
    assert set(plan_bench.cases(jx.testing.linear_model(jnp.ones((32, 32, 3, 10))), 32)) == {
        "integrated_gradients", "kernel_shap", "occlusion", "lime"}


def test_sample_efficiency_measures_against_enumeration():
    from benchmarks import sample_efficiency as se

    # an antithetic pair of walks is exact on a game whose interactions are all pairwise
    pairwise = lambda z: z[:, 0, 0, 0] * z[:, 0, 1, 0] + jnp.sum(z[:, 0, :, 0], 1)  # noqa: E731
    exact = se.measure(pairwise, "shapley_sampling (antithetic)", 50, keys=4)
    assert exact["rmse"] < 1e-5 and exact["evals"] >= 2 + 4 * (se.D - 1)
    r = se.measure(se.groups, "shapley_sampling (antithetic)", 50, keys=8)  # 2 pairs
    assert 0 < r["rmse"] < 1 and 0.3 < r["ratio"] < 4 and 0.5 <= r["cover"] <= 1


def test_sample_efficiency_closed_form_and_readme_block():
    from benchmarks import sample_efficiency as se

    # the d = 64 game's closed form is its enumeration at d = 12
    x = se._x(12)
    exact = jx.exact_shapley(se.blocks, x, target=None, segments=jnp.arange(12)[None]).values
    np.testing.assert_allclose(se.blocks_shapley(np.asarray(x).reshape(-1)), exact[0], atol=1e-5)
    rows = [dict(d=12, game="g", budget=b, option=o, rmse=r, ratio=1.0, cover=c, evals=b)
            for b in (100, se.README_BUDGET)
            for o, r, c in (("kernel_shap", 0.2, 0.93), ("kernel_shap sampling=kernel", 0.1, 0.95))]
    block = se.readme_block(rows, "2 keys")
    assert "| 12 | g | 2.0e-01 | - - | - - |" in block  # one row per game
    assert "per budget (d = 12: 100/300/1000/3000)" in block
    assert "not importable" in block and "No peer ran" in se.comparison(rows)


def test_sample_efficiency_peer_ratios_and_goal():
    from benchmarks import sample_efficiency as se

    mine = [dict(d=12, game="g", budget=100, option=o, rmse=r, ratio=1.0, cover=0.95, evals=100)
            for o, r in (("kernel_shap", 0.2), ("kernel_shap sampling=kernel", 0.1))]
    peers = [dict(d=12, game="g", budget=100, option=p, rmse=r, ratio=np.nan, cover=np.nan,
                  evals=e, peer=True)
             for p, r, e in (("shap", 0.25, 100), ("captum KernelShap", 0.5, 100),
                             ("captum SVS", 0.4, 97))]
    table = se.comparison(mine + peers)
    # best (0.1) is 0.4x shap (goal 0.5: met), 0.2x KernelShap (met), 0.25x SVS (met);
    # the default (0.2) is 0.8x shap
    assert ("| 12 | g | 100 | 2.00e-01 | `kernel_shap sampling=kernel` | 1.00e-01 | "
            "2.50e-01 (100) | 5.00e-01 (100) | 4.00e-01 (97) | 0.80 / 0.40 | 0.40 / 0.20 | "
            "0.50 / 0.25 | yes |") in table
    peers[2]["rmse"] = 0.3  # 0.33x SVS: missed
    assert table.splitlines()[-1] != se.comparison(mine + peers).splitlines()[-1]
    assert se.comparison(mine + peers).endswith("| no (captum SVS) |")
    assert "met in 0 of 1 cells" in se.goal_summary(mine + peers)
    # README: best over shap, and over Captum's better estimator (KernelShap 0.5, SVS 0.3)
    assert "| 12 | g | 2.0e-01 | 0.40 | 0.33 |" in se.readme_block(mine + peers, "k")


def test_counted_game_counts_every_row():
    from benchmarks.peers.games import Counted

    f = Counted(lambda z: jnp.sum(z, (1, 2, 3)), 3, record=True)
    out = f(np.array([[1.0, 0, 2], [0, 0, 1], [1.0, 0, 2]]))
    np.testing.assert_allclose(out, [3, 1, 3])
    assert f.rows == 3 and len(f.seen) == 2


def test_sample_efficiency_peers_at_equal_evaluations():
    pytest.importorskip("shap")
    pytest.importorskip("captum")
    from benchmarks import sample_efficiency as se

    def additive(z):  # every estimator is exact on it up to rounding and regression noise
        return jnp.sum(z[:, 0, :, 0] * jnp.arange(1.0, 13.0), 1)

    for peer in ("shap", "captum KernelShap", "captum SVS"):
        r = se.measure_peer(additive, peer, 100, keys=1)
        assert abs(r["evals"] - 100) <= se.D // 2, peer
        assert r["rmse"] < 0.05, peer

def test_tie_check_accepts_only_differences_a_step_off_the_node_reproduces():
    """Two gradients of one input whose jump sits at the path node alpha = 0.5 (ours has
    jumped there, theirs only a rounding later): a tie, shown by ours at 0.5 (1 - 1e-6).
    A difference no shift explains (an offset at one node) fails the check."""
    from benchmarks.cases.gradients import tie_check

    x = np.linspace(0.5, 1.0, 4 * 3, dtype=np.float32).reshape(4, 3)

    def gradient(jump_at):
        def g(z):
            alpha = np.max(z, axis=1, keepdims=True) / np.max(x, axis=1, keepdims=True)
            return np.where(alpha >= jump_at, 2.0, 1.0) * np.ones_like(z)
        return g

    ours, theirs = gradient(0.5), gradient(0.5 * (1 + 1e-7))
    check = tie_check(ours, theirs, x, "riemann_trapezoid", 5, 1e-4)
    assert check["kink_nodes"] == 1 and check["ties"] == 4 and check["ties_explained"] == 4
    assert check["ties_pass"] and check["rel_err_other_nodes"] < 1e-12
    assert tie_check(ours, ours, x, "riemann_trapezoid", 5, 1e-4)["ties"] == 0

    def offset(z):
        return ours(z) + (np.isclose(np.max(z), 0.75 * np.max(x)) * 1e-2)

    check = tie_check(ours, offset, x, "riemann_trapezoid", 5, 1e-4)
    assert check["ties"] == 4 and check["ties_explained"] == 0 and not check["ties_pass"]
    table = report.agreement_table({"agreement": [dict(
        check, check="integrated_gradients", vs="captum", rel_err=1e-2, tol=1e-4, steps=5,
        **{"pass": False})]})
    assert "1 of 5 path nodes differ at 4 (node, image) pairs, 0 shown to be ties" in table


def test_trained_cnn_game_plays_its_table_and_other_games_rows_are_kept(tmp_path, monkeypatch):
    """The table game reads the coalition's value (present = not 0) and its exact values are
    the enumeration's; `--games` with `--write` keeps the stored rows of the other games."""
    from benchmarks import extras
    from benchmarks import sample_efficiency as se

    game = se.TrainedCNNGame(12)
    with pytest.raises(RuntimeError, match="prepare"):
        game(jnp.zeros((1, 1, 12, 1)))
    game.values = np.random.default_rng(0).normal(size=2**12).astype(np.float32)
    z = np.zeros((3, 1, 12, 1), np.float32)
    z[1, 0, [0, 3], 0] = [0.7, 1.2]  # cells 0 and 3 present: code 1 + 8
    z[2] = 1.0
    np.testing.assert_array_equal(np.asarray(game(jnp.asarray(z))), game.values[[0, 9, 4095]])
    np.testing.assert_allclose(se.exact_values(game, 12),
                               extras.shapley_from_values(game.values), atol=1e-5)

    stored = {"meta": {"keys": 4, "wall": 10.0, "note": "4 keys, old", "peers": []},
              "rows": [dict(d=d, game=g, budget=100, option="kernel_shap", rmse=0.1, ratio=None,
                            cover=0.9, evals=100) for d in (12, 16, 64) for g in ("a", "new")]}
    monkeypatch.setattr(se, "RESULTS", tmp_path)
    (tmp_path / "sample_efficiency.json").write_text(json.dumps(stored))
    mine = [dict(r, rmse=0.2) for r in stored["rows"] if r["game"] == "new" and r["d"] < 64]
    meta = {"keys": 4, "command": "cmd", "note": "4 keys, today", "wall": 3.0, "versions": []}
    rows, merged = se._with_other_games(mine, meta, ["new"])
    assert [(r["d"], r["game"], r["rmse"]) for r in rows] == [
        (12, "a", 0.1), (12, "new", 0.2), (16, "a", 0.1), (16, "new", 0.2), (64, "a", 0.1)]
    assert np.isnan(rows[0]["ratio"]) and merged["note"] == "4 keys, old"
    assert merged["added"] == "; the rows of new: `cmd`, 4 keys, today, 3 s"
    with pytest.raises(SystemExit, match="keys"):
        se._with_other_games(mine, dict(meta, keys=5), ["new"])
