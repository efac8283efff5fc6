"""A griffe extension for jaxplain's docstrings and public functions (used by mkdocs.yml).

- griffe unwraps decorated functions, so it would show a registered method as it
  was written, not as it is exported: without the `progress=` argument the registry
  adds, and with the shared `Args` that the modules fill in at import still reading
  `{args}`. The docstring and that argument are taken from the public object.
- Arguments documented together, `model, x, target: see saliency.` (also when the
  names run on to the next line), become one entry per name, so each one is checked
  against the signature and shown in the parameter table.
- Bare `>>>` examples (doctest blocks outside an `Examples:` section) become fenced
  `pycon` code. Markdown would otherwise read them as quotes, and their output lines
  (`[(5, 3), (2, 3)]`) as reference links.

Nothing else changes: a parameter that is not in the signature still fails the
strict build.
"""

from __future__ import annotations

import importlib
import inspect
import re

import griffe

_ARGS = {"Args:", "Arguments:", "Parameters:", "Params:"}
_HEADER = re.compile(r"^(\S[^:]*):\s*$")
_NAMES = r"[A-Za-z_*]\w*(?:\s*,\s*\**[A-Za-z_]\w*)*"
_GROUP = re.compile(rf"^(\s+)({_NAMES})\s*,\s*({_NAMES})\s*:(.*)$")
_OPEN_GROUP = re.compile(rf"^(\s+)({_NAMES})\s*,\s*$")  # names continue on the next line


def split_grouped_args(text: str) -> str:
    """`a, b: text` in an Args section -> `a: text` and `b: text`."""
    out: list[str] = []
    section, item_indent = None, None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _HEADER.match(line):
            section, item_indent = line.strip(), None
        elif section in _ARGS and line.strip():
            indent = line[: len(line) - len(line.lstrip())]
            item_indent = indent if item_indent is None else item_indent
            opened = _OPEN_GROUP.match(line) if indent == item_indent else None
            if opened and i + 1 < len(lines):  # the names go on: join the next line
                line = opened.group(1) + opened.group(2) + ", " + lines[i + 1].strip()
                i += 1
            m = _GROUP.match(line) if indent == item_indent else None
            if m:
                indent, first, rest, desc = m.groups()
                for name in (first + "," + rest).split(","):
                    out.append(f"{indent}{name.strip()}:{desc}")
                i += 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def fence_doctests(text: str) -> str:
    """Bare doctest blocks -> ```pycon fences (left alone inside `Examples:` sections)."""
    out: list[str] = []
    section = None
    in_fence = False
    block_indent = None
    for line in text.splitlines():
        stripped = line.strip()
        if block_indent is not None and (not stripped or not line.startswith(block_indent)):
            out.append(block_indent + "```")
            block_indent = None
        if _HEADER.match(line):
            section = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        starts = stripped.startswith(">>>") and not in_fence and section != "Examples:"
        if block_indent is None and starts:
            block_indent = line[: len(line) - len(line.lstrip())]
            out.append(block_indent + "```pycon")
        out.append(line)
    if block_indent is not None:
        out.append(block_indent + "```")
    return "\n".join(out)


def public_object(path: str):
    """The run-time object at a dotted path (None when it cannot be imported)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name, None)
        return obj
    return None


def _as_exported(func: griffe.Function) -> None:
    """The docstring and the `progress` argument of the public (wrapped) function."""
    public = public_object(func.path)
    if public is None or not hasattr(public, "__wrapped__"):
        return
    doc = inspect.getdoc(public)
    if doc and func.docstring is not None:
        func.docstring.value = doc
    try:
        params = inspect.signature(public).parameters
    except (TypeError, ValueError):
        return
    if "progress" in params and "progress" not in [p.name for p in func.parameters]:
        last = [p for p in func.parameters if p.kind is griffe.ParameterKind.var_keyword]
        for p in last:
            del func.parameters[p.name]
        func.parameters["progress"] = griffe.Parameter(
            "progress", kind=griffe.ParameterKind.keyword_only,
            default=repr(params["progress"].default))
        for p in last:
            func.parameters[p.name] = p


class DocstringConventions(griffe.Extension):
    """Shows functions as exported, then applies `split_grouped_args` and `fence_doctests`."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002
        if isinstance(obj, griffe.Function):
            _as_exported(obj)
        doc = obj.docstring
        if doc is not None:
            doc.value = fence_doctests(split_grouped_args(doc.value))
