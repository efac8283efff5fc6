"""The settings of one dataset run, shared by `explain_dataset` and `explain_to_shards`.

`RunConfig` is validated once when it is built (every bad value is named before the
loader starts or anything compiles) and is then passed whole to the run, the host
side and the jitted runner instead of a long list of keywords.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from .._core import validate as V

NAN_POLICIES = ("raise", "warn", "ignore")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a dataset is cut, laid out and checked (the method's own arguments aside).

    Attributes:
      batch_size: examples per call of the method (every call has this shape).
      mesh: the `jax.sharding.Mesh` each batch is laid over (axis "batch"), or None
        for one device. Built from `devices=` when that is given instead.
      progress: show a progress bar.
      nan_policy: "raise", "warn" or "ignore" for NaN/inf in inputs and results.
      eval_batch_size: the method's own `batch_size=` (model inputs per chunk).
      keys: the dict keys of inputs and targets when data items are dicts.
      prefetch: host batches prepared ahead by the loader thread.

    Example:
      >>> RunConfig(batch_size=10).rows
      10
    """

    batch_size: int
    mesh: Mesh | None = None
    progress: bool = True
    nan_policy: str = "raise"
    eval_batch_size: int | None = None
    keys: tuple[str, str] = ("x", "target")
    prefetch: int = 2
    devices: dataclasses.InitVar[Any] = None

    def __post_init__(self, devices: Any) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        bs = V.check_int(self.batch_size, "batch_size", minimum=1, maximum=V.MAX_INT32)
        put("batch_size", bs)
        put("eval_batch_size", V.check_batch_size(self.eval_batch_size))
        put("nan_policy", V.check_choice(self.nan_policy, "nan_policy", NAN_POLICIES))
        put("progress", bool(self.progress))
        put("prefetch", V.check_int(self.prefetch, "prefetch", minimum=1, maximum=64))
        keys = self.keys
        if (
            not isinstance(keys, (tuple, list))
            or len(keys) != 2
            or not all(isinstance(k, str) for k in keys)
        ):
            V.fail(
                "keys",
                "a pair of dict keys (inputs, targets) such as ('image', 'label')",
                repr(keys),
                TypeError,
            )
        put("keys", tuple(keys))
        put("mesh", mesh_from(self.mesh, devices))

    @classmethod
    def from_call(cls, arguments: dict[str, Any]) -> "RunConfig":
        """The config of a call whose arguments (e.g. `locals()`) include every field
        and `devices`; other arguments are ignored."""
        names = [f.name for f in dataclasses.fields(cls)] + ["devices"]
        return cls(**{n: arguments[n] for n in names})

    @property
    def n_devices(self) -> int:
        """Devices along the mesh's "batch" axis (1 without a mesh)."""
        return 1 if self.mesh is None else int(self.mesh.shape["batch"])

    @property
    def rows(self) -> int:
        """Rows of a device batch: `batch_size` rounded up to a multiple of `n_devices`."""
        return -(-self.batch_size // self.n_devices) * self.n_devices


def mesh_from(mesh: Any, devices: Any) -> Mesh | None:
    if mesh is not None and devices is not None:
        raise ValueError("mesh, devices: expected at most one of them, got both")
    if devices is not None:
        if isinstance(devices, jax.Device):
            devices = [devices]
        try:
            devs = list(devices)
        except TypeError:
            V.fail("devices", "a list of jax devices", type(devices).__name__, TypeError)
        if not devs or not all(isinstance(d, jax.Device) for d in devs):
            V.fail(
                "devices",
                "a non-empty list of jax devices (e.g. jax.devices())",
                repr(devices)[:80],
                TypeError,
            )
        if len(set(devs)) != len(devs):
            V.fail("devices", "distinct devices", repr(devs))
        mesh = Mesh(np.array(devs), ("batch",))
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        V.fail("mesh", "a jax.sharding.Mesh", type(mesh).__name__, TypeError)
    if "batch" not in mesh.axis_names:
        V.fail("mesh", "a mesh with an axis named 'batch'", f"axes {mesh.axis_names}")
    local = set(jax.local_devices())
    if any(d not in local for d in mesh.devices.flat):
        V.fail(
            "mesh",
            "devices of this process only (run one call per host; see the "
            "jaxplain.pipeline docstring)",
            "a mesh spanning other processes",
        )
    return mesh


class RunSummary(NamedTuple):
    """What `explain_to_shards` returns once the folder is complete.

    Attributes:
      path: the results folder.
      n_examples: examples in the dataset.
      n_batches: batches (= shards) in the dataset.
      n_computed: batches computed in this call.
      n_skipped: batches found already saved and skipped.
      seconds: wall time of this call.
      images_per_second: examples computed in this call per second of computing
        (the time spent skipping saved batches is not counted, nor are their
        examples).
    """

    path: str
    n_examples: int
    n_batches: int
    n_computed: int
    n_skipped: int
    seconds: float
    images_per_second: float
