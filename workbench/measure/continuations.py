"""Generation-level scores of steered continuations (the paper's and AxBench's protocol, offline).

For held-out prompts, each steer at each m continues the prompt (greedy, and sampled at T = 1),
and every continuation is scored by scorers that run here:

- **concept**: ``probe`` — P(concept) from a scikit-learn logistic regression on the unsteered
  model's activations (mean over the text's tokens at one hook), fitted on the train pairs'
  positive vs negative answers; its accuracy on the test pairs' answers is reported with every
  row (``probe_accuracy``), so the reader knows how far to trust it. It sees only what the
  unsteered model represents about the text, and it was fitted on the pairs' short answers, so a
  continuation far from their style is read out of distribution. For sentiment also ``vader``,
  VADER's compound score in [−1, 1]: a word lexicon, blind to context, negation beyond its
  rules, sarcasm and every word it does not list.
- **fluency**: ``nll``, the unsteered model's mean per-token negative log-likelihood of the
  continuation given its prompt, and ``repetition`` (the share of repeated 3-grams). A text
  that repeats one phrase can have a low NLL; that is why both are kept.
- **relevance**: ``relevance``, the mean per-token log P(c | its prompt) − log P(c | another
  test prompt) under the unsteered model: how much the continuation depends on the prompt it
  continues. It cannot tell a relevant answer from one that merely echoes the prompt's words.

``score`` is the harmonic mean of three parts in [0, 1], as AxBench's judge score is of its
three ratings: the probe's P(concept); fluency ``exp(−max(0, nll − nll₀)) · (1 − repetition)``
with ``nll₀`` the unsteered continuations' median NLL (1 for text as fluent as unsteered
text); relevance ``σ(relevance)``. These mappings are this workbench's choice, not AxBench's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.data.pairs import ContrastPair, visible
from workbench.directions.capture import capture_activations
from workbench.errors import ConfigError
from workbench.measure.scoring import answer_logprobs
from workbench.measure.stats import pair_bootstrap
from workbench.measure.text import repetition_rate
from workbench.progress import bar
from workbench.steering.forms import Intervention
from workbench.steering.generation import generate_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SCORES = ("probe", "vader", "nll", "repetition", "relevance", "score")


@dataclass
class ConceptProbe:
    """A logistic-regression probe of the concept on the unsteered model's mean activation of
    a text's tokens at ``hook``; ``accuracy`` is measured on held-out answers."""

    hook: str
    classifier: object
    accuracy: float
    n_train: int
    n_test: int

    @classmethod
    def fit(
        cls,
        model: TransformerBridge,
        train: Sequence[ContrastPair],
        test: Sequence[ContrastPair],
        hook: str,
        seed: int = 0,
    ) -> ConceptProbe:
        """Fit on the train pairs' answers (positive = 1), measure on the test pairs'."""
        x_train, y_train = _answer_features(model, train, hook)
        x_test, y_test = _answer_features(model, test, hook)
        classifier = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed)
        )
        classifier.fit(x_train, y_train)
        accuracy = float((classifier.predict(x_test) == y_test).mean())
        return cls(hook, classifier, accuracy, len(y_train), len(y_test))

    def probability(
        self, model: TransformerBridge, prompts: Sequence[str], texts: Sequence[str]
    ) -> np.ndarray:
        """P(concept) of each text as a continuation of its prompt (NaN for an empty text)."""
        features = _features(model, prompts, texts, self.hook)
        defined = np.isfinite(features).all(axis=1)
        out = np.full(len(texts), np.nan)
        if defined.any():
            predict = self.classifier.predict_proba  # type: ignore[attr-defined]
            out[defined] = predict(features[defined])[:, 1]
        return out


def _features(model, prompts: Sequence[str], texts: Sequence[str], hook: str) -> np.ndarray:
    """Mean activation over each text's tokens after its prompt (NaN rows for empty texts)."""
    out = np.full((len(texts), model.cfg.d_model), np.nan)
    keep = [i for i, t in enumerate(texts) if visible(t)]
    if keep:
        pairs = [_scored(i, prompts[i], texts[i]) for i in keep]
        captured = capture_activations(model, pairs, [hook], sides=("positive",), progress=False)
        out[keep] = captured.activations[hook].double().numpy()
    return out


def _scored(i: int, prompt: str, text: str) -> ContrastPair:
    """A pair whose positive answer is the text to score (the negative only has to differ)."""
    return ContrastPair(f"c{i}", prompt, text, text + " .")


def _answer_features(model, pairs: Sequence[ContrastPair], hook: str):
    pairs = list(pairs)
    prompts = [p.prompt for p in pairs] * 2
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    labels = np.array([1] * len(pairs) + [0] * len(pairs))
    return _features(model, prompts, texts, hook), labels


def vader_compound(texts: Sequence[str]) -> np.ndarray:
    """VADER's compound sentiment of each text (the ``vaderSentiment`` lexicon)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    return np.array([analyser.polarity_scores(t)["compound"] for t in texts], dtype=float)


def continuation_nll(
    model: TransformerBridge, prompts: Sequence[str], texts: Sequence[str], batch_size: int = 16
) -> np.ndarray:
    """The unsteered model's mean per-token NLL of each text after its prompt (NaN if empty)."""
    out = np.full(len(texts), np.nan)
    keep = [i for i, t in enumerate(texts) if visible(t)]
    if not keep:
        return out
    pairs = [_scored(i, prompts[i], texts[i]) for i in keep]
    total, length = answer_logprobs(model, pairs, "positive", [], batch_size=batch_size)
    out[keep] = -(total.double() / length.clamp(min=1).double()).numpy()
    return out


@dataclass(frozen=True)
class Steer:
    """One row of the evaluation: an intervention (None: unsteered) at one multiplier."""

    concept: str
    form: str
    method: str
    seed: int
    intervention: Intervention | None
    m: float


def continuation_table(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    steers: Sequence[Steer],
    probe: ConceptProbe,
    *,
    max_new_tokens: int = 32,
    decodings: Sequence[str] = ("greedy", "sampled"),
    seed: int = 0,
    lexicon: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per pair × steer × decoding: the continuation and its raw scores."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pairs = list(pairs)
    if len(pairs) < 2:
        raise ConfigError("relevance needs at least two prompts (each scored against another)")
    prompts = [p.prompt for p in pairs]
    others = prompts[1:] + prompts[:1]  # each continuation against the next pair's prompt
    rows = []
    for steer in bar(steers, desc="continuations (steers)", enabled=progress):
        applied = [] if steer.intervention is None else [(steer.intervention, steer.m)]
        for decoding in decodings:
            tokens = generate_tokens(
                model,
                prompts,
                applied,
                max_new_tokens=max_new_tokens,
                do_sample=decoding == "sampled",
                temperature=1.0,
                seed=seed,
            )
            texts = [model.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
            own = continuation_nll(model, prompts, texts)
            other = continuation_nll(model, others, texts)
            scored = pd.DataFrame(
                {
                    "pair_id": [p.id for p in pairs],
                    "concept": steer.concept,
                    "form": steer.form,
                    "method": steer.method,
                    "seed": steer.seed,
                    "m": float(steer.m),
                    "decoding": decoding,
                    "text": texts,
                    "n_tokens": [len(t) for t in tokens],
                    "probe": probe.probability(model, prompts, texts),
                    "vader": vader_compound(texts) if lexicon else np.nan,
                    "nll": own,
                    "repetition": [repetition_rate(t, 3) for t in tokens],
                    "relevance": other - own,
                    "probe_accuracy": probe.accuracy,
                }
            )
            rows.append(scored)
    return with_scores(pd.concat(rows, ignore_index=True))


def with_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``score``, the harmonic mean of concept, fluency and relevance parts in [0, 1]."""
    unsteered = table[table["method"] == "unsteered"]
    reference = float(np.nanmedian(unsteered["nll"])) if len(unsteered) else float("nan")
    if not np.isfinite(reference):
        reference = float(np.nanmedian(table["nll"]))
    repetition = table["repetition"].fillna(0.0).clip(0, 1)
    fluency = np.exp(-np.maximum(0.0, table["nll"] - reference)) * (1 - repetition)
    relevance = 1 / (1 + np.exp(-table["relevance"]))
    parts = np.stack([table["probe"], fluency, relevance])
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = 3 / np.sum(1 / np.clip(parts, 1e-9, None), axis=0)
    return table.assign(fluency=fluency, relevance_part=relevance, score=harmonic)


def summarise_continuations(
    table: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Per concept × form × method × m × decoding: the mean of each score over prompts (seeds
    averaged per prompt), with 95% bootstrap intervals over prompts."""
    keys = ["concept", "form", "method", "m", "decoding"]
    columns = [c for c in (*SCORES, "fluency") if c in table and table[c].notna().any()]
    rows = []
    for key, group in table.groupby(keys, sort=False):
        per_prompt = group.groupby("pair_id")[columns].mean()
        values = per_prompt.to_numpy(float)

        def statistic(chosen: np.ndarray, values=values) -> dict[str, float]:
            with np.errstate(all="ignore"):
                means = np.nanmean(values[chosen], axis=0)
            return dict(zip(columns, means))

        point = statistic(np.arange(len(values)))
        intervals = pair_bootstrap(len(values), statistic, columns, n_bootstrap, seed)
        row = dict(zip(keys, key))
        row.update(n_prompts=len(values), seeds=group["seed"].nunique())
        row["probe_accuracy"] = float(group["probe_accuracy"].iloc[0])
        for name in columns:
            row[name] = point[name]
            row[f"{name}_low"], row[f"{name}_high"] = intervals[name]
        rows.append(row)
    return pd.DataFrame(rows)
