"""The ``workbench`` command line.

``workbench study`` is the main job. At this stage of the project it loads a model, reads a
concept's contrast pairs, extracts the difference-of-means direction at a residual-stream layer
from the training split, and reports how well it separates the held-out pairs. It grows into
the full study (sweeps, fits, manifold, SPLIT, report) as those parts land.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .concepts import shipped_concepts
from .packaged_models import DEFAULT_MODEL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    study = commands.add_parser("study", help="extract a concept direction and summarise it")
    study.add_argument(
        "--concept", default="sentiment", help=f"one of {shipped_concepts()} or a pair file"
    )
    study.add_argument("--model", default=DEFAULT_MODEL, help="model name (see `workbench models`)")
    study.add_argument(
        "--layer", type=int, default=None, help="block index (default: middle block)"
    )
    study.add_argument("--batch-size", type=int, default=16)
    study.add_argument("--out", type=Path, default=Path("runs"), help="where artefacts are written")
    study.add_argument("--numerics", choices=("raw", "compatibility"), default="raw")
    commands.add_parser("models", help="list the models that load without network")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        from .models import available_models

        print("\n".join(available_models()))
        return 0
    try:
        return _study(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        print(f"workbench study: error: {error}", file=sys.stderr)
        return 2


def _study(args: argparse.Namespace) -> int:
    from .activations import capture_activations
    from .concepts import load_concept
    from .directions import diff_of_means, mean_norm, paired_separation
    from .models import load_model, model_provenance

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = load_concept(args.concept)  # cheap, and fails before the model loads
    started = time.perf_counter()
    model = load_model(args.model, numerics=args.numerics)
    n_layers = model.cfg.n_layers
    layer = n_layers // 2 if args.layer is None else args.layer
    if not 0 <= layer < n_layers:
        raise ValueError(
            f"--layer {layer} is out of range: {args.model} has blocks 0..{n_layers - 1}"
        )
    hook = f"blocks.{layer}.hook_resid_post"
    train = capture_activations(model, dataset.train, [hook], batch_size=args.batch_size)
    test = capture_activations(model, dataset.test, [hook], batch_size=args.batch_size)
    direction = diff_of_means(train, hook)
    train_sep = paired_separation(train, hook, direction)
    test_sep = paired_separation(test, hook, direction)
    norm = float(direction.norm())
    typical = mean_norm(train, hook)

    out = args.out / f"{dataset.name}-{args.model.replace('/', '_')}-L{layer}"
    train.save(out / "activations-train")
    test.save(out / "activations-test")
    summary = {
        "model": model_provenance(model).to_dict(),
        "concept": dataset.name,
        "dataset_hash": dataset.content_hash(),
        "pairs": {"train": len(dataset.train), "test": len(dataset.test)},
        "hook": hook,
        "position_rule": train.position_rule,
        "method": "diff_of_means",
        "direction_norm": norm,
        "mean_activation_norm": typical,
        "paired_separation": {"train": train_sep, "test": test_sep},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(
        f"model {args.model} ({model_provenance(model).numerics} numerics), concept "
        f"{dataset.name!r}: {len(dataset.train)} train / {len(dataset.test)} test pairs\n"
        f"difference-of-means direction at {hook} (answer-mean activations): norm {norm:.2f}, "
        f"{norm / typical:.1%} of the mean activation norm {typical:.1f}\n"
        f"positive answer projects above its negative on {train_sep:.0%} of train pairs and "
        f"{test_sep:.0%} of held-out pairs (chance 50%)\n"
        f"this is separation of activations only; steering effects are not measured yet\n"
        f"artefacts: {out}/"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
