"""A report written as Markdown and HTML side by side from the same blocks."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Report:
    """Markdown and HTML written side by side from the same blocks."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, s: str):
        self.blocks.append(("p", s))

    def heading(self, s: str):
        self.blocks.append(("h", s))

    def figure(self, path: str, caption: str):
        self.blocks.append(("img", (path, caption)))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", (header, rows)))

    def write(self, out: Path) -> tuple[Path, Path]:
        md = [f"# {self.title}", ""]
        ht = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>body{{font-family:sans-serif;max-width:1100px;"
            "margin:2em auto;padding:0 1em}img{max-width:100%}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, b in self.blocks:
            if kind == "p":
                md += [b, ""]
                ht.append(f"<p>{html.escape(b)}</p>")
            elif kind == "h":
                md += [f"## {b}", ""]
                ht.append(f"<h2>{html.escape(b)}</h2>")
            elif kind == "img":
                md += [f"![{b[1]}]({b[0]})", "", f"*{b[1]}*", ""]
                ht.append(
                    f"<figure><img src='{html.escape(b[0])}' alt='{html.escape(b[1])}'>"
                    f"<figcaption>{html.escape(b[1])}</figcaption></figure>"
                )
            else:
                header, rows = b
                md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
                ht.append(
                    "<table><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                    + "</tr>"
                    + "".join(
                        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                        for r in rows
                    )
                    + "</table>"
                )
        ht.append("</body></html>")
        (out / "report.md").write_text("\n".join(md))
        (out / "index.html").write_text("\n".join(ht))
        return out / "report.md", out / "index.html"

    def figures(self) -> list[str]:
        return [b[0] for k, b in self.blocks if k == "img"]


def _fmt(v: float | None, unit: str = "", digits: int = 3) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.{digits}g}{unit}"


def _fmt_time(seconds: float | None) -> str:
    """`12.3 ms` below a second, `4.15 s` above; `-` when unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"
