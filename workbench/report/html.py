"""One self-contained HTML report: plotly.js inlined once, figures, tables and notes.

The page loads nothing from the network (no CDN, no web fonts, no MathJax), so it opens from
disk on a machine with no connection; every figure keeps plotly's interactivity.

>>> report = Report("Study: sentiment on gemma-3-270m")
>>> report.add("Curves", figures=[curves_figure(sweeps)], tables=[fits])
>>> report.write("runs/study/report.html")
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from workbench.atomic import write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
table.data th { background: #f4f4f4; }
.note { color: #555; font-size: 0.9em; }
.figure { margin: 1em 0; }
"""


@dataclass
class Section:
    """A heading with text, figures, tables and raw HTML snippets, shown in that order."""

    heading: str
    text: str = ""
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[pd.DataFrame] = field(default_factory=list)
    snippets: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)

    def add(self, heading: str, text: str = "", **parts) -> Section:
        section = Section(heading, text, **parts)
        self.sections.append(section)
        return section

    @property
    def n_figures(self) -> int:
        return sum(len(s.figures) for s in self.sections)

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        if self.intro:
            body.append(f'<p class="note">{html.escape(self.intro)}</p>')
        count = 0
        for section in self.sections:
            body.append(f"<h2>{html.escape(section.heading)}</h2>")
            if section.text:
                body.extend(f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n"))
            for figure in section.figures:
                count += 1
                body.append(
                    '<div class="figure">'
                    + figure.to_html(
                        full_html=False,
                        include_plotlyjs=False,
                        include_mathjax=False,
                        div_id=f"figure-{count}",
                        config={"displaylogo": False, "responsive": True},
                    )
                    + "</div>"
                )
            for table in section.tables:
                shown = table.dropna(axis="columns", how="all")  # a column of NaN says nothing
                body.append(
                    shown.to_html(
                        classes="data", index=False, float_format=lambda v: f"{v:.4g}", border=0
                    )
                )
            body.extend(section.snippets)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body>{''.join(body)}</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, self.to_html())
        return path
