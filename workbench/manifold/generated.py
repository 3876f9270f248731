"""Does a manifold estimate mark the text that broke? Scores of the states of steered generations.

:func:`generation_scores` re-runs each steered continuation (from
:func:`~workbench.measure.text.generation_diagnostics`) through the model with the same steer
on, and scores the states of its generated tokens at each hook with every estimate: the mean
nonconformity and the share beyond ε per text. :func:`failure_auroc` then asks, per hook and
estimate, how well that score separates broken texts (repetition rate at or above a
threshold) from fluent ones, as the area under the ROC curve (0.5: no better than chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from workbench.errors import ConfigError
from workbench.manifold.displacement import Scorer
from workbench.manifold.valid import token_activations
from workbench.steering.apply import steering
from workbench.steering.forms import Intervention

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def generation_scores(
    model: TransformerBridge,
    texts: pd.DataFrame,
    prompts: Mapping[str, str],
    interventions: Mapping[str, Intervention],
    estimates: Mapping[str, Mapping[str, Scorer]],
    hooks: Sequence[str],
) -> pd.DataFrame:
    """One row per text (pair × method × m) × hook: each estimate's mean nonconformity and
    share beyond ε over the generated tokens, beside the text's repetition rate.

    ``texts`` has the columns of ``generation_diagnostics`` (``method`` names a key of
    ``interventions``); ``prompts`` maps a pair id to the prompt the text continues. The
    continuation is re-tokenised from its decoded text.
    """
    missing = sorted(set(texts["method"]) - set(interventions))
    if missing:
        raise ConfigError(f"no intervention for the methods {missing}")
    rows = []
    for (method, m), group in texts.groupby(["method", "m"], sort=False):
        group = group[group["text"].str.strip().astype(bool)]
        if group.empty:
            continue
        with steering(model, [(interventions[method], float(m))]):
            acts, owner = token_activations(
                model, [prompts[p] for p in group["pair_id"]], list(group["text"]), hooks
            )
        for hook in hooks:
            states = acts[hook].double().numpy()
            scored = {"row": owner}
            for name, per_hook in estimates.items():
                scored[f"nonconformity_{name}"] = per_hook[hook].nonconformity(states)
                scored[f"beyond_{name}"] = ~per_hook[hook].within(states)
            means = pd.DataFrame(scored).groupby("row").mean()
            for row, values in means.iterrows():
                source = group.iloc[int(row)]
                rows.append(
                    {
                        "pair_id": source["pair_id"],
                        "method": method,
                        "m": m,
                        "hook": hook,
                        "repetition_rate": source["repetition_rate"],
                        **values.to_dict(),
                    }
                )
    return pd.DataFrame(rows)


def failure_auroc(
    scores: pd.DataFrame, estimates: Sequence[str], threshold: float = 0.5
) -> pd.DataFrame:
    """Per hook × estimate: AUROC of the mean nonconformity for repetition ≥ ``threshold``."""
    rows = []
    for hook, group in scores.groupby("hook", sort=False):
        broken = (group["repetition_rate"] >= threshold).to_numpy()
        for name in estimates:
            defined = broken.any() and not broken.all()
            score = group[f"nonconformity_{name}"].to_numpy(float)
            rows.append(
                {
                    "hook": hook,
                    "estimate": name,
                    "auroc": float(roc_auc_score(broken, score)) if defined else np.nan,
                    "n_texts": len(group),
                    "n_broken": int(broken.sum()),
                }
            )
    return pd.DataFrame(rows)
