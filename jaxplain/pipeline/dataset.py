"""Explaining whole datasets: compile-once streaming, resumable output, many devices.

`explain_dataset` runs any jaxplain method over an iterable of batches and yields
the results; `explain_to_shards` does the same and writes them to a folder:

- **compile once**: the stream is re-chunked into batches of exactly `batch_size`
  examples and the last one is padded (padded rows are dropped from the results),
  so every jitted function sees one shape and compiles once per dataset;
- **overlap**: a background thread prepares host batches (your loader, re-chunking,
  checks) while the device computes, the next batch is sent to the device before
  the current one is dispatched, and results of batch `i` are fetched while batch
  `i + 1` runs;
- **reproducible**: for stochastic methods the key of example `i` (counted over
  the whole dataset) is `jax.random.fold_in(key, i)`, so results depend neither
  on `batch_size`, nor on the devices, nor on where a run resumed;
- **resumable**: `explain_to_shards(..., out=DIR)` writes each batch as
  `DIR/shard_000123.npz` (atomic rename) next to a `manifest.json` holding a
  fingerprint of the run's arguments; rerunning the same call skips finished
  shards (Ctrl-C says how many are saved). `load_results(DIR)` concatenates them;
- **many devices**: with `mesh=` (a `jax.sharding.Mesh` with a "batch" axis) or
  `devices=`, each batch is laid over the devices with
  `NamedSharding(mesh, P("batch"))` and the same jitted method runs on all of them;
  results equal the single-device ones.

Several processes (`jax.distributed`)
-------------------------------------
Beyond one machine, JAX's own multi-process runtime is the engine. Start the same
script once per process (SLURM, `mpirun`, a scheduler, or by hand), each with its
process id; every process reads the same data, and `explain_to_shards` gives batch
`i` to process `i % jax.process_count()`, on that process's local devices, writing
`out/process_000/`, `out/process_001/`, ... (each a resumable folder)::

    # python explain.py RANK, once per process; on Cloud TPU and SLURM
    # initialize() needs no arguments
    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=2,
                               process_id=int(sys.argv[1]))
    jx.explain_to_shards(jx.integrated_gradients, model, loader(), out="results",
                         batch_size=256, devices=jax.local_devices(), target="predicted")

`load_results("results")` reads the process folders back as one run in batch order,
and refuses a run with a missing process, a batch stored twice or one in the wrong
process's folder. If a process dies, start every process again with the same
arguments: each skips the batches it saved (tests/test_multiprocess.py kills one of
two processes mid-run and checks that nothing is lost or duplicated). Keys fold the
example index over the whole dataset, so the values equal a one-process run's. A mesh
spanning devices of other processes is rejected: it would need every process to feed
the same global batch in lockstep, for no gain here.

Compilation cache
-----------------
`enable_compilation_cache(path)` turns on JAX's persistent compilation cache, so a
second process with the same shapes loads the compiled programs from disk instead
of compiling them again (call it before the first computation).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Iterator

import jax
from jax.sharding import Mesh

from .._core import validate as V
from .._core.types import Explanation
from .config import RunConfig as RunConfig
from .config import RunSummary as RunSummary
from .run import Run
from .shards import load_results as load_results

__all__ = [
    "explain_dataset",
    "explain_to_shards",
    "load_results",
    "enable_compilation_cache",
    "RunSummary",
    "RunConfig",
]


def explain_dataset(
    method: Callable | str,
    model: Any,
    batches: Iterable | Any,
    *,
    batch_size: int,
    mesh: Mesh | None = None,
    devices: Any = None,
    progress: bool = True,
    nan_policy: str = "raise",
    eval_batch_size: int | None = None,
    keys: tuple[str, str] = ("x", "target"),
    prefetch: int = 2,
    **method_kwargs: Any,
) -> Iterator[Explanation]:
    """Runs `method` over a dataset in fixed-size batches and yields the results.

    Nothing is written to disk; to save resumable results to a folder use
    `explain_to_shards`, which takes the same arguments plus `out=`.

    Args:
      method: a jaxplain method such as `jaxplain.integrated_gradients` (or its
        name as a string), or any function `method(model, x, **kwargs)` returning
        an `Explanation` or an array with one row per example.
      model: the model (`Model`, NNX module or callable).
      batches: the data: one array `(N, ...)`, or any iterable (list, generator,
        data loader) of arrays `(n_i, ...)`, of `(x, target)` pairs, or of dicts
        with the keys named by `keys`. Sizes `n_i` may vary; NumPy, JAX and
        anything `np.asarray` accepts work.
      batch_size: examples per call of `method` (every call has this shape).
      mesh: a `jax.sharding.Mesh` with an axis named "batch" to lay each batch
        over (other axes replicate).
      devices: alternatively, a list of devices (a one-axis mesh is built).
      progress: show a tqdm progress bar with images/second.
      nan_policy: what to do with NaN/inf in the inputs or in the results:
        "raise" (default), "warn" or "ignore".
      eval_batch_size: passed to the method as its own `batch_size=` (model
        inputs per chunk inside the method).
      keys: the dict keys of the inputs and the targets when items are dicts.
      prefetch: host batches prepared ahead by the background thread.
      **method_kwargs: passed to every call (`target=`, `steps=`, `key=` ...).
        `key` is folded with the index of each example. A `target` array with one
        entry per example is sliced per batch when `batches` is one array;
        otherwise pass per-example targets inside the data.

    Returns:
      An iterator of `Explanation`s (NumPy arrays), one per batch of `batch_size`
      examples in order (the last may be shorter). Arguments are checked when
      the function is called; the data is read as the iterator is consumed.

    Raises:
      TypeError, ValueError: bad arguments or data (the message names the
        argument and, for data, the batch and example); `out=` (use
        `explain_to_shards`).

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jaxplain import testing
      >>> model = testing.linear_model(jnp.ones((3, 2)))
      >>> def grad_x_input(model, x, *, target):  # any method(model, x, ...) works
      ...     return Explanation(x * model.params[0][:, target])
      >>> data = (np.ones((4, 3), np.float32) for _ in range(3))
      >>> [e.values.shape for e in explain_dataset(grad_x_input, model, data,
      ...                                          batch_size=5, target=1, progress=False)]
      [(5, 3), (5, 3), (2, 3)]
    """
    if "out" in method_kwargs:
        raise TypeError(
            "out: explain_dataset streams its results and writes no files; to write "
            "resumable shards to a folder, call jaxplain.explain_to_shards(method, model, "
            "batches, out=..., batch_size=..., ...) with the same arguments (it returns a "
            "RunSummary; load_results(out) reads the folder)"
        )
    config = RunConfig.from_call(locals())
    return Run(method, model, batches, config, method_kwargs).stream()


def explain_to_shards(
    method: Callable | str,
    model: Any,
    batches: Iterable | Any,
    *,
    out: str | os.PathLike,
    batch_size: int,
    mesh: Mesh | None = None,
    devices: Any = None,
    progress: bool = True,
    nan_policy: str = "raise",
    eval_batch_size: int | None = None,
    keys: tuple[str, str] = ("x", "target"),
    prefetch: int = 2,
    **method_kwargs: Any,
) -> RunSummary:
    """Runs `method` over a dataset and writes the results to a resumable folder.

    Each batch is written as `out/shard_000123.npz` (atomically: a shard exists
    completely or not at all) next to a `manifest.json` holding a fingerprint of
    the call's arguments. Running the same call again skips the saved shards, so
    an interrupted run resumes where it stopped; a folder of a run with other
    arguments, or a loader that yields other data, is refused. `load_results(out)`
    reads the folder back as one `Explanation`.

    Ctrl-C prints one line (how many batches are saved, and that the same call
    resumes) and raises `KeyboardInterrupt` again; batches already running on the
    device are saved first.

    Args:
      method: the method or its name, as in `explain_dataset`.
      model: the model.
      batches: the data, as in `explain_dataset` (an array or an iterable).
      out: the results folder (created if needed): empty, or holding an earlier
        run of the same call.
      batch_size: examples per call of `method`, and per shard.
      mesh: a `jax.sharding.Mesh` with a "batch" axis to lay each batch over.
      devices: alternatively, a list of devices.
      progress: show a progress bar. After a resume it starts at the saved
        examples, and its images/second counts only the work of this call.
      nan_policy: "raise" (default), "warn" or "ignore" for NaN/inf.
      eval_batch_size: the method's own `batch_size=`.
      keys: the dict keys of inputs and targets when items are dicts.
      prefetch: host batches prepared ahead by the background thread.
      **method_kwargs: passed to every call (`target=`, `steps=`, `key=` ...),
        as in `explain_dataset`.

    Returns:
      A `RunSummary` once the whole dataset is written.

    Raises:
      TypeError, ValueError: bad arguments or data (as in `explain_dataset`), or
        `out` holds a run with other arguments or computed from other data.
      KeyboardInterrupt: on Ctrl-C, after the message.

    Example:
      >>> import tempfile, jax.numpy as jnp, numpy as np
      >>> from jaxplain import testing
      >>> model = testing.linear_model(jnp.ones((3, 2)))
      >>> def grad_x_input(model, x, *, target):
      ...     return Explanation(x * model.params[0][:, target])
      >>> folder = tempfile.mkdtemp()
      >>> data = np.ones((12, 3), np.float32)
      >>> s = explain_to_shards(grad_x_input, model, data, out=folder, batch_size=5,
      ...                       target=1, progress=False)
      >>> s.n_batches, s.n_computed, s.n_skipped
      (3, 3, 0)
      >>> again = explain_to_shards(grad_x_input, model, data, out=folder, batch_size=5,
      ...                           target=1, progress=False)
      >>> again.n_computed, again.n_skipped
      (0, 3)
      >>> load_results(folder).values.shape
      (12, 3)
    """
    if out is None or not isinstance(out, (str, os.PathLike)):
        V.fail("out", "a folder path (str or os.PathLike)", type(out).__name__, TypeError)
    config = RunConfig.from_call(locals())
    run = Run(method, model, batches, config, method_kwargs, out=out)
    try:
        run.write_all()
    except KeyboardInterrupt:
        print(run.interrupted_message(), file=sys.stderr, flush=True)
        raise KeyboardInterrupt from None  # Ctrl-C: the line above says what is saved
    return run.summary()


def enable_compilation_cache(
    path: str | os.PathLike, *, min_compile_time_secs: float = 0.0, min_entry_size_bytes: int = 0
) -> str:
    """Turns on JAX's persistent compilation cache in folder `path`.

    Compiled programs are stored on disk, and a later process that compiles the
    same program (same function, shapes, devices and JAX version) loads it instead
    of compiling. Call this once at start-up, before the first computation.
    Equivalent to setting `jax_compilation_cache_dir` and the two thresholds with
    `jax.config.update` (or the `JAX_COMPILATION_CACHE_DIR` environment variable).

    The folder is trusted code: do not share it with users you do not trust.

    Args:
      path: cache folder (created if needed).
      min_compile_time_secs: only cache programs that took at least this long to
        compile (JAX's default is 1 s; 0 caches everything).
      min_entry_size_bytes: only cache programs at least this large.

    Returns:
      The absolute cache path.
    """
    if not isinstance(path, (str, os.PathLike)):
        V.fail("path", "a folder path (str or os.PathLike)", type(path).__name__, TypeError)
    V.check_float(min_compile_time_secs, "min_compile_time_secs", minimum=0.0)
    V.check_int(min_entry_size_bytes, "min_entry_size_bytes", minimum=0)
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir not in (None, "", path):
        cc.reset_cache()  # re-initialise on the new folder at the next compile
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    return path
