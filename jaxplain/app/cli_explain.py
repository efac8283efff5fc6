"""`jaxplain explain`: explain images with a saved checkpoint or the user's own model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

from .cli_model import UserError, first_line

EPILOG = """\
--model takes a checkpoint written by `jaxplain demo` (jaxplain_demo/model.ckpt), or your
own model as module:object (importable from the current folder) or path/to/file.py:object,
where object is a jaxplain Model, an NNX model, or a function of no arguments returning
(linen_module, variables) [, input_shape] or one of those. The model's input shape comes from
the checkpoint, --input-shape, an `input_shape` attribute, or the first image's size.
Images are resized and converted (grey, RGB) to that shape, with a warning.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    """The `explain` subcommand's arguments (on the `jaxplain` parser's subparsers)."""
    e = sub.add_parser(
        "explain",
        help="explain images with a checkpoint or your own model",
        description="Explain images with a checkpoint or your own Flax model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--method", default="integrated_gradients",
                   help="a method of the registry (default integrated_gradients); "
                   "`jaxplain explain --list` prints them")
    e.add_argument("--list", action="store_true", help="list the methods and exit")
    e.add_argument("--model", help="checkpoint file, module:object or file.py:object")
    e.add_argument("--images", help="an image file or a folder of images (png, jpg, ...)")
    e.add_argument("--out", default="jaxplain_explain", help="output folder")
    e.add_argument("--target", default="predicted",
                   help="'predicted', a class index, or a class name of the checkpoint")
    e.add_argument("--layer", default=None,
                   help="layer of CAM and layer methods (default: the last spatial layer)")
    e.add_argument("--input-shape", default=None, metavar="H,W,C",
                   help="the model's input shape (when the model does not say)")
    e.add_argument("--segments", default="grid", choices=("grid", "slic"),
                   help="features of LIME, KernelSHAP, Shapley, ablation (default grid)")
    e.add_argument("--n-segments", type=int, default=16,
                   help="number of features per image (default 16, a 4x4 grid)")
    e.add_argument("--seed", type=int, default=0, help="seed of stochastic methods")
    e.add_argument("--quiet", action="store_true")
    return e


def run(args: argparse.Namespace) -> int:
    """Runs `jaxplain explain`; user errors print one line and return 2."""
    try:
        if args.list:
            return _list()
        for flag in ("model", "images"):
            if getattr(args, flag) is None:
                raise UserError(f"--{flag} is required")
        if args.n_segments < 1:
            raise UserError(f"--n-segments: expected a positive count, got {args.n_segments}")
        return _explain(args)
    except UserError as e:
        print(f"jaxplain explain: {e}", file=sys.stderr)
        return 2


def _list() -> int:
    from .methods import image_methods

    for name, e in image_methods().items():
        print(f"{name:28s} {e.family:13s} {e.summary}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    from . import cli_model as CM
    from . import methods as M

    try:
        entry = M.resolve(args.method)
    except ValueError as e:
        raise UserError(str(e)) from None
    model, info = CM.load_model(args.model)
    names, images = CM.read_images(args.images)
    shape = CM.input_shape(model, info, images, args.input_shape)
    x, note = CM.fit_images(images, shape)
    x = jnp.asarray(x)
    try:  # traced, not compiled: the arguments are checked in well under a second
        out = jax.eval_shape(_forward, model, x)
    except Exception as e:  # noqa: BLE001 - the user's model on the user's images
        raise UserError(f"--model: it failed on images {tuple(x.shape)}: {first_line(e)}") from None
    if len(getattr(out, "shape", ())) not in (1, 2):
        raise UserError(f"--model: expected outputs (N, classes) or (N,), got "
                        f"{getattr(out, 'shape', type(out).__name__)}")
    n_classes = out.shape[1] if len(out.shape) == 2 else None
    target = CM.parse_target(args.target, n_classes, info.get("classes"))
    CM.check_layer(model, args.layer)
    if note:  # the arguments are valid: say what was done to the images before the long part
        print(f"jaxplain explain: warning: {note}", file=sys.stderr)
    needs = set(entry.required)
    inputs = M.Inputs(model, x, None if n_classes is None else target, jax.random.key(args.seed),
                      M.make_segments(x, args.segments, args.n_segments),
                      _references(x) if "references" in needs else None,
                      args.layer or info.get("layer"))
    try:
        result = jax.block_until_ready(M.call(entry, inputs, M.settings(entry, False)))
    except (ValueError, TypeError) as e:  # jaxplain's own checks name the argument
        raise UserError(f"{entry.name}: {first_line(e)}") from None
    _write(args, entry, inputs, result, names, np.asarray(_forward(model, x)), info.get("classes"))
    return 0


@jax.jit
def _forward(model, x):
    return model(x)


def _references(x):
    """References of DeepLIFT-SHAP and expected gradients: a black image and a blurred copy
    of every image (uninformative inputs that keep each image's overall brightness)."""
    import jax.numpy as jnp

    import jaxplain as jx

    sigma = max(x.shape[1:3]) / 10.0
    return jnp.concatenate([jnp.zeros_like(x[:1]), jx.gaussian_blur(x, sigma)])


def _write(args, entry, inputs, result, names, outputs, classes) -> None:
    import numpy as np

    from .. import visualize as viz
    from .methods import pixel_maps, returns_features

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    values = viz.as_array(result)
    np.savez(out / f"{entry.name}.npz", values=values, files=np.array(names),
             segments=np.asarray(inputs.segments) if returns_features(entry) else np.zeros(0))
    x = np.asarray(inputs.x)
    maps = pixel_maps({entry.name: result}, {entry.name: returns_features(entry)}, {},
                      inputs.segments, x.shape[1:3])[entry.name]
    if outputs.ndim == 2:
        e = np.exp(outputs - outputs.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        classes = classes or [str(i) for i in range(probs.shape[1])]
        labels = [f"{n}: {classes[p]} ({probs[i, p]:.2f})"
                  for i, (n, p) in enumerate(zip(names, probs.argmax(1)))]
    else:
        labels = [f"{n}: {float(o):.3g}" for n, o in zip(names, outputs)]
    for start in range(0, len(x), 16):
        fig = viz.plot_attributions(x[start:start + 16], {entry.name: maps[start:start + 16]},
                                    labels=labels[start:start + 16])
        viz.save(fig, out / f"{entry.name}_{start // 16:03d}.png")
    if not args.quiet:
        print(f"explained {len(x)} images with {entry.name}: {out.resolve()}")
