"""The research loop, before and after, side by side in one run on the same machine.

Times ``workbench compare`` (one free-text concept, vector and local weight, ``--seeds``) and
``workbench study`` twice each, with today's code and with a base revision (default: the last
commit before the loop was made fast, checked out in a temporary git worktree and run from the
same environment): a first run into an empty ``--out`` and a second run into the same one
(whatever each version caches, it may reuse). Prints the four wall times per side, the ratios,
the new code's stage breakdown (from its ``done in`` lines), and the largest difference between
the two versions' held-out sweep tables (they must agree to 1e-5 nats).

    .venv/bin/python benchmarks/loop.py [--base REV] [--train-pairs 24] [--test-pairs 12]
        [--epochs 1] [--seeds 0 1] [--skip-study]

At the CLI's own defaults a comparison takes hours on two cores; the sizes are arguments so a
run fits the machine, and the output says which were used.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BASE = "ac7af6d"  # the main branch before the loop's reuse, caches and progress lines
DONE = re.compile(r"\] (.+?): done in ([0-9.]+) s")
KEYS = ["concept", "form", "method", "seed", "pair_id", "m"]
VALUES = ["L_p", "L_n"]


def worktree(revision: str, folder: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), revision],
        check=True,
        capture_output=True,
    )
    return folder


def timed_run(tree: Path, arguments: list[str], log: Path) -> float:
    """Run ``workbench <arguments>`` from ``tree``; its wall seconds (stderr kept in ``log``)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "workbench", *arguments],
            cwd=tree,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed in {tree} (log {log})")
    return seconds


def stages(log: Path) -> dict[str, float]:
    """Seconds per announced step of the new code's log (steps of a kind summed)."""
    totals: dict[str, float] = {}
    for name, seconds in DONE.findall(log.read_text(errors="replace")):
        kind = re.sub(r" seed \d+$", "", name)
        kind = re.sub(r"^(train|sweep) \S+ ", r"\1 ", kind)  # drop the concept
        totals[kind] = totals.get(kind, 0.0) + float(seconds)
    return totals


def largest_gap(old: Path, new: Path) -> float:
    a = pd.read_parquet(old).set_index(KEYS).sort_index()[VALUES]
    b = pd.read_parquet(new).set_index(KEYS).sort_index()[VALUES]
    if not a.index.equals(b.index):
        raise SystemExit(f"the two sweep tables hold different rows: {old} vs {new}")
    return float((a - b).abs().max().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--train-pairs", type=int, default=24)
    parser.add_argument("--test-pairs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--skip-study", action="store_true")
    args = parser.parse_args()
    sizes = ["--train-pairs", str(args.train_pairs), "--test-pairs", str(args.test_pairs)]
    common = ["--model", args.model, "--epochs", str(args.epochs), *sizes]
    jobs = {
        "compare": [
            "compare", "--concepts", args.concept, "--forms", "vector", "local_weight",
            "--seeds", *map(str, args.seeds), "--bootstrap", "200", *common,
        ],
    }  # fmt: skip
    if not args.skip_study:
        jobs["study"] = ["study", "--concept", args.concept, "--seed", str(args.seeds[0]), *common]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        trees = {"base": worktree(args.base, root / "base"), "new": REPO}
        try:
            results, logs = {}, {}
            for job, arguments in jobs.items():
                for side, tree in trees.items():
                    out = root / f"{job}-{side}"
                    for attempt in ("first", "second"):
                        log = root / f"{job}-{side}-{attempt}.log"
                        seconds = timed_run(tree, [*arguments, "--out", str(out)], log)
                        results[job, side, attempt], logs[job, side, attempt] = seconds, log
                        print(f"{job:<8}{side:<6}{attempt:<8}{seconds:8.1f} s", flush=True)
            print(
                f"\nmodel {args.model}, concept {args.concept}, {args.train_pairs} train / "
                f"{args.test_pairs} test pairs, {args.epochs} epoch(s), seeds {args.seeds}; "
                f"base {args.base}, {os.cpu_count()} CPUs"
            )
            for job in jobs:
                for attempt in ("first", "second"):
                    old, new = results[job, "base", attempt], results[job, "new", attempt]
                    print(
                        f"{job} {attempt} run: base {old:.1f} s, new {new:.1f} s: {old / new:.2f}x"
                    )
                breakdown = stages(logs[job, "new", "first"])
                print(f"{job}, new code, first run, seconds per step:")
                for name, seconds in sorted(breakdown.items(), key=lambda kv: -kv[1])[:15]:
                    print(f"  {seconds:8.1f}  {name}")
            model_folder = args.model.replace("/", "_")
            gap = largest_gap(
                root / "compare-base" / f"compare-{model_folder}" / "sweeps.parquet",
                root / "compare-new" / f"compare-{model_folder}" / "sweeps.parquet",
            )
            print(f"compare sweep tables, base vs new: largest |ΔL| {gap:.2e} nats")
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["base"])],
                check=False,
            )


if __name__ == "__main__":
    main()
