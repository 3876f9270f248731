"""Write notebooks 02–05 from the cell sources below (run: python scripts/build_notebooks.py).

Each notebook runs top to bottom on the default model; with ``WORKBENCH_SMALL=1`` (set by the
test suite) the same cells run on a tiny random model with small settings, so CI checks the
plumbing through nbmake in seconds.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def setup(imports: str = "") -> str:
    """The first code cell: the model (tiny under WORKBENCH_SMALL) and the layer."""
    return SETUP.replace("{imports}", imports)


SETUP = """import os
{imports}
from workbench import load_concept, load_model, model_provenance

SMALL = os.environ.get("WORKBENCH_SMALL") == "1"
model = load_model("tiny-llama" if SMALL else "gemma-3-270m")
LAYER = 1 if SMALL else 11  # the sentiment layer the layer sweep recommends on Gemma 3 270M
model_provenance(model)"""

NOTEBOOK_02 = [
    (
        "markdown",
        """# 02 · Preference and utility: sweeps and fitted curves

Every method is scored on one scale: for each held-out pair, the preference log-odds
`PrefOdds = L_n − L_p` and the utility log-odds `UtilOdds = log[(P_p + P_n) / (1 − P_p − P_n)]`,
swept over the multiplier m (DESIGN.md §1). The fitted curves separate the linear,
transitional and convergence regimes of preference, and the utility decay around m = 0.

`WORKBENCH_SMALL=1` runs the cells on a tiny random model (numbers meaningless).""",
    ),
    ("code", setup("\nimport pandas as pd\n")),
    (
        "code",
        """from workbench.curves_report import concept_curves, format_r2_table

grid = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0) if SMALL else None
kwargs = {"multipliers": grid} if grid else {}
sweep, fits = concept_curves(model, "sentiment", layer=LAYER, n_bootstrap=20, **kwargs)
print(format_r2_table(fits))
sweep.head()""",
    ),
    ("markdown", "## Curves with 95% bands, fitted curves and regimes"),
    (
        "code",
        """from workbench.figures import curves_figure

curves_figure(sweep, split="test", by=("form", "method"), title="DiffMean vector, sentiment")""",
    ),
    (
        "markdown",
        """## Layer × m

The same construction (DiffMean at the MLP output of each layer) swept at several layers on a
few held-out pairs: where along depth does steering move preference, and where does it cost
utility?""",
    ),
    (
        "code",
        """from workbench.activations import capture_activations
from workbench.directions import direction_from_activations
from workbench.figures import layer_heatmaps
from workbench.interventions import SteeringVector
from workbench.sweeps import SweepLabels, run_sweep

pairs = load_concept("sentiment")
layers = [0, 1] if SMALL else [3, 7, 11, 15]
hooks = [f"blocks.{layer}.mlp.out.hook_out" for layer in layers]
resids = [f"blocks.{layer}.hook_resid_post" for layer in layers]
acts = capture_activations(model, pairs.train[:32], hooks + resids, progress=False)
tables = []
for layer, hook in zip(layers, hooks):
    direction = direction_from_activations(acts, hook, "diff_of_means")
    vector = SteeringVector.for_model(model, layer, vector=direction.vector)
    tables.append(run_sweep(model, pairs.test[:8], vector, (-4, -2, 0, 2, 4, 8),
                            labels=SweepLabels("diff_of_means"), progress=False))
layer_heatmaps(pd.concat(tables))""",
    ),
]

NOTEBOOK_03 = [
    (
        "markdown",
        """# 03 · The valid manifold and off-manifold displacement

The paper assumes a manifold of valid activations and recovers its effect through the fitted
decay D(m). Here it is measured: a PCA subspace + density fitted on activations of valid text,
with ε calibrated on held-out valid tokens; then every steered state is split into its
concept projection, on-manifold and off-manifold parts, at the intervention layer and
downstream.""",
    ),
    ("code", setup("\nfrom IPython.display import display\n")),
    (
        "code",
        """from workbench.activations import capture_activations
from workbench.directions import direction_from_activations
from workbench.interventions import SteeringVector
from workbench.manifold import ActivationManifold
from workbench.valid_activations import collect_valid_activations

pairs = load_concept("sentiment")
hook = f"blocks.{LAYER}.mlp.out.hook_out"
last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
acts = capture_activations(model, pairs.train, [hook, f"blocks.{LAYER}.hook_resid_post"],
                           progress=False)
direction = direction_from_activations(acts, hook, "diff_of_means")
vector = SteeringVector.for_model(model, LAYER, vector=direction.vector)
valid = collect_valid_activations(model, [hook, last], pairs.train,
                                  sources=("neutral", "answers"))
manifolds = {h: ActivationManifold(n_components=0.9).fit(valid.fitting(h),
                                                          calibration=valid.held_out(h))
             for h in (hook, last)}
{h: (m.n_components_, round(m.epsilon_, 3)) for h, m in manifolds.items()}""",
    ),
    ("markdown", "## Displacement against m"),
    (
        "code",
        """from workbench.displacement import displacement_table, measured_validity
from workbench.figures import displacement_figure

multipliers = (-4.0, 0.0, 2.0, 4.0, 8.0) if SMALL else (-8.0, -4.0, 0.0, 2.0, 4.0, 8.0, 16.0)
table = displacement_table(model, pairs.test[:4], vector, multipliers, manifolds,
                           {hook: direction.vector}, method="diff_of_means",
                           sides=("positive",), progress=False)
display(measured_validity(table))
displacement_figure(table)""",
    ),
    (
        "markdown",
        """## Steered states over the manifold

Answer-token states of a few held-out pairs at increasing m, over the valid states (density
contours), in the manifold's first two PCA coordinates and in a UMAP embedding. The arrow is
the concept direction. Hover a point for its text and token.""",
    ),
    (
        "code",
        """from workbench.activation_shift import activation_shift
from workbench.figures import activation_shift_figure

shift = activation_shift(model, manifolds[hook], vector, pairs.test[:4], (0.0, 4.0, 8.0, 16.0),
                         valid.fitting(hook), concept_direction=direction.vector)
activation_shift_figure(shift.valid, shift.steered, shift.hover, direction=shift.direction)""",
    ),
]

NOTEBOOK_04 = [
    (
        "markdown",
        """# 04 · SPLIT training and the method comparison

SPLIT trains any form (vector, LoRA, local weight) with
`λ_p·L_p + λ_n·L_n + γ·ReLU(θ − (L_n − L_p))`; SFT is the same trainer with λ_n = γ = 0. The
projected steer removes the off-manifold part of Δh at application time. The comparison puts
DiffMean, random, SFT, SPLIT and SPLIT projected on one table. Settings here are small; the
closing table of the project comes from `workbench compare`.""",
    ),
    ("code", setup("\nfrom IPython.display import HTML, display\n")),
    (
        "code",
        """from workbench.figures import training_figure
from workbench.interventions import SteeringVector
from workbench.split_training import TrainingConfig, train_intervention, validation_split

pairs = load_concept("sentiment")
fit, validation = validation_split(pairs.train[:24 if SMALL else 48], seed=0)
vector = SteeringVector.for_model(model, LAYER)
config = TrainingConfig(epochs=1 if SMALL else 2)
result = train_intervention(model, vector, fit, validation, config)
display(result.epochs)
training_figure(result.steps, result.epochs, title="SPLIT, steering vector")""",
    ),
    ("markdown", "## The comparison"),
    (
        "code",
        """from workbench.figures import frontier_figure
from workbench.method_comparison import (
    ComparisonConfig,
    format_comparison,
    run_comparison,
    split_vs_sft,
    summarise,
)

config = ComparisonConfig(
    concepts=("sentiment",), forms=("vector", "lora"), seeds=(0,), layer=LAYER,
    training=TrainingConfig(epochs=1), n_bootstrap=100,
    max_train_pairs=16 if SMALL else 32, max_test_pairs=8 if SMALL else 16)
comparison = run_comparison(model, config, progress=False)
summary = summarise(comparison.sweeps, n_bootstrap=100)
display(HTML(summary.to_html(index=False, float_format=lambda v: f"{v:.3g}")))
display(split_vs_sft(comparison.sweeps, n_bootstrap=100))
frontier_figure(comparison.sweeps)""",
    ),
    (
        "code",
        """print(format_comparison(summary))""",
    ),
]

NOTEBOOK_05 = [
    (
        "markdown",
        """# 05 · A steering failure, taken apart

Steering with the DiffMean vector works at moderate m and breaks the text at large m. This
notebook finds where (layer, token) and why: does the steered state leave the valid manifold,
and does the norm of the residual stream grow downstream? Then it checks whether removing the
off-manifold part of the update (the projected steer) delays the failure.""",
    ),
    ("code", setup("\nimport pandas as pd\nfrom IPython.display import HTML\n")),
    (
        "code",
        """from workbench.activations import capture_activations
from workbench.directions import direction_from_activations
from workbench.interventions import SteeringVector
from workbench.text_diagnostics import generation_diagnostics

pairs = load_concept("sentiment")
hook = f"blocks.{LAYER}.mlp.out.hook_out"
acts = capture_activations(model, pairs.train, [hook, f"blocks.{LAYER}.hook_resid_post"],
                           progress=False)
direction = direction_from_activations(acts, hook, "diff_of_means")
vector = SteeringVector.for_model(model, LAYER, vector=direction.vector)
multipliers = (0.0, 4.0, 16.0, 64.0)
texts = generation_diagnostics(model, pairs.test[:3], vector, multipliers,
                               method="diff_of_means", max_new_tokens=16 if SMALL else 24)
texts[["pair_id", "m", "repetition_rate", "text"]]""",
    ),
    (
        "markdown",
        """## Where: displacement at every downstream layer

For each layer after the intervention, the off-manifold norm of the steered answer states and
the ratio of steered to unsteered residual norm. A failure that is an off-manifold push shows
off-manifold displacement far above the on-manifold part at the intervention layer; one that
is carried downstream shows the norm ratio growing with depth.""",
    ),
    (
        "code",
        """import plotly.express as px

from workbench.displacement import displacement_table, downstream_hooks
from workbench.manifold import ActivationManifold
from workbench.valid_activations import collect_valid_activations

hooks = downstream_hooks(model, LAYER)
valid = collect_valid_activations(model, hooks, pairs.train, sources=("neutral", "answers"))
manifolds = {h: ActivationManifold(n_components=0.9).fit(valid.fitting(h),
                                                          calibration=valid.held_out(h))
             for h in hooks}
table = displacement_table(model, pairs.test[:4], vector, multipliers, manifolds,
                           method="diff_of_means", sides=("positive",), progress=False)
by_layer = table.groupby(["analysis_layer", "m"])[
    ["off_manifold", "on_manifold", "norm_ratio", "beyond_epsilon", "kl_from_unsteered"]
].mean().reset_index()
px.line(by_layer, x="analysis_layer", y="norm_ratio", color="m", markers=True,
        title="Steered / unsteered residual norm, by layer after the intervention")""",
    ),
    (
        "code",
        """px.line(by_layer, x="analysis_layer", y="beyond_epsilon", color="m", markers=True,
        title="Share of answer tokens beyond ε of the valid manifold, by layer")""",
    ),
    (
        "markdown",
        """## Which tokens: per-token projection of the broken generation

The prompt and its greedy continuations, each token coloured by its projection on the
concept direction at the intervention hook (red +, blue −).""",
    ),
    (
        "code",
        """from workbench.activation_shift import token_projections
from workbench.figures import token_projection_html

prompt = pairs.test[0].prompt
rows = texts[texts["pair_id"] == pairs.test[0].id]
all_tokens, all_values, labels = [], [], []
for _, row in rows.iterrows():
    tokens, values = token_projections(model, [prompt + row["text"]], direction.vector, hook,
                                       [(vector, float(row["m"]))])
    all_tokens += tokens
    all_values += values
    labels.append(f"m = {row['m']:g}")
HTML(token_projection_html(all_tokens, all_values, labels=labels))""",
    ),
    (
        "markdown",
        """## Why, tested: does the projected steer delay the failure?

The same vector with its off-subspace part removed at the intervention layer. If the failure
is an off-manifold push, the projected steer should keep the text valid for longer at equal m.""",
    ),
    (
        "code",
        """from workbench.projected_steer import ManifoldProjection, ProjectedIntervention

projection = ManifoldProjection.from_manifold(
    ActivationManifold(n_components=0.9).fit(
        collect_valid_activations(model, [hook], pairs.train,
                                  sources=("neutral", "answers")).fitting(hook)))
projected = ProjectedIntervention(vector, projection, strength=1.0)
kept = float(projection.on_subspace(direction.vector).norm() / direction.vector.norm())
print(f"share of the vector's norm inside the valid subspace: {kept:.2f}")
projected_texts = generation_diagnostics(model, pairs.test[:3], projected, multipliers,
                                         method="diff_of_means projected",
                                         max_new_tokens=16 if SMALL else 24)
pd.concat([texts, projected_texts])[["method", "pair_id", "m", "repetition_rate", "text"]]""",
    ),
]


def build(name: str, cells: list[tuple[str, str]]) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [
        nbformat.v4.new_markdown_cell(text)
        if kind == "markdown"
        else nbformat.v4.new_code_cell(text)
        for kind, text in cells
    ]
    nbformat.write(notebook, NOTEBOOKS / name)


if __name__ == "__main__":
    build("02_preference_utility.ipynb", NOTEBOOK_02)
    build("03_manifold_displacement.ipynb", NOTEBOOK_03)
    build("04_split_comparison.ipynb", NOTEBOOK_04)
    build("05_steering_failure.ipynb", NOTEBOOK_05)
