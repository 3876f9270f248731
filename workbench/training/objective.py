"""The SPLIT training objective over polarity pairs (Xu et al., arXiv 2602.02343).

    L = λ_p·L_p + λ_n·L_n + γ·ReLU(θ − (L_n − L_p))

``L_p`` and ``L_n`` are the answer losses ``-log P(A_p|q)``, ``-log P(A_n|q)`` of one example
(summed or length-normalised over answer tokens: the trainer decides). The first term pulls the
concept answer up; the second (with λ_n > 0) keeps the opposite answer from collapsing, which
is what preserves utility; the hinge asks for a preference margin of at least θ nats. SFT is
the same objective with λ_n = γ = 0.

>>> objective = SplitObjective(lambda_p=1.0, lambda_n=0.5, gamma=4.0, theta=0.5)
>>> terms = objective.terms(torch.tensor([1.0]), torch.tensor([1.2]))
>>> float(terms.total)   # 1·1.0 + 0.5·1.2 + 4·ReLU(0.5 − 0.2)
2.8
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import ConfigError


@dataclass(frozen=True)
class LossTerms:
    """The objective's terms, each the mean over a batch of examples."""

    total: Tensor
    preferred: Tensor  # λ_p·L_p
    opposite: Tensor  # λ_n·L_n
    margin: Tensor  # γ·ReLU(θ − (L_n − L_p))

    def as_floats(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "loss_p_term": float(self.preferred.detach()),
            "loss_n_term": float(self.opposite.detach()),
            "margin_term": float(self.margin.detach()),
        }


@dataclass(frozen=True)
class SplitObjective:
    """Weights of the SPLIT loss; the reference settings are the defaults."""

    lambda_p: float = 1.0
    lambda_n: float = 0.5
    gamma: float = 4.0
    theta: float = 0.5

    def __post_init__(self) -> None:
        for name in ("lambda_p", "lambda_n", "gamma", "theta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ConfigError(
                    f"SplitObjective.{name} must be a finite number >= 0, got {value}"
                )
        if self.lambda_p == 0 and self.gamma == 0:
            raise ConfigError(
                "SplitObjective with lambda_p = gamma = 0 never rewards the concept answer"
            )

    @classmethod
    def sft(cls) -> SplitObjective:
        """Supervised fine-tuning on the concept answer: λ_p = 1, λ_n = γ = 0."""
        return cls(lambda_p=1.0, lambda_n=0.0, gamma=0.0, theta=0.0)

    @property
    def is_sft(self) -> bool:
        return self.lambda_n == 0 and self.gamma == 0

    def per_example(
        self, loss_p: Float[Tensor, " batch"], loss_n: Float[Tensor, " batch"]
    ) -> Float[Tensor, " batch"]:
        """The objective of each example."""
        hinge = torch.relu(self.theta - (loss_n - loss_p))
        return self.lambda_p * loss_p + self.lambda_n * loss_n + self.gamma * hinge

    needs_reference = False  # RePS's does (the unsteered model's losses); SPLIT's does not

    def terms(
        self,
        loss_p: Float[Tensor, " batch"],
        loss_n: Float[Tensor, " batch"],
        reference: tuple[Tensor, Tensor] | None = None,
    ) -> LossTerms:
        """Batch means of the objective and of each of its three terms (``reference`` is
        accepted for a uniform interface with RePS and not used)."""
        preferred = self.lambda_p * loss_p.mean()
        opposite = self.lambda_n * loss_n.mean()
        margin = self.gamma * torch.relu(self.theta - (loss_n - loss_p)).mean()
        return LossTerms(preferred + opposite + margin, preferred, opposite, margin)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitObjective:
        return cls(**data)
