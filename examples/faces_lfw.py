"""Face / non-face CNN on scikit-image's `lfw_subset`, explained with Grad-CAM and with
LIME on SLIC superpixels.

    python examples/faces_lfw.py [--quick] [--out DIR]

`lfw_subset` ships with scikit-image: 100 face crops from Labeled Faces in the Wild
and 100 random non-face patches, 25x25 grey. The images are upsampled to 48x48 so
the superpixels and heatmaps are easy to read.
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


def main(argv=None) -> dict[str, Path]:
    args = parse(argv, "faces_lfw")
    q = args.quick
    ds = data.load_faces(size=48)
    # Global average pooling: the classifier scores every position, which Grad-CAM shows.
    net = zoo.SmallCNN((16, 32, 32), n_classes=2, pool_after=(0, 1), head="gap")
    trained = zoo.train_classifier(
        net,
        ds.x_train,
        ds.y_train,
        ds.x_test,
        ds.y_test,
        epochs=15 if q else 40,
        batch=32,
        lr=5e-3,
        augment=zoo.shift_augment(2),
        cache=zoo.default_cache_dir(),
    )
    model = trained.model
    print(f"face / non-face test accuracy {trained.accuracy:.1%} on {len(ds.x_test)} images")

    # A few faces and non-faces from the test split.
    faces = np.flatnonzero(ds.y_test == 1)[:3]
    others = np.flatnonzero(ds.y_test == 0)[: 1 if q else 3]
    idx = np.r_[faces, others]
    x = jnp.asarray(ds.x_test[idx])
    probs = np.asarray(jax.nn.softmax(model(x)))
    labels = [f"{ds.classes[ds.y_test[i]]}: p(face)={p[1]:.2f}" for i, p in zip(idx, probs)]
    target = 1  # explain the "face" logit for every image

    gc = jx.grad_cam(model, x, target=target, layer=trained.last_conv)
    ig = jx.integrated_gradients(model, x, target=target, steps=16 if q else 64)
    fig = viz.plot_attributions(
        x, {"Grad-CAM (face)": gc, "integrated gradients (face)": ig}, labels=labels, cell=2.0
    )
    out = {"gradcam": viz.save(fig, args.out / "gradcam.png")}

    # LIME on SLIC superpixels: which regions make the model say "face".
    segments = jx.superpixels(np.asarray(x), "slic", n_segments=40, compactness=0.1)
    lime = jx.lime(
        model,
        x,
        target=target,
        segments=segments,
        baseline="mean",
        key=jax.random.key(0),
        n_samples=300 if q else 1500,
    )
    print("LIME fit (weighted R^2):", np.round(np.asarray(lime.score), 2))
    fig = viz.plot_segments(x, segments, lime, top_k=6, positive_only=True, titles=labels)
    out["lime"] = viz.save(fig, args.out / "lime_slic.png")
    print("wrote", ", ".join(str(p) for p in out.values()))
    return out


if __name__ == "__main__":
    main()
