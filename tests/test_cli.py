"""The `jaxplain` command: demo report, explain with a checkpoint, bench pass-through, datasets."""

import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxplain.app import cli, data, zoo  # noqa: E402


def test_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert cli.main([]) == 2
    capsys.readouterr()
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'frobnicate'" in err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "jaxplain"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([str(exe), "demo", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout


def test_bench_passes_arguments(monkeypatch):
    import types

    seen = {}
    fake = types.ModuleType("benchmarks")
    fake.main = lambda argv, prog: seen.update(argv=argv, prog=prog) and 0
    monkeypatch.setitem(sys.modules, "benchmarks", fake)
    assert cli.main(["bench", "--quick", "--only", "ig"]) == 0
    assert seen == {"argv": ["--quick", "--only", "ig"], "prog": "jaxplain bench"}


def test_bench_unavailable_message(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "benchmarks", None)  # import fails
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "jaxplain" / "app" / "cli.py"))
    assert cli._bench([]) == 2
    assert "not available" in capsys.readouterr().err


def test_checkpoint_round_trip_and_explain(tmp_path, capsys):
    module = zoo.SmallCNN((4, 8), n_classes=3, pool_after=(0,))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 1)), jnp.float32)
    variables = jax.jit(module.init)(jax.random.key(0), x)
    ckpt = zoo.save(
        tmp_path / "m.ckpt", module, variables, x.shape[1:], {"classes": ["a", "b", "c"]}
    )
    module2, variables2, header = zoo.load(ckpt)
    assert module2 == module and header["classes"] == ["a", "b", "c"]
    np.testing.assert_allclose(module.apply(variables, x), module2.apply(variables2, x), rtol=1e-6)

    from skimage import io

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):  # RGB files of another size: converted to gray 8x8
        io.imsave(
            imgs / f"im{i}.png",
            (np.random.default_rng(i).uniform(size=(12, 10, 3)) * 255).astype(np.uint8),
            check_contrast=False,
        )
    (imgs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    for method in ("ig", "gradcam", "lrp"):
        rc = cli.main(
            [
                "explain",
                "--method",
                method,
                "--model",
                str(ckpt),
                "--images",
                str(imgs),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        assert rc == 0
        name = {"ig": "integrated_gradients", "gradcam": "grad_cam"}.get(method, method)
        saved = np.load(out / f"{name}.npz")
        assert saved["values"].shape[0] == 3 and list(saved["files"]) == [
            "im0.png",
            "im1.png",
            "im2.png",
        ]
        assert (out / f"{name}_000.png").stat().st_size > 0
    assert (
        cli.main(["explain", "--model", str(tmp_path / "missing.ckpt"), "--images", str(imgs)]) == 2
    )
    assert cli.main(["explain", "--model", str(ckpt), "--images", str(tmp_path)]) == 2
    assert "no image files" in capsys.readouterr().err


def test_datasets_shapes_and_fallback(monkeypatch, tmp_path):
    d = data.load_digits(size=16)
    assert d.x_train.shape[1:] == (16, 16, 1) and d.x_train.dtype == np.float32
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1 and len(d.x_train) + len(d.x_test) == 1797
    f = data.load_faces()
    assert f.x_train.shape[1:] == (25, 25, 1) and set(np.unique(f.y_train)) == {0, 1}
    imgs = data.load_natural_images(size=32)
    assert set(imgs) == {"astronaut", "coffee", "chelsea"} and imgs["coffee"].shape == (32, 32, 3)
    # No Fashion-MNIST files: a clear error and a clean fallback to digits.
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("JAXPLAIN_FASHION_MNIST", raising=False)
    assert data.fashion_mnist_dir() is None
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist()
    assert data.load_throughput_dataset(limit=10).name == "digits"


def test_fashion_mnist_reader(tmp_path, monkeypatch):
    import gzip

    def idx(path, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
        with gzip.open(path, "wb") as fh:
            fh.write(header + arr.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("t10k", 3)):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    monkeypatch.setenv("JAXPLAIN_FASHION_MNIST", str(tmp_path))
    d = data.load_throughput_dataset()
    assert (
        d.name == "fashion-mnist"
        and d.x_train.shape == (5, 28, 28, 1)
        and d.x_test.shape == (3, 28, 28, 1)
    )
    assert d.x_train.max() <= 1.0 and d.y_test.dtype == np.int32


@pytest.mark.slow
def test_demo_quick_writes_report_with_every_figure(tmp_path, capsys, weights_cache):
    out = tmp_path / "demo"
    rc = cli.main(
        [
            "demo",
            "--quick",
            "--out",
            str(out),
            "--cache",
            str(weights_cache),
            "--no-compile-cache",
        ]
    )
    assert rc == 0
    report = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"attributions.png", "curves.png", "filters.png", "feature_maps.png",
            "tcav.png", "attention.png"} <= set(figures)
    for f in figures:
        assert (out / f).is_file() and (out / f).stat().st_size > 1000, f
    html = (out / "index.html").read_text()
    assert all(f"src='{f}'" in html for f in figures)
    # the timing table lists every method the demo ran, with a steady-state time
    row = next(
        r for r in report.splitlines() if r.startswith("| integrated gradients | gradients |")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert (
        re.fullmatch(r"[\d.]+ (ms|s)", cells[3]) and int(cells[4]) > 0
    )  # steady state, model evals
    assert (out / "model.ckpt").is_file()
    assert "report:" in capsys.readouterr().out
    # every method shown is checked; on this model all pass, Grad-CAM (conv1) included
    assert "Checks: all 9 methods beat a random order on deletion" in report
    cam = next(r for r in report.splitlines() if r.startswith("| Grad-CAM |"))
    cells = [c.strip() for c in cam.strip("|").split("|")]
    assert cells[-1] == "ok" and float(cells[1]) < 0.5  # deletion AUC, random is ~0.6


def test_processes_sharing_a_weights_cache_train_a_model_once(tmp_path):
    import threading

    module = zoo.SmallCNN((2,), n_classes=2, pool_after=())
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 4, 4, 1)).astype(np.float32)
    y = (x.mean((1, 2, 3)) > 0.5).astype(np.int32)
    got = []

    def train():  # each thread opens the lock file itself, as another process would
        got.append(zoo.train_classifier(module, x, y, x, y, epochs=1, batch=4,
                                        cache=tmp_path))

    threads = [threading.Thread(target=train) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(t.cached for t in got) == [False, True]  # one trained, one waited and loaded
    for a, b in zip(jax.tree.leaves(got[0].variables), jax.tree.leaves(got[1].variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(list(tmp_path.glob("*.ckpt"))) == 1
