"""The `jaxplain` command line.

    jaxplain demo [--quick] [--out DIR] [--quiet]      train, explain, evaluate, write a report
    jaxplain bench [ARGS...]                          the benchmark harness (benchmarks/)
    jaxplain explain --method ig --model CKPT --images DIR [--out DIR]

`--model` takes a checkpoint written by `jaxplain demo` (`jaxplain_demo/model.ckpt`)
or `jaxplain.zoo.save`: a self-describing file (architecture in a JSON header, weights
as flax bytes), so no Python code is needed to name the model.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXPLAIN_METHODS = {
    "saliency": "saliency",
    "gxi": "gradient_x_input",
    "ig": "integrated_gradients",
    "smoothgrad": "smoothgrad",
    "guided": "guided_backprop",
    "deeplift": "deeplift",
    "lrp": "lrp",
    "gradcam": "grad_cam",
    "occlusion": "occlusion",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def example_parser(doc: str, out: str | Path) -> argparse.ArgumentParser:
    """The argument parser every script in `examples/` starts from: `--quick`, `--out`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced budgets (also JAXPLAIN_QUICK=1)")
    ap.add_argument("--out", default=str(out))
    return ap


def parse_example_args(
    ap: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parses an example's arguments: `JAXPLAIN_QUICK=1` implies `--quick`; `--out` is created."""
    args = ap.parse_args(argv)
    args.quick = args.quick or os.environ.get("JAXPLAIN_QUICK") == "1"
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxplain", description="JAX-native attribution engine.")
    sub = p.add_subparsers(dest="command", metavar="{demo,bench,explain}")
    d = sub.add_parser("demo", help="train a small CNN on digits, explain it, write a report")
    d.add_argument("--quick", action="store_true", help="small budgets: well under a minute")
    d.add_argument("--out", default="jaxplain_demo", help="output folder (default ./jaxplain_demo)")
    d.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    d.add_argument("--cache", default=None, help="weights cache (default ~/.cache/jaxplain)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs in the cache folder",
    )
    b = sub.add_parser(
        "bench", help="run the benchmark harness (arguments are passed on)", add_help=False
    )
    b.add_argument("args", nargs=argparse.REMAINDER)
    e = sub.add_parser("explain", help="explain images in a folder with a saved model")
    e.add_argument("--method", default="ig", choices=sorted(EXPLAIN_METHODS))
    e.add_argument("--model", required=True, help="checkpoint (e.g. jaxplain_demo/model.ckpt)")
    e.add_argument("--images", required=True, help="folder of images (png, jpg, ...)")
    e.add_argument("--out", default="jaxplain_explain", help="output folder")
    e.add_argument("--target", default="predicted", help="class index or 'predicted'")
    e.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jaxplain` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # pass everything through untouched (including --help)
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from . import demo

        demo.run(
            args.out,
            quick=args.quick,
            quiet=args.quiet,
            cache=args.cache,
            seed=args.seed,
            compile_cache=not args.no_compile_cache,
        )
        return 0
    if args.command == "explain":
        return _explain(args)
    _parser().print_help()
    return 2


def _bench(argv: list[str]) -> int:
    try:
        import benchmarks
    except ImportError:
        here = Path(__file__).resolve().parents[1]
        if (here / "benchmarks" / "__init__.py").is_file():
            sys.path.insert(0, str(here))
            try:
                import benchmarks
            except ImportError as e:
                print(
                    f"jaxplain bench: the benchmark harness failed to import: {e}", file=sys.stderr
                )
                return 2
        else:
            print(
                "jaxplain bench: the benchmark harness (benchmarks/) is not available here; run it "
                "from a source checkout: `bash run.sh bench` (peers: pip install -e '.[bench]')",
                file=sys.stderr,
            )
            return 2
    entry = getattr(benchmarks, "main", None)
    if entry is None:
        try:
            from benchmarks.__main__ import main as entry  # type: ignore
        except ImportError:
            print("jaxplain bench: benchmarks has no main(argv)", file=sys.stderr)
            return 2
    rc = entry(argv)
    return int(rc or 0)


def load_images(folder: str | Path, shape: Sequence[int]) -> tuple[list[str], object]:
    """Reads every image in `folder`, converted and resized to `shape = (H, W, C)` in [0, 1]."""
    import numpy as np
    from skimage import io, transform
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    h, w, c = shape
    out = []
    for f in files:
        im = np.asarray(io.imread(f), np.float32)
        if im.max() > 1.0:
            im = im / 255.0
        if im.ndim == 3 and im.shape[-1] == 4:
            im = rgba2rgb(im)
        if c == 1 and im.ndim == 3:
            im = rgb2gray(im)
        if c == 3 and im.ndim == 2:
            im = gray2rgb(im)
        if im.ndim == 2:
            im = im[..., None]
        out.append(transform.resize(im, (h, w, c), anti_aliasing=True).astype(np.float32))
    return [f.name for f in files], np.stack(out)


def _explain(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxplain as jx

    from .. import visualize as viz
    from . import zoo

    try:
        module, variables, header = zoo.load(args.model)
    except (OSError, ValueError, KeyError) as e:
        print(f"jaxplain explain: cannot load --model {args.model}: {e}", file=sys.stderr)
        return 2
    try:
        names, x = load_images(args.images, header["input_shape"])
    except (OSError, ValueError) as e:
        print(f"jaxplain explain: {e}", file=sys.stderr)
        return 2
    model = jx.from_linen(module, variables)
    target = args.target if args.target == "predicted" else int(args.target)
    fn = getattr(jx, EXPLAIN_METHODS[args.method], None)
    if fn is None:
        print(
            f"jaxplain explain: method {args.method} is not available in this jaxplain",
            file=sys.stderr,
        )
        return 2
    kw = {}
    if args.method == "smoothgrad":
        kw["key"] = jax.random.key(0)
    if args.method == "gradcam":
        kw["layer"] = f"conv{len(module.features) - 1}"
    if args.method == "lrp":  # pixels are read into [0, 1]: the box rule's bounds
        kw["rule"] = jx.relevance.epsilon_gamma_box(0.0, 1.0)
    x = jnp.asarray(x)
    res = fn(model, x, target=target, **kw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    values = viz.as_array(res)
    np.savez(out / f"{args.method}.npz", values=values, files=np.array(names))
    probs = np.asarray(jax.nn.softmax(model(x)))
    classes = header.get("classes") or [str(i) for i in range(probs.shape[1])]
    labels = [
        f"{n}: {classes[p]} ({probs[i, p]:.2f})"
        for i, (n, p) in enumerate(zip(names, probs.argmax(1)))
    ]
    for start in range(0, len(x), 16):
        fig = viz.plot_attributions(
            x[start : start + 16],
            {args.method: values[start : start + 16]},
            labels=labels[start : start + 16],
        )
        viz.save(fig, out / f"{args.method}_{start // 16:03d}.png")
    if not args.quiet:
        print(f"explained {len(x)} images with {EXPLAIN_METHODS[args.method]}: {out.resolve()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
