"""Preference and utility on one log-odds scale.

For a query q with answers A_p (the concept) and A_n (its opposite), with teacher-forced losses
``L_p = -log P(A_p|q)`` and ``L_n = -log P(A_n|q)``:

    PrefOdds = L_n - L_p
    UtilOdds = log[(e^-L_p + e^-L_n) / (1 - e^-L_p - e^-L_n)]

UtilOdds is computed in log space (``logaddexp`` and ``log(-expm1)``). When
``e^-L_p + e^-L_n >= 1`` (possible with length-normalised losses, or when one answer is a prefix
of the other) it is undefined: the value is NaN and ``util_defined`` is False. It is never
clipped. A row whose PrefOdds is undefined (a loss is NaN, or both answers are impossible:
``inf - inf``) has NaN UtilOdds and ``util_defined`` False too: nothing about it is scored.

>>> pref, util, defined = preference_utility(np.array([2.0]), np.array([3.0]))
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from workbench.errors import ConfigError


def preference_utility(
    loss_positive: ArrayLike, loss_negative: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PrefOdds, UtilOdds, util_defined) from the two answers' losses (nats)."""
    l_p = np.asarray(loss_positive, dtype=np.float64)
    l_n = np.asarray(loss_negative, dtype=np.float64)
    if l_p.shape != l_n.shape:
        raise ConfigError(f"loss shapes differ: {l_p.shape} vs {l_n.shape}")
    pref = l_n - l_p
    log_mass = np.logaddexp(-l_p, -l_n)  # log(e^-L_p + e^-L_n)
    defined = (log_mass < 0) & ~np.isnan(pref)
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(defined, log_mass - np.log(-np.expm1(np.minimum(log_mass, 0.0))), np.nan)
    return pref, util, defined
