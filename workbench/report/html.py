"""One self-contained HTML report: plotly.js inlined once, figures, tables and notes.

The page loads nothing from the network (no CDN, no web fonts, no MathJax), so it opens from
disk on a machine with no connection; every figure keeps plotly's interactivity.

>>> report = Report("Study: sentiment on gemma-3-270m")
>>> report.add("Curves", figures=[curves_figure(sweeps)], tables=[fits])
>>> report.write("runs/study/report.html")
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from workbench.atomic import write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; display: block;
  max-width: 100%; overflow-x: auto; }
.answer { background: #f3f7ff; border: 1px solid #b9cdf5; padding: 0.4em 1.2em; }
.answer li { margin: 0.3em 0; }
.caption { font-size: 0.9em; font-style: italic; margin-bottom: 0; }
ol.footnotes { font-size: 0.8em; color: #555; }
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
    captions: list[str] = field(default_factory=list)  # one line per table: what to read in it
    details: list[pd.DataFrame] = field(default_factory=list)  # shown collapsed, in full


@dataclass
class Report:
    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)  # what was found, shown first

    def add(self, heading: str, text: str = "", **parts) -> Section:
        section = Section(heading, text, **parts)
        self.sections.append(section)
        return section

    @property
    def n_figures(self) -> int:
        return sum(len(s.figures) for s in self.sections)

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        if self.answer:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in self.answer)
            body.append(
                f'<div class="answer" id="answer"><h2>What it found</h2><ul>{items}</ul></div>'
            )
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
            for index, table in enumerate(section.tables):
                caption = section.captions[index] if index < len(section.captions) else ""
                body.append(table_html(table, caption))
            for table in section.details:
                body.append(
                    "<details><summary>All fitted values</summary>"
                    + table_html(table, "", merge_intervals=False)
                    + "</details>"
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


NOTE_COLUMNS = ("flags", "flag", "warning", "note")


def display_table(table: pd.DataFrame, merge_intervals: bool = True) -> tuple[pd.DataFrame, list]:
    """The table as shown: columns NaN throughout dropped; ``x`` with ``x_low`` / ``x_high``
    merged into one ``x [95% CI]`` column, rounded to the interval's width (two significant
    digits of it); other numbers to 3 significant digits; long notes replaced by footnote
    numbers (returned, in order)."""
    shown = table.dropna(axis="columns", how="all").copy()
    footnotes: list[str] = []
    if merge_intervals:
        for name in list(shown.columns):
            low, high = f"{name}_low", f"{name}_high"
            if low in shown and high in shown and pd.api.types.is_numeric_dtype(shown[name]):
                shown[name] = [
                    _with_interval(v, lo, hi)
                    for v, lo, hi in zip(shown[name], shown[low], shown[high])
                ]
                shown = shown.drop(columns=[low, high]).rename(columns={name: f"{name} [95% CI]"})
    for name in shown.columns:
        if name in NOTE_COLUMNS and shown[name].dtype == object:
            marks = []
            for text in shown[name].fillna("").astype(str):
                if not text:
                    marks.append("")
                    continue
                if text not in footnotes:
                    footnotes.append(text)
                marks.append(f"[{footnotes.index(text) + 1}]")
            shown[name] = marks
        elif pd.api.types.is_float_dtype(shown[name]):
            shown[name] = [_significant(v) for v in shown[name]]
    return shown, footnotes


def table_html(table: pd.DataFrame, caption: str = "", merge_intervals: bool = True) -> str:
    """A table with its caption above and its footnotes below, every text escaped."""
    shown, footnotes = display_table(table, merge_intervals)
    parts = [f'<p class="caption">{html.escape(caption)}</p>'] if caption else []
    parts.append(shown.to_html(classes="data", index=False, border=0, na_rep=""))
    if footnotes:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in footnotes)
        parts.append(f'<ol class="footnotes">{items}</ol>')
    return "".join(parts)


def _significant(value: float, digits: int = 3) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.{digits}g}"


def _with_interval(value: float, low: float, high: float) -> str:
    """``value [low, high]`` with as many decimals as the interval's width supports."""
    if pd.isna(value):
        return ""
    if pd.isna(low) or pd.isna(high):
        return _significant(value)
    width = abs(high - low)
    decimals = 2 if width == 0 else max(0, min(6, 1 - math.floor(math.log10(width))))
    return f"{value:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"
