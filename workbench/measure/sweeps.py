"""The sweep engine: log-odds of every pair under an intervention at every multiplier m.

One tidy table, one row per pair × m: pair id, split, concept, form, method, layer, site,
positions, seed, m, the losses ``L_p`` / ``L_n`` (summed, nats) and lengths ``T_p`` / ``T_n``,
``pref_odds`` / ``util_odds`` / ``util_defined`` from the summed losses, and the same three from
the length-normalised losses (``*_norm``); ``answer_mass`` = P(A_p|q) + P(A_n|q) (does the model
answer in the pair's format at all?), the two answers' text ``A_p`` / ``A_n`` (so summaries can
tell when answers repeat across items) and ``push``, the effective push ``‖Δh‖ / ‖h‖`` at the
steered positions (mean over them and over both answers; 0 at m = 0, NaN in the naive loop).

Fast by construction, and checked against :func:`naive_sweep` (one full forward per pair, per m,
per side) in the tests:

1. positive and negative answers of a batch of pairs go through together, and every multiplier
   of a chunk is stacked into the batch, each row steered by its own m;
2. the blocks before the intervention run once per batch (``stop_at_layer``), and the steered
   passes start at the intervention's block (``start_at_layer``, with the earlier blocks
   skipped rather than recomputed and discarded);
3. the unembedding is applied at the answer positions only.

Results are cached on disk under a hash of everything that decides them (model, pairs,
intervention parameters, grid), in parts keyed by the pairs they hold and checked when read
(:mod:`workbench.measure.sweep_cache`), so a rerun returns the saved table and an interrupted
run resumes where it stopped, with any batch size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import ConfigError
from workbench.measure.log_odds import preference_utility
from workbench.measure.scoring import answer_logprobs
from workbench.measure.sweep_cache import SweepCache, merge
from workbench.models.loading import model_device, model_provenance
from workbench.progress import bar
from workbench.provenance import stable_hash
from workbench.steering.forms import Intervention
from workbench.steering.paired import encode_paired, paired_logprobs, start_inputs
from workbench.steering.prefixes import PrefixCache

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ENGINE_VERSION = 3  # 3: parts keyed by pair ids, with records (older caches are not read)
CHECKED_ATTRIBUTE = "workbench_skip_checked_layers"
DEFAULT_GRID = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class SweepLabels:
    """Descriptive columns of a sweep (what the intervention is), copied into every row."""

    method: str = ""
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def run_sweep(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    intervention: Intervention | None = None,
    multipliers: Sequence[float] = DEFAULT_GRID,
    *,
    labels: SweepLabels | None = None,
    batch_size: int = 8,
    max_rows: int = 96,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    verify: bool | None = None,
    prefixes: PrefixCache | None = None,
) -> pd.DataFrame:
    """Sweep ``intervention`` over ``multipliers`` on ``pairs``; returns the tidy table.

    With no intervention, the unsteered model is scored once (rows at m = 0).
    ``max_rows`` bounds the rows of one forward (pairs × 2 sides × multipliers of a chunk).
    ``verify`` checks, on the first batch, that skipping the blocks before the intervention
    gives the same losses as running them (it always has, for the architectures tested): None
    (the default) checks once per model and layer, True on every sweep, False never. Pairs are
    batched in order of length (less padding); the table keeps the input order. ``prefixes``
    (a :class:`~workbench.steering.prefixes.PrefixCache`) shares the states entering the
    intervention's block with other sweeps and trainings on the same pairs.
    """
    pairs = list(pairs)
    if not pairs:
        raise ConfigError("no pairs to sweep")
    grid = _grid(multipliers) if intervention is not None else (0.0,)
    labels = labels or SweepLabels(method="none" if intervention is None else "")
    if intervention is not None:
        intervention.check_model(model)
    if batch_size < 1 or max_rows < 2:
        raise ConfigError("batch_size must be >= 1 and max_rows >= 2")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"pair ids repeat in the sweep: {repeated[:5]}")
    cache = None
    if cache_dir is not None:
        description = _describe(model, pairs, intervention, grid, labels)
        folder = Path(cache_dir) / f"sweep-{stable_hash(description)[:20]}"
        cache = SweepCache(folder, description, ids)
        if (table := cache.table()) is not None:
            return table
    rows = cache.done(len(grid)) if cache is not None else {}
    todo = sorted((p for p in pairs if p.id not in rows), key=_text_length)
    check = _needs_check(model, intervention, verify)
    starts = range(0, len(todo), batch_size)
    split = pairs[0].split or "pairs"
    desc = f"sweep {labels.method or 'unsteered'} on {split} pairs (batches)"
    for index, start in enumerate(bar(starts, desc=desc, enabled=progress)):
        batch_pairs = todo[start : start + batch_size]
        losses = _batch_losses(
            model,
            batch_pairs,
            intervention,
            grid,
            max_rows,
            verify=check and index == 0,
            prefixes=prefixes,
        )
        if check and index == 0 and intervention is not None:
            _checked(model).add(intervention.layer)
        part = _rows(batch_pairs, intervention, grid, labels, *losses)
        if cache is not None:
            cache.add(part, [p.id for p in batch_pairs])
        rows.update({str(i): group for i, group in part.groupby("pair_id", sort=False)})
    table = merge(rows, ids)
    if cache is not None:
        cache.write_table(table)
    return table


def _text_length(pair: ContrastPair) -> int:
    return len(pair.prompt) + max(len(pair.positive), len(pair.negative))


def _checked(model: TransformerBridge) -> set[int]:
    """Layers at which skipping the earlier blocks was checked on this model object."""
    checked = getattr(model, CHECKED_ATTRIBUTE, None)
    if checked is None:
        checked = set()
        object.__setattr__(model, CHECKED_ATTRIBUTE, checked)
    return checked


def _needs_check(model: TransformerBridge, intervention, verify: bool | None) -> bool:
    if intervention is None or intervention.layer == 0 or verify is False:
        return False
    return verify is True or intervention.layer not in _checked(model)


def row_keys(pair: ContrastPair, intervention: Intervention, method: str, m: float) -> dict:
    """The sweep table's key columns for one pair at one m (for tables that join it)."""
    return {
        "pair_id": pair.id,
        "split": pair.split,
        "concept": pair.concept,
        "form": intervention.form,
        "method": method,
        "layer": intervention.layer,
        "site": intervention.site,
        "m": float(m),
    }


def naive_sweep(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    intervention: Intervention | None = None,
    multipliers: Sequence[float] = DEFAULT_GRID,
    labels: SweepLabels | None = None,
) -> pd.DataFrame:
    """The reference: one full forward per pair, per m, per side (full logits, no reuse)."""
    grid = _grid(multipliers) if intervention is not None else (0.0,)
    labels = labels or SweepLabels(method="none" if intervention is None else "")
    shape = (len(grid), len(pairs))
    logprob = {side: np.zeros(shape) for side in ("positive", "negative")}
    length = {side: np.zeros(shape, dtype=np.int64) for side in ("positive", "negative")}
    for i, m in enumerate(grid):
        steer = [(intervention, m)] if intervention is not None else []
        for j, pair in enumerate(pairs):
            for side in ("positive", "negative"):
                total, count = answer_logprobs(model, [pair], side, steer, batch_size=1)
                logprob[side][i, j], length[side][i, j] = float(total[0]), int(count[0])
    return _rows(
        list(pairs),
        intervention,
        grid,
        labels,
        -logprob["positive"],
        -logprob["negative"],
        length["positive"],
        length["negative"],
    )


def _describe(model: TransformerBridge, pairs, intervention, grid, labels) -> dict:
    return {
        "engine_version": ENGINE_VERSION,
        "model": model_provenance(model).to_dict(),
        "pairs": PairDataset(pairs).content_hash(),
        "intervention": None
        if intervention is None
        else {"config": intervention.config(), "parameters": _parameter_hash(intervention)},
        "multipliers": list(grid),
        "labels": {"method": labels.method, "seed": labels.seed, **labels.extra},
    }


def _parameter_hash(intervention: Intervention) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(intervention.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _grid(multipliers: Sequence[float]) -> tuple[float, ...]:
    grid = tuple(float(m) for m in multipliers)
    if not grid:
        raise ConfigError("the multiplier grid is empty")
    if not all(np.isfinite(grid)):
        raise ConfigError(f"the multiplier grid has non-finite values: {grid}")
    if len(set(grid)) != len(grid):
        raise ConfigError(f"the multiplier grid has repeated values: {grid}")
    return grid


@torch.no_grad()
def _batch_losses(
    model: TransformerBridge, pairs, intervention, grid, max_rows, verify, prefixes=None
):
    """Losses and lengths, each [len(grid), len(pairs)], for one batch of pairs (the paired
    forward of :mod:`workbench.steering.paired`, chunks of multipliers batched together)."""
    paired = encode_paired(
        model,
        [p.prompt for p in pairs],
        [p.positive for p in pairs],
        [p.negative for p in pairs],
        labels=[(p.id, p.source) for p in pairs],
    )
    n, rows = len(pairs), paired.sides * len(pairs)  # forward rows per multiplier
    start = intervention.layer if intervention is not None else 0
    inputs = start_inputs(model, paired, start, prefixes)
    per_chunk = max(1, max_rows // rows)
    logprobs = torch.zeros(len(grid), 2, n, dtype=torch.float64)
    pushes = torch.zeros(len(grid), rows, dtype=torch.float64)
    for first in range(0, len(grid), per_chunk):
        chunk = grid[first : first + per_chunk]
        ms = torch.tensor(chunk, device=inputs.device).repeat_interleave(rows)
        total, state = paired_logprobs(
            model,
            paired,
            inputs,
            intervention,
            ms,
            tiles=len(chunk),
            record_push=True,
            verify=verify and first == 0,
        )
        logprobs[first : first + len(chunk)] = total.double().cpu()
        if 0 in state.push:
            pushes[first : first + len(chunk)] = state.push[0].view(len(chunk), rows)
    if verify and paired.packing is not None:
        _check_packing(model, pairs, intervention, grid[:per_chunk], logprobs[:per_chunk])
    lengths = paired.lengths().cpu().numpy()
    shape = (len(grid), n)
    return (
        -logprobs[:, 0].numpy(),
        -logprobs[:, 1].numpy(),
        np.broadcast_to(lengths[:n], shape),
        np.broadcast_to(lengths[n:], shape),
        (pushes.view(len(grid), paired.sides, n).mean(1)).numpy(),
    )


def _check_packing(model, pairs, intervention, chunk, packed: torch.Tensor) -> None:
    """Raise if the packed rows' log-probabilities differ from one row per answer's."""
    rows = encode_paired(
        model,
        [p.prompt for p in pairs],
        [p.positive for p in pairs],
        [p.negative for p in pairs],
        pack=False,
    )
    start = intervention.layer if intervention is not None else 0
    ms = torch.tensor(chunk, device=model_device(model)).repeat_interleave(2 * len(pairs))
    inputs = start_inputs(model, rows, start)
    reference, _ = paired_logprobs(model, rows, inputs, intervention, ms, tiles=len(chunk))
    gap = float((packed - reference.double().cpu()).abs().max())
    if gap > 1e-4 * max(1.0, float(reference.abs().max())):
        raise RuntimeError(
            f"packing both answers after one prompt changed a log-probability by {gap:.3g} on "
            f"this model ({model_provenance(model).name}); report it (packing is checked once "
            "per model and layer)"
        )


def _rows(
    pairs, intervention, grid, labels, loss_p, loss_n, len_p, len_n, push=None
) -> pd.DataFrame:
    loss_p, loss_n = np.asarray(loss_p, float), np.asarray(loss_n, float)
    push = np.full(loss_p.shape, np.nan) if push is None else np.asarray(push, float)
    len_p, len_n = np.asarray(len_p), np.asarray(len_n)
    pref, util, defined = preference_utility(loss_p, loss_n)
    pref_norm, util_norm, defined_norm = preference_utility(loss_p / len_p, loss_n / len_n)
    m_values = np.repeat(np.asarray(grid, float), len(pairs))
    table = pd.DataFrame(
        {
            "pair_id": [p.id for p in pairs] * len(grid),
            "split": [p.split for p in pairs] * len(grid),
            "concept": [p.concept for p in pairs] * len(grid),
            "form": intervention.form if intervention is not None else "none",
            "method": labels.method,
            "layer": intervention.layer if intervention is not None else -1,
            "site": intervention.site if intervention is not None else "none",
            "positions": intervention.positions if intervention is not None else "none",
            "seed": labels.seed,
            "m": m_values,
            "L_p": loss_p.ravel(),
            "L_n": loss_n.ravel(),
            "T_p": len_p.ravel(),
            "T_n": len_n.ravel(),
            "pref_odds": pref.ravel(),
            "util_odds": util.ravel(),
            "util_defined": defined.ravel(),
            "pref_odds_norm": pref_norm.ravel(),
            "util_odds_norm": util_norm.ravel(),
            "util_defined_norm": defined_norm.ravel(),
            "answer_mass": np.exp(np.logaddexp(-loss_p, -loss_n)).ravel(),
            "A_p": [p.positive for p in pairs] * len(grid),
            "A_n": [p.negative for p in pairs] * len(grid),
            "push": push.ravel(),
        }
    )
    for name, value in labels.extra.items():
        table[name] = value
    return table
