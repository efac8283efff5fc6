"""The docs cannot rot: tutorial code runs, generated parts match the registry, the
README stays small and its links resolve.

Each page's ```python blocks run in order in one namespace, as a reader would paste
them, in a temporary folder. `--8<-- "path"` lines (pymdownx snippets) are replaced by
the file. The digits model every tutorial starts from is trained once per session.
A page holding `<!-- docs-test: slow -->` is marked slow; a block right after
`<!-- docs-test: skip -->` is shown but not run (e.g. code for several hosts).
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SETUP = "docs/snippets/digits_cnn.py"
README_LIMIT = 12_000  # 12 KB as the project counts it

FENCE = re.compile(r"^(<!-- docs-test: skip -->\s*\n)?```python\n(.*?)^```\s*$", re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', re.M)


def _gen():
    spec = importlib.util.spec_from_file_location("gen_docs", DOCS / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def blocks(path: Path) -> list[str]:
    """The python code of a Markdown page that runs, snippets included, in order."""
    out = []
    for skip, code in FENCE.findall(path.read_text()):
        if not skip:
            out.append(code)
    return out


def _expand(code: str) -> str:
    return SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(), code)


PAGES = sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts)
PAGES.append(ROOT / "README.md")
RUNNABLE = [p for p in PAGES if blocks(p)]


def _param(p: Path):
    slow = "<!-- docs-test: slow -->" in p.read_text()
    return pytest.param(p, id=str(p.relative_to(ROOT)), marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The namespace left by the setup snippet (the trained digits CNN), built once."""
    ns: dict = {"__name__": "__docs__"}
    exec(compile((ROOT / SETUP).read_text(), SETUP, "exec"), ns)
    return ns


def test_pages_with_code_are_found():
    names = {p.name for p in RUNNABLE}
    assert {"quickstart.md", "own-model.md", "pipelines.md", "README.md"} <= names, names


@pytest.mark.parametrize("page", [_param(p) for p in RUNNABLE])
def test_page_code_runs(page, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAXPLAIN_CACHE", str(tmp_path / "cache"))
    import matplotlib.pyplot as plt

    from jaxplain._core import registry

    saved = dict(registry.REGISTRY)  # "adding a method" registers one: undo it after
    ns: dict = {"__name__": "__docs__"}
    try:
        for i, code in enumerate(blocks(page)):
            if code.strip() == f'--8<-- "{SETUP}"':
                ns.update(request.getfixturevalue("trained"))  # as it ran once this session
                continue
            try:
                exec(compile(_expand(code), f"{page.name}[block {i}]", "exec"), ns)
            except Exception as e:  # name the page and block, then let pytest show it
                raise AssertionError(f"{page.relative_to(ROOT)}: python block {i} failed") from e
    finally:
        registry.REGISTRY.clear()
        registry.REGISTRY.update(saved)
        plt.close("all")


def test_readme_is_small():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, the limit is {README_LIMIT}"


def test_generated_parts_are_current():
    # README's method table, the choosing-a-method table, docs/api/*.md, mkdocs.yml's nav
    assert _gen().stale() == [], "run: python docs/gen_docs.py"


def test_every_public_name_is_on_one_api_page():
    import jaxplain

    names = _gen().documented_names()
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert not repeated, f"documented twice: {repeated}"
    missing = sorted(set(jaxplain.__all__) - set(names))
    assert not missing, f"add to PAGES in docs/gen_docs.py: {missing}"
    assert not sorted(set(names) - set(jaxplain.__all__))


def test_notes_and_members_name_real_objects():
    import jaxplain
    from jaxplain._core import registry

    gen = _gen()
    assert set(gen.NOTES) <= set(registry.REGISTRY)
    for name, (_, members) in gen.MEMBERS.items():
        obj = getattr(jaxplain, name)
        for m in members or ():
            assert hasattr(obj, m), f"jaxplain.{name}.{m}"


def test_cost_column_follows_the_registry():
    # the table's numbers are the registry's evals on the reference call, not typed in
    from jaxplain._core import registry

    gen = _gen()
    assert gen.cost(registry.get("integrated_gradients")) == (50 + 2, ("steps",))
    assert gen.cost(registry.get("saliency")) == (1, ())
    # 4 x 4 grid: d = 16; the 2^16 - 2 inner coalitions run in 64 passes of 1024 (the last
    # repeats 2), plus f(x) and f(baseline): n_evals counts every row
    assert gen.cost(registry.get("exact_shapley"))[0] == 2**16 + 2
    n, reads = gen.cost(registry.get("deeplift_shap"))
    assert (n, reads) == (2 * 8, ("references",))
    assert "| gradients | `saliency` 1;" in gen.readme_table()


def test_splice_replaces_only_between_markers():
    gen = _gen()
    text = "a\n<!-- m:start -->\nold\n<!-- m:end -->\nb\n"
    assert gen.splice(text, "<!-- m:start -->", "<!-- m:end -->", "new\n", "t") == (
        "a\n<!-- m:start -->\nnew\n<!-- m:end -->\nb\n"
    )
    with pytest.raises(ValueError, match="markers"):
        gen.splice("no markers", "<!-- m:start -->", "<!-- m:end -->", "x", "t")


LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


@pytest.mark.parametrize("page", [pytest.param(p, id=str(p.relative_to(ROOT))) for p in PAGES])
def test_relative_links_resolve(page):
    for target, _ in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for p in DOCS.rglob("*.md"):
        rel = p.relative_to(DOCS).as_posix()
        if not rel.startswith("snippets/"):
            assert rel in nav, f"mkdocs.yml nav misses {rel}"


def test_readme_says_what_deeplift_does_with_max_pools():
    # issue 39: the routing is shap's DeepExplainer's (it conserves), not Captum's
    text = (ROOT / "README.md").read_text()
    assert "Captum-style routing" not in text
    assert "DeepExplainer" in text and "summation-to-delta" in text

