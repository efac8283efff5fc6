"""The tree shows shared/DESIGN.md's layers, and stays readable.

Read from the source (`_layout.py`, AST only): the import graph of `jaxplain/`
(lazy imports inside functions included) has no cycle, imports only point down
the layers, no private name crosses a subpackage, `cpu.py` is reached only through
the compile layer's hook, modules stay under 400 lines and functions under 80
(docstrings not counted), also in the benchmarks, examples and the app.
"""

import pathlib

import _layout as L

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

PENDING = {  # over the limits today, being split; the tests fail when one is fixed and still listed
    "examples/digits_cnn.py:main", "examples/natural_images.py:main",
    "examples/tabular_surrogate.py:main",
    "jaxplain/app/demo.py:run", "jaxplain/app/demo_methods.py:method_specs",
    "jaxplain/pipeline/dataset.py",
}


def test_import_graph_has_no_cycles():
    assert L.cycles() == []


def test_imports_point_down_the_layers():
    bad = []
    for module, deps in L.imports_cache().items():
        here = L.layer_of(module)
        for target, _, line in deps:
            there = L.layer_of(target)
            if there == here:
                continue
            ok = there != "app" if here == "<top>" else there in L.ALLOWED[here]
            if not ok:
                bad.append(f"{module}:{line} imports {target} ({here} -> {there})")
    assert bad == []


def test_no_private_name_crosses_a_subpackage():
    bad = []
    for module, deps in L.imports_cache().items():
        here = L.layer_of(module)
        for target, name, line in deps:
            if L.layer_of(target) == here and here != "<top>":
                continue
            parts = target.split(".")[1:] + ([name] if name else [])
            private = [p for p in parts if p.startswith("_") and p not in ("_core", "_compile")]
            if private:
                bad.append(f"{module}:{line} imports {target} {name}".strip())
    assert bad == []


def test_cpu_machinery_is_reached_only_through_the_hook():
    users = sorted(m for m, deps in L.imports_cache().items()
                   if any(t == "jaxplain._compile.cpu" for t, _, _ in deps))
    assert users == ["jaxplain._compile.hook"]


def _python_files():
    for root in ("jaxplain", "benchmarks", "examples"):
        yield from sorted((L.ROOT / root).rglob("*.py"))


def _too_long() -> dict[str, int]:
    found = {}
    for p in _python_files():
        rel = str(p.relative_to(L.ROOT))
        if (n := p.read_text().count("\n")) > MAX_MODULE_LINES:
            found[rel] = n
        for name, n, _ in L.function_lengths(p):
            if n > MAX_FUNCTION_LINES:
                found[f"{rel}:{name}"] = n
    return found


def test_modules_and_functions_are_short():
    found = _too_long()
    assert {k: n for k, n in found.items() if k not in PENDING} == {}
    assert sorted(PENDING - set(found)) == []  # fixed: take it off the list


def test_the_checks_see_what_they_check():
    """The readers find lazy imports, cycles and long functions (not vacuous checks)."""
    lazy = [t for t, _, _ in L.imports_cache()["jaxplain.gradients.modelviz"]]
    assert "jaxplain.gradients.layer" in lazy  # imported inside a function
    assert L.cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert L.cycles({"a": ["b"], "b": []}) == []
    lengths = {name: n for name, n, _ in L.function_lengths(pathlib.Path(__file__))}
    assert lengths["test_imports_point_down_the_layers"] == 12
