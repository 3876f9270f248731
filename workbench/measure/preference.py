"""A first measure of whether a direction steers: held-out preference under a steering vector.

For each held-out pair, P(A_p | q) and P(A_n | q) are scored teacher-forced; the accuracy is the
share of pairs with P(A_p|q) > P(A_n|q), beside the balanced accuracy where answers repeat (see
workbench.measure.answer_bias), and the preference is the mean of
log P(A_p|q) - log P(A_n|q) (PrefOdds, summed over answer tokens; see workbench.measure.log_odds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from workbench.data.pairs import ContrastPair, answers_repeat
from workbench.measure.answer_bias import preference_scores
from workbench.measure.scoring import answer_logprobs
from workbench.steering.apply import Multiplier
from workbench.steering.forms import Intervention

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class PreferenceSummary:
    accuracy: float
    balanced_accuracy: float  # NaN where the answers are free text
    mean_pref_odds: float
    n_pairs: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        balanced = (
            f", balanced accuracy {self.balanced_accuracy:.1%}"
            if math.isfinite(self.balanced_accuracy)
            else ""
        )
        return f"accuracy {self.accuracy:.1%}{balanced}, mean PrefOdds {self.mean_pref_odds:+.2f}"


def preference_summary(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    interventions: Sequence[tuple[Intervention, Multiplier]] = (),
    batch_size: int = 16,
) -> PreferenceSummary:
    """Accuracy and mean PrefOdds of ``pairs`` under ``interventions`` (none: unsteered)."""
    positive, _ = answer_logprobs(model, pairs, "positive", interventions, batch_size)
    negative, _ = answer_logprobs(model, pairs, "negative", interventions, batch_size)
    pref_odds = (positive - negative).double().numpy()
    answers = [p.positive for p in pairs]
    repeat = answers_repeat(answers, [p.negative for p in pairs])
    return PreferenceSummary(**preference_scores(pref_odds, answers, repeat), n_pairs=len(pairs))
