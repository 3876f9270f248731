"""Token roles: which positions of a batch are real, prompt and answer tokens.

Every intervention steers one of :data:`POSITIONS` (``all``, ``prompt``, ``answer``); the roles
of the batch in flight say which positions those are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from jaxtyping import Bool
from torch import Tensor

from workbench.data.encoding import EncodedBatch
from workbench.errors import ConfigError

Positions = Literal["all", "prompt", "answer"]
POSITIONS: tuple[Positions, ...] = get_args(Positions)


@dataclass(frozen=True)
class TokenRoles:
    """Which positions of a batch are real, prompt and answer tokens (all ``[batch, seq]``)."""

    real: Bool[Tensor, "batch seq"]
    prompt: Bool[Tensor, "batch seq"]
    answer: Bool[Tensor, "batch seq"]

    @classmethod
    def from_batch(cls, batch: EncodedBatch) -> TokenRoles:
        return cls(batch.attention_mask.bool(), batch.prompt_mask, batch.answer_mask)

    def mask(self, positions: Positions) -> Bool[Tensor, "batch seq"]:
        if positions == "all":
            return self.real
        if positions == "prompt":
            return self.prompt
        if positions == "answer":
            return self.answer
        raise ConfigError(f"unknown positions {positions!r}; choose one of {POSITIONS}")
