"""Interactive plotly figures, each a function from the workbench's tidy tables to a figure.

One colour per method everywhere (:data:`METHOD_COLOURS`), one line style (and marker symbol)
per intervention form (:data:`FORM_DASHES`), so figures can be read side by side. Every
function returns a ``plotly`` figure (or, for token colouring, an HTML string) and does no
computation beyond grouping and the fits.

>>> curves_figure(sweep_table).show()
>>> frontier_figure(comparison_sweeps).show()
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import ConfigError
from workbench.measure.fits import fit_sweep_curve, preference_regimes

METHOD_COLOURS = {
    "diff_of_means": "#1f77b4",
    "random": "#7f7f7f",
    "sft": "#ff7f0e",
    "split": "#2ca02c",
    "reps": "#aec7e8",
    "split_projected": "#bcbd22",
    "split_clipped": "#17becf",
    "split_clip_trained": "#9467bd",
    "angular": "#d62728",
    "ace": "#8c564b",
    "ids": "#e377c2",
    "unsteered": "#000000",
    "none": "#000000",
}
FORM_DASHES = {"vector": "solid", "lora": "dash", "local_weight": "dot"}
FORM_SYMBOLS = {"vector": "circle", "lora": "square", "local_weight": "diamond"}
VALUE_TITLES = {"pref_odds": "PrefOdds (nats)", "util_odds": "UtilOdds (nats)"}


def method_colour(method: str) -> str:
    """The method's colour in every figure (dark grey for a method without one)."""
    return METHOD_COLOURS.get(method, "#333333")


def _rgba(hex_colour: str, alpha: float) -> str:
    value = hex_colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _mean_band(group: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per-m mean over pairs with a 95% normal interval of the mean."""
    stats = group.groupby("m")[value].agg(["mean", "std", "count"]).sort_index()
    half = 1.96 * stats["std"].fillna(0.0) / np.sqrt(stats["count"].clip(lower=1))
    return stats.assign(low=stats["mean"] - half, high=stats["mean"] + half)


def curves_figure(
    sweeps: pd.DataFrame,
    *,
    split: str = "test",
    fit_split: str = "train",
    by: Sequence[str] = ("form", "method"),
    title: str = "Preference and utility against the multiplier m",
) -> go.Figure:
    """PrefOdds and UtilOdds against m: means with 95% bands, fitted curves, regimes shaded.

    Curves are fitted on ``fit_split`` (falling back to ``split`` when the table has no rows
    there); the means and bands show ``split``. One colour per method, one line style and marker per
    form; the preference fit's linear regime is shaded lightly and its convergence regime more
    strongly, once per form.
    """
    shown = sweeps[sweeps["split"] == split] if "split" in sweeps else sweeps
    if shown.empty:
        raise ConfigError(f"the sweep table has no rows in the {split!r} split")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("preference", "utility"))
    m_all = np.sort(shown["m"].unique())
    dense = np.linspace(m_all.min(), m_all.max(), 200)
    shaded: set[str] = set()
    for key, group in shown.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        labels = dict(zip(by, key))
        form, method = labels.get("form", "none"), labels.get("method", "")
        colour, name = method_colour(method), " · ".join(str(k) for k in key)
        fit_rows = sweeps
        for column, value in labels.items():
            fit_rows = fit_rows[fit_rows[column] == value]
        train_split = fit_split if (fit_rows.get("split") == fit_split).any() else split
        for col, (value, kind) in enumerate(
            (("pref_odds", "preference"), ("util_odds", "utility")), start=1
        ):
            _add_means(figure, _mean_band(group, value), col, colour, name, form)
            try:
                fit = fit_sweep_curve(
                    fit_rows, kind, train_split=train_split, test_split=split, n_bootstrap=0
                )
            except ValueError:
                continue
            figure.add_trace(
                go.Scatter(
                    x=dense,
                    y=fit.predict(dense),
                    mode="lines",
                    line={"color": colour, "dash": FORM_DASHES.get(form, "solid")},
                    name=f"{name} fit (R² {fit.r2_train:.3f})",
                    legendgroup=name,
                    showlegend=False,
                    hovertemplate=f"{name} fit<br>m=%{{x:.2f}}<br>%{{y:.2f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            if kind == "preference" and form not in shaded:
                shaded.add(form)
                _shade_regimes(figure, fit, (float(m_all.min()), float(m_all.max())), colour)
    figure.update_xaxes(title_text="m")
    figure.update_yaxes(title_text=VALUE_TITLES["pref_odds"], row=1, col=1)
    figure.update_yaxes(title_text=VALUE_TITLES["util_odds"], row=1, col=2)
    figure.update_layout(title=title, legend_title_text=" · ".join(by), hovermode="closest")
    return figure


def _add_means(
    figure: go.Figure, band: pd.DataFrame, col: int, colour: str, name: str, form: str
) -> None:
    """Per-m means as markers over their 95% band, in subplot ``col``."""
    figure.add_trace(
        go.Scatter(
            x=np.concatenate([band.index, band.index[::-1]]),
            y=np.concatenate([band["high"], band["low"][::-1]]),
            fill="toself",
            fillcolor=_rgba(colour, 0.15),
            line={"width": 0},
            hoverinfo="skip",
            legendgroup=name,
            showlegend=False,
        ),
        row=1,
        col=col,
    )
    figure.add_trace(
        go.Scatter(
            x=band.index,
            y=band["mean"],
            mode="markers",
            marker={"color": colour, "size": 7, "symbol": FORM_SYMBOLS.get(form, "circle")},
            name=name,
            legendgroup=name,
            showlegend=col == 1,
            hovertemplate=f"{name}<br>m=%{{x}}<br>mean=%{{y:.2f}}<extra></extra>",
        ),
        row=1,
        col=col,
    )


def _shade_regimes(figure: go.Figure, fit, m_range: tuple[float, float], colour: str) -> None:
    regimes = preference_regimes(fit, m_range)
    for side, sign in ((0, -1), (1, 1)):
        linear, converged = regimes.linear_until[side], regimes.converged_from[side]
        edge = m_range[side]
        if linear is not None:
            low, high = sorted((0.0, linear))
            figure.add_vrect(
                x0=low, x1=high, fillcolor=colour, opacity=0.06, line_width=0, row=1, col=1
            )
        if converged is not None and sign * (edge - converged) > 0:
            low, high = sorted((converged, edge))
            figure.add_vrect(
                x0=low, x1=high, fillcolor=colour, opacity=0.14, line_width=0, row=1, col=1
            )


def frontier_figure(
    sweeps: pd.DataFrame, *, split: str = "test", title: str = "Preference–utility trade-off"
) -> go.Figure:
    """Mean UtilOdds (x) against mean PrefOdds (y) along m, one line per method × form.

    Up and to the right is better: a method whose line lies above another's reaches more
    preference at the same utility.
    """
    shown = sweeps[sweeps["split"] == split] if "split" in sweeps else sweeps
    figure = go.Figure()
    for (form, method), group in shown.groupby(["form", "method"], sort=False):
        means = group.groupby("m")[["pref_odds", "util_odds"]].mean().sort_index()
        means = means[means.index >= 0]
        figure.add_trace(
            go.Scatter(
                x=means["util_odds"],
                y=means["pref_odds"],
                mode="lines+markers",
                line={"color": method_colour(method), "dash": FORM_DASHES.get(form, "solid")},
                marker={"symbol": FORM_SYMBOLS.get(form, "circle")},
                name=f"{method} · {form}",
                customdata=means.index,
                hovertemplate=(
                    f"{method} · {form}<br>m=%{{customdata}}<br>UtilOdds=%{{x:.2f}}"
                    "<br>PrefOdds=%{y:.2f}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        title=title,
        xaxis_title="mean UtilOdds (nats)",
        yaxis_title="mean PrefOdds (nats)",
        legend_title_text="method · form",
    )
    return figure


def layer_heatmaps(
    sweeps: pd.DataFrame, *, split: str = "test", title: str = "Layer × m"
) -> go.Figure:
    """Heatmaps of mean PrefOdds and mean UtilOdds over layer (rows) and m (columns)."""
    shown = sweeps[sweeps["split"] == split] if "split" in sweeps else sweeps
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("PrefOdds", "UtilOdds"), horizontal_spacing=0.15
    )
    for col, value in enumerate(("pref_odds", "util_odds"), start=1):
        grid = shown.groupby(["layer", "m"])[value].mean().unstack("m").sort_index()
        figure.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=[f"{m:g}" for m in grid.columns],
                y=[str(layer) for layer in grid.index],
                colorscale="RdBu" if value == "pref_odds" else "Viridis",
                zmid=0 if value == "pref_odds" else None,
                colorbar={"x": 0.43 if col == 1 else 1.0, "title": {"text": "nats"}},
                hovertemplate="layer %{y}, m=%{x}<br>%{z:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    figure.update_xaxes(title_text="m", type="category")
    figure.update_yaxes(title_text="layer", type="category")
    figure.update_layout(title=title)
    return figure


def activation_shift_figure(
    valid_coordinates: Mapping[str, np.ndarray],
    steered_coordinates: Mapping[str, Mapping[float, np.ndarray]],
    hover: Sequence[str],
    *,
    direction: Mapping[str, np.ndarray] | None = None,
    valid_hover: Sequence[str] | None = None,
    title: str = "Steered states over the valid manifold",
) -> go.Figure:
    """Steered states for increasing m over valid activations, one panel per projection.

    ``valid_coordinates[name]`` is [n, 2] (e.g. ``"PCA"``, ``"UMAP"``); ``steered_coordinates
    [name][m]`` is [k, 2] for the same k tokens at each m (``hover`` names them: text and
    token). Valid states are drawn as density contours with faint points; ``direction[name]``
    (two points, [2, 2]) draws the concept direction as an arrow.
    """
    names = list(valid_coordinates)
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    multipliers = sorted({m for per_m in steered_coordinates.values() for m in per_m})
    span = max(abs(m) for m in multipliers) or 1.0
    for col, name in enumerate(names, start=1):
        _add_valid_states(figure, np.asarray(valid_coordinates[name]), col, valid_hover)
        for m in multipliers:
            points = np.asarray(steered_coordinates[name][m])
            figure.add_trace(
                go.Scatter(
                    x=points[:, 0],
                    y=points[:, 1],
                    mode="markers",
                    marker={
                        "size": 7,
                        "color": [m] * len(points),
                        "colorscale": "RdBu_r",
                        "cmin": -span,
                        "cmax": span,
                        "showscale": col == len(names) and m == multipliers[-1],
                        "colorbar": {"title": {"text": "m"}},
                    },
                    name=f"m = {m:g}",
                    legendgroup=f"m{m}",
                    showlegend=col == 1,
                    text=list(hover),
                    hovertemplate=f"m = {m:g}<br>%{{text}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if direction is not None and name in direction:
            (x0, y0), (x1, y1) = np.asarray(direction[name])
            figure.add_annotation(
                x=x1,
                y=y1,
                ax=x0,
                ay=y0,
                xref=f"x{col if col > 1 else ''}",
                yref=f"y{col if col > 1 else ''}",
                axref=f"x{col if col > 1 else ''}",
                ayref=f"y{col if col > 1 else ''}",
                showarrow=True,
                arrowhead=3,
                arrowwidth=2,
                arrowcolor="crimson",
                text="concept",
            )
    figure.update_layout(title=title, legend_title_text="states")
    return figure


def _add_valid_states(figure: go.Figure, valid: np.ndarray, col: int, hover) -> None:
    """Valid states as density contours with faint points, in subplot ``col``."""
    figure.add_trace(
        go.Histogram2dContour(
            x=valid[:, 0],
            y=valid[:, 1],
            colorscale="Greys",
            showscale=False,
            contours={"coloring": "lines"},
            hoverinfo="skip",
            name="valid density",
            showlegend=False,
        ),
        row=1,
        col=col,
    )
    figure.add_trace(
        go.Scatter(
            x=valid[:, 0],
            y=valid[:, 1],
            mode="markers",
            marker={"color": "rgba(120,120,120,0.25)", "size": 3},
            name="valid (unsteered)",
            showlegend=col == 1,
            text=list(hover) if hover is not None else None,
            hovertemplate="%{text}<extra>valid</extra>" if hover is not None else None,
        ),
        row=1,
        col=col,
    )


def displacement_figure(
    table: pd.DataFrame, *, title: str = "Where steering moves the state"
) -> go.Figure:
    """Concept projection, on-manifold and off-manifold norms against m, one panel per layer
    (each panel on its own scale: an MLP output and the residual stream differ by orders)."""
    layers = sorted(table["analysis_layer"].unique())
    figure = make_subplots(
        rows=1, cols=len(layers), subplot_titles=[f"layer {x}" for x in layers], shared_yaxes=False
    )
    parts = {
        "concept_projection": ("concept projection", "crimson"),
        "on_manifold": ("on-manifold", "#1f77b4"),
        "off_manifold": ("off-manifold", "#ff7f0e"),
    }
    for col, layer in enumerate(layers, start=1):
        rows = table[table["analysis_layer"] == layer]
        means = rows.groupby("m")[list(parts)].mean().sort_index()
        for column, (label, colour) in parts.items():
            if means[column].isna().all():
                continue
            figure.add_trace(
                go.Scatter(
                    x=means.index,
                    y=means[column],
                    mode="lines+markers",
                    line={"color": colour},
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    hovertemplate=f"layer {layer}, m=%{{x}}<br>{label}=%{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    figure.update_xaxes(title_text="m")
    figure.update_yaxes(title_text="mean norm / projection per answer token", row=1, col=1)
    figure.update_layout(title=title)
    return figure


def training_figure(
    steps: pd.DataFrame, epochs: pd.DataFrame | None = None, *, title: str = "SPLIT training"
) -> go.Figure:
    """Each loss term per optimiser step; the held-out objective per epoch on the right."""
    figure = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("training loss terms", "held-out objective", "held-out mean PrefOdds"),
    )
    terms = {
        "loss": "total",
        "loss_p_term": "λ_p·L_p",
        "loss_n_term": "λ_n·L_n",
        "margin_term": "γ·ReLU(θ − (L_n − L_p))",
        "penalty_term": "off-manifold penalty",
    }
    for column, label in terms.items():
        if column in steps and (steps[column] != 0).any():
            figure.add_trace(
                go.Scatter(x=steps["step"], y=steps[column], mode="lines", name=label),
                row=1,
                col=1,
            )
    if epochs is not None and not epochs.empty:
        for col, (column, label) in enumerate(
            (("eval_loss", "held-out objective"), ("mean_pref_odds", "held-out mean PrefOdds")),
            start=2,
        ):
            figure.add_trace(
                go.Scatter(x=epochs["epoch"], y=epochs[column], mode="lines+markers", name=label),
                row=1,
                col=col,
            )
    figure.update_xaxes(title_text="step", row=1, col=1)
    figure.update_xaxes(title_text="epoch", row=1, col=2)
    figure.update_xaxes(title_text="epoch", row=1, col=3)
    figure.update_layout(title=title)
    return figure


def token_projection_html(
    tokens: Sequence[Sequence[str]],
    projections: Sequence[Sequence[float] | np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    scale: float | None = None,
) -> str:
    """Tokens coloured by their projection on the concept direction (red +, blue −), as HTML.

    One line per text (e.g. a prompt and each of its steered generations); hovering a token
    shows its projection. ``scale`` fixes the value of full colour (default: the largest |x|).
    """
    if len(tokens) != len(projections):
        raise ConfigError(f"{len(tokens)} token lists but {len(projections)} projection lists")
    values = [np.asarray(p, dtype=float) for p in projections]
    for i, (t, v) in enumerate(zip(tokens, values)):
        if len(t) != len(v):
            raise ConfigError(f"text {i}: {len(t)} tokens but {len(v)} projections")
    scale = scale or max((float(np.abs(v).max()) for v in values if v.size), default=1.0) or 1.0
    lines = []
    for i, (text_tokens, v) in enumerate(zip(tokens, values)):
        spans = []
        for token, x in zip(text_tokens, v):
            alpha = min(1.0, abs(x) / scale)
            colour = f"rgba(214,39,40,{alpha:.2f})" if x >= 0 else f"rgba(31,119,180,{alpha:.2f})"
            spans.append(
                f'<span title="{x:+.3g}" style="background:{colour};padding:1px 0;'
                f'white-space:pre">{html.escape(token)}</span>'
            )
        label = html.escape(labels[i]) if labels is not None else ""
        lines.append(
            f'<div style="margin:4px 0"><b style="display:inline-block;min-width:8em">{label}'
            f"</b>{''.join(spans)}</div>"
        )
    return f'<div class="token-projection" style="font-family:monospace">{"".join(lines)}</div>'


def claim_figure(regression: pd.DataFrame) -> go.Figure:
    """Partial correlations of the utility drop with off- and on-manifold displacement (each
    controlling for the other, within pairs) per analysed layer, with 95% intervals."""
    figure = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"]
    for index, (concept, rows) in enumerate(regression.groupby("concept", sort=False)):
        colour = palette[index % len(palette)]
        for part, dash in (("off", "solid"), ("on", "dot")):
            value = rows[f"partial_r_{part}"]
            figure.add_trace(
                go.Scatter(
                    x=rows["analysis_layer"],
                    y=value,
                    mode="lines+markers",
                    line=dict(color=colour, dash=dash),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=rows[f"partial_r_{part}_high"] - value,
                        arrayminus=value - rows[f"partial_r_{part}_low"],
                    ),
                    name=html.escape(f"{concept}: {part}-manifold"),
                )
            )
    figure.add_hline(y=0, line=dict(color="#999", width=1))
    figure.update_layout(
        title="Does off-manifold displacement predict the utility drop beyond on-manifold?",
        xaxis_title="analysed layer (block output)",
        yaxis_title="partial r with the utility drop (| the other part, pair)",
        template="plotly_white",
    )
    return figure


def frontier_comparison_figure(sweeps: pd.DataFrame, validated: pd.DataFrame) -> go.Figure:
    """Per concept: the frontier (preference gain vs utility change along m >= 0, means over
    pairs) and balanced accuracy against answer mass at each method's validated m. One colour
    per method, one line style per form."""
    concepts = list(dict.fromkeys(sweeps["concept"]))
    figure = make_subplots(
        rows=len(concepts),
        cols=2,
        subplot_titles=[
            html.escape(f"{c}: {panel}")
            for c in concepts
            for panel in ("frontier", "balanced accuracy vs answer mass")
        ],
    )
    for row, concept in enumerate(concepts, start=1):
        shown = sweeps[(sweeps["concept"] == concept) & (sweeps["m"] >= 0)]
        for (form, method), group in shown.groupby(["form", "method"], sort=False):
            means = group.groupby("m")[["pref_odds", "util_odds"]].mean().sort_index()
            gain = means["pref_odds"] - means["pref_odds"].iloc[0]
            change = means["util_odds"] - means["util_odds"].iloc[0]
            name = html.escape(f"{method} · {form}")
            style = dict(color=method_colour(method), dash=FORM_DASHES.get(form))
            figure.add_trace(
                go.Scatter(x=gain, y=change, mode="lines+markers", line=style, name=name,
                           legendgroup=name, showlegend=row == 1, customdata=means.index,
                           hovertemplate=f"{name}<br>m=%{{customdata}}<extra></extra>"),
                row=row, col=1,
            )  # fmt: skip
        chosen = validated[(validated["concept"] == concept) & validated["method"].notna()]
        for _, entry in chosen.iterrows():
            name = html.escape(f"{entry['method']} · {entry['form']}")
            figure.add_trace(
                go.Scatter(x=[entry.get("answer_mass")], y=[entry.get("balanced_accuracy")],
                           mode="markers", name=name, legendgroup=name, showlegend=False,
                           marker=dict(color=method_colour(str(entry["method"])),
                                       size=10)),
                row=row, col=2,
            )  # fmt: skip
        figure.update_xaxes(title_text="preference gain (nats)", row=row, col=1)
        figure.update_yaxes(title_text="utility change (nats)", row=row, col=1)
        figure.update_xaxes(title_text="answer mass", row=row, col=2)
        figure.update_yaxes(title_text="balanced accuracy", row=row, col=2)
    figure.update_layout(template="plotly_white", height=380 * len(concepts))
    return figure


def failure_figure(probe: pd.DataFrame, shifts: pd.DataFrame, answer_auroc: float) -> go.Figure:
    """Left: per layer, the held-out probe of the items' labels against how far the unsteered
    answer depends on them. Middle and right: each vector's shift common to all items and
    toward each item's own answer, and the balanced accuracy, per m; the readout vector (the
    first-order best, which moves answers at far smaller m) on its own axes. From
    :mod:`workbench.pipelines.failure`'s tables."""
    figure = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "can the model tell the items apart?",
            "what DiffMean and random do",
            "what the readout vector does",
        ),
        specs=[[{}, {"secondary_y": True}, {"secondary_y": True}]],
    )
    for name, values, dash, colour in (
        ("probe of the label, last prompt token", probe["probe_auroc"], "solid", "#2ca02c"),
        ("the unsteered answer's log-odds", [answer_auroc] * len(probe), "dash", "#000000"),
    ):
        figure.add_trace(
            go.Scatter(
                x=probe["layer"],
                y=values,
                mode="lines+markers",
                name=f"{name} (AUROC)",
                line=dict(color=colour, dash=dash),
            ),
            row=1,
            col=1,
        )
    for method, rows in shifts.groupby("method", sort=False):
        col = 3 if method == "readout" else 2
        colour = method_colour(str(method))
        for part, dash in (("common", "solid"), ("item_dependent", "dot")):
            figure.add_trace(
                go.Scatter(
                    x=rows["m"],
                    y=rows[part],
                    mode="lines+markers",
                    line=dict(color=colour, dash=dash),
                    name=html.escape(f"{method}: {part.replace('_', '-')} shift"),
                ),
                row=1,
                col=col,
            )
        figure.add_trace(
            go.Scatter(
                x=rows["m"],
                y=rows["balanced_accuracy"],
                mode="markers",
                marker=dict(color=colour, symbol="x"),
                name=html.escape(f"{method}: balanced accuracy"),
            ),
            row=1,
            col=col,
            secondary_y=True,
        )
    figure.update_xaxes(title_text="layer (block output)", row=1, col=1)
    figure.update_yaxes(title_text="AUROC for the label", range=[0.3, 1.02], row=1, col=1)
    for col in (2, 3):
        figure.update_xaxes(title_text="m (typical norms)", row=1, col=col)
        figure.update_yaxes(title_text="shift of the answer log-odds (nats)", row=1, col=col)
        figure.update_yaxes(
            title_text="balanced accuracy", range=[0, 1], row=1, col=col, secondary_y=True
        )
    figure.update_layout(template="plotly_white", height=480)
    return figure
