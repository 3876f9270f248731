"""RePS, reference-free preference steering (Wu et al., arXiv 2505.20809), over polarity pairs.

A bidirectional, SimPO-style objective. For an example steered at m toward its preferred
answer (the concept answer at +m; the opposite answer at −m, the workbench's "subtract"
examples, which stand in for the paper's suppression side):

    β = max(ℓ⁰_pref − ℓ⁰_opp, floor)          (from the unsteered model, not trained)
    Δ = ℓ_opp − β·ℓ_pref                     (log-likelihood difference under steering)
    L = −log σ(Δ − margin) = softplus(margin − Δ)

where ℓ are the answers' per-token losses −log P(A|q)/|A| under steering (summed when the
trainer does not length-normalise) and ℓ⁰ the same under the unsteered model. β up-weights the
preferred answer where the unsteered model finds it unlikely; the paper's floor is 1 and
its margin 0. Unlike SPLIT there is no term that keeps the opposite answer's likelihood up:
only the difference is asked for.

>>> objective = RepsObjective()
>>> terms = objective.terms(
...     torch.tensor([1.0, 1.0]), torch.tensor([1.2, 1.2]),
...     (torch.tensor([2.0, 0.5]), torch.tensor([0.5, 2.0])),
... )
>>> # β = max(1.5, 1) = 1.5, Δ = 1.2 − 1.5 = −0.3, softplus(0.3) = 0.85436;
>>> # β = max(−1.5, 1) = 1,  Δ = 1.2 − 1.0 = 0.2,  softplus(−0.2) = 0.59814
>>> round(float(terms.total), 4)   # their mean
0.7262
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.data.pairs import ContrastPair
from workbench.errors import ConfigError
from workbench.steering.paired import encode_paired, paired_logprobs, start_inputs
from workbench.training.objective import LossTerms

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

KIND = "reps"
Reference = tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]


@dataclass(frozen=True)
class RepsObjective:
    """Settings of the RePS loss; the paper's are the defaults (floor 1, no margin)."""

    floor: float = 1.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        for name in ("floor", "margin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not abs(value) < float("inf"):
                raise ConfigError(f"RepsObjective.{name} must be a finite number, got {value}")
        if self.floor <= 0:
            raise ConfigError(f"RepsObjective.floor must be > 0, got {self.floor}")

    needs_reference = True
    is_sft = False

    def per_example(
        self,
        loss_pref: Float[Tensor, " batch"],
        loss_opp: Float[Tensor, " batch"],
        reference: Reference,
    ) -> Float[Tensor, " batch"]:
        """The loss of each example; ``reference`` = the unsteered (ℓ⁰_pref, ℓ⁰_opp)."""
        beta = self.beta(reference)
        delta = loss_opp - beta * loss_pref
        return torch.nn.functional.softplus(self.margin - delta)

    def beta(self, reference: Reference) -> Float[Tensor, " batch"]:
        ref_pref, ref_opp = reference
        return (ref_pref - ref_opp).clamp(min=self.floor).detach()

    def terms(
        self,
        loss_pref: Float[Tensor, " batch"],
        loss_opp: Float[Tensor, " batch"],
        reference: Reference | None = None,
    ) -> LossTerms:
        """Batch means: the loss (also the margin term, which it is), β·ℓ_pref and ℓ_opp."""
        if reference is None:
            raise ConfigError("RePS needs the unsteered model's answer losses (reference)")
        if not (loss_pref.shape == loss_opp.shape == reference[0].shape == reference[1].shape):
            raise ConfigError(
                f"RePS: losses {tuple(loss_pref.shape)} / {tuple(loss_opp.shape)} and reference "
                f"{tuple(reference[0].shape)} / {tuple(reference[1].shape)} differ in shape"
            )
        total = self.per_example(loss_pref, loss_opp, reference).mean()
        weighted = (self.beta(reference) * loss_pref).mean()
        return LossTerms(total, weighted, loss_opp.mean(), total)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepsObjective:
        data = dict(data)
        if data.pop("kind", KIND) != KIND:
            raise ConfigError(f"not a RePS objective: {data}")
        return cls(**data)


@torch.no_grad()
def reference_losses(
    model: TransformerBridge, pairs: Sequence[ContrastPair], batch_size: int = 8
) -> dict[tuple[str, str], tuple[float, int]]:
    """The unsteered model's (−log P(A|q), |A|) of both answers of every pair, keyed by
    (prompt, answer): RePS's reference, computed once before training."""
    table: dict[tuple[str, str], tuple[float, int]] = {}
    pairs = list(pairs)
    for first in range(0, len(pairs), batch_size):
        chunk = pairs[first : first + batch_size]
        prompts, positives = [p.prompt for p in chunk], [p.positive for p in chunk]
        paired = encode_paired(model, prompts, positives, [p.negative for p in chunk])
        inputs = start_inputs(model, paired, 0)
        ms = torch.zeros(paired.sides * len(chunk), device=inputs.device)
        logprob, _ = paired_logprobs(model, paired, inputs, None, ms)
        logprob, lengths = logprob.reshape(-1).double().cpu(), paired.lengths().cpu()
        answers = [p.positive for p in chunk] + [p.negative for p in chunk]
        for i, (pair, answer) in enumerate(zip(chunk * 2, answers)):
            table[(pair.prompt, answer)] = (-float(logprob[i]), int(lengths[i]))
    return table
