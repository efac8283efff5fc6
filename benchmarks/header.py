"""The header of a report: the run, the machine and device, versions, the twins; and the
legend of the time table."""

from __future__ import annotations


def header(record: dict) -> str:
    m = record.get("machine", {})
    v = {k: x for k, x in m.get("versions", {}).items() if x}
    load = m.get("load_avg_start")
    load_end = m.get("load_avg_end")
    args = record.get("args", {})
    mode = "quick" if args.get("quick") else "full"
    if args.get("passes"):
        rounds = (f"{args.get('repeats')} timed calls each in {args['passes']} passes of blocks,"
                  f" each block after a pause and {args.get('rewarm_s', 0) * 1e3:.0f} ms of"
                  " untimed calls; jaxplain and its references interleaved in one block")
    else:  # records from before the blocks
        rounds = f"{args.get('repeats')} interleaved rounds"
    if args.get("min_timed_s"):
        # records before "extended" gave the extra rounds to jaxplain and its limit only
        who = "every contender" if args.get("extended") == "all" else "jaxplain and its limit"
        cap = f"up to {args.get('max_rounds')}"
        if args.get("peer_max_rounds"):
            cap += f" for jaxplain and its limits, {args['peer_max_rounds']} for peers"
        rounds += (f" ({who}: more when cheap, {cap},"
                   f" for ~{args['min_timed_s']:g} s of timed calls each)")
    missing = [k for k, why in record.get("peers_available", {}).items() if why]
    lines = [
        f"Run {m.get('date_utc', '?')} ({mode}, {rounds}, "
        f"medians; wall {record.get('wall_s') or 0:.0f} s) on {m.get('cpu', '?')}, "
        f"{m.get('cpus_usable', '?')} usable cores, backend {m.get('jax_backend', '?')}; "
        f"load average {load[0]:.1f} at start" + (f", {load_end[0]:.1f} at end" if load_end else "")
        if load
        else "",
        "Versions: "
        + ", ".join(f"{k} {x}" for k, x in v.items())
        + (f"; git {m['git_commit']}" if m.get("git_commit") else ""),
    ]
    opts = m.get("xla_compiler_options")
    if opts is not None:
        shown = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "none"
        lines.append(
            f"XLA compiler options of jaxplain's programs and of the limits: {shown}"
            + (f"; XLA_FLAGS {m['xla_flags']!r}" if m.get("xla_flags") else "")
        )
    if missing:
        lines.append("Peers not installed: " + ", ".join(missing))
    twins = record.get("twins", {})
    ok = [f"{k} ({t['max_rel_logit_error']:.1e})" for k, t in twins.items() if t.get("verified")]
    if ok:
        lines.append(
            "Twin models verified (max relative logit error, Flax vs PyTorch): " + ", ".join(ok)
        )
    bad = [f"{k}: {t.get('problem')}" for k, t in twins.items() if not t.get("verified")]
    if bad:
        lines.append("Peers not timed on: " + "; ".join(bad))
    lines.insert(1, device_line(record))
    return "\n\n".join(l for l in lines if l)


def device_line(record: dict) -> str:
    """Where jaxplain and the peers ran: platform, device, memory, chunk and CPU rewrites."""
    d = record.get("device")
    if not d:
        return ""
    mem = d.get("memory_stats") or {}
    limit = f", {mem['bytes_limit'] / 2**30:.1f} GB" if mem.get("bytes_limit") else ""
    torch = d.get("torch") or {}
    peers = torch.get("device", "—") + (f" ({torch['name']})" if torch.get("name") else "")
    rewrites = "on" if d.get("cpu_rewrites_active") else "off"
    return (f"Device: {d.get('platform')} ({d.get('device_kind')} x{d.get('device_count')}"
            f"{limit}); jaxplain's default chunk {d.get('default_batch_size')} inputs; CPU "
            f"rewrites `{d.get('cpu_rewrites')}` ({rewrites}); peers on {peers}")


LEGEND = """\
*jaxplain / limit*: jaxplain's steady-state time over the **physical limit**, the same number of
model evaluations (forward, or forward+backward; for Grad-CAM forward + backward to the layer) run
as one jitted batch on inputs already on device, run as jaxplain runs the model (its XLA options,
pooling gradients and first-layer patch products), measured in the same rounds, interleaved with
jaxplain's calls; "(… chunked)" is the
ratio to the same evaluations streamed in chunks of jaxplain's default `batch_size`
(`batching.default_batch_size()`, 64 on CPU), shown when there are more, and "(… dispatch b)" the ratio to the same evaluations run as
separate jitted calls of b inputs (the same default chunk, 64): on CPU, cache-sized batches are often the
fastest way to run them, faster than one huge batch. "(program …)" is the method compiled whole
(as under a caller's `jax.jit`) over the limit: what is left of *jaxplain / limit* beyond it is the
public call's own work per call (argument checks and dispatch, a fraction of a millisecond), which
only shows on calls of a few milliseconds. *peer time / jaxplain
time*: above 1× means jaxplain is faster; each peer at its best setting from a sweep and at its
defaults, with the same inputs and number of model evaluations, on a PyTorch twin with identical
weights. Every side gets its inputs as its own arrays, built once (jaxplain and the limit
`jax.Array`s, Captum torch tensors, shap and lime NumPy). Compile time is the XLA compilation
inside jaxplain's first call."""


LEGEND = """\
*jaxplain / limit*: jaxplain's steady-state time over the **physical limit**, the same number of
model evaluations (forward, or forward+backward; for Grad-CAM forward + backward to the layer) run
as one jitted batch on inputs already on device, run as jaxplain runs the model (its XLA options,
pooling gradients and first-layer patch products), measured in the same rounds, interleaved with
jaxplain's calls; "(… chunked b)" is the ratio to the same evaluations streamed in chunks of
jaxplain's default `batch_size` b (`batching.default_batch_size()`: 64 on CPU, larger on an
accelerator; where one chunk holds them all, the same program as one batch), and "(… dispatch b)"
the ratio to the same evaluations run as separate jitted calls of b inputs: on CPU, cache-sized
batches are often the fastest way to run them, faster than one huge batch. "(program …)" is the
method compiled whole (as under a caller's `jax.jit`) over the limit: what is left of *jaxplain /
limit* beyond it is the public call's own work per call (argument checks and dispatch, a fraction
of a millisecond), which only shows on calls of a few milliseconds. *rewrites off / on*: jaxplain's
time with the XLA:CPU rewrites off (`JAXPLAIN_CPU_REWRITES=0`) over with them on (`auto`), in the
same rounds; they are off on GPU/TPU under `auto` (no column there). *peer time / jaxplain time*:
above 1× means jaxplain is faster; each peer at its best setting from a sweep and at its defaults,
with the same inputs and number of model evaluations, on a PyTorch twin with identical weights
(on CUDA when torch sees a GPU). Every side gets its inputs as its own arrays, built once (jaxplain
and the limit `jax.Array`s, Captum torch tensors, shap and lime NumPy). Compile time is the XLA
compilation inside jaxplain's first call."""
