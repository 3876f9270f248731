"""Why a persona vector cannot flip answers item by item: the failure, measured.

Three measurements on a concept whose answers repeat (" Yes"/" No"), all on held-out pairs:

1. **Can the model tell the items apart?** A logistic probe of each item's label from the last
   prompt token, per layer (:func:`~workbench.directions.statement_probe.statement_probe`),
   beside how far the unsteered answer depends on the label
   (:func:`~workbench.measure.item_shift.answer_dependence`).
2. **What does a vector do to each item?** DiffMean and a random direction at equal push, swept
   over m; each change split into a shift common to all items and one toward each item's own
   answer (:func:`~workbench.measure.item_shift.shift_decomposition`).
3. **What could any vector do?** To first order a vector ``v`` added at the layer changes item
   ``i``'s answer log-odds by ``g_i·v`` (``g_i`` its gradient there). The item-dependent shift
   is then ``(ḡ₊ − ḡ₋)·v / 2`` and the common one ``(ḡ₊ + ḡ₋)·v / 2``; the best vector for the
   first, per unit of push, is along ``ḡ₊ − ḡ₋``. Its gain per m (m = 1: the site's typical
   norm, as for every vector here) against the gain the unsteered answers need says how hard
   the push must be.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from workbench.analysis_cache import AnalysisCache, cached_layer_choice, cached_site_scales
from workbench.atomic import write_table, write_text
from workbench.data.concepts import load_concept
from workbench.data.pairs import ContrastPair, PairDataset
from workbench.directions.statement_probe import statement_probe
from workbench.errors import ConfigError
from workbench.measure.item_shift import (
    answer_dependence,
    answer_labels,
    shift_decomposition,
    shift_intervals,
)
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.models.loading import model_provenance
from workbench.progress import stage
from workbench.report.figures import failure_figure
from workbench.steering.concept_vectors import DEFAULT_EXTRACTOR, concept_vectors
from workbench.steering.forms import SteeringVector
from workbench.training.trainer import example_losses, make_examples

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FAILURE_GRID = (-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0)
READOUT_GRID = (-0.1, -0.03, -0.01, 0.0, 0.003, 0.01, 0.03, 0.1, 0.3)  # it moves answers fast
READOUT_ITEMS = 64  # training items whose gradients set the readout vector
TARGET_ACCURACY = 0.75  # the balanced accuracy an item-dependent shift is asked to reach


@dataclass(frozen=True)
class Failure:
    """The three measurements (see the module docstring) and the layer they were made at."""

    layer: int
    probe: pd.DataFrame  # one row per layer
    dependence: dict[str, float]  # the unsteered answer against the label
    shifts: pd.DataFrame  # one row per method × m
    first_order: dict[str, float]
    sweeps: pd.DataFrame
    provenance: dict[str, Any]

    def write(self, out: Path) -> Path:
        """``probe.csv``, ``shifts.csv``, ``sweeps.parquet``, ``failure.json`` (the scalars and
        how they were made) and ``failure.html`` (the figure) into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.probe, out / "probe.csv")
        write_table(self.shifts, out / "shifts.csv")
        write_table(self.sweeps, out / "sweeps.parquet")
        record = {
            "layer": self.layer,
            "dependence": self.dependence,
            "first_order": self.first_order,
            "provenance": self.provenance,
        }
        write_text(out / "failure.json", json.dumps(record, indent=2, allow_nan=True))
        figure = failure_figure(self.probe, self.shifts, self.dependence["auroc"])
        figure.write_html(out / "failure.html", include_plotlyjs=True)  # offline
        return out

    def describe(self) -> str:
        """The measured failure in a few lines."""
        best = self.probe.loc[self.probe["probe_auroc"].idxmax()]
        first = self.first_order
        at_one = self.shifts[self.shifts["m"] == 1.0].set_index("method")
        lines = [
            f"probe of the label from the last prompt token: best held-out AUROC "
            f"{best.probe_auroc:.2f} (accuracy {best.probe_accuracy:.0%}) "
            f"at layer {best.layer:.0f}",
            f"the unsteered answer's log-odds against the label: AUROC "
            f"{self.dependence['auroc']:.2f}, gap {self.dependence['gap']:+.2f} nats, "
            f"spread {self.dependence['spread']:.2f}",
        ]
        for method, row in at_one.drop(index="readout", errors="ignore").iterrows():
            lines.append(
                f"{method} at m = 1 (layer {self.layer}): common shift {row.common:+.2f}, "
                f"item-dependent {row.item_dependent:+.2f} nats "
                f"({row.common_share:.0%} / {row.item_share:.0%} of the mean square)"
            )
        lines.append(
            f"first order, best vector per m: item-dependent {first['best_item_gain_per_m']:.2f} "
            f"nats against common {first['best_common_gain_per_m']:.2f}; "
            f"{first['target_accuracy']:.0%} balanced accuracy needs "
            f"{first['needed_item_shift']:.2f} nats, m ≈ {first['needed_m']:.2g}"
        )
        readout = self.shifts[self.shifts["method"] == "readout"]
        curve = ", ".join(
            f"{row.m:g}: {row.balanced_accuracy:.0%} ({row.item_dependent:+.2f}/{row.common:+.2f})"
            for row in readout.itertuples()
        )
        lines.append(
            f"readout vector (along ḡ₊ − ḡ₋ of {self.provenance['readout_items']} training "
            f"items), balanced accuracy (item-dependent/common shift) per m: {curve}"
        )
        return "\n".join(lines)


def steering_failure(
    model: TransformerBridge,
    concept: str | PairDataset = "extraversion",
    *,
    layer: int | None = None,
    multipliers: Sequence[float] = FAILURE_GRID,
    test_pairs: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> Failure:
    """Measure the failure of ``concept`` (a shipped name or a dataset) on ``model``."""
    pairs = load_concept(concept) if isinstance(concept, str) else concept
    test = list(pairs.test)[:test_pairs] if test_pairs is not None else list(pairs.test)
    labels = _labels(pairs.train), _labels(test)
    cache = AnalysisCache(cache_dir)
    with stage("statement probe", 1, 4):
        probe = statement_probe(model, pairs.train, test, labels, progress=progress)
    with stage("layer choice", 2, 4):
        if layer is None:
            layer, _ = cached_layer_choice(cache, model, pairs, seed=seed, progress=progress)
    with stage("vector sweeps", 3, 4):
        extractors = {"diff_of_means": DEFAULT_EXTRACTOR, "random": "random"}
        built = concept_vectors(
            model, pairs.train, [layer], methods=list(extractors.values()), seed=seed
        )
        vectors = {method: built[layer, name] for method, name in extractors.items()}
        none = run_sweep(model, test, None, batch_size=batch_size, cache_dir=cache_dir)
        steered = _sweeps(model, test, vectors, multipliers, seed, cache_dir, batch_size)
    unsteered, y = _pref(none, test), labels[1]
    with stage("first-order gains", 4, 4):
        scale = _push_norm(model, layer, cache)
        gradients = _answer_gradients(model, test, y, layer, batch_size)
        first = _first_order(gradients, y, unsteered, scale)
        first.update(_along(gradients, y, vectors["diff_of_means"], "diff_of_means"))
        train = _balanced(pairs.train, READOUT_ITEMS)
        readout = _readout_vector(model, train, layer, cache, batch_size)
        first.update(_along(gradients, y, readout, "readout"))
        vectors = {"readout": readout}
        swept = _sweeps(model, test, vectors, READOUT_GRID, seed, cache_dir, batch_size)
    sweeps = pd.concat([none, steered, swept], ignore_index=True)
    provenance = {
        "model": model_provenance(model).to_dict(),
        "concept": pairs.name,
        "pairs_hash": pairs.content_hash(),
        "test_pairs": len(test),
        "multipliers": list(multipliers),
        "readout_multipliers": list(READOUT_GRID),
        "readout_items": READOUT_ITEMS,
        "seed": seed,
        "extractor": DEFAULT_EXTRACTOR,
        "site": "block",
    }
    shifts = _shift_table(sweeps, test, unsteered, y)
    dependence = answer_dependence(unsteered, y)
    return Failure(layer, probe, dependence, shifts, first, sweeps, provenance)


def _shift_table(sweeps: pd.DataFrame, test, unsteered: np.ndarray, y: np.ndarray):
    """:func:`shift_decomposition` of every steered (method, m) against the unsteered rows."""
    steered = sweeps[sweeps.method != "none"].sort_values(["method", "m"]).groupby(["method", "m"])
    return pd.DataFrame(
        [
            {
                "method": method,
                "m": m,
                **shift_decomposition(unsteered, _pref(rows, test), y),
                **shift_intervals(unsteered, _pref(rows, test), y),
            }
            for (method, m), rows in steered
        ]
    )


def _labels(pairs: Sequence[ContrastPair]) -> np.ndarray:
    pairs = list(pairs)
    return answer_labels([p.positive for p in pairs], [p.negative for p in pairs])


def _pref(table: pd.DataFrame, pairs: Sequence[ContrastPair]) -> np.ndarray:
    """Per-pair PrefOdds in the order of ``pairs``."""
    by_id = table.set_index("pair_id")["pref_odds"]
    missing = [p.id for p in pairs if p.id not in by_id.index]
    if missing:
        raise ConfigError(f"the sweep has no row for pairs {missing[:5]}")
    return by_id.loc[[p.id for p in pairs]].to_numpy(dtype=float)


def _sweeps(model, test, vectors, multipliers, seed, cache_dir, batch_size) -> pd.DataFrame:
    """Each vector's sweep on ``test``, its m = 0 rows dropped (the unsteered rows hold them)."""
    tables = []
    for method, vector in vectors.items():
        tables.append(
            run_sweep(
                model,
                test,
                vector,
                multipliers,
                labels=SweepLabels(method=method, seed=seed),
                batch_size=batch_size,
                cache_dir=cache_dir,
            )
        )
    table = pd.concat(tables, ignore_index=True)
    return table[table.m != 0.0]


def _push_norm(model: TransformerBridge, layer: int, cache: AnalysisCache) -> float:
    """The raw norm of an m = 1 push (the site's typical norm; :meth:`SteeringVector.along`)."""
    scales = cached_site_scales(cache, model, "block", layer)
    return float(scales.output * np.sqrt(model.cfg.d_model))


def _answer_gradients(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    labels: np.ndarray,
    layer: int,
    batch_size: int,
) -> np.ndarray:
    """``g_i``: the gradient of item i's answer log-odds ``d = y·PrefOdds`` with respect to a
    vector added at every position of block ``layer``'s output (raw units), one row per item."""
    probe = SteeringVector.for_model(model, layer, "block", "all")
    pairs = list(pairs)
    rows = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        examples = make_examples(batch, [1.0] * len(batch), subtract=False)
        loss_p, loss_n, *_ = example_losses(model, probe, examples, length_normalise=False)
        d = torch.as_tensor(labels[start : start + len(batch)], dtype=loss_p.dtype) * (
            loss_n - loss_p
        )
        for i in range(len(batch)):
            (grad,) = torch.autograd.grad(d[i], probe.bias, retain_graph=i + 1 < len(batch))
            rows.append((grad / probe.scale).double().cpu().numpy())
    return np.stack(rows)


def _first_order(
    gradients: np.ndarray, labels: np.ndarray, unsteered: np.ndarray, scale: float
) -> dict[str, float]:
    """The best vector's item-dependent and common gains per m, and the m it would need to
    lift balanced accuracy to ``TARGET_ACCURACY`` (to first order)."""
    plus, minus = gradients[labels > 0].mean(0), gradients[labels < 0].mean(0)
    item_gain = float(np.linalg.norm(plus - minus) / 2 * scale)
    needed = _needed_shift(unsteered, labels)
    return {
        "best_item_gain_per_m": item_gain,
        "best_common_gain_per_m": float(np.linalg.norm(plus + minus) / 2 * scale),
        "item_gradient_sd_per_m": float(np.linalg.norm(gradients.std(0)) * scale),
        "needed_item_shift": needed,
        "needed_m": needed / item_gain if item_gain > 0 else float("inf"),
        "target_accuracy": TARGET_ACCURACY,
        "push_norm": scale,
    }


def _needed_shift(unsteered: np.ndarray, labels: np.ndarray) -> float:
    """The smallest shift ``s`` added to every item's PrefOdds that lifts balanced accuracy to
    ``TARGET_ACCURACY`` (0 if it is there already)."""
    for s in np.sort(np.concatenate([[0.0], -unsteered + 1e-9])):
        shifted = unsteered + s
        if np.mean([(shifted[labels == y] > 0).mean() for y in (1.0, -1.0)]) >= TARGET_ACCURACY:
            return float(max(s, 0.0))
    return float("inf")


def _along(
    gradients: np.ndarray, labels: np.ndarray, vector: SteeringVector, name: str
) -> dict[str, float]:
    """A vector's own first-order gains per m on these items (its raw vector is the m = 1
    push, of the site's typical norm)."""
    raw = vector.raw_vector.double().cpu().numpy()
    plus, minus = gradients[labels > 0].mean(0), gradients[labels < 0].mean(0)
    return {
        f"{name}_item_gain_per_m": float((plus - minus) @ raw / 2),
        f"{name}_common_gain_per_m": float((plus + minus) @ raw / 2),
        f"{name}_push_norm": float(np.linalg.norm(raw)),
    }


def _balanced(pairs: Sequence[ContrastPair], size: int) -> list[ContrastPair]:
    """Up to ``size`` items, half of each label, in file order."""
    pairs = list(pairs)
    labels = _labels(pairs)
    half = size // 2
    chosen = [p for p, y in zip(pairs, labels, strict=True) if y > 0][:half]
    return chosen + [p for p, y in zip(pairs, labels, strict=True) if y < 0][:half]


def _readout_vector(
    model: TransformerBridge,
    train: Sequence[ContrastPair],
    layer: int,
    cache: AnalysisCache,
    batch_size: int,
) -> SteeringVector:
    """The vector along ``ḡ₊ − ḡ₋`` of the training items: to first order, the one that moves
    each item toward its own answer most per unit push (m = 1: the site's typical norm)."""
    y = _labels(train)
    gradients = _answer_gradients(model, train, y, layer, batch_size)
    direction = torch.from_numpy(gradients[y > 0].mean(0) - gradients[y < 0].mean(0)).float()
    scales = cached_site_scales(cache, model, "block", layer)
    return SteeringVector.along(model, layer, direction, scales, "block", "all")
