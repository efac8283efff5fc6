"""The JSON record of a run: machine, backend and device, versions, and writing it."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxplain._compile import compiler_options, config, default_platform, rewrites_for
from jaxplain._core import batching

SCHEMA = 2
"""Version of the JSON layout (bump when fields change). 2: `device`, `no_case`,
the rewrites-off timing (`jaxplain_rewrites_off`) and `ratios["rewrites_off/on"]`."""


RESULT_FIELDS = (
    "case",
    "method",
    "model",
    "kind",
    "n_images",
    "n_evals",
    "settings",
    "jaxplain",
    "limit",
    "limit_chunked",
    "limit_dispatch",
    "jaxplain_program",
    "jaxplain_rewrites_off",
    "peers",
    "best_peer",
    "ratios",
    "agreement",
    "note",
    "phases_s",
)
TIMING_FIELDS = ("first_s", "compile_s", "median_s", "min_s", "times_s", "rss_peak_mb", "xla_mb")


# ---- machine and versions -------------------------------------------------------------


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict:
    """Hardware, load, software versions and the git commit of this run."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or None
        )
    except Exception:  # noqa: BLE001
        commit = None
    try:
        import psutil

        mem_gb = psutil.virtual_memory().total / 2**30
    except ImportError:
        mem_gb = None
    torch = sys.modules.get("torch")  # only if a peer already imported it
    torch_threads = torch.get_num_threads() if torch is not None else None
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_avg_start": load,
        "memory_gb": mem_gb,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "torch_threads": torch_threads,
        "xla_compiler_options": compiler_options(default_platform()),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": commit,
        "versions": {
            m: _version(m)
            for m in (
                "jaxplain",
                "jax",
                "jaxlib",
                "flax",
                "numpy",
                "torch",
                "captum",
                "shap",
                "lime",
                "quantus",
                "scikit-image",
                "scikit-learn",
                "psutil",
            )
        },
    }


MEMORY_STATS = ("bytes_limit", "bytes_in_use", "peak_bytes_in_use", "largest_alloc_size")


def memory_stats(device: Any = None) -> dict | None:
    """The device's memory counters (bytes) from `device.memory_stats()`; None where the
    backend keeps none (CPU)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    return {k: int(stats[k]) for k in MEMORY_STATS if k in stats} if stats else None


def device_info(peers: bool) -> dict:
    """What jaxplain and the peers run on: platform, device kind and memory, the chunk size
    and CPU-rewrite mode of jaxplain's programs, and (with `peers`) torch's device."""
    devices = jax.devices()
    platform_ = default_platform()
    info = {
        "platform": platform_,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "memory_stats": memory_stats(devices[0]),
        "default_batch_size": batching.default_batch_size(),
        "cpu_rewrites": config.read("cpu_rewrites"),
        "cpu_rewrites_active": rewrites_for(platform_),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "jax_platforms_env": os.environ.get("JAX_PLATFORMS"),
        "torch": None,
    }
    if peers:
        info["torch"] = torch_info()
    return info


def torch_info() -> dict | None:
    """torch's device for the peers, its name and memory, and its TF32 settings."""
    try:
        import torch
    except ImportError:
        return None
    from .twins import torch_device

    dev = torch_device()
    out = {"device": dev, "threads": torch.get_num_threads(),
           "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
           "allow_tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)}
    if dev.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(dev))
        out.update(name=props.name, memory_gb=props.total_memory / 2**30)
    return out


def peers_available() -> dict[str, str | None]:
    """Which peers are installed: `{name: None}` when found, else why not (no import done)."""
    from importlib.util import find_spec

    return {
        mod: None if find_spec(mod) is not None else "not installed"
        for mod in ("torch", "captum", "shap", "lime", "quantus")
    }


# ---- the JSON record ------------------------------------------------------------------


def new_record(args: dict) -> dict:
    """An empty run record with every top-level field present."""
    return {
        "schema": SCHEMA,
        "args": args,
        "machine": machine_info(),
        "device": device_info(peers=not args.get("no_peers", False)),
        "peers_available": peers_available(),
        "twins": {},
        "results": [],
        "agreement": [],
        "sample_efficiency": [],
        "scaling": [],
        "skipped": [],
        "no_case": [],  # registered methods without a benchmark case
        "wall_s": None,
        "extras_wall_s": {},  # seconds per extra (sample_efficiency, scaling); cases: res["wall_s"]
    }


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if dataclasses.is_dataclass(obj):
        return _clean(dataclasses.asdict(obj))
    return str(obj)


def write_json(record: dict, path: str | Path) -> Path:
    """Writes the record (NumPy scalars converted, NaN -> null) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
