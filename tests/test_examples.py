"""Every example runs as-is in its reduced mode (`--quick`) and writes the outputs it names."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ["tabular_surrogate", "faces_lfw", "natural_images", "throughput", "digits_cnn",
         "ensemble_digits", "concepts_digits", "vit_digits", "spurious_prior"]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _cache(weights_cache, monkeypatch):
    # Trained weights go to the run's folder, never to the user's ~/.cache.
    monkeypatch.setenv("JAXPLAIN_CACHE", str(weights_cache))


def test_every_example_is_listed():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")) == sorted(
        NAMES
    )


_DRIVER = """
import contextlib, gc, importlib.util, io, json, sys, traceback
import matplotlib.pyplot as plt
gc.freeze(); gc.set_threshold(100_000, 50, 50)  # as tests/conftest.py, for the same reason
out_root = sys.argv[1]
for name in sys.argv[2:]:
    try:
        spec = importlib.util.spec_from_file_location("example_" + name, f"{EXAMPLES}/{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        extra = ["--quiet"] if name == "throughput" else []
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            outputs = mod.main(["--quick", "--out", f"{out_root}/{name}"] + extra)
        result = {"outputs": {k: str(v) for k, v in (outputs or {}).items()},
                  "stdout": said.getvalue()[-2000:]}
    except BaseException:
        result = {"error": traceback.format_exc()[-3000:]}
    plt.close("all")
    print("RESULT " + json.dumps({"name": name, **result}), flush=True)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, weights_cache):
    """Every example in one process of its own, one after the other, as a user runs them:
    a crash or the memory of a long example stays out of the test worker, and JAX is
    imported once rather than once per example (about 4 s of CPU each)."""
    import os

    root = tmp_path_factory.mktemp("examples")
    env = dict(os.environ, JAXPLAIN_CACHE=str(weights_cache))
    run = subprocess.run([sys.executable, "-c", _DRIVER.replace("{EXAMPLES}", str(EXAMPLES)),
                          str(root)] + NAMES, capture_output=True, text=True, timeout=1200,
                         env=env)
    found = {}
    for ln in run.stdout.splitlines():
        if ln.startswith("RESULT "):
            r = json.loads(ln[len("RESULT "):])
            found[r.pop("name")] = r
    return root, found, run


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_quick(name, runs):
    root, found, run = runs
    assert name in found, f"the driver stopped before {name}: {run.stderr[-3000:]}"
    assert "error" not in found[name], found[name]["error"]
    outputs = found[name]["outputs"]
    assert outputs, "an example returns the paths it wrote"
    for key, path in outputs.items():
        path = Path(path)
        assert path.is_file() and path.stat().st_size > 0, (key, path)
        assert path.parent == root / name
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in found[name]["stdout"]


def test_quick_mode_from_environment(monkeypatch, tmp_path):
    mod = _load("tabular_surrogate")
    monkeypatch.setenv("JAXPLAIN_QUICK", "1")
    args = mod.parse(["--out", str(tmp_path / "o")], "x")
    assert args.quick and args.out.is_dir()
    monkeypatch.delenv("JAXPLAIN_QUICK")
    assert not mod.parse(["--out", str(tmp_path / "o")], "x").quick
    sys.modules.pop("example_tabular_surrogate", None)
