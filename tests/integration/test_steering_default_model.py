"""On the default packaged model, DiffMean sentiment steering works and a random vector does not."""

import pytest

from workbench import load_concept, load_model
from workbench.directions.extract import direction_from_activations
from workbench.directions.layer_sweep import layer_sweep
from workbench.measure.preference import preference_summary
from workbench.steering.forms import SteeringVector

pytestmark = pytest.mark.integration

STRENGTH = 0.2  # steering-vector norm, as a fraction of the mean residual-stream norm


def test_diffmean_sentiment_vector_raises_held_out_preference_and_random_does_not():
    model = load_model("gemma-3-270m")
    pairs = load_concept("sentiment")
    sweep = layer_sweep(model, pairs, progress=False)
    layer = sweep.recommended_layer
    hook = f"blocks.{layer}.hook_resid_post"
    diffmean = direction_from_activations(sweep.train, hook, "diff_of_means")
    random = direction_from_activations(sweep.train, hook, "random", seed=0)

    def steered(direction):
        vector = SteeringVector.for_model(
            model, layer, site="resid", vector=direction.scaled_to(STRENGTH)
        )
        return preference_summary(model, pairs.test, [(vector, 1.0)])

    base, with_diffmean, with_random = (
        preference_summary(model, pairs.test),
        steered(diffmean),
        steered(random),
    )
    print(
        f"\nlayer {layer} (recommended), |v| = {STRENGTH} x mean resid norm "
        f"{diffmean.mean_resid_norm:.0f}, {base.n_pairs} held-out pairs\n"
        f"  unsteered: {base}\n  DiffMean:  {with_diffmean}\n  random:    {with_random}"
    )
    assert 0 < layer < model.cfg.n_layers - 1
    assert with_diffmean.accuracy > base.accuracy
    diffmean_gain = with_diffmean.mean_pref_odds - base.mean_pref_odds
    random_gain = with_random.mean_pref_odds - base.mean_pref_odds
    assert diffmean_gain > 5.0  # nats, summed over the answer
    assert random_gain < 0.25 * diffmean_gain
    assert with_random.accuracy - base.accuracy < with_diffmean.accuracy - base.accuracy
