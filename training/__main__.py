"""Command line: ``python -m training {train,ensure,bench} --store DIR``.

* ``train``  trains, evaluates, parity-checks and publishes all four models, prints a summary
  and writes ``runs/train-<UTC>/report.md``;
* ``ensure`` trains only if any of the four models has no version yet (``make run`` uses it);
* ``bench``  prints per-call latencies of the latest versions (a benchmark, never a failure).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from training import registry_cli
from training.export import ParityError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default="artifacts", help="artifact store root (default: %(default)s)")


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=1, help="seed of every generated scenario and model (default: 1)")
    p.add_argument("--quick", action="store_true", help="smaller scenarios, under a minute (for tests and demos)")
    p.add_argument("--runs-dir", default="runs", help="where run reports go (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes replaying scenarios (default: one per CPU; results do not depend on it)")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{train,ensure,bench,list,show,promote,rollback,unshadow,diff}")
    p = sub.add_parser("train", help="train, evaluate and publish all four models",
                       description="Train, evaluate, export, parity-check and publish all four models.")
    _common(p)
    _training_args(p)
    p = sub.add_parser("ensure", help="train only if a model has no version yet",
                       description="Train all four models only if any of them has no version in the store.")
    _common(p)
    _training_args(p)
    p = sub.add_parser("bench", help="per-call latency of the latest versions",
                       description="Measure per-call latency (single thread, batch of one) of the latest versions.")
    _common(p)
    p.add_argument("-n", type=int, default=5000, help="calls per measurement (default: %(default)s)")
    registry_cli.add_commands(sub)
    return parser


def _summary(run) -> str:  # type: ignore[no-untyped-def]
    lines = []
    for name, t in run.trained.items():
        e = t.evaluation
        if name == "detector":
            fig = (f"AP {e['average_precision']:.3f}, ROC AUC {e['roc_auc']:.3f}, alert F1 {e['alert_f1']:.3f} "
                   f"(precision {e['alert_precision']:.3f}, incident recall {e['incident_recall']:.3f})")
        elif name == "forecaster":
            fig = (f"MAE {e['mae']:.3f} vs naive {e['naive_mae']:.3f} (scale units), "
                   f"80% coverage {e['coverage_80']:.3f}")
        elif name == "clusterer":
            fig = f"k={e['k']}, peer-drift AUC {e['peer_drift_auc']:.3f}"
        else:
            fig = ", ".join(f"{h} acc {e[h]['accuracy']:.3f} (majority {e[h]['majority_accuracy']:.3f})"
                            for h in ("priority", "category", "team")) + f", fp AUC {e['fp']['auc']:.3f}"
            per = e.get("candidates_per_trigger")
            if per:
                fig += "; candidates train/test " + ", ".join(
                    f"{t} {per['train'][t]['candidates']}/{per['test'][t]['candidates']}" for t in per["train"])
        lines.append(f"  {name:<11} {run.versions[name]} (parent {run.previous.get(name)})  {fig}")
    lines.append(f"  total {run.timings['total_s']:.1f} s; report: {run.report_path}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command in registry_cli.COMMANDS:
        return registry_cli.run(args)
    if args.command == "bench":
        from training.bench import measure_latencies

        print(json.dumps(measure_latencies(args.store, n=args.n), indent=2))
        return 0

    from training.train import missing_models, run_training

    if args.command == "ensure":
        missing = missing_models(args.store)
        if not missing:
            print(f"all models present in {args.store}; nothing to train")
            return 0
        print(f"no version of {', '.join(missing)} in {args.store}; training")
    try:
        run = run_training(args.store, seed=args.seed, quick=args.quick, runs_dir=args.runs_dir,
                           progress=not args.no_progress, workers=args.workers)
    except ParityError as exc:
        print(f"parity check failed, nothing written: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("trained:")
    print(_summary(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
