"""The demo: its methods come from the registry, and its checks flag what fails."""

import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain._core import registry
from jaxplain.app import demo, demo_checks, demo_methods


def test_demo_methods_are_the_registry_s_demo_entries():
    full = demo_methods.available(demo_methods.method_specs(False))
    quick = demo_methods.available(demo_methods.method_specs(True), quick=True)
    with_demo = [e for e in registry.entries() if e.demo is not None]
    assert [s.attr for s in full] == [e.name for e in with_demo]
    assert [s.attr for s in quick] == [e.name for e in with_demo if e.demo["quick"] is not None]
    assert [s.name for s in full] == [e.demo["label"] for e in with_demo]
    by = {s.attr: s for s in full}
    assert by["lime"].features and not by["saliency"].features and by["rise"].center
    assert by["grad_cam"].family == demo_methods.CAM and by["occlusion"].backward is False
    assert demo.CAM_LAYER == "conv1"  # the layer where Grad-CAM beats a random order


def _digit_world():
    """8x8 'digits': ink (value 1) in a ring, black elsewhere; class 0 sums the ink."""
    ink = np.zeros((8, 8), bool)
    ink[1:7, 1:7] = True
    ink[3:5, 3:5] = False
    rng = np.random.default_rng(0)
    x = np.where(ink, rng.uniform(0.5, 1.0, (3, 8, 8)), 0.0)[..., None].astype(np.float32)
    w = np.zeros((8, 8, 1, 2), np.float32)
    w[..., 0, 0] = ink / 4.0
    return jx.testing.linear_model(jnp.asarray(w), jnp.array([-2.0, 0.0])), x, ink


def test_checks_pass_a_faithful_map_and_flag_the_failures():
    model, x, ink = _digit_world()
    seg = jx.grid_segments(8, 8, 4)
    good = x[..., 0] / 4.0  # the exact contributions to class 0
    off_ink = np.broadcast_to(np.where(ink, 0.0, 1.0), (3, 8, 8))
    maps = {"good": good, "negated": -good, "background": off_ink}
    c = demo_checks.run_checks(model, x, maps, np.zeros(3, np.int32), seg, steps=4, n_random=3)
    np.testing.assert_array_equal(c.ink_share, [ink.mean()] * 3)
    np.testing.assert_allclose(c.ink["good"], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(c.ink["background"], 0.0)
    want = jx.deletion(model, x, good, target=0, steps=4, segments=seg, baseline="zero")
    assert want.scale == "probability"
    np.testing.assert_allclose(c.deletion["good"], want.auc, rtol=1e-6)
    rng = np.random.default_rng(0)  # the reference: per image, the mean over the random orders
    ref = np.mean([jx.deletion(model, x, rng.normal(size=(3, 8, 8)).astype(np.float32),
                               target=0, steps=4, segments=seg, baseline="zero").auc
                   for _ in range(3)], axis=0)
    np.testing.assert_allclose(c.random_deletion, ref, rtol=1e-6)
    assert c.failures("good") == []
    assert "not clearly below a random order's" in c.failures("negated")[0]
    # a margin within the noise fails: one image better than random, two worse
    close = demo_checks.Checks(deletion={"m": np.array([0.1, 0.52, 0.52])},
                               random_deletion=np.full(3, 0.5))
    assert close.failures("m") and not demo_checks.Checks(
        deletion={"m": np.array([0.1, 0.12, 0.11])}, random_deletion=np.full(3, 0.5)
    ).failures("m")
    bad = c.failed()
    assert set(bad) == {"negated", "background"}
    assert any(f.startswith("0% of its positive mass on the ink") for f in bad["background"])
    header, rows = demo_checks.table(c)
    verdict = {r[0]: r[-1] for r in rows}
    assert verdict["good"] == "ok" and verdict["negated"].startswith("**FAILS**")
    assert rows[-1][0] == "(random order, mean of 3)"
    text = demo_checks.summary(c)
    assert text.startswith("**Checks: 2 of 3 methods FAIL**") and "negated" in text
    ok = demo_checks.run_checks(model, x, {"good": good}, np.zeros(3, np.int32), seg, steps=4)
    assert demo_checks.summary(ok).startswith("Checks: all 1 methods beat a random order")
