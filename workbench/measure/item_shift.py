"""Does a steer move each item toward its own answer, or every item toward one answer?

On items whose answers repeat (" Yes"/" No"), write each item's PrefOdds as ``y·d``: ``d`` is
the log-odds of the first answer string (" No" < " Yes" in sorted order, so ``d`` is
log P(No) − log P(Yes) for persona items) and ``y`` is +1 where that string is the item's
concept answer, −1 where it is not. A steer changes ``d`` by ``Δd`` on each item, which splits
exactly into

- a **common shift** ``c``: the mean of ``Δd`` over the two label groups (the same push toward
  one answer on every item, whatever the item says);
- an **item-dependent shift** ``s``: half the difference of the two groups' means (toward each
  item's own concept answer; with balanced groups it is the mean change in PrefOdds);
- a **residual**: what is left, item by item (``Δd − c − s·y``).

Only ``s`` raises balanced accuracy; ``c`` moves every item the same way, which a constant
answer already does. :func:`answer_dependence` asks the same of the unsteered model: how far
its ``d`` depends on the label at all.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from workbench.data.pairs import Strings
from workbench.errors import ConfigError


def answer_labels(positive: Strings, negative: Strings) -> np.ndarray:
    """``y`` per item: +1 where the first answer string (sorted) is the concept answer, else −1.

    Raises ``ConfigError`` unless the items share exactly two answer strings.
    """
    pos = [a.strip() for a in positive]
    options = sorted({*pos, *(a.strip() for a in negative)})
    if len(options) != 2:
        raise ConfigError(f"the items need exactly two answer strings, found {options[:6]}")
    return np.where(np.asarray(pos, dtype=object) == options[0], 1.0, -1.0)


def answer_dependence(pref: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How far the model's answer log-odds ``d = y·PrefOdds`` depends on the item's label.

    ``auroc``: ROC AUC of ``d`` for ``y`` (0.5: the answer ignores what the item says);
    ``gap``: mean ``d`` on the +1 items minus on the −1 items (nats); ``spread``: the standard
    deviation of ``d`` over items; ``mean``: mean ``d`` (the answer bias, nats).
    """
    pref, labels = _checked(pref, labels)
    d = labels * pref
    return {
        "auroc": float(roc_auc_score(labels > 0, d)),
        "gap": float(d[labels > 0].mean() - d[labels < 0].mean()),
        "spread": float(d.std()),
        "mean": float(d.mean()),
    }


def shift_decomposition(before: np.ndarray, after: np.ndarray, labels: np.ndarray):
    """Split the change in ``d`` from ``before`` to ``after`` (per-item PrefOdds) into the common
    shift, the item-dependent shift and the residual; see the module docstring.

    Returns ``common``, ``item_dependent``, ``residual_sd`` (nats) and each one's share of the
    mean square of ``Δd`` (``common_share``, ``item_share``, ``residual_share``; they sum to 1
    when the two label groups are the same size), with ``flipped_to_concept`` and
    ``flipped_away`` (shares of items whose sign of PrefOdds changed each way) and the
    ``balanced_accuracy`` after (the mean over the two label groups of the share preferring
    the concept answer).

    >>> y = np.array([1.0, 1.0, -1.0, -1.0])
    >>> before = np.array([-1.0, -2.0, 1.0, 2.0])  # d = -1, -2, -1, -2: always the -1 answer
    >>> after = before + y * 3.0  # d rises by 3 on every item: a common shift alone
    >>> out = shift_decomposition(before, after, y)
    >>> out["common"], out["item_dependent"], out["residual_sd"]
    (3.0, 0.0, 0.0)
    """
    before, labels = _checked(before, labels)
    after, _ = _checked(after, labels)
    delta = labels * (after - before)
    plus, minus = delta[labels > 0].mean(), delta[labels < 0].mean()
    common, item = (plus + minus) / 2, (plus - minus) / 2
    residual = delta - common - item * labels
    square = float(np.mean(delta**2)) or float("nan")
    return {
        "common": float(common),
        "item_dependent": float(item),
        "residual_sd": float(residual.std()),
        "common_share": float(common**2 / square),
        "item_share": float(item**2 / square),
        "residual_share": float(np.mean(residual**2) / square),
        "flipped_to_concept": float(np.mean((before <= 0) & (after > 0))),
        "flipped_away": float(np.mean((before > 0) & (after <= 0))),
        "balanced_accuracy": float(
            ((after[labels > 0] > 0).mean() + (after[labels < 0] > 0).mean()) / 2
        ),
    }


def shift_intervals(
    before: np.ndarray,
    after: np.ndarray,
    labels: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """95% percentile intervals of ``common`` and ``item_dependent`` over items, resampled
    within each label group (so both groups keep their sizes): ``common_low`` … ``_high``."""
    before, labels = _checked(before, labels)
    after, _ = _checked(after, labels)
    delta = labels * (after - before)
    rng = np.random.default_rng(seed)
    groups = [delta[labels > 0], delta[labels < 0]]
    means = np.stack(
        [g[rng.integers(0, len(g), (n_bootstrap, len(g)))].mean(1) for g in groups], axis=1
    )
    parts = {"common": means.sum(1) / 2, "item_dependent": (means[:, 0] - means[:, 1]) / 2}
    out = {}
    for name, values in parts.items():
        out[f"{name}_low"], out[f"{name}_high"] = (
            float(q) for q in np.quantile(values, [0.025, 0.975])
        )
    return out


def _checked(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, labels = np.asarray(values, dtype=float), np.asarray(labels, dtype=float)
    if values.shape != labels.shape or values.ndim != 1:
        raise ConfigError(f"PrefOdds {values.shape} and labels {labels.shape} must be 1-D, equal")
    if np.isnan(values).any():
        raise ConfigError(f"{int(np.isnan(values).sum())} items have undefined PrefOdds")
    if not ((labels > 0).any() and (labels < 0).any()):
        raise ConfigError("both answer labels must occur among the items")
    return values, labels
