"""The architecture of `jaxplain/` read from its source (AST only, nothing imported).

Used by `test_layout.py`: the module import graph (lazy imports inside functions
included), the layer of every module, and the sizes of modules and functions.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxplain"

LAYERS = ("_compile", "_core", "gradients", "perturbation", "outputs", "attention", "concepts",
          "training", "metrics", "visualize", "pipeline", "app")
"""Subpackages from the bottom up (shared/DESIGN.md). A module may import its own
subpackage and the ones allowed by `ALLOWED`; the top-level modules (`__init__`,
`testing`) may import every layer but `app`."""

_METHODS = {"_core", "_compile", "gradients", "perturbation"}
ALLOWED = {
    "_compile": set(),
    "_core": {"_compile"},
    "gradients": {"_core", "_compile"},
    "perturbation": {"_core", "_compile"},
    "outputs": _METHODS,  # output explanations: counterfactuals, decision planes, anchors, ensembles
    "attention": _METHODS | {"metrics"},  # attention models and concepts (ViT, rollout, TCAV)
    "concepts": _METHODS,  # concept-level explanations (CAVs, TCAV)
    "training": _METHODS,  # learning with explanations: attribution priors, amortised explainers
    "metrics": _METHODS | {"outputs"},
    "visualize": _METHODS | {"metrics", "outputs", "attention", "concepts", "training"},
    "pipeline": _METHODS | {"metrics", "training"},
    "app": set(LAYERS) | {"<top>"},
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "<top>"


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks (never executed)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports() -> dict[str, list[tuple[str, str, int]]]:
    """module -> [(imported module, imported name or "", line)] for jaxplain targets
    (imports under `if TYPE_CHECKING:` are annotations only and left out)."""
    mods = modules()
    out: dict[str, list[tuple[str, str, int]]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        found = []
        skip = _typing_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                found += [(a.name, "", node.lineno) for a in node.names
                          if a.name.startswith("jaxplain")]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                if not base.startswith("jaxplain"):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub, "", node.lineno) if sub in mods else
                                 (base, a.name, node.lineno))
        out[name] = found
    return out


def cycles(graph: dict[str, list[str]] | None = None) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), of `graph`
    (module -> imported modules; default: jaxplain's)."""
    if graph is None:
        graph = {m: sorted({t for t, _, _ in deps if t in imports_cache()} - {m})
                 for m, deps in imports_cache().items()}
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return comps


_CACHE: dict = {}


def imports_cache():
    if "imports" not in _CACHE:
        _CACHE["imports"] = imports()
    return _CACHE["imports"]


def function_lengths(path: pathlib.Path) -> list[tuple[str, int, int]]:
    """(qualified name, lines without the docstring, first line) of every function."""
    tree = ast.parse(path.read_text())
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    body = child.body
                    start = child.lineno
                    if (body and isinstance(body[0], ast.Expr)
                            and isinstance(body[0].value, ast.Constant)
                            and isinstance(body[0].value.value, str)):
                        doc = body[0].end_lineno - body[0].lineno + 1
                    else:
                        doc = 0
                    out.append((name, child.end_lineno - start + 1 - doc, start))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out
