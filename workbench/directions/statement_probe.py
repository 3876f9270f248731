"""Can the model tell the items apart? A held-out probe of each item's label, layer by layer.

For items whose answers repeat (" Yes"/" No"), the label ``y`` says which answer string is the
concept answer (see :func:`workbench.measure.item_shift.answer_labels`): for a persona, whether
the statement is one the persona would say. The probe reads the residual stream at the last
prompt token (where the answer is read out, after the whole statement) of every layer, fits a
scikit-learn logistic regression on the training pairs and scores the test pairs. High held-out
accuracy with an answer that ignores ``y`` means the information is in the stream but the
answer does not use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.data.pairs import ContrastPair
from workbench.directions.capture import capture_activations
from workbench.errors import ConfigError
from workbench.hooks.names import resid_post

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def statement_probe(
    model: TransformerBridge,
    train: Sequence[ContrastPair],
    test: Sequence[ContrastPair],
    labels: tuple[np.ndarray, np.ndarray],
    layers: Sequence[int] | None = None,
    *,
    regularisation: float = 0.1,
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per layer: ``probe_accuracy`` and ``probe_auroc`` on ``test``, ``train_accuracy``.

    ``labels`` are the ±1 labels of ``train`` and ``test``; ``regularisation`` is the inverse
    strength ``C`` of the logistic regression (on standardised features).
    """
    train, test = list(train), list(test)
    y_train, y_test = (np.asarray(part) > 0 for part in labels)
    if len(y_train) != len(train) or len(y_test) != len(test):
        raise ConfigError(
            f"labels ({len(y_train)}, {len(y_test)}) must match the pairs "
            f"({len(train)}, {len(test)})"
        )
    if len(set(y_train)) < 2 or len(set(y_test)) < 2:
        raise ConfigError("both labels must occur in the training and in the test pairs")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    hooks = [resid_post(layer) for layer in layers]
    acts = {
        split: capture_activations(
            model,
            pairs,
            hooks,
            position_rule="last_prompt",
            batch_size=batch_size,
            progress=progress,
        )
        for split, pairs in (("train", train), ("test", test))
    }
    rows = []
    for layer, hook in zip(layers, hooks, strict=True):
        x_train = acts["train"].select(hook).double().numpy()
        x_test = acts["test"].select(hook).double().numpy()
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=regularisation, max_iter=2000))
        probe.fit(x_train, y_train)
        rows.append(
            {
                "layer": layer,
                "probe_accuracy": float(probe.score(x_test, y_test)),
                "probe_auroc": float(roc_auc_score(y_test, probe.decision_function(x_test))),
                "train_accuracy": float(probe.score(x_train, y_train)),
            }
        )
    return pd.DataFrame(rows)
