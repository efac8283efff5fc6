"""Shared types: the one result type every method returns, aliases, and `to_numpy`."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .stats import t_quantile

if TYPE_CHECKING:  # for annotations only: importing them here would be a cycle
    from .models import Model
    from .targets import Target

ArrayLike = jax.typing.ArrayLike
Array = jax.Array
PRNGKey = jax.Array
PyTree = Any

ModelLike = Union["Model", Callable[[jax.Array], Any], Any]
"""What a method accepts as `model`: a `jaxplain.Model` (from `from_linen`, `from_nnx`
or `from_callable`), an NNX module, or any function `f(x_batch) -> outputs`."""

TargetLike = Union[int, Sequence[int], ArrayLike, Literal["predicted"],
                   Callable[[jax.Array], jax.Array], "Target", None]
"""What a method accepts as `target`: a class index, one per example (a sequence or
an integer array), `"predicted"`, a callable `outputs -> (N,)`, or None for models
with one scalar output per example."""

PLOTTERS: dict[str, Callable[..., Any]] = {}
"""Plot functions the visualize layer registers (`Explanation.plot` uses them)."""

HIGHEST = jax.lax.Precision.HIGHEST
"""The matmul precision of statistics (Gram matrices, least squares, moments): explicit,
so a backend whose default is lower (TF32 on GPUs, bfloat16 passes on TPUs) cannot
change the estimators."""


class Explanation(NamedTuple):
    """What every attribution method returns: values plus optional diagnostics.

    A `NamedTuple`, hence a pytree: it passes through `jax.jit`, `jax.vmap` and
    `jax.tree.map`; fields a method does not fill stay `None` (an empty subtree).

    Attributes:
      values: the attributions, shaped like the inputs `(N, ...)` for gradient
        methods, `(N, d)` for feature methods (one value per feature).
      stderr: standard error of each value (sampling methods), same shape: an
        estimate of the root-mean-square error of the value.
      gap: per-example axiom gap, `(N,)`: for integrated gradients the completeness
        gap `sum(values) - (f(x) - f(baseline))`; for Shapley estimators the
        efficiency gap.
      score: per-example fit score of a surrogate `(N,)` (LIME's weighted R^2).
      intercept: per-example intercept of a surrogate `(N,)`.
      n_evals: number of model evaluations spent per example (an int array).
      stderr_df: the degrees of freedom of `stderr`, per example `(N,)` or per value
        (shaped like `stderr`), where it is estimated from few samples: `interval`
        scales it by Student t's quantile instead of the normal one. None: the
        normal quantile.
    """

    values: Array
    stderr: Array | None = None
    gap: Array | None = None
    score: Array | None = None
    intercept: Array | None = None
    n_evals: Array | None = None
    stderr_df: Array | None = None

    def interval(self, level: float = 0.95) -> tuple[Array, Array]:
        """The two-sided confidence interval `(low, high)` of each value:
        `values -+ q stderr`, with `q` the `(1 + level) / 2` quantile of Student's t with
        `stderr_df` degrees of freedom (the normal quantile where `stderr_df` is None).
        Works on device or host fields, inside `jax.jit` and `jax.vmap` too.

        >>> import numpy as np
        >>> e = Explanation(np.zeros((1, 2)), stderr=np.ones((1, 2)), stderr_df=np.array([7.0]))
        >>> [round(float(v), 3) for v in e.interval()[1][0]]
        [2.365, 2.365]
        """
        if self.stderr is None:
            raise ValueError("interval: this explanation has no stderr (a sampling "
                             "method's result has one)")
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)):
            raise TypeError(f"level: expected a probability in (0, 1), got {level!r}")
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
        df = jnp.inf if self.stderr_df is None else jnp.asarray(self.stderr_df)
        df = jnp.reshape(df, jnp.shape(df) + (1,) * (jnp.ndim(self.stderr) - jnp.ndim(df)))
        half = t_quantile((1.0 + float(level)) / 2.0, df) * jnp.asarray(self.stderr)
        return jnp.asarray(self.values) - half, jnp.asarray(self.values) + half

    def save(self, path: str | os.PathLike, **metadata: Any) -> str:
        """Writes the fields (as NumPy) and `metadata` (JSON-able values) to an `.npz` file.

        Returns the path written. `Explanation.load(path)` reads the fields back,
        `Explanation.read_metadata(path)` the metadata (with the field dtypes and
        jaxplain's version added).

        >>> import tempfile, os, numpy as np
        >>> e = Explanation(np.ones((2, 3), np.float32), n_evals=np.array([5, 5]))
        >>> p = e.save(os.path.join(tempfile.mkdtemp(), "ig.npz"), method="ig", steps=4)
        >>> Explanation.load(p).n_evals.tolist(), Explanation.read_metadata(p)["steps"]
        ([5, 5], 4)
        """
        host = to_numpy(self)
        arrays = {k: v for k, v in host._asdict().items() if v is not None}
        try:
            from importlib.metadata import version

            release = version("jaxplain")
        except Exception:  # noqa: BLE001 - informative only
            release = "unknown"
        meta = dict(metadata, jaxplain_version=release,
                    dtypes={k: str(v.dtype) for k, v in arrays.items()})
        try:
            text = json.dumps(meta)
        except TypeError as e:
            raise TypeError(f"metadata: expected JSON-able values, got {e}") from None
        path = os.fspath(path)
        with open(path, "wb") as f:
            np.savez(f, **arrays, __metadata__=np.asarray(text))
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> "Explanation":
        """The `Explanation` saved by `save` (NumPy arrays)."""
        with np.load(os.fspath(path)) as z:
            if "__metadata__" not in z.files:
                raise ValueError(f"path: expected a file written by Explanation.save, got "
                                 f"{os.fspath(path)!r} with arrays {z.files}")
            return Explanation(**{k: z[k] for k in Explanation._fields if k in z.files})

    @staticmethod
    def read_metadata(path: str | os.PathLike) -> dict:
        """The metadata saved with an `Explanation` (see `save`)."""
        with np.load(os.fspath(path)) as z:
            if "__metadata__" not in z.files:
                raise ValueError(f"path: expected a file written by Explanation.save, got "
                                 f"{os.fspath(path)!r}")
            return json.loads(str(z["__metadata__"]))

    def plot(self, images: Any, **kwargs: Any):
        """`jaxplain.visualize.plot_attributions(images, {"": self}, **kwargs)`: the
        explanation over its images; returns the matplotlib `Figure`."""
        plot = PLOTTERS.get("attributions")
        if plot is None:  # pragma: no cover - jaxplain/__init__ imports visualize
            raise RuntimeError("plot: jaxplain.visualize is not imported")
        return plot(images, {kwargs.pop("title", "explanation"): self}, **kwargs)


def to_numpy(result: Explanation | ArrayLike | PyTree) -> np.ndarray | PyTree:
    """Moves a result (or a bare array, or any pytree of arrays) to host NumPy.

    An `Explanation` becomes an `Explanation` of NumPy arrays; a bare array a
    `np.ndarray`. Works on results returned by jitted functions.

    >>> import jax.numpy as jnp
    >>> to_numpy(jnp.ones((2, 3))).shape
    (2, 3)
    """
    if isinstance(result, jax.core.Tracer):
        raise TypeError(
            "to_numpy: got a traced value; call it outside jax.jit/vmap on the returned result"
        )
    return jax.tree.map(np.asarray, jax.device_get(result))
