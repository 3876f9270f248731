"""Sweep engine vs the naive loop, side by side in one run, on each data format.

Default: the default packaged model, a 9-point multiplier grid, 32 pairs of a sentence concept
(`sentiment`: free-text answers) and of a persona-format concept (`extraversion`: a question and
" Yes" / " No"), a DiffMean steering vector at the block output of a mid-depth block. For each
concept it prints both timings (the median of ``--repeats`` runs each, with their range: the
machines are shared), the ratio of the medians, scored tokens per second and the largest
difference between the two tables (they must agree), and the engine's achieved GFLOP/s (its
matmul FLOPs counted by torch's FlopCounterMode over its median time) against the machine's
measured fp32 matmul rate (the roofline); then the process's peak memory during the engine's
sweeps against the model's own size (parameters and buffers). Runs on a GPU unchanged.

    .venv/bin/python benchmarks/sweep.py [--model NAME] [--pairs 32] [--layer L] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from workbench import load_concept, load_model
from workbench.measure.sweeps import naive_sweep, run_sweep
from workbench.steering.concept_vectors import concept_vector

GRID = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
COLUMNS = ["L_p", "L_n", "pref_odds", "util_odds"]


def rss_gib() -> float:
    """The process's resident memory now."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**30


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(device, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the seconds it took."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def repeated(device, repeats: int, fn, *args, **kwargs):
    """The first run's result and the seconds of each of ``repeats`` runs."""
    result, seconds = None, []
    for _ in range(repeats):
        value, took = timed(device, fn, *args, **kwargs)
        result = value if result is None else result
        seconds.append(took)
    return result, seconds


def spread(seconds: list[float]) -> str:
    return (
        f"median {statistics.median(seconds):7.1f} s (range {min(seconds):.1f}–{max(seconds):.1f})"
    )


def matmul_rate(device, size: int = 2048, repeats: int = 5) -> float:
    """The machine's measured fp32 matmul rate (GFLOP/s, best of ``repeats``): the roofline."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = min(timed(device, torch.matmul, a, b)[1] for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def counted_gflop(fn, *args, **kwargs) -> float:
    """The matmul FLOPs ``fn`` runs (torch's FlopCounterMode), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--concepts", nargs="+", default=["sentiment", "extraversion"])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-rows", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, median")
    args = parser.parse_args()

    before_gib = rss_gib()  # torch and the libraries, before any weight
    model = load_model(args.model)
    device = next(model.parameters()).device
    tensors = (*model.parameters(), *model.buffers())
    model_gib = sum(t.numel() * t.element_size() for t in tensors) / 2**30
    with torch.no_grad():  # weights load memory-mapped: page them all in before measuring
        for tensor in tensors:
            tensor.sum()
    loaded_gib = rss_gib()
    layer = model.cfg.n_layers // 2 if args.layer is None else args.layer
    print(
        f"model {args.model} on {device} ({torch.get_num_threads()} threads), layer {layer} block"
    )
    engine, naive, runs = {}, {}, {}
    for concept in args.concepts:  # every engine sweep first: the peak memory is theirs
        pairs = load_concept(concept)
        vector = concept_vector(model, pairs.train, layer)
        subset = pairs.test[: args.pairs]
        run_sweep(model, subset[:2], vector, GRID, progress=False)  # warm-up, and the check
        options = dict(batch_size=args.batch_size, max_rows=args.max_rows, progress=False)
        fast, engine[concept] = repeated(
            device, args.repeats, run_sweep, model, subset, vector, GRID, **options
        )
        runs[concept] = (subset, vector, fast)
    sweep_gib = peak_rss_gib()
    roofline = matmul_rate(device)
    print(f"measured fp32 matmul rate (2048 x 2048, best of 5): {roofline:.1f} GFLOP/s")
    for concept, (subset, vector, fast) in runs.items():
        tokens = sum(
            len(model.tokenizer(p.prompt + a, add_special_tokens=False)["input_ids"])
            for p in subset
            for a in (p.positive, p.negative)
        ) * len(GRID)
        slow, naive[concept] = repeated(
            device, args.repeats, naive_sweep, model, subset, vector, GRID
        )
        gap = float((fast[COLUMNS] - slow[COLUMNS]).abs().max().max())
        slow_s, fast_s = statistics.median(naive[concept]), statistics.median(engine[concept])
        options = dict(batch_size=args.batch_size, max_rows=args.max_rows, progress=False)
        gflop = counted_gflop(run_sweep, model, subset, vector, GRID, **options)
        achieved = gflop / fast_s
        print(
            f"{concept}: {len(subset)} pairs x {len(GRID)} multipliers x 2 answers "
            f"({tokens} tokens scored), {args.repeats} runs each\n"
            f"  naive loop:   {spread(naive[concept])}  {tokens / slow_s:9.0f} tokens/s\n"
            f"  sweep engine: {spread(engine[concept])}  {tokens / fast_s:9.0f} tokens/s\n"
            f"  speed-up (medians): {slow_s / fast_s:.2f}x   max |difference| in L_p, "
            f"L_n, PrefOdds, UtilOdds: {gap:.2e}\n"
            f"  engine: {gflop:.0f} GFLOP of matmuls, {achieved:.1f} GFLOP/s = "
            f"{achieved / roofline:.0%} of the measured matmul rate"
        )
    used = sweep_gib - before_gib
    print(
        f"memory: model {model_gib:.2f} GiB; process {before_gib:.2f} GiB before loading it, "
        f"{loaded_gib:.2f} GiB with every weight resident, peak {sweep_gib:.2f} GiB during the "
        f"engine's sweeps: {used:.2f} GiB above the libraries = {used / model_gib:.2f}x the "
        "model (the naive loops run after, so they are not counted)"
    )


if __name__ == "__main__":
    main()
