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
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("example", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
outputs = mod.main(sys.argv[2:])
print("OUTPUTS=" + json.dumps({k: str(v) for k, v in (outputs or {}).items()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_quick(name, tmp_path):
    # In a process of its own, as a user runs it: a crash or the memory of a long example
    # stays out of the test worker.
    extra = ["--quiet"] if name == "throughput" else []
    run = subprocess.run([sys.executable, "-c", _DRIVER, str(EXAMPLES / f"{name}.py"), "--quick",
                          "--out", str(tmp_path)] + extra, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("OUTPUTS=")][-1]
    outputs = json.loads(line[len("OUTPUTS="):])
    assert outputs, "an example returns the paths it wrote"
    for key, path in outputs.items():
        path = Path(path)
        assert path.is_file() and path.stat().st_size > 0, (key, path)
        assert path.parent == tmp_path
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in run.stdout


def test_quick_mode_from_environment(monkeypatch, tmp_path):
    mod = _load("tabular_surrogate")
    monkeypatch.setenv("JAXPLAIN_QUICK", "1")
    args = mod.parse(["--out", str(tmp_path / "o")], "x")
    assert args.quick and args.out.is_dir()
    monkeypatch.delenv("JAXPLAIN_QUICK")
    assert not mod.parse(["--out", str(tmp_path / "o")], "x").quick
    sys.modules.pop("example_tabular_surrogate", None)
