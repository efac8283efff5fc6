"""Superpixels, feature maps, filters and feature visualisation on scikit-image's photographs
(astronaut, coffee, chelsea).

    python examples/natural_images.py [--quick] [--out DIR]

There is no pretrained ImageNet network without a download, so we train our own
small one in seconds: a fully convolutional CNN that tells which of the three
photographs a random 32x32 crop comes from. Its first-layer filters become colour
and edge detectors, and because it ends in global average pooling it runs on the
whole 96x96 photographs, where we explain it with LIME on SLIC superpixels.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from jaxplain.app import data, zoo
from jaxplain import visualize as viz
from jaxplain.app.cli import example_parser, parse_example_args


def parse(argv, name):
    ap = example_parser(__doc__, Path(__file__).parent / "output" / name)
    return parse_example_args(ap, argv)


def random_crops(images: np.ndarray, n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` random `size x size` crops per image, with the image index as the label."""
    rng = np.random.default_rng(seed)
    k, h, w, _ = images.shape
    ys = rng.integers(0, h - size + 1, (k, n))
    xs = rng.integers(0, w - size + 1, (k, n))
    crops = np.stack(
        [images[i, y : y + size, x : x + size] for i in range(k) for y, x in zip(ys[i], xs[i])]
    )
    flips = rng.random(len(crops)) < 0.5
    crops[flips] = crops[flips, :, ::-1]
    return crops.astype(np.float32), np.repeat(np.arange(k), n).astype(np.int32)


def main(argv=None) -> dict[str, Path]:
    args = parse(argv, "natural_images")
    q = args.quick
    photos = data.load_natural_images(size=96)
    names = list(photos)
    x = jnp.asarray(np.stack([photos[n] for n in names]))  # (3, 96, 96, 3)
    trained = train(np.asarray(x), q)
    model = trained.model
    print(f"which-photo accuracy on held-out crops: {trained.accuracy:.1%}")
    out = regions(args, model, x, names, trained.last_conv)
    out.update(inside(args, trained, x, names))
    out["feature_visualization"] = feature_visualization(args, model, x, names)
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


def train(x: np.ndarray, q: bool):
    """A fully convolutional CNN telling which photograph a random 32x32 crop comes from."""
    xtr, ytr = random_crops(x, 150 if q else 600, 32, seed=0)
    xte, yte = random_crops(x, 50, 32, seed=1)
    net = zoo.SmallCNN((16, 32, 32), n_classes=3, pool_after=(0, 1), head="gap")
    return zoo.train_classifier(
        net, xtr, ytr, xte, yte, epochs=2 if q else 8, lr=3e-3, cache=zoo.default_cache_dir()
    )


def regions(args, model, x, names, layer: str) -> dict[str, Path]:
    """Superpixels and LIME, and Grad-CAM: which regions of each photograph the network uses."""
    segments = jx.superpixels(np.asarray(x), "slic", n_segments=60, compactness=10)
    lime = jx.lime(
        model,
        x,
        target=jnp.arange(3),
        segments=segments,
        baseline="blur",
        key=jax.random.key(0),
        n_samples=200 if args.quick else 1000,
    )
    out = {"superpixels": viz.save(
        viz.plot_segments(x, segments, lime, top_k=8, titles=names),
        args.out / "superpixels_lime.png",
    )}
    gc = jx.grad_cam(model, x, target=jnp.arange(3), layer=layer)
    out["gradcam"] = viz.save(
        viz.plot_attributions(x, {"Grad-CAM": gc}, labels=names, cell=2.4), args.out / "gradcam.png"
    )
    return out


def inside(args, trained, x, names) -> dict[str, Path]:
    """Inside the network: first-layer filters and the feature maps of two layers."""
    params = trained.variables["params"]
    out = {"filters": viz.save(
        viz.plot_filters(
            params["conv0"]["kernel"], ncols=8, title="conv0: 3x3 RGB filters (grey = 0)", cell=0.8
        ),
        args.out / "filters.png",
    )}
    for layer in ("conv0", "conv2"):
        acts = jx.layer_activations(trained.model, x[:1], layer=layer)
        fig = viz.plot_feature_maps(
            acts,
            image=x[0],
            max_maps=11,
            ncols=6,
            title=f"{layer} feature maps on {names[0]} (most active first)",
        )
        out[f"maps_{layer}"] = viz.save(fig, args.out / f"feature_maps_{layer}.png")
    return out


def feature_visualization(args, model, x, names) -> Path:
    """Inputs that maximise single conv2 channels and each class."""
    steps = 32 if args.quick else 256
    acts = np.asarray(jx.layer_activations(model, x, layer="conv2").values)
    channels = [int(c) for c in np.argsort(-acts.mean((0, 1, 2)))[: 3 if args.quick else 6]]
    fv_ch = jx.feature_visualization(
        model, layer="conv2", channel=channels, key=jax.random.key(1), image_shape=(48, 48, 3),
        steps=steps,
    )
    fv_cls = jx.feature_visualization(
        model, target=[0, 1, 2], key=jax.random.key(2), image_shape=(48, 48, 3), steps=steps
    )
    fig = viz.plot_feature_visualization(
        jnp.concatenate([fv_ch.images, fv_cls.images]),
        titles=[f"conv2 ch {c}" for c in channels] + [f"class {n}" for n in names],
        ncols=len(channels) + 3,
        title="activation maximisation",
    )
    return viz.save(fig, args.out / "feature_visualization.png")


if __name__ == "__main__":
    main()
