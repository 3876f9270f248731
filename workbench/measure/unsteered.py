"""What the unsteered model already does on a concept: the disposition steering starts from.

A concept can show steering only where the unsteered model is not already at ceiling (or at
the floor): :func:`unsteered_baselines` scores every pair without intervention and reports,
per concept, accuracy beside balanced accuracy and the constant-answer baselines (where answers
repeat), the mean answer mass P(A_p|q) + P(A_n|q), and the prompt style used.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench.data.chat import PromptStyle, format_prompts, resolve_prompt_style
from workbench.data.pairs import PairDataset, answers_repeat
from workbench.errors import ConfigError
from workbench.measure import answer_bias
from workbench.measure.sweeps import run_sweep
from workbench.models.loading import model_provenance

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def unsteered_baselines(
    model: TransformerBridge,
    datasets: dict[str, PairDataset],
    prompt_style: PromptStyle = "auto",
    split: str = "all",
    batch_size: int = 8,
) -> pd.DataFrame:
    """One row per concept: accuracy, balanced accuracy, constant baselines, answer mass."""
    rows = []
    for concept, pairs in datasets.items():
        style = resolve_prompt_style(model, pairs, prompt_style)
        chosen = pairs if split == "all" else pairs.filter(partial(_in_split, split=split))
        if not chosen:
            raise ConfigError(f"{concept}: no pairs in the {split!r} split")
        table = run_sweep(
            model,
            format_prompts(model, chosen, style),
            None,
            batch_size=batch_size,
            progress=False,
        )
        pref = table["pref_odds"].to_numpy()
        positive, negative = list(table["A_p"]), list(table["A_n"])
        repeat = answers_repeat(positive, negative)
        constants = answer_bias.constant_baselines(positive, negative) if repeat else {}
        rows.append(
            {
                "concept": concept,
                "model": model_provenance(model).name,
                "prompt_style": style,
                "split": split,
                "n_pairs": len(table),
                "accuracy": float((pref > 0).mean()),
                "balanced_accuracy": answer_bias.balanced_accuracy(pref, positive)
                if repeat
                else np.nan,
                "per_answer": ", ".join(
                    f"{a}: {v:.0%}"
                    for a, v in answer_bias.per_answer_accuracy(pref, positive).items()
                )
                if repeat
                else "",
                "constant_baselines": ", ".join(f"{a}: {v:.0%}" for a, v in constants.items()),
                "mean_pref_odds": float(pref.mean()),
                "answer_mass": float(table["answer_mass"].mean()),
            }
        )
    return pd.DataFrame(rows)


def _in_split(pair, split: str) -> bool:
    return pair.split == split


def format_baselines(table: pd.DataFrame) -> str:
    """The baselines as a Markdown table."""
    lines = [
        "| concept | prompt style | pairs | accuracy | balanced accuracy | per answer "
        "| constant answers | mean PrefOdds | answer mass |",
        "|" + "---|" * 9,
    ]
    for _, row in table.iterrows():
        balanced = row["balanced_accuracy"]
        lines.append(
            f"| {row['concept']} | {row['prompt_style']} | {row['n_pairs']} | "
            f"{row['accuracy']:.0%} | {'–' if np.isnan(balanced) else f'{balanced:.0%}'} | "
            f"{row['per_answer'] or '–'} | {row['constant_baselines'] or '–'} | "
            f"{row['mean_pref_odds']:+.2f} | {row['answer_mass']:.3g} |"
        )
    return "\n".join(lines)
