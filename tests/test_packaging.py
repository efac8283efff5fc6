"""Packaging: `pip install -e .` is quiet, and the wheel holds the library only."""

import site
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
LOG = Path(sys.prefix) / "install.log"  # written by run.sh for the install it made


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.skipif(not LOG.is_file(), reason="this environment was not installed by run.sh")
def test_editable_install_printed_no_setuptools_warning():
    log = LOG.read_text()
    assert "same name as your package" not in log, log
    assert "BuildBackendWarning" not in log, log


def _editable_pth() -> list[Path]:
    dirs = site.getsitepackages() + [site.getusersitepackages()]
    return [p for d in dirs for p in Path(d).glob("__editable__*jaxplain*.pth")]


@pytest.mark.skipif(not _editable_pth(), reason="jaxplain is not installed in editable mode")
def test_this_editable_install_is_a_path_entry():
    # the finder strategy writes `import __editable___jaxplain_finder; ...` instead
    lines = [ln for p in _editable_pth() for ln in p.read_text().splitlines() if ln.strip()]
    assert lines and not any(ln.startswith("import") for ln in lines), lines
    assert any(Path(ln).resolve() == ROOT for ln in lines), (lines, ROOT)


def test_editable_install_is_a_plain_path_entry():
    # setuptools picks its editable strategy from these two settings: with the packages
    # declared to live in the root, it writes a path entry; without, a meta-path finder
    # that warns on every install ("... same name as your package").
    tool = _pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == {"": "."}
    assert tool["packages"]["find"]["include"] == ["jaxplain*"]


def test_only_the_library_is_packaged():
    from setuptools import find_packages

    found = find_packages(where=str(ROOT), include=["jaxplain*"])
    assert "jaxplain" in found and "jaxplain.gradients" in found
    assert all(p == "jaxplain" or p.startswith("jaxplain.") for p in found)
    # every subpackage on disk is found (a missing __init__.py would drop it from wheels)
    on_disk = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
               for p in (ROOT / "jaxplain").rglob("__init__.py")}
    assert on_disk == set(found)


def test_docs_extra_is_declared():
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0] for r in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings", "ruff"} <= names  # ruff: signatures
