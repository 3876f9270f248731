"""The explorer widget (ipywidgets and plotly ``FigureWidget``), for JupyterLab.

Controls: concept, method, form, layer, m. Measured views (from the folder's tables, instant):
the mean preference–utility curve of the selection with the held-out pairs as muted dots and the
selected m marked; balanced accuracy and answer mass beside the unsteered model, the best
constant answer and the random direction at equal push; the layer × m heatmap of balanced
accuracy, whose cells move the layer and m controls when clicked. Live views (the model; a
background thread with a progress bar, so the kernel runs other cells meanwhile): the steered
continuation of the prompt in the text box, its per-token projections on the concept direction,
and its steered states on a PCA or UMAP map of valid states. Colours are the report's.

>>> explorer = Explorer(StudyData.load("runs/study/..."), model)
>>> explorer  # displays it; explorer.select(method="split", m=1.0) moves the controls
"""

from __future__ import annotations

import html
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from workbench.explorer.data import Selection, StudyData
from workbench.explorer.live import MAP_KINDS, LiveModel, LiveView, MapKind
from workbench.report.figures import FORM_DASHES, FORM_SYMBOLS, method_colour

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MUTED = "rgba(150,150,150,0.45)"
SCORE_COLUMNS = ("n_pairs", "accuracy", "balanced_accuracy", "best_constant_answer", "answer_mass")


class Explorer(widgets.VBox):
    """Linked views of one study or comparison folder; see the module docstring."""

    def __init__(
        self,
        data: StudyData,
        model: TransformerBridge | None = None,
        prompt: str = "",
        max_new_tokens: int = 24,
    ) -> None:
        self.data = data
        self.live = LiveModel(model, data) if model is not None else None
        self.max_new_tokens = max_new_tokens
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explorer")
        self._pending: Future | None = None
        self._ticket = 0
        self._lock = threading.Lock()
        self._quiet = False  # set while several controls move together
        self.last_view: LiveView | None = None
        self._build_controls(prompt)
        self._build_views()
        super().__init__(
            [
                widgets.HBox([self.concept, self.method, self.form, self.layer, self.m]),
                widgets.HBox([self.frontier, self.heatmap]),
                self.scores,
                widgets.HBox([self.prompt, self.map_kind, self.run_button]),
                widgets.HBox([self.progress, self.status]),
                self.text,
                widgets.HBox([self.tokens, self.map]),
            ]
        )
        self.add_class("workbench-explorer")
        self._options_changed()

    # ---- controls -------------------------------------------------------------------------
    def _build_controls(self, prompt: str) -> None:
        concepts = self.data.concepts()
        self.concept = _dropdown("concept", concepts)
        self.method = _dropdown("method", [])
        self.form = _dropdown("form", [])
        self.layer = _dropdown("layer", [])
        self.m = widgets.SelectionSlider(
            description="m", options=self.data.multipliers(), continuous_update=False
        )
        self.m.add_class("workbench-m")
        self.m.value = _nearest(self.data.multipliers(), 1.0)
        self.prompt = widgets.Text(value=prompt, description="prompt", placeholder="Type a prompt")
        self.prompt.layout.width = "55%"
        self.map_kind = widgets.ToggleButtons(options=[k.upper() for k in MAP_KINDS])
        self.run_button = widgets.Button(description="Generate", disabled=self.live is None)
        self.progress = widgets.IntProgress(min=0, max=3, value=0, description="")
        self.status = widgets.HTML()
        self.status.add_class("workbench-status")
        for control in (self.concept, self.method, self.form):
            control.observe(lambda _: self._options_changed(), names="value")
        for control in (self.layer, self.m):
            control.observe(lambda _: self._selection_changed(), names="value")
        self.map_kind.observe(lambda _: self._start_live(), names="value")
        self.prompt.on_submit(lambda _: self._start_live())
        self.run_button.on_click(lambda _: self._start_live())

    def _build_views(self) -> None:
        self.frontier = go.FigureWidget(layout=_layout("Preference–utility (held-out pairs)"))
        self.frontier.update_xaxes(title="UtilOdds (nats)")
        self.frontier.update_yaxes(title="PrefOdds (nats)")
        self.heatmap = go.FigureWidget(layout=_layout("Balanced accuracy, layer × m (click)"))
        self.heatmap.update_xaxes(title="m")
        self.heatmap.update_yaxes(title="layer")
        self.scores = widgets.HTML()
        self.scores.add_class("workbench-scores")
        self.text = widgets.HTML()
        self.text.add_class("workbench-text")
        self.tokens = go.FigureWidget(layout=_layout("Per-token projection on the concept"))
        self.map = go.FigureWidget(layout=_layout("Steered states on the map of valid states"))

    @property
    def selection(self) -> Selection:
        return Selection(
            self.concept.value, self.method.value, self.form.value, self.layer.value, self.m.value
        )

    def select(self, **changes: Any) -> None:
        """Move controls (``concept``, ``method``, ``form``, ``layer``, ``m``) as a user would."""
        self._quiet = True
        try:
            for name in ("concept", "method", "form", "layer", "m"):
                if name in changes:
                    value = changes[name]
                    control = getattr(self, name)
                    if name == "m":
                        value = _nearest(list(control.options), float(value))
                    if value not in list(control.options):
                        raise ValueError(f"{name} {value!r} is not one of {list(control.options)}")
                    control.value = value
        finally:
            self._quiet = False
        self._selection_changed()

    def _options_changed(self) -> None:
        """Narrow method, form and layer to what the folder measured for the choice above."""
        quiet, self._quiet = self._quiet, True
        try:
            _offer(self.method, self.data.methods(self.concept.value))
            _offer(self.form, self.data.forms(self.concept.value, self.method.value))
            layers = self.data.layers(self.concept.value, self.method.value, self.form.value)
            _offer(self.layer, layers, self.data.made.get("layer"))
        finally:
            self._quiet = quiet
        if not quiet:
            self._selection_changed()

    def _selection_changed(self) -> None:
        if self._quiet:
            return
        if self.method.value is None or self.layer.value is None:
            return
        self._draw_measured()
        if self.prompt.value.strip():
            self._start_live()

    # ---- measured views -------------------------------------------------------------------
    def _draw_measured(self) -> None:
        selection = self.selection
        curve = self.data.curve(selection)
        rows = self.data.at(selection)
        colour = method_colour(selection.method)
        with self.frontier.batch_update():
            self.frontier.data = []
            self.frontier.add_scatter(
                x=rows["util_odds"],
                y=rows["pref_odds"],
                mode="markers",
                marker={"color": MUTED, "size": 6},
                name=f"pairs at m = {selection.m:g}",
                hovertext=rows["pair_id"],
            )
            self.frontier.add_scatter(
                x=curve["util_odds"],
                y=curve["pref_odds"],
                mode="lines+markers",
                line={"color": colour, "dash": FORM_DASHES.get(selection.form, "solid")},
                marker={"symbol": FORM_SYMBOLS.get(selection.form, "circle")},
                name=f"{selection.method} {selection.form}, mean over pairs",
                hovertext=[f"m = {m:g}" for m in curve["m"]],
            )
            here = curve[np.isclose(curve["m"], selection.m)]
            self.frontier.add_scatter(
                x=here["util_odds"],
                y=here["pref_odds"],
                mode="markers",
                marker={"color": colour, "size": 16, "line": {"color": "black", "width": 2}},
                name=f"m = {selection.m:g}",
            )
        self._draw_heatmap(selection)
        self.scores.value = _scores_html(self.data.scores(selection), selection)

    def _draw_heatmap(self, selection: Selection) -> None:
        grid = self.data.heatmap(selection.concept, selection.method, selection.form)
        with self.heatmap.batch_update():
            self.heatmap.data = []
            if grid.empty:
                return
            self.heatmap.add_heatmap(
                z=grid.to_numpy(),
                x=[f"{m:g}" for m in grid.columns],
                y=[str(layer) for layer in grid.index],
                zmin=0.0,
                zmax=1.0,
                colorscale="RdBu",
                colorbar={"title": "bal. acc."},
            )
            self.heatmap.add_scatter(
                x=[f"{selection.m:g}"],
                y=[str(selection.layer)],
                mode="markers",
                marker={"symbol": "square-open", "size": 22, "color": "black"},
                showlegend=False,
                hoverinfo="skip",
            )
        self.heatmap.data[0].on_click(self._heatmap_clicked)

    def _heatmap_clicked(self, trace, points, state) -> None:
        """A heatmap cell moves the layer and m controls to it."""
        if not points.xs:
            return
        self.select(layer=int(points.ys[0]), m=float(points.xs[0]))

    # ---- live views -----------------------------------------------------------------------
    def _start_live(self) -> None:
        """Run the live views for the current selection in the background (the newest request
        wins: a result for a selection since left is dropped)."""
        if self.live is None:
            self.status.value = "live views need the model: Explorer(data, model)"
            return
        prompt = self.prompt.value.strip()
        if not prompt:
            self.status.value = "type a prompt to generate"
            return
        with self._lock:
            self._ticket += 1
            ticket = self._ticket
        selection, kind = self.selection, self.map_kind.value.lower()
        self.progress.value = 1
        self.status.value = html.escape(f"generating at {_describe(selection)} …")
        self._pending = self._worker.submit(self._live, ticket, selection, prompt, kind)

    def _live(self, ticket: int, selection: Selection, prompt: str, kind: MapKind) -> None:
        try:
            view = self.live.view(selection, prompt, self.max_new_tokens, kind)  # type: ignore[union-attr]
        except Exception as error:  # shown in the widget: the kernel carries on
            if ticket == self._ticket:
                self.progress.value = 0
                self.status.value = f"<b>not drawn:</b> {html.escape(str(error))}"
            return
        if ticket != self._ticket:
            return
        self.progress.value = 2
        self._draw_live(view)
        self.progress.value = 3
        self.status.value = html.escape(f"drawn for {_describe(selection)}")

    def _draw_live(self, view: LiveView) -> None:
        self.last_view = view
        colour = method_colour(view.selection.method)
        self.text.value = (
            f"<div><b>{html.escape(_describe(view.selection))}</b></div>"
            f"<div style='white-space: pre-wrap'>{html.escape(view.prompt)}"
            f"<span style='color:{colour}; font-weight:600'>{html.escape(view.continuation)}"
            "</span></div>"
        )
        with self.tokens.batch_update():
            self.tokens.data = []
            self.tokens.add_bar(
                x=list(range(len(view.tokens))),
                y=view.projections,
                hovertext=view.tokens,
                marker={"color": colour},
                name="projection",
            )
            self.tokens.update_xaxes(
                tickvals=list(range(len(view.tokens))), ticktext=view.tokens, tickangle=-60
            )
        with self.map.batch_update():
            self.map.data = []
            self.map.add_scatter(
                x=view.valid_map[:, 0],
                y=view.valid_map[:, 1],
                mode="markers",
                marker={"color": MUTED, "size": 5},
                name="valid states (neutral text)",
            )
            self.map.add_scatter(
                x=view.steered_map[:, 0],
                y=view.steered_map[:, 1],
                mode="markers+lines",
                marker={"color": colour, "size": 8},
                line={"color": colour, "width": 1},
                hovertext=view.tokens,
                name=f"steered, m = {view.selection.m:g}",
            )
            self.map.update_layout(title=f"Steered states on the {view.map_kind.upper()} map")

    def wait(self, timeout: int | float | None = None) -> None:
        """Block until the live views in flight are drawn (for scripts and tests)."""
        if self._pending is not None:
            self._pending.result(timeout=timeout)


def _dropdown(name: str, options: list) -> widgets.Dropdown:
    control = widgets.Dropdown(description=name, options=options)
    control.add_class(f"workbench-{name}")
    control.layout.width = "220px"
    return control


def _offer(control: widgets.Dropdown, options: list, preferred: Any = None) -> None:
    """New options, keeping the current value where it is still one of them (else the
    preferred one, e.g. the study's layer, else the first)."""
    current = control.value
    control.options = options
    for value in (current, preferred):
        if value is not None and value in options:
            control.value = value
            return
    if options:
        control.value = options[0]


def _nearest(options: list[float], value: float) -> float:
    return min(options, key=lambda m: abs(m - value)) if options else value


def _layout(title: str) -> go.Layout:
    return go.Layout(title=title, width=560, height=380, margin={"l": 60, "r": 20, "t": 50})


def _describe(selection: Selection) -> str:
    return (
        f"{selection.concept} · {selection.method} · {selection.form} · "
        f"layer {selection.layer} · m = {selection.m:g}"
    )


def _scores_html(table, selection: Selection) -> str:
    """The scores beside their baselines, as an escaped HTML table."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("rows", *SCORE_COLUMNS))
    body = []
    for label, row in table.iterrows():
        cells = [f"<td>{html.escape(str(label))}</td>"]
        for column in SCORE_COLUMNS:
            value = row[column]
            text = (
                "—"
                if value != value
                else (f"{int(value)}" if column == "n_pairs" else f"{value:.2f}")
            )
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    caption = html.escape(
        f"{_describe(selection)}: accuracy and balanced accuracy of PrefOdds > 0 over held-out "
        "pairs, the best constant answer's accuracy, and mean answer mass P_p + P_n"
    )
    return (
        f"<table class='workbench-scores-table'><caption>{caption}</caption>"
        f"<tr>{head}</tr>{''.join(body)}</table>"
    )
