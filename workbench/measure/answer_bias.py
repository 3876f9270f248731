"""Is a preference gain the concept, or a push toward one answer token?

Where answers repeat across items (" Yes"/" No", " (A)"/" (B)"), a method that moves every item
toward one answer string reaches the share of items whose concept answer is that string without
steering the concept. These functions measure, from per-pair PrefOdds and the pairs' answer
strings:

- ``accuracy``: share of pairs with P(A_p|q) > P(A_n|q);
- ``balanced_accuracy``: the mean over concept-answer strings of the accuracy on the items with
  that concept answer (any constant answer scores 50% when each answer is the concept answer
  of some items);
- ``per_answer``: those per-string accuracies;
- ``constant_baselines``: the accuracy of always giving each answer string;
- ``top_answer_share``: the share of items on which the model gives its most frequent answer.

:func:`bias_warning` says when a method's accuracy gain is explained by answer bias.

An item whose PrefOdds is NaN (undefined) gave no answer: it is left out of every share here,
never counted as a wrong answer; the summaries count such rows and report the count.
"""

from __future__ import annotations

import numpy as np

from workbench.data.pairs import Strings


def chosen_answers(pref: np.ndarray, positive: Strings, negative: Strings):
    """The answer string each item gets (A_p where PrefOdds > 0, else A_n), stripped."""
    pos = np.array([a.strip() for a in positive], dtype=object)
    neg = np.array([a.strip() for a in negative], dtype=object)
    return np.where(np.asarray(pref) > 0, pos, neg)[~np.isnan(np.asarray(pref, dtype=float))]


def per_answer_accuracy(pref: np.ndarray, positive: Strings) -> dict[str, float]:
    """Accuracy on the items of each concept-answer string (items with NaN PrefOdds left out;
    NaN for a string none of whose items has a defined PrefOdds)."""
    labels = np.array([a.strip() for a in positive], dtype=object)
    pref = np.asarray(pref, dtype=float)
    defined = ~np.isnan(pref)
    return {str(a): _share(pref[(labels == a) & defined] > 0) for a in sorted(set(labels))}


def _share(flags: np.ndarray) -> float:
    return float(flags.mean()) if len(flags) else float("nan")


def balanced_accuracy(pref: np.ndarray, positive: Strings) -> float:
    """Mean of :func:`per_answer_accuracy` over the concept-answer strings."""
    values = list(per_answer_accuracy(pref, positive).values())
    return float(np.mean(values)) if values else float("nan")


def preference_scores(pref: np.ndarray, positive: Strings, repeat: bool) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy`` (NaN for free-text answers, where ``repeat`` is
    False: no answer string recurs, so there is no label set to balance over) and
    ``mean_pref_odds`` of per-pair PrefOdds."""
    pref = np.asarray(pref, dtype=float)
    defined = pref[~np.isnan(pref)]
    return {
        "accuracy": _share(defined > 0),
        "balanced_accuracy": balanced_accuracy(pref, positive) if repeat else float("nan"),
        "mean_pref_odds": float(defined.mean()) if len(defined) else float("nan"),
    }


def constant_baselines(positive: Strings, negative: Strings) -> dict[str, float]:
    """Accuracy of always giving answer string ``a``, for each string that is an option."""
    pos = [a.strip() for a in positive]
    options = sorted({a.strip() for a in [*positive, *negative]})
    return {a: float(np.mean([p == a for p in pos])) for a in options}


def top_answer_share(pref: np.ndarray, positive: Strings, negative: Strings):
    """(the most frequent answer given, the share of items that get it)."""
    chosen = chosen_answers(pref, positive, negative)
    if not len(chosen):
        return "", float("nan")
    values, counts = np.unique(chosen.astype(str), return_counts=True)
    top = int(np.argmax(counts))
    return str(values[top]), float(counts[top] / len(chosen))


def bias_warning(
    accuracy: float,
    balanced: float,
    balanced_low: float,
    top_answer: str,
    top_share: float,
    unsteered_accuracy: float,
    unsteered_balanced: float,
    collapse_share: float = 0.9,
    min_gain: float = 0.05,
) -> str:
    """A warning when a method's accuracy is explained by answer bias, else ``""``.

    Warns when the model gives one answer to at least ``collapse_share`` of the items, or when
    accuracy rose by ``min_gain`` or more over the unsteered model while balanced accuracy rose
    by less than half as much (the rest of the gain is the answer token, not the concept).
    ``balanced_low`` (the interval's lower end) is reported in the note when it does not clear
    the unsteered balanced accuracy.
    """
    notes = []
    if top_share >= collapse_share:
        notes.append(f"answers {top_answer!r} to {top_share:.0%} of items")
    gain, balanced_gain = accuracy - unsteered_accuracy, balanced - unsteered_balanced
    if gain >= min_gain and balanced_gain < gain / 2:
        notes.append(
            f"accuracy {unsteered_accuracy:.0%} -> {accuracy:.0%} but balanced accuracy "
            f"{unsteered_balanced:.0%} -> {balanced:.0%}: the gain is answer bias"
        )
    elif gain >= min_gain and not balanced_low > unsteered_balanced:
        notes.append(
            f"balanced accuracy {unsteered_balanced:.0%} -> {balanced:.0%}, but its interval "
            f"reaches {balanced_low:.0%}: not distinguishable from the unsteered model"
        )
    return "; ".join(notes)
