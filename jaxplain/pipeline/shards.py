"""Resumable result folders: numbered `.npz` shards plus a JSON manifest.

Layout of a results folder::

    manifest.json          run fingerprint, readable arguments, completion state
    shard_000000.npz       results of batch 0 (only its valid rows)
    shard_000001.npz       ...

Under JAX's multi-process runtime (`jax.distributed.initialize`, `jax.process_count()
> 1`) each process computes the batches `i` with `i % processes == process` and keeps
them in a folder of its own, `DIR/process_000/`, ... (the layout above, each with its
manifest); `load_results(DIR)` reads them back as one run, in batch order.

Every file is written under a temporary name in the same folder, flushed to disk
and renamed into place (`os.replace` is atomic on POSIX and Windows), so a shard
either exists completely or not at all. A run restarted with the same arguments
skips the shards that exist; a shard also records a digest of the inputs it was
computed from, so a data loader that yields other data on the second run (a
different shuffle, a changed file) is detected instead of silently mixing runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any

import jax
import numpy as np

from .._core.types import Explanation

MANIFEST = "manifest.json"
FORMAT = 1
_SHARD_RE = re.compile(r"^shard_(\d{6,})\.npz$")
_PROCESS_RE = re.compile(r"^process_(\d{3,})$")
_ADDR_RE = re.compile(r" at 0x[0-9a-fA-F]+")
_FIELDS = Explanation._fields


def shard_name(index: int) -> str:
    return f"shard_{index:06d}.npz"


def process_folder(out: str | os.PathLike, process: int, processes: int) -> str:
    """The folder process `process` of `processes` writes to: `out` itself for one process."""
    return os.fspath(out) if processes == 1 else os.path.join(out, f"process_{process:03d}")


# ---- fingerprints -------------------------------------------------------------------------


def _update_array(h: Any, a: Any) -> None:
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    arr = np.ascontiguousarray(np.asarray(a))
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())


def describe(obj: Any, h: Any) -> Any:
    """Feeds a stable description of `obj` into hash `h`; returns a JSON-able summary.

    Arrays are hashed by content; callables by module and qualified name; other
    objects by `repr` with memory addresses removed (stable across processes).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(repr(obj).encode())
        return obj
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        sub = hashlib.blake2b(digest_size=8)
        _update_array(sub, obj)
        h.update(sub.digest())
        return f"array{tuple(np.shape(obj))}:{sub.hexdigest()}"
    if isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}{len(obj)}".encode())
        return [describe(o, h) for o in obj]
    if isinstance(obj, dict):
        h.update(f"dict{len(obj)}".encode())
        return {str(k): describe(obj[k], h) for k in sorted(obj, key=str)}
    leaves, treedef = jax.tree.flatten(obj)
    if leaves and leaves != [obj]:  # a pytree object (a trained explainer): by its content
        h.update(f"{type(obj).__qualname__}:{_ADDR_RE.sub('', str(treedef))}".encode())
        return {"pytree": type(obj).__qualname__, "leaves": [describe(a, h) for a in leaves]}
    if callable(obj) and hasattr(obj, "__qualname__"):
        name = f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
        h.update(name.encode())
        return name
    text = _ADDR_RE.sub("", repr(obj))
    h.update(f"{type(obj).__qualname__}:{text}".encode())
    return text if len(text) <= 200 else text[:200] + "..."


def model_digest(model: Any) -> str:
    """Digest of a `Model`: its apply object (without addresses) and every weight."""
    h = hashlib.blake2b(digest_size=16)
    describe(model.apply, h)
    leaves, treedef = jax.tree.flatten(model.params)
    h.update(_ADDR_RE.sub("", str(treedef)).encode())
    for leaf in leaves:
        _update_array(h, leaf)
    return h.hexdigest()


def input_digest(*arrays: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
        else:
            _update_array(h, a)
    return h.hexdigest()


# ---- writing ------------------------------------------------------------------------------


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class ShardFolder:
    """A results folder: checks the fingerprint, lists finished shards, writes new ones."""

    def __init__(self, path: str, fingerprint: str, arguments: dict,
                 process: tuple[int, int] = (0, 1)):
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.arguments = arguments
        os.makedirs(self.path, exist_ok=True)
        manifest = read_manifest(self.path, missing_ok=True)
        if manifest is not None and manifest.get("fingerprint") != fingerprint:
            raise ValueError(
                f"out: expected an empty folder or the results of the same run, but {self.path!r} "
                f"holds a run with other arguments (fingerprint {manifest.get('fingerprint')}, "
                f"this run {fingerprint}; stored arguments: {manifest.get('arguments')}). "
                f"Use a new folder, or delete this one to recompute."
            )
        if manifest is None:
            stray = [n for n in os.listdir(self.path) if _SHARD_RE.match(n)]
            if stray:
                raise ValueError(
                    f"out: {self.path!r} holds {len(stray)} shard files but no {MANIFEST}; "
                    f"expected an empty folder or a jaxplain results folder"
                )
        for name in os.listdir(self.path):  # leftovers of a run killed while writing
            if ".tmp-" in name and (name.startswith("shard_") or name.startswith(MANIFEST)):
                os.remove(os.path.join(self.path, name))
        self.done = {int(m.group(1)) for m in map(_SHARD_RE.match, os.listdir(self.path)) if m}
        self.manifest = manifest or {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "arguments": arguments,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "complete": False,
        }
        self.manifest["complete"] = False
        if process[1] > 1:
            self.manifest.update(process=process[0], processes=process[1])
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True, default=str).encode()
        _atomic_write(os.path.join(self.path, MANIFEST), lambda f: f.write(text))

    def stored_digest(self, index: int) -> str:
        with np.load(os.path.join(self.path, shard_name(index))) as z:
            return str(z["_input_digest"])

    def write(
        self, index: int, start: int, result: dict[str, np.ndarray], rowwise: list[str], digest: str
    ) -> None:
        arrays = {k: v for k, v in result.items()}
        arrays["_start"] = np.asarray(start, np.int64)
        arrays["_rowwise"] = np.asarray(rowwise, dtype=np.str_)
        arrays["_input_digest"] = np.asarray(digest)
        _atomic_write(os.path.join(self.path, shard_name(index)), lambda f: np.savez(f, **arrays))
        self.done.add(index)

    def finish(self, n_batches: int, n_examples: int) -> None:
        extra = sorted(i for i in self.done if i >= n_batches)
        if extra:
            raise ValueError(
                f"batches: the data ended after {n_batches} batches but {self.path!r} holds "
                f"shards {extra[:5]} beyond that; the dataset changed since the first run"
            )
        self.manifest.update(
            complete=True,
            n_batches=n_batches,
            n_examples=n_examples,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        self._write_manifest()


def read_manifest(path: str, missing_ok: bool = False) -> dict | None:
    file = os.path.join(path, MANIFEST)
    if not os.path.exists(file):
        if missing_ok:
            return None
        raise FileNotFoundError(
            f"path: no {MANIFEST} in {path!r}; expected a folder written by explain_to_shards"
        )
    with open(file) as f:
        return json.load(f)


def load_results(path: str | os.PathLike, *, allow_partial: bool = False) -> Explanation:
    """Concatenates the shards written by `explain_to_shards(..., out=path)` in order.

    Args:
      path: the results folder.
      allow_partial: load the finished leading shards of an interrupted run
        instead of raising.

    Returns:
      An `Explanation` of NumPy arrays with one row per example of the dataset.

    Raises:
      FileNotFoundError: `path` is not a results folder.
      ValueError: the run is incomplete (and `allow_partial` is False) or shards
        are missing.
    """
    path = os.fspath(path)
    subs = sorted(n for n in os.listdir(path) if _PROCESS_RE.match(n)) if (
        os.path.isdir(path) and not os.path.exists(os.path.join(path, MANIFEST))) else []
    if subs:
        indices, where = _process_shards(path, subs, allow_partial)
    else:
        indices, where = _folder_shards(path, allow_partial)
    parts: dict[str, list[np.ndarray]] = {}
    fixed: dict[str, np.ndarray] = {}
    for i in indices:
        with np.load(os.path.join(where[i], shard_name(i))) as z:
            rowwise = set(z["_rowwise"].tolist())
            for k in _FIELDS:
                if k in z.files:
                    if k in rowwise:
                        parts.setdefault(k, []).append(z[k])
                    else:
                        fixed.setdefault(k, z[k])
    if not indices:
        raise ValueError(f"path: no finished shards in {path!r}")
    fields = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
    fields.update({k: v for k, v in fixed.items() if k not in fields})
    return Explanation(**{k: fields.get(k) for k in _FIELDS})


def _found(path: str) -> list[int]:
    return sorted(int(m.group(1)) for m in map(_SHARD_RE.match, os.listdir(path)) if m)


def _leading(found) -> list[int]:
    """The leading run of consecutive batch indices in `found` (any collection)."""
    have, out = set(found), []
    while len(out) in have:
        out.append(len(out))
    return out


def _process_shards(path: str, subs: list[str], allow_partial: bool):
    """Batch indices and their folders over the process folders of a multi-process run:
    every process folder present, of the same run, each batch in exactly one of them."""
    manifests = {n: read_manifest(os.path.join(path, n)) for n in subs}
    first = next(iter(manifests.values()))
    world = int(first.get("processes", 0))
    names = [f"process_{r:03d}" for r in range(world)]
    if world < 2 or sorted(manifests) != names or any(
            m.get("fingerprint") != first.get("fingerprint") for m in manifests.values()):
        raise ValueError(f"path: expected the folders {names or 'process_000, ...'} of one "
                         f"multi-process run in {path!r}, found {subs}")
    where: dict[int, str] = {}
    for n in names:
        for i in _found(os.path.join(path, n)):
            if i in where or i % world != int(n.split("_")[1]):
                raise ValueError(f"path: batch {i} in {n} of {path!r} belongs to another "
                                 f"process (or is stored twice)")
            where[i] = os.path.join(path, n)
    complete = all(m.get("complete") for m in manifests.values())
    open_ = [n for n, m in manifests.items() if not m.get("complete")]
    return _select(path, where, int(first["n_batches"]) if complete else None, allow_partial,
                   f"({', '.join(open_)} not finished, {len(where)} shards so far); rerun "
                   f"every process with the same arguments to finish it"), where


def _folder_shards(path: str, allow_partial: bool):
    manifest = read_manifest(path)
    found = _found(path)
    where = dict.fromkeys(found, path)
    n = int(manifest["n_batches"]) if manifest.get("complete") else None
    return _select(path, where, n, allow_partial,
                   f"({len(found)} shards so far); rerun explain_to_shards with the same "
                   f"arguments to finish it"), where


def _select(path: str, where: dict[int, str], n_batches: int | None, allow_partial: bool,
            unfinished: str) -> list[int]:
    """The batch indices to load: all `n_batches` of a complete run (none may be
    missing); of an unfinished one (`n_batches` None) the leading run of consecutive
    batches with `allow_partial`, else an error saying `unfinished`."""
    if n_batches is not None:
        missing = sorted(set(range(n_batches)) - set(where))
        if missing:
            raise ValueError(f"path: shards {missing[:5]} of {n_batches} are missing in {path!r}")
        return list(range(n_batches))
    if allow_partial:
        return _leading(where)
    raise ValueError(f"path: the run in {path!r} is not complete {unfinished}, or pass "
                     f"allow_partial=True")
