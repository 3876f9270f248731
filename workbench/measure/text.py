"""Signs by which steered text breaks, read off greedy continuations: repeated n-grams.

``repetition_rate`` is the share of a text's n-grams that repeat an earlier n-gram of the same
text (0: none repeats; close to 1: one phrase over and over).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from workbench.data.pairs import ContrastPair
from workbench.errors import ConfigError
from workbench.measure.sweeps import row_keys
from workbench.steering.forms import Intervention
from workbench.steering.generation import generate_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def repetition_rate(tokens: Sequence[int], n: int = 3) -> float:
    """Share of the n-grams of ``tokens`` that already occurred earlier in it (NaN if none)."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return float("nan")
    return 1.0 - len(set(grams)) / len(grams)


def generation_diagnostics(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    intervention: Intervention,
    multipliers: Sequence[float],
    *,
    method: str = "",
    max_new_tokens: int = 32,
    n: int = 3,
) -> pd.DataFrame:
    """Greedy continuations of each pair's prompt at each m: repetition rate and the text.

    Keys as in the sweep table (pair_id, split, concept, form, method, layer, site, m).
    """
    prompts = [p.prompt for p in pairs]
    rows = []
    for m in multipliers:
        continuations = generate_tokens(
            model, prompts, [(intervention, float(m))], max_new_tokens=max_new_tokens
        )
        for pair, tokens in zip(pairs, continuations):
            rows.append(
                {
                    **row_keys(pair, intervention, method, m),
                    "repetition_rate": repetition_rate(tokens, n),
                    "n_tokens": len(tokens),
                    "text": model.tokenizer.decode(tokens, skip_special_tokens=True),
                }
            )
    return pd.DataFrame(rows)
