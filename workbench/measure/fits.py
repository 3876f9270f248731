"""Validity-decay curve fits of preference and utility against the multiplier.

    D(m) = [1 + (m - m+)^2 / L+]^(-p+)   for m >= 0
    D(m) = [1 + (m - m-)^2 / L-]^(-p-)   for m < 0
    PrefOdds(m) ≈ (α_p·m + β_p)·D_p(m) + b_p        UtilOdds(m) ≈ β_u·D_u(m) + b_u

Fitted with scipy's SLSQP under the continuity constraint D(0+) = D(0-), on per-m means over
pairs of the fitting split (several deterministic starts, best kept); R² on the fitting split
and on the held-out split (fit on train, apply to test); percentile bootstrap intervals over
pairs. Degenerate input raises (too few multipliers) or is flagged (a constant curve, where R²
is undefined; multipliers whose values were all NaN, e.g. undefined utility).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.metrics import r2_score

from workbench.errors import ConfigError, WorkbenchError
from workbench.measure.stats import pair_bootstrap

DECAY_PARAMS = ("m_plus", "L_plus", "p_plus", "m_minus", "L_minus", "p_minus")
CURVE_PARAMS = {
    "preference": ("alpha", "beta", "b", *DECAY_PARAMS),
    "utility": ("beta", "b", *DECAY_PARAMS),
}
MIN_MULTIPLIERS = 5


def decay(m: np.ndarray, m_plus, L_plus, p_plus, m_minus, L_minus, p_minus) -> np.ndarray:
    """The piecewise rational-quadratic validity decay D(m)."""
    m = np.asarray(m, dtype=np.float64)
    right = (1.0 + (m - m_plus) ** 2 / L_plus) ** (-p_plus)
    left = (1.0 + (m - m_minus) ** 2 / L_minus) ** (-p_minus)
    return np.where(m >= 0, right, left)


def curve(kind: str, m: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """The preference or utility model at ``m``."""
    d = decay(m, *(params[name] for name in DECAY_PARAMS))
    if kind == "preference":
        return (params["alpha"] * np.asarray(m) + params["beta"]) * d + params["b"]
    if kind == "utility":
        return params["beta"] * d + params["b"]
    raise ConfigError(f"kind must be 'preference' or 'utility', got {kind!r}")


def continuity_gap(params: dict[str, float]) -> float:
    """D(0+) - D(0-), zero for a valid fit."""
    right = (1.0 + params["m_plus"] ** 2 / params["L_plus"]) ** (-params["p_plus"])
    left = (1.0 + params["m_minus"] ** 2 / params["L_minus"]) ** (-params["p_minus"])
    return float(right - left)


def r_squared(y: np.ndarray, prediction: np.ndarray) -> float:
    """R² (scikit-learn's ``r2_score``); NaN when y is constant, where R² is undefined."""
    total = float(((y - y.mean()) ** 2).sum())
    if total <= 1e-12 * max(1.0, float((y**2).sum())):
        return float("nan")
    return float(r2_score(y, prediction))


@dataclass
class CurveFit:
    """A fitted preference or utility curve and how well it fits."""

    kind: str
    params: dict[str, float]
    r2_train: float
    r2_test: float
    r2_test_offset: float  # held-out R² with only the offset b refitted on held-out means
    n_multipliers: int
    n_pairs_train: int
    n_pairs_test: int
    success: bool
    flags: list[str] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, m) -> np.ndarray:
        return curve(self.kind, np.asarray(m, dtype=np.float64), self.params)

    def to_row(self) -> dict[str, object]:
        row: dict[str, object] = {
            "kind": self.kind,
            "r2_train": self.r2_train,
            "r2_test": self.r2_test,
            "r2_test_offset": self.r2_test_offset,
            "n_multipliers": self.n_multipliers,
            "n_pairs_train": self.n_pairs_train,
            "n_pairs_test": self.n_pairs_test,
            "success": self.success,
            "flags": ";".join(self.flags),
            **self.params,
        }
        for name, (low, high) in self.intervals.items():
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
        return row


def per_m_means(table: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(multipliers, mean of ``value`` over pairs at each, flags); NaN values are left out."""
    flags = []
    n_nan = int(table[value].isna().sum())
    if n_nan:
        flags.append(f"{n_nan} NaN values of {value} left out")
    means = table.dropna(subset=[value]).groupby("m")[value].mean().sort_index()
    missing = sorted(set(table["m"]) - set(means.index))
    if missing:
        flags.append(f"no defined {value} at m = {missing}")
    return means.index.to_numpy(float), means.to_numpy(float), flags


class FlatCurveError(WorkbenchError, ValueError):
    """The curve does not move with m, so a fitted shape (and its R²) would mean nothing."""


FLAT_TOLERANCE = 0.1  # nats: a curve whose per-m means span less than this is flat


def check_curve_moves(table: pd.DataFrame, value: str, tolerance: float = FLAT_TOLERANCE) -> None:
    """Raise :class:`FlatCurveError` when the per-m means of ``value`` span less than
    ``tolerance`` nats or less than twice their largest standard error (the m axis carries no
    signal: e.g. a saturated site, or a push too small to matter)."""
    defined = table.dropna(subset=[value])
    stats = defined.groupby("m")[value].agg(["mean", "sem"])
    if len(stats) < 2:
        raise FlatCurveError(f"flat: {value} is defined at fewer than 2 multipliers")
    spread = float(stats["mean"].max() - stats["mean"].min())
    noise = float(np.nan_to_num(stats["sem"]).max())
    if spread < tolerance or spread < 2 * noise:
        raise FlatCurveError(
            f"flat: mean {value} spans {spread:.3g} nats over m in "
            f"[{stats.index.min():g}, {stats.index.max():g}] (largest standard error "
            f"{noise:.3g}); the curve does not move with m, so it is not fitted"
        )


def fit_curve(
    m: np.ndarray,
    y: np.ndarray,
    kind: str,
    seed: int = 0,
    starts: int = 8,
    warm_start: dict[str, float] | None = None,
) -> tuple[dict[str, float], bool]:
    """Least-squares fit of one curve to points (m, y) with SLSQP and the continuity constraint.

    ``starts`` deterministic starting points (the first a neutral guess, the others seeded
    random perturbations); ``warm_start`` replaces them with one given start (bootstrap refits).
    """
    names = CURVE_PARAMS[kind]
    m, y = np.asarray(m, float), np.asarray(y, float)
    if len(np.unique(m)) < MIN_MULTIPLIERS:
        raise ConfigError(
            f"a {kind} fit needs at least {MIN_MULTIPLIERS} distinct multipliers, got "
            f"{len(np.unique(m))}"
        )
    if not (np.isfinite(m).all() and np.isfinite(y).all()):
        raise ConfigError(f"{kind} fit input has NaN or infinite values")
    scale = max(float(np.abs(y).max()), 1e-9)
    span = float(np.abs(m).max())
    bounds = {
        "alpha": (-1e3 * scale / span, 1e3 * scale / span),
        "beta": (-1e3 * scale, 1e3 * scale),
        "b": (-1e3 * scale, 1e3 * scale),
        "m_plus": (-2 * span, 2 * span),
        "m_minus": (-2 * span, 2 * span),
        "L_plus": (1e-4 * span**2, 1e4 * span**2),
        "L_minus": (1e-4 * span**2, 1e4 * span**2),
        "p_plus": (1e-3, 50.0),
        "p_minus": (1e-3, 50.0),
    }

    def unpack(x):
        return dict(zip(names, x))

    def loss(x):
        return float(((curve(kind, m, unpack(x)) - y) ** 2).mean()) / scale**2

    rng = np.random.default_rng(seed)
    best, best_loss, best_ok = None, np.inf, False
    initial = (
        [warm_start]
        if warm_start is not None
        else [_initial(kind, m, y, span, rng, first=start == 0) for start in range(starts)]
    )
    for x0 in initial:
        x0 = np.clip([x0[n] for n in names], *np.array([bounds[n] for n in names]).T)
        result = minimize(
            loss,
            x0,
            method="SLSQP",
            bounds=[bounds[n] for n in names],
            constraints=[{"type": "eq", "fun": lambda x: continuity_gap(unpack(x))}],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        ok = bool(result.success) and abs(continuity_gap(unpack(result.x))) < 1e-6
        if np.isfinite(result.fun) and (ok, -result.fun) > (best_ok, -best_loss):
            best, best_loss, best_ok = result.x, result.fun, ok
    return unpack(best), best_ok


def _initial(kind, m, y, span, rng, first) -> dict[str, float]:
    near = np.abs(m) <= np.quantile(np.abs(m), 0.5)
    slope = np.polyfit(m[near], y[near], 1)[0] if near.sum() >= 2 else 0.0
    at_zero = float(np.interp(0.0, m, y))
    spread = 1.0 if first else float(np.exp(rng.uniform(-2.0, 2.0)))
    return {
        "alpha": slope,
        "beta": (at_zero - y.min()) if kind == "utility" else at_zero - float(np.median(y)),
        "b": float(y.min()) if kind == "utility" else float(np.median(y)),
        "m_plus": 0.0 if first else float(rng.uniform(-0.5, 0.5) * span),
        "m_minus": 0.0 if first else float(rng.uniform(-0.5, 0.5) * span),
        "L_plus": (span**2 / 4) * spread,
        "L_minus": (span**2 / 4) * spread,
        "p_plus": 1.0 if first else float(np.exp(rng.uniform(-1.5, 1.5))),
        "p_minus": 1.0 if first else float(np.exp(rng.uniform(-1.5, 1.5))),
    }


def fit_sweep_curve(
    table: pd.DataFrame,
    kind: str = "preference",
    value: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    n_bootstrap: int = 100,
    seed: int = 0,
) -> CurveFit:
    """Fit one curve to a sweep table (one concept × form × method), train vs held-out.

    Raises :class:`FlatCurveError` when the curve does not move with m.
    """
    value = value or ("pref_odds" if kind == "preference" else "util_odds")
    train = table[table["split"] == train_split]
    test = table[table["split"] == test_split]
    if train.empty:
        raise ConfigError(f"no rows in the {train_split!r} split to fit on")
    check_curve_moves(train, value)
    m, y, flags = per_m_means(train, value)
    params, ok = fit_curve(m, y, kind, seed)
    r2_train = r_squared(y, curve(kind, m, params))
    if np.isnan(r2_train):
        flags.append("constant curve: R² undefined")
    r2_test = r2_test_offset = float("nan")
    if not test.empty:
        m_test, y_test, test_flags = per_m_means(test, value)
        flags.extend(f"test: {f}" for f in test_flags)
        if len(m_test):
            predicted = curve(kind, m_test, params)
            r2_test = r_squared(y_test, predicted)
            # How well the shape transfers, apart from a shift between the splits' baselines.
            r2_test_offset = r_squared(y_test, predicted + (y_test - predicted).mean())
    if not ok:
        flags.append("optimiser did not converge")
    fit = CurveFit(
        kind,
        params,
        r2_train,
        r2_test,
        r2_test_offset,
        len(m),
        train["pair_id"].nunique(),
        test["pair_id"].nunique(),
        ok,
        flags,
    )
    if n_bootstrap > 0:
        fit.intervals = _bootstrap(train, value, kind, n_bootstrap, seed, params)
    return fit


def _bootstrap(train, value, kind, n, seed, best) -> dict[str, tuple[float, float]]:
    """Intervals of the fitted parameters and R² over pairs (refits warm-started at ``best``)."""
    ids = train["pair_id"].unique()
    by_pair = [rows for _, rows in train.groupby("pair_id", sort=False)]
    names = [*best, "r2"]

    def refit(chosen: np.ndarray) -> dict[str, float]:
        m, y, _ = per_m_means(pd.concat([by_pair[i] for i in chosen]), value)
        try:
            params, _ = fit_curve(m, y, kind, seed, warm_start=best)
        except ValueError:
            return {}
        return {**params, "r2": r_squared(y, curve(kind, m, params))}

    return pair_bootstrap(len(ids), refit, names, n, seed)


def fit_table(
    table: pd.DataFrame,
    by: tuple[str, ...] = ("concept", "form", "method", "layer", "site"),
    n_bootstrap: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """Preference and utility fits for every group of a sweep table, one row per fit."""
    rows = []
    for key, group in table.groupby(list(by), dropna=False):
        for kind in ("preference", "utility"):
            fit = fit_sweep_curve(group, kind, n_bootstrap=n_bootstrap, seed=seed)
            rows.append({**dict(zip(by, key)), **fit.to_row()})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Regimes:
    """Where the fitted preference is linear, transitional and converged, on each side of 0.

    Pairs are (negative side, positive side). Up to ``linear_until`` the fitted curve stays
    within ``tolerance`` × its range of its tangent at m = 0 (the linear regime); from
    ``converged_from`` on its slope stays below ``tolerance`` × its largest slope (the
    convergence regime); in between it is transitional. None: not reached within the range.
    """

    linear_until: tuple[float | None, float | None]
    converged_from: tuple[float | None, float | None]


def preference_regimes(
    fit: CurveFit, m_range: tuple[float, float], tolerance: float = 0.1
) -> Regimes:
    """The linear, transitional and convergence regions of a preference fit."""
    if fit.kind != "preference":
        raise ConfigError("regimes are defined on a preference fit")
    grid = np.linspace(m_range[0], m_range[1], 2001)
    values = fit.predict(grid)
    slope = np.gradient(values, grid)
    at_zero = float(fit.predict(np.array([0.0]))[0])
    s0 = float(np.interp(0.0, grid, slope))
    spread = max(float(values.max() - values.min()), 1e-12)
    off_tangent = np.abs(values - (at_zero + s0 * grid)) > tolerance * spread
    flat = np.abs(slope) <= tolerance * float(np.abs(slope).max())

    def side(positive: bool) -> tuple[float | None, float | None]:
        order = grid >= 0 if positive else grid <= 0
        ms, leaves, flats = grid[order], off_tangent[order], flat[order]
        if not positive:
            ms, leaves, flats = ms[::-1], leaves[::-1], flats[::-1]
        linear_until = float(ms[np.argmax(leaves)]) if leaves.any() else None
        # converged from the first m after which the slope stays flat to the end of the range
        not_flat = np.nonzero(~flats)[0]
        start = 0 if len(not_flat) == 0 else not_flat[-1] + 1
        converged_from = float(ms[start]) if start < len(ms) else None
        return linear_until, converged_from

    (neg_linear, neg_converged), (pos_linear, pos_converged) = side(False), side(True)
    return Regimes((neg_linear, pos_linear), (neg_converged, pos_converged))


def breakdown_multiplier(
    fit: CurveFit, m_range: tuple[float, float], margin: float = 1.0
) -> tuple[float | None, float | None]:
    """Per side, the smallest |m| where fitted utility falls ``margin`` below its m = 0 value."""
    if fit.kind != "utility":
        raise ConfigError("the breakdown multiplier is defined on a utility fit")
    grid = np.linspace(m_range[0], m_range[1], 2001)
    broken = fit.predict(grid) < float(fit.predict(np.array([0.0]))[0]) - margin
    negative = grid[(grid <= 0) & broken]
    positive = grid[(grid >= 0) & broken]
    return (
        float(negative.max()) if len(negative) else None,
        float(positive.min()) if len(positive) else None,
    )
