"""Train any intervention form with the SPLIT objective (SFT is the same trainer, λ_n = γ = 0)
or with RePS (:mod:`workbench.training.reps`, whose reference losses are computed once).

Each training example is a pair at a multiplier m drawn from ``multipliers``; with ``subtract``
every pair also appears as a "subtract" example at −m with its polarity swapped, so the trained
update steers both ways. Only the intervention's parameters are optimised: the model's weights
are frozen for the duration (and left bit-identical), its ``requires_grad`` flags restored.

Per step: the blocks before the intervention run once without gradients, the steered forward
starts at the intervention's block, and only answer positions are unembedded. AdamW with a
linear schedule (optional warm-up) and gradient clipping; a progress bar shows each loss term.
After every epoch the objective and the preference / utility summaries are measured on the
evaluation pairs (epoch 0, before training, as the reference); training stops early when the
evaluation objective stops improving, and the parameters of the best trained epoch are kept.

>>> vector = SteeringVector.for_model(model, layer=11)
>>> result = train_intervention(model, vector, fit_pairs, validation_pairs, TrainingConfig())
>>> result.epochs[["epoch", "eval_loss", "accuracy"]]
>>> result.save("artefacts/sentiment-split-vector", model, fit_pairs)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from workbench.data.pairs import ContrastPair, PairDataset, answers_repeat
from workbench.data.pairs import validation_split as validation_split  # re-exported
from workbench.errors import ConfigError, TrainingError
from workbench.measure.answer_bias import preference_scores
from workbench.measure.log_odds import preference_utility
from workbench.models.loading import model_provenance
from workbench.progress import bar
from workbench.provenance import Provenance
from workbench.steering.forms import Intervention
from workbench.steering.paired import encode_paired, paired_logprobs, start_inputs
from workbench.steering.prefixes import PrefixCache
from workbench.steering.projected import ManifoldProjection, off_manifold_excess
from workbench.steering.roles import TokenRoles
from workbench.training.objective import SplitObjective
from workbench.training.optim import linear_schedule
from workbench.training.reps import RepsObjective, reference_losses

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

DEFAULT_LEARNING_RATES = {"vector": 0.08, "lora": 0.02, "local_weight": 0.02}
SELECTIONS = ("auto", "objective", "accuracy", "balanced_accuracy")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one training run (defaults: the reference settings of the paper).

    ``learning_rate`` None takes the form's default (vector 0.08, LoRA / local weight 0.02); for
    an intervention in normalised units each matrix's rate is divided by its fan-in
    (:func:`parameter_groups`).
    ``patience`` epochs without an evaluation improvement of more than ``min_delta`` stop
    training (0: never stop early). ``length_normalise`` trains on per-token losses L/T.
    ``off_manifold_penalty`` weighs :func:`off_manifold_excess` (needs a projection).
    ``selection`` is what picks the kept epoch and drives early stopping, measured on the
    evaluation pairs: ``"objective"`` (lowest), ``"accuracy"`` or ``"balanced_accuracy"``
    (highest, ties to the lower objective); ``"auto"`` is balanced accuracy where the
    evaluation pairs' answers repeat (Yes/No, (A)/(B)) and the objective otherwise.
    :meth:`paper` is the reference code's recipe.
    """

    objective: SplitObjective | RepsObjective = field(default_factory=SplitObjective)
    multipliers: tuple[float, ...] = (0.5, 1.0, 2.0)
    subtract: bool = True
    learning_rate: float | None = None
    weight_decay: float = 0.0
    epochs: int = 4
    batch_size: int = 8
    warmup_fraction: float = 0.0
    max_grad_norm: float = 1.0
    length_normalise: bool = True
    patience: int = 2
    min_delta: float = 0.0
    eval_multiplier: float = 1.0
    off_manifold_penalty: float = 0.0
    selection: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ConfigError(
                f"TrainingConfig.selection must be one of {SELECTIONS}, got {self.selection!r}"
            )
        object.__setattr__(self, "multipliers", tuple(float(m) for m in self.multipliers))
        if not self.multipliers or not all(m > 0 and math.isfinite(m) for m in self.multipliers):
            raise ConfigError(
                f"TrainingConfig.multipliers must be positive finite multipliers, got "
                f"{self.multipliers} (subtract examples use -m)"
            )
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"TrainingConfig.learning_rate must be > 0, got {self.learning_rate}")
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "warmup_fraction": 0.0 <= self.warmup_fraction < 1.0,
            "max_grad_norm": self.max_grad_norm > 0,
            "weight_decay": self.weight_decay >= 0,
            "patience": self.patience >= 0,
            "min_delta": self.min_delta >= 0,
            "off_manifold_penalty": self.off_manifold_penalty >= 0,
            "eval_multiplier": self.eval_multiplier > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"TrainingConfig.{name} is out of range: {getattr(self, name)}")

    @classmethod
    def paper(cls, form: str, **overrides: Any) -> TrainingConfig:
        """The reference implementation's recipe for ``form``: multipliers {2, 4, …, 20} for a
        vector and {0.2, 0.4, …, 2.0} for LoRA / local weight, λ_n 0.5, γ 8, θ 0.3, lr 0.08
        (vector) / 0.01 (weights), batch 4, 2 epochs, add and subtract pairs, evaluated at
        m = 1. ``overrides`` replace any field."""
        if form not in DEFAULT_LEARNING_RATES:
            raise ConfigError(
                f"unknown form {form!r}; choose one of {list(DEFAULT_LEARNING_RATES)}"
            )
        vector = form == "vector"
        settings: dict[str, Any] = dict(
            objective=SplitObjective(lambda_p=1.0, lambda_n=0.5, gamma=8.0, theta=0.3),
            multipliers=tuple(float(2 * k) for k in range(1, 11))
            if vector
            else tuple(round(0.2 * k, 1) for k in range(1, 11)),
            subtract=True,
            learning_rate=0.08 if vector else 0.01,
            batch_size=4,
            epochs=2,
            eval_multiplier=1.0,
        )
        settings.update(overrides)
        return cls(**settings)

    @property
    def method(self) -> str:
        """``"sft"``, ``"split"``, ``"reps"``, or either of the last two with ``"+penalty"``
        (the sweep tables' method label)."""
        if isinstance(self.objective, RepsObjective):
            name = "reps"
        else:
            name = "sft" if self.objective.is_sft else "split"
        return name + ("+penalty" if self.off_manifold_penalty > 0 else "")

    def learning_rate_for(self, form: str) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATES.get(form, 0.02)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objective"] = self.objective.to_dict()  # RePS's carries its kind
        data["multipliers"] = list(self.multipliers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        data = dict(data)
        objective = data["objective"]
        reps = objective.get("kind") == "reps"
        data["objective"] = (RepsObjective if reps else SplitObjective).from_dict(objective)
        data["multipliers"] = tuple(data["multipliers"])
        return cls(**data)


@dataclass
class TrainingResult:
    """The trained intervention (best epoch's parameters) and its training history.

    ``steps``: one row per optimiser step (loss terms, learning rate, gradient norm).
    ``epochs``: one row per evaluation (epoch 0 is before training), on the evaluation pairs.
    """

    intervention: Intervention
    config: TrainingConfig
    steps: pd.DataFrame
    epochs: pd.DataFrame
    best_epoch: int
    stopped_early: bool

    def provenance(self, model: TransformerBridge, pairs: Sequence[ContrastPair]) -> Provenance:
        return Provenance(
            model=model_provenance(model),
            method=self.config.method,
            dataset_hash=PairDataset(pairs).content_hash(),
            seed=self.config.seed,
            details={
                "training": self.config.to_dict(),
                "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early,
                "epochs": self.epochs.to_dict(orient="records"),
                "steps": self.steps.to_dict(orient="records"),
            },
        )

    def save(
        self, path: str | Path, model: TransformerBridge, pairs: Sequence[ContrastPair]
    ) -> Path:
        """Save the intervention with its hyper-parameters, history and provenance."""
        return self.intervention.save(path, self.provenance(model, pairs).to_dict())


@dataclass(frozen=True)
class _Examples:
    """Training rows: prompt, the answer to prefer, the other one, and the multiplier m."""

    prompts: list[str]
    preferred: list[str]
    opposite: list[str]
    m: list[float]

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, rows: Sequence[int]) -> _Examples:
        return _Examples(*([values[i] for i in rows] for values in asdict(self).values()))


def make_examples(
    pairs: Sequence[ContrastPair], multipliers: Sequence[float], subtract: bool
) -> _Examples:
    """Add examples at +m (concept answer preferred) and, with ``subtract``, at −m swapped."""
    pairs = list(pairs)
    if len(multipliers) != len(pairs) * (2 if subtract else 1):
        raise ConfigError("one multiplier per example is needed")
    add = _Examples(
        [p.prompt for p in pairs],
        [p.positive for p in pairs],
        [p.negative for p in pairs],
        [float(m) for m in multipliers[: len(pairs)]],
    )
    if not subtract:
        return add
    return _Examples(
        add.prompts * 2,
        add.preferred + [p.negative for p in pairs],
        add.opposite + [p.positive for p in pairs],
        add.m + [-float(m) for m in multipliers[len(pairs) :]],
    )


def example_losses(
    model: TransformerBridge,
    intervention: Intervention,
    examples: _Examples,
    *,
    length_normalise: bool = True,
    projection: ManifoldProjection | None = None,
    prefixes: PrefixCache | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(L_preferred, L_opposite, T_preferred, T_opposite, off-manifold excess) of a batch.

    Losses are summed over answer tokens, or divided by their lengths with ``length_normalise``.
    Differentiable with respect to the intervention's parameters; the excess is 0 without a
    ``projection``. ``prefixes`` reuses the states entering the intervention's block.
    """
    paired = encode_paired(model, examples.prompts, examples.preferred, examples.opposite)
    layer = intervention.layer
    inputs = start_inputs(model, paired, layer, prefixes)
    ms = torch.tensor(examples.m * paired.sides, device=inputs.device, dtype=torch.float32)
    states: dict[str, Tensor] = {}
    out_hook = intervention.hook_names[1]

    def recorder(key: str):
        def record(tensor: Tensor, *, hook) -> None:
            states[key] = tensor

        return record

    observe: tuple[list, list] = ([], [])
    if projection is not None:
        observe = ([(out_hook, recorder("unsteered"))], [(out_hook, recorder("steered"))])
    logprob, _ = paired_logprobs(model, paired, inputs, intervention, ms, observe=observe)
    logprob = logprob.reshape(-1)  # A_p of every example, then A_n
    lengths = paired.lengths().to(logprob.dtype)
    loss = -logprob / lengths if length_normalise else -logprob
    excess = logprob.new_zeros(())
    if projection is not None:
        roles = TokenRoles.from_batch(paired.batch)
        excess = off_manifold_excess(
            projection, states["unsteered"], states["steered"], roles.mask(intervention.positions)
        )
    n = len(examples)
    return loss[:n], loss[n:], lengths[:n], lengths[n:], excess


def train_intervention(
    model: TransformerBridge,
    intervention: Intervention,
    train_pairs: Sequence[ContrastPair],
    eval_pairs: Sequence[ContrastPair],
    config: TrainingConfig | None = None,
    *,
    projection: ManifoldProjection | None = None,
    progress: bool = True,
    prefixes: PrefixCache | None = None,
) -> TrainingResult:
    """Optimise ``intervention`` (in place) on ``train_pairs``; evaluate on ``eval_pairs``.

    ``prefixes`` (a :class:`~workbench.steering.prefixes.PrefixCache`) keeps the states
    entering the intervention's block across steps, epochs and runs on the same pairs; by
    default each training makes its own, so the frozen blocks before the intervention run
    once per example row."""
    config = config or TrainingConfig()
    train_pairs, eval_pairs = list(train_pairs), list(eval_pairs)
    if not train_pairs:
        raise ConfigError("no training pairs")
    if not eval_pairs:
        raise ConfigError("no evaluation pairs: early stopping needs held-out pairs")
    if config.off_manifold_penalty > 0 and projection is None:
        raise ConfigError("off_manifold_penalty > 0 needs the manifold projection to measure it")
    intervention.check_model(model)
    parameters = [p for p in intervention.parameters() if p.requires_grad]
    if not parameters:
        raise ConfigError(f"{intervention.label} has no trainable parameters")
    bad = [n for n, v in intervention.state_dict().items() if not torch.isfinite(v).all()]
    if bad:
        raise ConfigError(
            f"{intervention.label} starts with NaN or infinite values in {bad}: training would "
            "return them unchanged; initialise it again"
        )

    prefixes = prefixes if prefixes is not None else PrefixCache(model)
    opt = _optimisation(intervention, parameters, len(train_pairs), config, prefixes)
    if config.objective.needs_reference:
        opt.reference = reference_losses(model, train_pairs + eval_pairs, config.batch_size)
    penalty_projection = projection if config.off_manifold_penalty > 0 else None
    step_rows: list[dict[str, Any]] = []
    # Epoch 0 (before training) is measured as the reference, but the result is always a
    # trained epoch: the best of epochs 1.., by the selection score on the held-out pairs.
    epoch_rows = [_evaluate(model, intervention, eval_pairs, config, penalty_projection, 0, opt)]
    selection = _selection(config.selection, eval_pairs)
    best_score, best_epoch = (-float("inf"), float("inf")), 0
    best_state = copy.deepcopy(intervention.state_dict())
    stale, stopped_early = 0, False
    steps_bar = bar(
        total=opt.total_steps,
        desc=f"train {config.method} {intervention.label}",
        enabled=progress,
    )
    with _frozen(model):
        for epoch in range(1, config.epochs + 1):
            intervention.train()
            for row in _train_epoch(
                model, intervention, train_pairs, config, opt, penalty_projection, epoch
            ):
                step_rows.append({"epoch": epoch, "step": len(step_rows) + 1, **row})
                steps_bar.update(1)
                steps_bar.set_postfix({k: f"{row[k]:.3f}" for k in _SHOWN})
            intervention.eval()
            evaluation = _evaluate(
                model, intervention, eval_pairs, config, penalty_projection, epoch, opt
            )
            epoch_rows.append(evaluation)
            score = _score(evaluation, selection)
            if _improves(score, best_score, config.min_delta):
                best_score, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy(intervention.state_dict())
            else:
                stale += 1
                if config.patience and stale >= config.patience and epoch < config.epochs:
                    stopped_early = True
                    break
    steps_bar.close()
    if best_epoch == 0:
        raise TrainingError(
            f"training {intervention.label} ({config.method}) gave no epoch with a finite "
            f"{selection} on the held-out pairs (held-out losses "
            f"{[r.get('eval_loss') for r in epoch_rows[1:]]}): it diverged; lower the learning "
            "rate or the multipliers"
        )
    intervention.load_state_dict(best_state)
    epochs_table = pd.DataFrame(epoch_rows).assign(selection=selection)
    return TrainingResult(
        intervention=intervention,
        config=config,
        steps=pd.DataFrame(step_rows),
        epochs=epochs_table,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
    )


_SHOWN = ("loss", "loss_p_term", "loss_n_term", "margin_term", "penalty_term")  # progress bar


@dataclass
class _Optimisation:
    parameters: list[nn.Parameter]
    optimiser: torch.optim.Optimizer
    schedule: LRScheduler
    generator: torch.Generator  # draws the example order and each example's m
    per_epoch: int  # examples per epoch (pairs, twice with subtract)
    total_steps: int
    prefixes: PrefixCache  # states entering the intervention's block, per example row
    # RePS's reference: the unsteered (loss, length) of each (prompt, answer); None otherwise
    reference: dict[tuple[str, str], tuple[float, int]] | None = None


def _optimisation(
    intervention, parameters, n_pairs: int, config: TrainingConfig, prefixes: PrefixCache
):
    """AdamW over the intervention's parameter groups with the linear schedule."""
    per_epoch = n_pairs * (2 if config.subtract else 1)
    total_steps = math.ceil(per_epoch / config.batch_size) * config.epochs
    optimiser = torch.optim.AdamW(
        parameter_groups(intervention, config.learning_rate_for(intervention.form)),
        weight_decay=config.weight_decay,
    )
    warmup = round(config.warmup_fraction * total_steps)
    return _Optimisation(
        parameters,
        optimiser,
        linear_schedule(optimiser, warmup, total_steps),
        torch.Generator().manual_seed(config.seed),
        per_epoch,
        total_steps,
        prefixes,
    )


def _train_epoch(
    model: TransformerBridge,
    intervention,
    train_pairs,
    config,
    opt: _Optimisation,
    projection,
    epoch,
):
    """One pass over the examples in a random order, each at a multiplier drawn from the grid;
    yields each step's row (learning rate, gradient norm, loss terms)."""
    order = torch.randperm(opt.per_epoch, generator=opt.generator).tolist()
    draws = torch.randint(len(config.multipliers), (opt.per_epoch,), generator=opt.generator)
    examples = make_examples(
        train_pairs, [config.multipliers[i] for i in draws.tolist()], config.subtract
    )
    for first in range(0, opt.per_epoch, config.batch_size):
        rows = examples.take(order[first : first + config.batch_size])
        loss_p, loss_n, _, _, excess = example_losses(
            model,
            intervention,
            rows,
            length_normalise=config.length_normalise,
            projection=projection,
            prefixes=opt.prefixes,
        )
        reference = _reference(opt.reference, rows, config.length_normalise, loss_p)
        terms = config.objective.terms(loss_p, loss_n, reference)
        loss = terms.total + config.off_manifold_penalty * excess
        opt.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(opt.parameters, config.max_grad_norm)
        learning_rate = max(opt.schedule.get_last_lr())
        opt.optimiser.step()
        opt.schedule.step()
        row = {
            "learning_rate": learning_rate,
            "grad_norm": float(grad_norm),
            **terms.as_floats(),
            "penalty_term": config.off_manifold_penalty * float(excess.detach()),
        }
        row["loss"] += row["penalty_term"]
        yield row


@torch.no_grad()  # measured, not trained on: no autograd graph to build and drop
def _evaluate(
    model: TransformerBridge,
    intervention,
    pairs,
    config,
    projection,
    epoch,
    opt: _Optimisation | None = None,
) -> dict[str, Any]:
    """The objective on ``pairs`` at ±eval_multiplier, and summaries at +eval_multiplier."""
    n = len(pairs)
    multipliers = [config.eval_multiplier] * (n * (2 if config.subtract else 1))
    examples = make_examples(pairs, multipliers, config.subtract)
    parts: list[tuple[Tensor, ...]] = []
    for first in range(0, len(examples), config.batch_size):
        rows = range(first, min(first + config.batch_size, len(examples)))
        losses = example_losses(
            model,
            intervention,
            examples.take(rows),
            length_normalise=False,
            projection=projection,
            prefixes=opt.prefixes if opt is not None else None,
        )
        parts.append(tuple(t.detach().cpu().double().reshape(-1) for t in losses[:4]))
        parts[-1] += (losses[4].detach().cpu().double().reshape(1) * len(rows),)
    loss_p, loss_n, len_p, len_n, excess = (torch.cat(column) for column in zip(*parts))
    scale_p, scale_n = (len_p, len_n) if config.length_normalise else (1.0, 1.0)
    table = opt.reference if opt is not None else None
    reference = _reference(table, examples, config.length_normalise, loss_p)
    terms = config.objective.terms(loss_p / scale_p, loss_n / scale_n, reference)
    penalty = config.off_manifold_penalty * float(excess.sum()) / len(examples)
    pref, util, defined = preference_utility(loss_p[:n].numpy(), loss_n[:n].numpy())
    positive = [p.positive for p in pairs]
    repeat = answers_repeat(positive, [p.negative for p in pairs])
    scores = preference_scores(pref, positive, repeat)
    return {
        "epoch": epoch,
        "eval_loss": float(terms.total) + penalty,
        "eval_loss_p_term": float(terms.preferred),
        "eval_loss_n_term": float(terms.opposite),
        "eval_margin_term": float(terms.margin),
        "eval_penalty_term": penalty,
        **scores,
        "mean_util_odds": float(np.nanmean(util)) if defined.any() else float("nan"),
        "util_undefined": int((~defined).sum()),
    }


def _reference(table, examples: _Examples, normalise: bool, like: Tensor):
    """The unsteered (ℓ⁰_preferred, ℓ⁰_opposite) of ``examples`` from RePS's reference table
    (per token with ``normalise``), as tensors like ``like``; None without a table."""
    if table is None:
        return None

    def side(answers: list[str]) -> Tensor:
        values = [table[(prompt, a)] for prompt, a in zip(examples.prompts, answers)]
        losses = [loss / length if normalise else loss for loss, length in values]
        return torch.tensor(losses, dtype=like.dtype, device=like.device)

    return side(examples.preferred), side(examples.opposite)


def parameter_groups(intervention: Intervention, learning_rate: float) -> list[dict[str, Any]]:
    """AdamW groups: in normalised units (the intervention has measured scales), a matrix's
    rate is divided by its fan-in, so one step moves Δh by about ``learning_rate`` × the typical
    norm whatever the width (Adam moves every entry by ~lr; a d_in-wide row sums d_in of them).
    Vectors, and every parameter in raw units, take ``learning_rate`` as it is."""
    normalised = (intervention.scale, intervention.input_scale) != (1.0, 1.0)
    groups = []
    for parameter in intervention.parameters():
        if not parameter.requires_grad:
            continue
        fan_in = parameter.shape[1] if normalised and parameter.ndim == 2 else 1
        groups.append({"params": [parameter], "lr": learning_rate / fan_in})
    return groups


def _selection(selection: str, pairs: Sequence[ContrastPair]) -> str:
    repeat = answers_repeat([p.positive for p in pairs], [p.negative for p in pairs])
    if selection == "auto":
        return "balanced_accuracy" if repeat else "objective"
    if selection == "balanced_accuracy" and not repeat:
        raise ConfigError(
            "selection 'balanced_accuracy' needs answers that repeat across pairs (Yes/No, "
            "(A)/(B)); these are free text: select by 'accuracy' or 'objective'"
        )
    return selection


def _score(evaluation: dict[str, Any], selection: str) -> tuple[float, float]:
    """(primary, tie-break): both larger is better. An epoch whose held-out loss is not
    finite (a NaN on some pair) scores NaN, so it is never chosen."""
    objective = -float(evaluation["eval_loss"])
    if selection == "objective" or math.isnan(objective):
        return objective, 0.0
    return float(evaluation[selection]), objective


def _improves(score: tuple[float, float], best: tuple[float, float], min_delta: float) -> bool:
    if score[0] > best[0] + min_delta:
        return True
    return score[0] >= best[0] and score[1] > best[1] and not score[0] > best[0] + min_delta


@contextmanager
def _frozen(model: TransformerBridge) -> Iterator[None]:
    """The model's parameters take no gradient and it is in eval mode; both restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
