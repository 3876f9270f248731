import pytest
import torch

from workbench.training.optim import linear_schedule


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_the_schedule_warms_up_then_decays_linearly_to_zero(warmup):
    total, rate = 10, 0.5
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=rate)
    schedule = linear_schedule(optimiser, warmup, total)
    for step in range(total + 3):
        if step < warmup:
            expected = rate * (step + 1) / (warmup + 1)
        else:
            expected = rate * max(0.0, (total - step) / (total - warmup))
        assert optimiser.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        optimiser.step()
        schedule.step()
