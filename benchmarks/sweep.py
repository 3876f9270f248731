"""Sweep engine vs the naive loop, side by side in one run.

Default: the default packaged model, a 9-point multiplier grid, 32 sentiment pairs, a DiffMean
steering vector at the MLP down-projection of a mid-depth block. Prints both timings, their
ratio, tokens per second, and the largest difference between the two tables (they must agree).
Runs on a GPU unchanged when one is present.

    .venv/bin/python benchmarks/sweep.py [--model NAME] [--pairs 32] [--layer L]
"""

from __future__ import annotations

import argparse
import time

import torch

from workbench import load_concept, load_model
from workbench.directions.extract import extract_direction
from workbench.measure.sweeps import naive_sweep, run_sweep
from workbench.steering.forms import SteeringVector

GRID = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
COLUMNS = ["L_p", "L_n", "pref_odds", "util_odds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-rows", type=int, default=96)
    args = parser.parse_args()

    model = load_model(args.model)
    device = next(model.parameters()).device
    pairs = load_concept(args.concept)
    layer = model.cfg.n_layers // 2 if args.layer is None else args.layer
    direction = extract_direction(
        model, pairs.train, layer, hook=f"blocks.{layer}.mlp.out.hook_out"
    )
    vector = SteeringVector.for_model(model, layer, site="mlp_out", vector=direction.vector)
    subset = pairs[: args.pairs]
    tokens = sum(
        len(model.tokenizer(p.prompt + a, add_special_tokens=False)["input_ids"])
        for p in subset
        for a in (p.positive, p.negative)
    ) * len(GRID)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - start

    run_sweep(model, subset[:2], vector, GRID, progress=False)  # warm-up
    fast, fast_s = timed(
        lambda: run_sweep(
            model,
            subset,
            vector,
            GRID,
            batch_size=args.batch_size,
            max_rows=args.max_rows,
            progress=False,
        )
    )
    slow, slow_s = timed(lambda: naive_sweep(model, subset, vector, GRID))
    gap = float((fast[COLUMNS] - slow[COLUMNS]).abs().max().max())
    print(
        f"model {args.model} on {device} ({torch.get_num_threads()} threads), layer {layer} "
        f"mlp_out, {len(subset)} pairs x {len(GRID)} multipliers x 2 answers "
        f"({tokens} tokens scored)\n"
        f"naive loop:   {slow_s:8.1f} s  {tokens / slow_s:9.0f} tokens/s\n"
        f"sweep engine: {fast_s:8.1f} s  {tokens / fast_s:9.0f} tokens/s\n"
        f"speed-up: {slow_s / fast_s:.2f}x   max |difference| in L_p, L_n, PrefOdds, UtilOdds: "
        f"{gap:.2e}"
    )


if __name__ == "__main__":
    main()
