"""What `jaxplain explain` reads: the model (`--model`), the images and the target.

Every problem with them raises `UserError` with a one-line message; the command
prints it and exits with status 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Sequence

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
CHANNELS = {1: "grey", 3: "RGB", 4: "RGBA"}
MODEL_FORMS = ("a checkpoint file (jaxplain demo / jaxplain.app.zoo.save), or module:object / "
               "path/to/file.py:object naming a jaxplain Model, an NNX model, or a function "
               "returning (linen_module, variables) or one of those")


class UserError(Exception):
    """A mistake in the command's arguments: one line, exit status 2."""


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


# ---- the model ---------------------------------------------------------------------------


def load_model(spec: str) -> tuple[Any, dict]:
    """`(Model, info)` for a `--model` value; `info` may hold `input_shape` and `classes`."""
    if Path(spec).is_file():
        return _checkpoint(spec)
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise UserError(f"--model: no file {spec!r}; expected {MODEL_FORMS}")
    obj, found = _import(where, attr, spec)  # `input_shape`, `classes` of the module ...
    model, info = _as_model(obj, spec)
    return model, {**found, **info}  # ... unless the object says otherwise


def _checkpoint(path: str) -> tuple[Any, dict]:
    import jaxplain as jx

    from . import zoo

    try:
        module, variables, header = zoo.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's argument
        raise UserError(f"--model: cannot read the checkpoint {path}: {first_line(e)}") from None
    info = {"input_shape": tuple(header["input_shape"]), "classes": header.get("classes")}
    if hasattr(module, "features"):
        info["layer"] = f"conv{len(module.features) - 1}"
    return jx.from_linen(module, variables), info


def _import(where: str, attr: str, spec: str) -> Any:
    try:
        if where.endswith(".py") or os.sep in where:
            path = Path(where).resolve()
            if not path.is_file():
                raise UserError(f"--model {spec}: no file {where}")
            sys.path.insert(0, str(path.parent))  # the file's own imports resolve next to it
            name = f"jaxplain_user_model_{abs(hash(str(path)))}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())  # importable from the current folder
            module = importlib.import_module(where)
    except UserError:
        raise
    except BaseException as e:  # noqa: BLE001 - the user's module: report, never a traceback
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserError(f"--model {spec}: importing {where} failed: {first_line(e)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"--model {spec}: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj, {k: getattr(module, k) for k in ("input_shape", "classes") if hasattr(module, k)}


def _as_model(obj: Any, spec: str) -> tuple[Any, dict]:
    import flax.linen as nn
    from flax import nnx

    import jaxplain as jx

    info = {k: getattr(obj, k) for k in ("input_shape", "classes") if hasattr(obj, k)}
    if isinstance(obj, nn.Module):
        raise UserError(f"--model {spec}: a Linen module needs its variables; name a function "
                        "returning (module, variables)")
    if not isinstance(obj, (jx.Model, nnx.Module)) and callable(obj) and _no_arguments(obj):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - the user's factory
            raise UserError(f"--model {spec}: calling it failed: {first_line(e)}") from None
    if isinstance(obj, nn.Module):  # what a factory (or a Linen class) returned
        raise UserError(f"--model {spec}: gave a Linen module without its variables; return "
                        "(module, variables) from a function")
    if isinstance(obj, (tuple, list)) and len(obj) in (2, 3) and isinstance(obj[0], nn.Module):
        if len(obj) == 3:
            info["input_shape"] = obj[2]
        return jx.from_linen(obj[0], obj[1]), info
    if isinstance(obj, jx.Model):
        return obj, info
    if isinstance(obj, nnx.Module):
        return jx.from_nnx(obj), info
    if callable(obj) and not isinstance(obj, type):
        return jx.from_callable(obj), info  # f(x_batch) -> outputs
    raise UserError(f"--model {spec}: expected a jaxplain Model, an NNX model, (linen_module, "
                    f"variables) or a function returning one, got {type(obj).__name__}")


def _no_arguments(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in params)


# ---- the images ----------------------------------------------------------------------------


def read_images(source: str | Path) -> tuple[list[str], list[Any]]:
    """Names and float images `(H, W, C)` in [0, 1] of a file or every image in a folder."""
    import numpy as np
    from skimage import io

    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise UserError(f"--images: no file or folder {source}")
    if not files:
        raise UserError(f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    images = []
    for f in files:
        try:
            im = np.asarray(io.imread(f))
        except Exception as e:  # noqa: BLE001 - an unreadable file is the user's argument
            raise UserError(f"--images: cannot read {f}: {first_line(e)}") from None
        scale = 255.0 if im.dtype == np.uint8 or im.max() > 1.0 else 1.0
        im = im.astype(np.float32) / scale
        images.append(im[..., None] if im.ndim == 2 else im)
    return [f.name for f in files], images


def fit_images(images: Sequence[Any], shape: Sequence[int]) -> tuple[Any, str | None]:
    """The images converted to `shape = (H, W, C)`, stacked, and a one-line note of what changed
    (None when nothing did)."""
    import numpy as np
    from skimage import transform
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb

    h, w, c = (int(v) for v in shape)
    out, changed = [], {}
    for im in images:
        own = im.shape[-1]
        before = f"{im.shape[0]}x{im.shape[1]} {CHANNELS.get(own, f'{own}-channel')}"
        if im.shape[-1] == 4 and c != 4:
            im = rgba2rgb(im)
        if c == 1 and im.shape[-1] == 3:
            im = rgb2gray(im)[..., None]
        if c == 3 and im.shape[-1] == 1:
            im = gray2rgb(im[..., 0])
        if im.shape[-1] != c:
            raise UserError(f"--images: cannot convert a {before} image to {c} channels")
        if im.shape[:2] != (h, w) or own != c:
            changed[before] = changed.get(before, 0) + 1
        if im.shape[:2] != (h, w):
            im = transform.resize(im, (h, w, c), anti_aliasing=True)
        out.append(np.asarray(im, np.float32))
    if not changed:
        return np.stack(out), None
    n = sum(changed.values())
    whence = (next(iter(changed)) if len(changed) == 1
              else ", ".join(f"{k}: {v}" for k, v in changed.items()))
    note = (f"converted {n} of {len(out)} image{'s' if len(out) > 1 else ''} to the model's "
            f"input {h}x{w} {CHANNELS.get(c, f'{c}-channel')} (from {whence})")
    return np.stack(out), note


def input_shape(model: Any, info: dict, images: Sequence[Any], given: str | None) -> tuple:
    """The model's input `(H, W, C)`: `--input-shape`, the model's own, or the first image's
    size with the first channel count (its own, 3, 1) the model runs on."""
    import jax
    import jax.numpy as jnp

    if given:
        try:
            shape = tuple(int(v) for v in given.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise UserError(f"--input-shape: expected H,W,C (e.g. 28,28,1), got {given!r}")
        return shape
    if info.get("input_shape") is not None:
        return tuple(int(v) for v in info["input_shape"])
    h, w, own = images[0].shape
    for c in dict.fromkeys((3 if own == 4 else own, 3, 1)):
        try:
            jax.eval_shape(model, jnp.zeros((1, h, w, c), jnp.float32))
            return (h, w, c)
        except Exception:  # noqa: BLE001 - try the next channel count
            continue
    raise UserError(f"--model: it does not run on {h}x{w} images with 1 or 3 channels; "
                    "pass --input-shape H,W,C")


def parse_target(text: str, n_classes: int | None, classes: Sequence[str] | None) -> Any:
    """`--target`: "predicted", a class index below `n_classes`, or a class name."""
    if text == "predicted":
        return text
    names = list(classes or [])
    if text in names:
        return names.index(text)
    if n_classes is None:
        raise UserError(f"--target: the model has one output per image; expected 'predicted', "
                        f"got {text!r}")
    try:
        t = int(text)
    except ValueError:
        t = None
    if t is None or not 0 <= t < n_classes:
        named = f", or a class name ({', '.join(names)})" if names else ""
        raise UserError(f"--target: expected 'predicted' or a class index 0..{n_classes - 1}"
                        f"{named}, got {text!r}")
    return t


def check_layer(model: Any, layer: str | None) -> None:
    """`--layer` names a layer of the model (when the model lists its layers)."""
    if layer is None:
        return
    try:
        names = list(model.layer_names())
    except (TypeError, AttributeError):
        raise UserError("--layer: this model has no named layers (a Linen or NNX model has)") \
            from None
    if layer not in names:
        raise UserError(f"--layer: expected one of {', '.join(names)}, got {layer!r}")
