"""Write notebooks 02–06 from the cell sources below (run: python scripts/build_notebooks.py).

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
swept over the multiplier m (docs/measures.md). The fitted curves separate the linear,
transitional and convergence regimes of preference, and the utility decay around m = 0.

`WORKBENCH_SMALL=1` runs the cells on a tiny random model (numbers meaningless).""",
    ),
    ("code", setup("\nimport pandas as pd\n")),
    (
        "code",
        """from workbench.pipelines.curves import concept_curves, format_r2_table

grid = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0) if SMALL else None
kwargs = {"multipliers": grid} if grid else {}
sweep, fits = concept_curves(model, "sentiment", layer=LAYER, n_bootstrap=20, **kwargs)
print(format_r2_table(fits))
sweep.head()""",
    ),
    ("markdown", "## Curves with 95% bands, fitted curves and regimes"),
    (
        "code",
        """from workbench.report.figures import curves_figure

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
        """from workbench import (
    SteeringVector,
    SweepLabels,
    capture_activations,
    direction_from_activations,
    run_sweep,
)
from workbench.report.figures import layer_heatmaps

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
        """from workbench import (
    ActivationManifold,
    SteeringVector,
    capture_activations,
    collect_valid_activations,
    direction_from_activations,
)

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
        """from workbench import displacement_table
from workbench.manifold.displacement import measured_validity
from workbench.report.figures import displacement_figure

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
        """from workbench import activation_shift
from workbench.report.figures import activation_shift_figure

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
        """from workbench import (
    SteeringVector,
    TrainingConfig,
    train_intervention,
    validation_split,
)
from workbench.report.figures import training_figure

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
        """from workbench.report.figures import frontier_figure
from workbench.training.comparison import ComparisonConfig, run_comparison
from workbench.training.summary import format_comparison, split_versus, summarise

config = ComparisonConfig(
    concepts=("sentiment",), forms=("vector", "lora"), seeds=(0,), layer=LAYER,
    training=TrainingConfig(epochs=1), n_bootstrap=100,
    max_train_pairs=16 if SMALL else 32, max_test_pairs=8 if SMALL else 16)
comparison = run_comparison(model, config, progress=False)
summary = summarise(comparison.sweeps, n_bootstrap=100)
display(HTML(summary.to_html(index=False, float_format=lambda v: f"{v:.3g}")))
display(split_versus(comparison.sweeps, n_bootstrap=100))
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

A DiffMean vector at the paper's site (the block output, in units of its typical norm) steers at
moderate m; pushed harder, the text breaks. This notebook asks **where** and **why** it breaks,
whether a **manifold estimate marks** the broken text (four estimates, fitted on training text
only), and whether **manifold-aware steers delay** the break: the manifold clip (the steered
state's off-subspace residual shrunk back toward the valid manifold), and, as an anchor,
angular steering (a norm-preserving rotation).

Prompts: the held-out prompts of two concepts (48 on the default model), greedy continuations.
`WORKBENCH_SMALL=1` runs the cells on a tiny random model (numbers meaningless).""",
    ),
    (
        "code",
        setup("\nimport pandas as pd\nimport plotly.express as px\n"),
    ),
    (
        "markdown",
        """## The steers and the manifold estimates

Valid text: the neutral sentences, the training answers and the model's own greedy
continuations of the training prompts, at the intervention's block output and every later one.
The four estimates are those of `workbench claim`: the global PCA subspace with a Gaussian or a
kNN density, the local tangent estimate, and the global estimate fitted on the model's own
continuations alone.""",
    ),
    (
        "code",
        """from workbench import ManifoldClip, collect_valid_activations, concept_vector
from workbench.manifold.displacement import downstream_hooks
from workbench.pipelines.claim import ESTIMATES, fit_estimates
from workbench.steering.state import AngularSteer

pairs = load_concept("sentiment")
held_out = list(pairs.test) + list(load_concept("formality").test)
prompts = held_out[: 4 if SMALL else 48]
hooks = downstream_hooks(model, LAYER)
block_hook = hooks[0]
valid = collect_valid_activations(model, hooks, pairs.train,
                                  sources=("neutral", "answers", "greedy"))
estimates = fit_estimates(valid, hooks)
vector = concept_vector(model, pairs.train, LAYER)  # balanced DiffMean, unit typical norm
steers = {
    "diff_of_means": vector,
    "clipped": ManifoldClip.fit(vector, estimates["pca_gaussian"][block_hook],
                                valid.held_out(block_hook)),
    "angular": AngularSteer.plane(model, LAYER, vector.raw_vector, valid.fitting(block_hook),
                                  unit=0.5),
}
GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)  # in typical norms of the block output
print(f"{len(prompts)} prompts; {len(valid.source)} valid tokens; "
      f"{estimates['pca_gaussian'][block_hook].n_components_} components at {block_hook}")""",
    ),
    (
        "markdown",
        """## Where the text breaks

Greedy continuations (24 tokens) at each m; the repetition rate is the share of repeated
3-grams. The onset is the first m whose mean repetition reaches 0.5. For angular steering m is
an angle (m/2 of the way to the concept direction), not a push norm: its column is read
against its own grid.""",
    ),
    (
        "code",
        """from workbench.measure.text import generation_diagnostics

texts = pd.concat([
    generation_diagnostics(model, prompts, steer, GRID, method=name, max_new_tokens=24)
    for name, steer in steers.items()])
pd.set_option("display.max_colwidth", 120)
texts.pivot_table(index="m", columns="method", values="repetition_rate")""",
    ),
    (
        "code",
        """texts[texts["pair_id"] == prompts[0].id][["method", "m", "repetition_rate", "text"]]""",
    ),
    (
        "markdown",
        """## Why: the push layer by layer

For the plain DiffMean vector, on 8 pairs' answers: the displacement along the concept
direction and its parts inside and outside the valid subspace, the ratio of steered to
unsteered residual norm, the share of answer tokens beyond ε of each layer's estimate, and the
KL of the next-token distribution from the unsteered one.""",
    ),
    (
        "code",
        """from workbench import displacement_table

table = displacement_table(
    model, pairs.test[:8], vector, [m for m in GRID if m > 0], estimates["pca_gaussian"],
    directions={block_hook: vector.raw_vector}, method="diff_of_means", scorers=estimates,
    sides=("positive",), progress=False)
by_layer = table.groupby(["analysis_layer", "m"])[
    ["concept_projection", "on_manifold", "off_manifold", "norm_ratio", "kl_from_unsteered",
     *(f"beyond_{name}" for name in ESTIMATES)]].mean().reset_index()
px.line(by_layer, x="analysis_layer", y="beyond_local", color="m", markers=True,
        title="Share of answer tokens beyond ε of the local estimate, by layer")""",
    ),
    (
        "code",
        """by_layer[by_layer["analysis_layer"] == LAYER].set_index("m").round(3)""",
    ),
    (
        "markdown",
        """## Does an estimate mark the broken text?

Every continuation is run again with its steer on; the states of its generated tokens are
scored by each estimate. The AUROC says how well an estimate's mean nonconformity separates
broken continuations (repetition ≥ 0.5) from fluent ones, across steers and m (0.5: chance).""",
    ),
    (
        "code",
        """from workbench.manifold.generated import failure_auroc, generation_scores

scores = generation_scores(model, texts, {p.id: p.prompt for p in prompts}, steers, estimates,
                           [block_hook, hooks[-1]])
auroc = failure_auroc(scores, ESTIMATES)
auroc.pivot_table(index="estimate", columns="hook", values="auroc")""",
    ),
    (
        "markdown",
        """## Does a manifold-aware steer delay the break?

The clip moves each steered state back to within the valid residual of the manifold; if the
break were an off-manifold push, it should come later. What the clip leaves of the push is
measured (`push`: mean ‖Δh‖ / ‖h‖), since a steer that pushes less breaks later for that reason
alone.""",
    ),
    (
        "code",
        """from workbench.data.encoding import encode_pairs
from workbench.hooks.forward import run_batch_with_cache
from workbench.steering.apply import steering
from workbench.steering.roles import TokenRoles


def onset(rows, threshold=0.5):
    \"\"\"The first m whose mean repetition rate reaches the threshold (None: never).\"\"\"
    rates = rows.groupby("m")["repetition_rate"].mean()
    broken = rates[rates >= threshold]
    return None if broken.empty else float(broken.index[0])


def mean_push(steer, m):
    \"\"\"Mean ‖Δh‖ / ‖h‖ of the steer over the first prompts' tokens at the block output.\"\"\"
    batch = encode_pairs(model.tokenizer, prompts[:8], "positive",
                         prepend_bos=model_provenance(model).prepend_bos)
    with steering(model, [(steer, m)], TokenRoles.from_batch(batch), record_push=True) as state:
        run_batch_with_cache(model, batch, [block_hook], None)
    return float(state.push[0].mean())


summary = pd.DataFrame([
    {"method": name, "onset_m": onset(texts[texts["method"] == name]),
     **{f"push @ m={m:g}": mean_push(steer, m) for m in GRID if m > 0}}
    for name, steer in steers.items()])
summary.round(3)""",
    ),
    (
        "markdown",
        """## What the numbers say

Computed from the tables above, not written by hand.""",
    ),
    (
        "code",
        """def layer_row(layer, m):
    return by_layer[(by_layer["analysis_layer"] == layer) & (by_layer["m"] == m)].iloc[0]


last_layer = model.cfg.n_layers - 1
m_break = onset(texts[texts["method"] == "diff_of_means"])
print(f"DiffMean at the block site: onset m = {m_break} over {len(prompts)} prompts")
if m_break is not None:
    fluent = [m for m in GRID if 0 < m < m_break][-1:]
    for m in (*fluent, m_break):
        row, last = layer_row(LAYER, m), layer_row(last_layer, m)
        print(f"  m = {m:g}: concept {row.concept_projection:.4g}, on {row.on_manifold:.4g}, "
              f"off {row.off_manifold:.4g}, KL {row.kl_from_unsteered:.2f} nats; beyond ε at "
              "the last layer: " + ", ".join(f"{n} {last[f'beyond_{n}']:.0%}" for n in ESTIMATES))
best = auroc.sort_values("auroc", ascending=False).iloc[0]
print(f"best marker of broken text: {best.estimate} at {best.hook}, AUROC {best.auroc:.2f} "
      f"({int(best.n_broken)} of {int(best.n_texts)} texts broken)")
for _, row in summary.iterrows():
    print(f"  {row.method}: onset m = {row.onset_m}")""",
    ),
    (
        "markdown",
        """### What this showed on Gemma 3 270M

One run of this notebook (sentiment direction, layer 11, 48 held-out prompts of sentiment and
formality × 24 greedy tokens; 8 pairs for the displacement table; 2026-12-01). Rerun it to
check: the cells above print these.

- **The break comes between a quarter and half a typical norm.** Mean repetition is 0.18
  unsteered, 0.22 at m = 0.25 and 0.65 at m = 0.5; by m = 1 it is 0.95 ("wynwynwyn…"). The
  KL from the unsteered next-token distribution goes 1.0 → 3.4 → 18.6 nats.
- **The push is along the concept direction, mostly inside the subspace.** At layer 11 the
  displacement is 2.9 k along the concept direction at m = 0.25. Of that push, 2.8 k is inside
  the valid subspace (187 components) and 0.46 k outside it. The residual norm barely grows
  (ratio 1.01 at m = 0.25, 1.08 at m = 0.5).
- **Every estimate marks the broken text, and so does |m|.** Scored on the steered
  continuations' own states, every estimate's nonconformity separates broken from fluent
  continuations with AUROC 0.97 at layer 11 and 0.93–0.94 at the last layer. But this is
  across m, and both repetition and nonconformity rise with m for every steer, so it does not
  show that an estimate adds to the push size (the claim test's `estimates.csv` asks that on
  held-out pairs). The thresholds fire early:
  at m = 0.25, before the mean text breaks, 77–93% of last-layer answer tokens are already
  beyond ε of each estimate.
- **No manifold-aware steer delays the break.** The clip leaves this push almost untouched:
  its off-subspace part stays within what valid states carry, and the push at m = 0.5 is 0.467
  with or without the clip. The onset stays at m = 0.5 (repetition 0.67 against 0.65).
  Angular steering breaks at the same m: 0.77 at m = 0.5, with a smaller push (0.375). This is
  a negative result: on this concept the text breaks from the size of the push along the
  concept direction, not from leaving the subspace.""",
    ),
]


NOTEBOOK_06 = [
    (
        "markdown",
        """# 06 · The live explorer

Runs a small study, then opens the explorer over its folder: move the concept, method, form,
layer and m controls (or click a cell of the layer × m heatmap) and every view follows — the
held-out pairs on the preference–utility plane (muted dots, the method's mean curve, the
selected m ringed), balanced accuracy and answer mass beside the unsteered model, the best
constant answer and a random direction at equal push, and, for the prompt in the text box, the
steered continuation, its per-token projections on the concept direction and its steered states
on a PCA (or UMAP) map of valid states. The live views run in a background thread with a
progress bar, so other cells keep running. Any study folder (`workbench study`) or comparison
folder (`workbench compare`) opens the same way: `Explorer(StudyData.load(folder), model)`.

`WORKBENCH_SMALL=1` runs the cells on a tiny random model (numbers and text meaningless).""",
    ),
    ("code", setup()),
    (
        "code",
        """from workbench.pipelines.study import StudySettings, run_study

concept = "extraversion"  # a persona concept: Yes / No answers, so answer bias shows
settings = StudySettings(
    layer=LAYER if SMALL else None,  # None: the layer sweep chooses, on validation pairs
    train_pairs=12 if SMALL else 24,
    test_pairs=6 if SMALL else 12,
    n_bootstrap=20 if SMALL else 200,
    umap=not SMALL,
)
study = run_study(model, load_concept(concept), settings, out="runs/explorer", progress=False)
folder = study.report.parent
folder""",
    ),
    (
        "code",
        """from workbench.explorer import Explorer, StudyData

prompt = "Do you enjoy big parties? Answer and explain."
explorer = Explorer(StudyData.load(folder), model, prompt=prompt, max_new_tokens=8 if SMALL else 24)
explorer""",
    ),
    ("markdown", "Controls move from code too (the views follow as when moved by hand):"),
    (
        "code",
        """explorer.select(method="diff_of_means", form="vector", m=0.5)
explorer.wait(timeout=300)
explorer.data.scores(explorer.selection)""",
    ),
]


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of the given (kind, source) cells, with stable cell ids."""
    built = nbformat.v4.new_notebook()
    built.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    built.cells = [
        nbformat.v4.new_markdown_cell(text, id=f"cell-{index:02d}")
        if kind == "markdown"
        else nbformat.v4.new_code_cell(text, id=f"cell-{index:02d}")
        for index, (kind, text) in enumerate(cells)
    ]  # stable ids, so a rebuild only changes the cells whose source changed
    return built


NOTEBOOK_CELLS = {
    "02_preference_utility.ipynb": NOTEBOOK_02,
    "03_manifold_displacement.ipynb": NOTEBOOK_03,
    "04_split_comparison.ipynb": NOTEBOOK_04,
    "05_steering_failure.ipynb": NOTEBOOK_05,
    "06_explorer.ipynb": NOTEBOOK_06,
}


if __name__ == "__main__":
    for name, cells in NOTEBOOK_CELLS.items():
        nbformat.write(notebook(cells), NOTEBOOKS / name)
