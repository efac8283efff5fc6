"""Every `>>>` example in jaxplain's docstrings runs and prints what it says.

The examples are the first code a reader copies; a stale one is a bug. One test
per module, collected from the package itself, so a new module's examples are
picked up without touching this file.
"""

import doctest
import importlib
import pkgutil

import pytest

import jaxplain

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxplain.__path__, prefix="jaxplain."))
FINDER = doctest.DocTestFinder(exclude_empty=True)


def _examples(name):
    module = importlib.import_module(name)
    return [t for t in FINDER.find(module) if t.examples]


WITH_EXAMPLES = [name for name in MODULES if _examples(name)]


def test_the_package_has_examples():
    # the collection itself can fail silently (a renamed package path): pin a floor
    assert len(WITH_EXAMPLES) >= 10, WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        runner.run(test, out=lambda s: None)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 0
    path = name.replace(".", "/")
    assert failed == 0, (
        f"{failed} of {attempted} examples in {name} failed (see: pytest --doctest-modules {path}.py)"
    )
