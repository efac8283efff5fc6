"""`jaxplain explain` with the user's own model, the methods of the registry, one-line errors,
the resize warning; `jaxplain bench --help` and where benchmark output goes."""

import ast
import shutil
import subprocess
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain._core import registry
from jaxplain.app import cli, methods, zoo

ROOT = Path(__file__).resolve().parents[1]

USER_MODELS = '''
import numpy as np
import flax.linen as nn
from flax import nnx

rng = np.random.default_rng(0)  # weights from NumPy: importing compiles nothing
W = {"conv0": {"kernel": rng.normal(size=(3, 3, 1, 3)), "bias": rng.normal(size=3) / 4},
     "head": {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=4) / 4}}
VARIABLES = {"params": {k: {n: np.float32(v) for n, v in p.items()} for k, p in W.items()}}

class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3), name="conv0")(x))
        return nn.Dense(4, name="head")(x.mean((1, 2)))

def build():
    return Net(), VARIABLES, (6, 6, 1)

class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 3, (3, 3), rngs=rngs,
                             kernel_init=lambda *_: np.float32(rng.normal(size=(3, 3, 3, 3))))
        self.head = nnx.Linear(3, 2, rngs=rngs,
                               kernel_init=lambda *_: np.float32(rng.normal(size=(3, 2))))
    def __call__(self, x):
        return self.head(nnx.relu(self.conv(x)).mean((1, 2)))

nnx_model = NNXNet(nnx.Rngs(1))
input_shape = (6, 6, 3)
linen_alone = Net()
'''


def _images(folder: Path, shapes) -> Path:
    from skimage import io

    folder.mkdir(parents=True, exist_ok=True)
    for i, shape in enumerate(shapes):
        arr = (np.random.default_rng(i).uniform(size=shape) * 255).astype(np.uint8)
        io.imsave(folder / f"im{i}.png", arr, check_contrast=False)
    return folder


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A file defining a Linen factory and an NNX model, and two 6x6 RGB images."""
    d = tmp_path_factory.mktemp("user")
    (d / "mymodels.py").write_text(textwrap.dedent(USER_MODELS))
    return d, _images(d / "imgs", [(6, 6, 3)] * 2)


def _run(capsys, *argv):
    rc = cli.main(["explain", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _fit(images_dir, shape):
    from jaxplain.app import cli_model

    _, ims = cli_model.read_images(images_dir)
    return jnp.asarray(cli_model.fit_images(ims, shape)[0])


def _load(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodels_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_own_linen_factory_from_a_file(user, capsys):
    d, imgs = user
    rc, _, err = _run(capsys, "--model", f"{d / 'mymodels.py'}:build", "--images", imgs,
                      "--method", "saliency", "--out", d / "lin", "--quiet")
    assert rc == 0, err
    module, variables, shape = _load(d / "mymodels.py").build()
    x = _fit(imgs, shape)  # the factory's (6, 6, 1): the RGB images become grey
    want = jx.saliency(jx.from_linen(module, variables), x, target="predicted").values
    got = np.load(d / "lin" / "saliency.npz")["values"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert err == ("jaxplain explain: warning: converted 2 of 2 images to the model's input "
                   "6x6 grey (from 6x6 RGB)\n")


def test_own_nnx_model_importable_from_the_cwd(user, capsys, monkeypatch):
    d, imgs = user
    monkeypatch.chdir(d)
    rc, _, err = _run(capsys, "--model", "mymodels:nnx_model", "--images", imgs, "--method",
                      "gxi", "--target", "1", "--out", d / "nnx", "--quiet")
    assert rc == 0 and err == ""  # RGB 6x6 images fit the module's input_shape: no warning
    import mymodels  # the module the command imported from the current folder

    x = _fit(imgs, mymodels.input_shape)
    want = jx.gradient_x_input(jx.from_nnx(mymodels.nnx_model), x, target=1).values
    got = np.load(d / "nnx" / "gradient_x_input.npz")["values"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "12"], "--target: expected 'predicted' or a class index 0..3, got '12'"),
        (["--target", "cat"], "--target: expected 'predicted' or a class index 0..3, got 'cat'"),
        (["--target", "4"], "class index 0..3, got '4'"),  # = the number of classes
        (["--method", "frobnicate"], "--method: expected one of saliency,"),
        (["--model", "no_such_module:build"], "importing no_such_module failed"),
        (["--model", "mymodels:missing"], "mymodels has no attribute 'missing'"),
        (["--model", "mymodels:linen_alone"], "a Linen module needs its variables"),
        (["--model", "mymodels:Net"], "gave a Linen module without its variables"),
        (["--model", "missing.ckpt"], "--model: no file 'missing.ckpt'"),
        (["--images", "no/such/folder"], "--images: no file or folder no/such/folder"),
        (["--layer", "nope", "--method", "grad_cam"], "--layer: expected one of conv0, head"),
        (["--input-shape", "6,6"], "--input-shape: expected H,W,C"),
        (["--n-segments", "0"], "--n-segments: expected a positive count"),
    ],
)
def test_user_errors_exit_2_with_one_line(user, capsys, monkeypatch, argv, message):
    d, imgs = user
    monkeypatch.chdir(d)
    base = {"--model": "mymodels:build", "--images": str(imgs), "--out": str(d / "o")}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    rc, out, err = _run(capsys, *[a for kv in base.items() for a in kv])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("jaxplain explain: ") and message in err, err


def test_argument_errors_are_one_line_too(capsys):
    assert cli.main(["explain", "--segments", "hexagons"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--segments" in err and "usage" not in err
    assert cli.main(["frobnicate"]) == 2 and capsys.readouterr().err.count("\n") == 1


def test_resize_warning_names_both_shapes(tmp_path, capsys):
    module = zoo.SmallCNN((2,), n_classes=3, pool_after=(), head="gap")
    rng = np.random.default_rng(0)  # weights from NumPy: no init to compile
    params = {"conv0": {"kernel": rng.normal(size=(3, 3, 1, 2)), "bias": np.zeros(2)},
              "head": {"kernel": rng.normal(size=(2, 3)), "bias": np.zeros(3)}}
    variables = {"params": jax.tree.map(np.float32, params)}
    ckpt = zoo.save(tmp_path / "m.ckpt", module, variables, (8, 8, 1), {"classes": list("abc")})
    big = _images(tmp_path / "big", [(24, 20, 3), (24, 20, 3), (8, 8, 4)])
    rc, _, err = _run(capsys, "--model", ckpt, "--images", big, "--out", tmp_path / "o",
                      "--method", "saliency", "--target", "b", "--quiet")  # a class name
    assert rc == 0
    assert err == ("jaxplain explain: warning: converted 3 of 3 images to the model's input "
                   "8x8 grey (from 24x20 RGB: 2, 8x8 RGBA: 1)\n")
    small = _images(tmp_path / "small", [(8, 8)] * 3)  # the same batch: nothing compiles again
    rc, _, err = _run(capsys, "--model", ckpt, "--images", small, "--out", tmp_path / "o",
                      "--method", "saliency", "--quiet")
    assert rc == 0 and err == ""


def test_methods_are_the_registry_s_image_methods(capsys):
    names = set(methods.image_methods())
    expected = {e.name for e in registry.entries("gradients", "cam", "layer", "perturbation",
                                                 "shapley")
                if "target" in e.required and set(e.required) <= methods.SUPPLIED}
    assert names == expected
    assert {"lime", "kernel_shap", "shapley_sampling", "exact_shapley", "occlusion", "rise",
            "deeplift", "lrp", "grad_cam", "integrated_gradients"} <= names
    assert not names & {"counterfactual", "anchors", "deletion", "neuron_conductance"}
    assert cli.main(["explain", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(methods.image_methods())
    assert methods.resolve("ig").name == "integrated_gradients"


@pytest.mark.parametrize("method", ["exact_shapley", "grad_cam",
                                    pytest.param("kernel_shap", marks=pytest.mark.slow),
                                    pytest.param("rise", marks=pytest.mark.slow)])
def test_segments_keys_and_layers_are_supplied(user, capsys, monkeypatch, method):
    d, imgs = user
    monkeypatch.chdir(d)
    rc, _, err = _run(capsys, "--model", "mymodels:build", "--images", imgs, "--method", method,
                      "--out", d / "o", "--quiet", "--n-segments", "4")
    assert rc == 0, err
    v = np.load(d / "o" / f"{method}.npz")["values"]
    assert np.isfinite(v).all() and np.abs(v).sum() > 0
    if method in ("exact_shapley", "kernel_shap"):  # one value per cell of a 2x2 grid
        import mymodels

        module, variables, shape = mymodels.build()
        x = _fit(imgs, shape)
        out = np.asarray(module.apply(variables, x))
        t = out.argmax(1)
        base = np.asarray(module.apply(variables, jnp.zeros_like(x)))[np.arange(2), t]
        assert v.shape == (2, 4)  # efficiency: the values add up to f(x) - f(0)
        np.testing.assert_allclose(v.sum(1), out[np.arange(2), t] - base, rtol=1e-4, atol=1e-5)


def test_bench_help_describes_the_benchmarks(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jaxplain bench") and "physical limit" in out
    assert "python -m benchmarks" not in out and "--out DIR" in out


def test_bench_argument_errors_are_one_line(capsys):
    assert cli.main(["bench", "--models", "huge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxplain bench: argument --models")


def test_cli_does_not_import_the_benchmarks_at_import():
    for path in sorted((ROOT / "jaxplain" / "app").glob("cli*.py")):
        top = [n for n in ast.parse(path.read_text()).body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [n.module or "" for n in top
                                                          if isinstance(n, ast.ImportFrom)]
        assert not any(name.split(".")[0] == "benchmarks" for name in names), path


def test_default_benchmark_output_is_git_ignored():
    from benchmarks import run

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for sub in ("quick", "full"):
        target = (run.OUT_DIR / sub / "table.md").relative_to(ROOT)
        r = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=ROOT)
        assert r.returncode == 0, f"{target} is not ignored by git"


@pytest.mark.slow
def test_every_offered_method_runs_with_what_the_app_supplies(user):
    """Each method `--method` offers gets its segments, key, references and layer (cheap
    settings: this checks the plumbing; the method table checks the values)."""
    import importlib.util

    d, imgs = user
    spec = importlib.util.spec_from_file_location("mymodels_all", d / "mymodels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    module, variables, shape = mod.build()
    model = jx.from_linen(module, variables)
    x = _fit(imgs, shape)
    inputs = methods.Inputs(model, x, "predicted", jax.random.key(0),
                            methods.make_segments(x, "grid", 4), x[:1] * 0, None)
    for name, entry in methods.image_methods().items():
        r = methods.call(entry, inputs, dict(entry.cheap))
        v = np.asarray(r.values)
        assert v.shape[0] == 2 and np.isfinite(v).all(), name
    assert inputs.layer == "conv0"  # the last spatial layer, found once
