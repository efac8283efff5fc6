"""explain_dataset on 4 (fake CPU) devices equals the single-device run.

The checks run in one subprocess because `--xla_force_host_platform_device_count`
must be set before JAX initialises its backend.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# every test reads the one 4-device subprocess run (about 15 s of CPU): all slow
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import os, json, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=4")
    import jax, jax.numpy as jnp, numpy as np
    import jaxplain as jx
    from jaxplain import testing

    out = {"n_devices": jax.device_count()}
    m = testing.tiny_cnn(n_classes=3, features=(4,))
    x = np.asarray(testing.random_images(0, n=14, size=8))
    model = jx.from_linen(m, m.init(jax.random.key(0), x[:1]))
    y = (np.arange(len(x)) % 3).astype(np.int32)
    seg = jx.grid_segments(8, 8, 2)
    key = jax.random.key(7)
    methods = {
        "integrated_gradients": dict(steps=4, batch_size=4),
        "smoothgrad": dict(n_samples=3, key=key),
        "lime": dict(segments=seg, n_samples=16, key=key),
        "shapley_sampling": dict(segments=seg, n_permutations=4, key=key),
        # a pytree keyword: the explainer's weights are replicated arguments of the runner
        "amortised_shap": dict(explainer=jx.fit_amortised(
            model, x, seg, key=key, steps=0, features=(2,), hidden=4, progress=False).explainer),
    }

    def run(name, **kw):
        kw = dict(kw)
        ebs = kw.pop("batch_size", None)
        return list(jx.explain_dataset(getattr(jx, name), model, x, batch_size=6, target=y,
                                       progress=False, eval_batch_size=ebs, **kw))

    def cat(res, f="values"):
        return np.concatenate([getattr(r, f) for r in res])

    mesh = jax.make_mesh((4,), ("batch",))
    mesh2 = jax.make_mesh((2, 2), ("batch", "model"))
    for name, kw in methods.items():
        if not hasattr(jx, name):
            out[name] = "missing"
            continue
        single = run(name, **kw)
        with testing.count_compiles() as c:
            sharded = run(name, mesh=mesh, **kw)
        a = cat(single)
        out[name] = {
            "shapes": [r.values.shape[0] for r in sharded],
            "compiles": c["n"],
            "err_mesh": float(np.abs(cat(sharded) - a).max()),
            "scale": float(np.abs(a).max()),
            "finite": bool(np.isfinite(a).all()),
        }
        if name == "integrated_gradients":  # other layouts, on the cheapest method
            devs = run(name, devices=jax.devices()[:2], **kw)
            two_axes = run(name, mesh=mesh2, **kw)
            out[name]["err_devices"] = float(np.abs(cat(devs) - a).max())
            out[name]["err_2d_mesh"] = float(np.abs(cat(two_axes) - a).max())
            ref = jx.integrated_gradients(model, x, target=y, steps=4)
            out[name]["err_direct"] = float(np.abs(cat(sharded) - ref.values).max())

    # the sharded program really splits the batch: each device sees 8 / 4 = 2 rows
    from jaxplain.pipeline import stream as _stream
    from jaxplain.pipeline.config import RunConfig
    runner = _stream.runner(jx.saliency, {}, RunConfig(batch_size=8, mesh=mesh), stochastic=False,
                            has_target=True)
    xs = jax.device_put(x[:8], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")))
    ys = jax.device_put(y[:8], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")))
    hlo = runner.lower(jax.device_put(model), xs, ys, None, np.int32(0)).compile().as_text()
    out["hlo_local_batch"] = "f32[2,8,8,3]" in hlo and "f32[8,8,8,3]{" not in hlo.split("ENTRY")[0]

    # resumable output with a mesh
    import tempfile
    d = tempfile.mkdtemp()
    s = jx.explain_to_shards(jx.saliency, model, x, out=d, batch_size=6, target=y, mesh=mesh,
                             progress=False)
    out["out_mesh"] = bool(np.allclose(jx.load_results(d).values,
                                       jx.saliency(model, x, target=y).values, atol=1e-6))
    print("RESULT " + json.dumps(out))
    print(json.dumps(out, indent=1), file=sys.stderr)
""")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("shard") / "run.py"
    path.write_text(SCRIPT)
    # the conftest's compile flags (-O0) are kept: the device count is added to them
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run(
        [sys.executable, str(path)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_four_devices(result):
    assert result["n_devices"] == 4


@pytest.mark.parametrize("name", ["integrated_gradients", "smoothgrad", "lime", "shapley_sampling",
                                  "amortised_shap"])
def test_sharded_equals_single_device(result, name):
    r = result[name]
    if r == "missing":
        pytest.skip(f"jaxplain.{name} is not exported yet")
    assert r["finite"]
    assert r["shapes"] == [6, 6, 2]  # batches of 6 padded to 8 rows on 4 devices, padding dropped
    tol = 1e-5 * max(r["scale"], 1.0)
    for k in ("err_mesh", "err_devices", "err_2d_mesh", "err_direct"):
        assert r.get(k, 0.0) <= tol, (k, r)
    assert r["compiles"] == 1, r  # the sharded runner, once for the 3 batches


def test_sharded_program_is_split_over_devices(result):
    assert result["hlo_local_batch"]


def test_resumable_output_with_mesh(result):
    assert result["out_mesh"]
