"""Generation-level scores: the probe is measured on held-out answers, every continuation is
scored by NLL, repetition and relevance under the unsteered model, the score is a harmonic
mean, and the summary's intervals hold its means."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.concepts import load_concept
from workbench.data.pairs import visible
from workbench.measure.continuations import (
    ConceptProbe,
    Steer,
    continuation_nll,
    continuation_table,
    summarise_continuations,
    vader_compound,
    with_scores,
)
from workbench.steering.forms import SteeringVector

HOOK = "blocks.1.hook_resid_post"


def test_vader_reads_sentiment_words():
    positive, negative, neutral = vader_compound(["a lovely, wonderful day", "awful and rude", "a"])
    assert positive > 0.5 and negative < -0.5 and neutral == 0.0


def test_probe_and_continuations_on_a_tiny_model(tiny_llama):
    pairs = load_concept("sentiment")
    probe = ConceptProbe.fit(tiny_llama, pairs.train[:24], pairs.test[:12], HOOK)
    assert probe.n_train == 48 and probe.n_test == 24 and 0.0 <= probe.accuracy <= 1.0
    test = pairs.test[:4]
    vector = SteeringVector.for_model(tiny_llama, 1)
    vector.bias.data.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    steers = [
        Steer("sentiment", "none", "unsteered", 0, None, 0.0),
        Steer("sentiment", "vector", "probe-test", 0, vector, 4.0),
    ]
    table = continuation_table(tiny_llama, test, steers, probe, max_new_tokens=6, lexicon=True)
    assert len(table) == 4 * 2 * 2  # pairs × steers × decodings
    assert set(table["decoding"]) == {"greedy", "sampled"}
    written = table["text"].map(visible)  # an empty continuation has no probe score
    assert table.loc[written, "probe"].between(0, 1).all() and table["probe"][~written].isna().all()
    assert table["vader"].between(-1, 1).all()
    # relevance is the NLL under another prompt minus the NLL under its own
    row = table.iloc[0]
    prompts = [p.prompt for p in test]
    own = continuation_nll(tiny_llama, prompts[:1], [row["text"]])[0]
    other = continuation_nll(tiny_llama, prompts[1:2], [row["text"]])[0]
    assert row["nll"] == pytest.approx(own, abs=1e-4)
    assert row["relevance"] == pytest.approx(other - own, abs=1e-4)
    # the steered greedy texts differ from the unsteered ones
    greedy = table[table["decoding"] == "greedy"]
    assert (greedy.groupby("method")["text"].apply(tuple).nunique()) == 2
    summary = summarise_continuations(table, n_bootstrap=50)
    assert len(summary) == 4 and (summary["n_prompts"] == 4).all()
    for name in ("probe", "nll", "score"):
        defined = summary.dropna(subset=[name, f"{name}_low"])  # an empty text has no NLL
        assert len(defined) >= 2
        assert (defined[f"{name}_low"] <= defined[name] + 1e-9).all()
        assert (defined[name] <= defined[f"{name}_high"] + 1e-9).all()


def test_score_is_the_harmonic_mean_of_its_parts():
    table = pd.DataFrame(
        {
            "method": ["unsteered", "x", "x"],
            "probe": [0.5, 0.9, 0.9],
            "nll": [2.0, 2.0, 4.0],
            "repetition": [0.0, 0.5, 0.0],
            "relevance": [0.0, 0.0, 0.0],
        }
    )
    scored = with_scores(table)
    fluency = [1.0, 0.5, np.exp(-2.0)]  # nll₀ = 2 (unsteered median)
    assert scored["fluency"].tolist() == pytest.approx(fluency)
    for i, f in enumerate(fluency):
        parts = [table["probe"][i], f, 0.5]
        assert scored["score"][i] == pytest.approx(3 / sum(1 / p for p in parts))
