"""The `jaxplain` command line.

    jaxplain demo [--quick] [--out DIR] [--quiet]      train, explain, evaluate, write a report
    jaxplain bench [--quick] [--out DIR] ...          time the methods (see `jaxplain bench --help`)
    jaxplain explain --model MODEL --images DIR [--method NAME] [--target T] [--out DIR]

`--model` takes a checkpoint written by `jaxplain demo` (`jaxplain_demo/model.ckpt`)
or `jaxplain.app.zoo.save`, or the user's own model as `module:object` or
`path/to/file.py:object` (see `cli_explain`). `--method` offers every method of
the registry that runs from images and a model (`jaxplain explain --list`).
Every mistake in the arguments exits with status 2 and one line on stderr.
Nothing here imports `benchmarks` until the bench command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import cli_explain

BENCH_HELP = ("time jaxplain's methods against their physical limit and against Captum, shap, "
              "lime and Quantus (`jaxplain bench --help`; results go to --out, by default the "
              "git-ignored benchmarks/out/)")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: {message.splitlines()[0]}\n")


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
    p = Parser(prog="jaxplain", description="JAX-native attribution engine.")
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
    sub.add_parser("bench", help=BENCH_HELP, add_help=False)
    cli_explain.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jaxplain` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the harness parses its own arguments (and --help)
        return _bench(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line argument error (2)
        return int(e.code or 0)
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
        return cli_explain.run(args)
    _parser().print_help()
    return 2


def _bench(argv: list[str]) -> int:
    try:
        import benchmarks
    except ImportError:
        here = Path(__file__).resolve().parents[2]  # the checkout: jaxplain/app/cli.py
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
    import inspect

    named = "prog" in inspect.signature(entry).parameters  # the usage line says `jaxplain bench`
    try:
        rc = entry(argv, prog="jaxplain bench") if named else entry(argv)
    except SystemExit as e:  # --help (0) or an argument error (2)
        return int(e.code or 0)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
