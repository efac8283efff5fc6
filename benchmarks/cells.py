"""Formatting of table cells shared by the report, the README section and the tables."""

from __future__ import annotations


def ms(t: dict | None) -> str:
    if not t or t.get("median_s") is None:
        return "—" if not t or "error" not in t else "error"
    return f"{1000 * t['median_s']:.1f}"


def x(r: float | None, digits: int = 2) -> str:
    return "—" if r is None else f"{r:.{digits}f}×"


def mb(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def config(name: str) -> str:
    return name.split("[", 1)[1].rstrip("]") if "[" in name else ""
