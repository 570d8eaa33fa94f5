"""Command line: ``python -m training {train,ensure,backtest} --store DIR``, and the registry's commands
(:mod:`registry.cli`).

* ``train``  trains, evaluates, parity-checks and publishes all four models, prints a summary
  and writes ``runs/train-<UTC>/report.md``;
* ``ensure`` trains only if any of the four models has no version yet with the features this code
  computes (``make run`` uses it);
* ``backtest`` runs a rolling-origin backtest of the forecaster over a CSV of series
  (:mod:`training.backtest`).

``train`` and ``ensure`` take the data source (``--data generator|nab|replay``), drift events
(``--drift-topic``/``--drift-file``) and alert feedback (``--feedback-topic``/``--feedback-file``);
see :mod:`training.sources`, :mod:`training.drift` and :mod:`training.feedback`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from registry import cli as registry_cli
from training.drift import DRIFT_WEIGHT
from training.export import ParityError
from training.feedback import HUMAN_WEIGHT
from training.sources import DEFAULT_BACKGROUND, DEFAULT_MAX_RECORDS, SOURCES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default="artifacts", help="artifact store root (default: %(default)s)")


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=1, help="seed of every generated scenario and model (default: 1)")
    p.add_argument("--quick", action="store_true", help="smaller scenarios, under a minute (for tests and demos)")
    p.add_argument("--runs-dir", default="runs", help="where run reports go (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes replaying scenarios (default: one per CPU; results do not depend on it)")
    g = p.add_argument_group("data source (the detector and the forecaster; the clusterer and the classifier "
                             "need a fleet of entities and keep the generator)")
    g.add_argument("--data", choices=SOURCES, default="generator",
                   help="generator: the labelled fleet generator; nab: the NAB corpus (split by file; never use "
                        "the result for `make bench-nab` figures); replay: what the metrics topic holds, as normal "
                        "background with injected incidents (default: %(default)s)")
    g.add_argument("--nab-root", default=None, metavar="DIR",
                   help="NAB folder, read in place (default: ../shared/datasets/nab beside the project, or "
                        "$VIGIL_NAB_ROOT)")
    g.add_argument("--nab-files", nargs="+", default=None, metavar="NAME",
                   help="only these NAB files: keys, file names, stems or categories (default: all 58)")
    g.add_argument("--nab-limit", type=_positive_int, default=None, metavar="N",
                   help="only the first N rows of each NAB file (smoke runs)")
    g.add_argument("--config", default=None, metavar="YAML",
                   help="job configuration giving the Kafka defaults below (default: flink-conf/vigil.yaml)")
    g.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                   help="Kafka bootstrap servers (default: the job configuration's)")
    g.add_argument("--topic", default=None, help="metrics topic to replay (default: the job configuration's)")
    g.add_argument("--max-records", type=_positive_int, default=DEFAULT_MAX_RECORDS, metavar="N",
                   help="read at most the latest N records of each topic (default: %(default)s)")
    g.add_argument("--read-timeout", type=float, default=120.0, metavar="S",
                   help="give up reading a topic after S seconds, keeping what was read (default: %(default)s)")
    g.add_argument("--background", type=int, default=DEFAULT_BACKGROUND, metavar="N",
                   help="with drift events and --data replay: series that did not drift replayed beside the "
                        "drifted ones, as background (default: %(default)s)")
    g = p.add_argument_group("drift (vigil.drift/v1 events: the run's reason, and a data selection)")
    g.add_argument("--drift-topic", nargs="?", const="", default=None, metavar="TOPIC",
                   help="read drift events from TOPIC (no value: the job configuration's, else vigil.drift)")
    g.add_argument("--drift-file", default=None, metavar="PATH", help="read drift events from a JSON-lines file")
    g.add_argument("--drift-since", default=None, metavar="TIME",
                   help="only events detected at or after TIME (ISO-8601 with a zone)")
    g.add_argument("--drift-weight", type=float, default=DRIFT_WEIGHT, metavar="W",
                   help="with the generator: how many times more the drifted metric kinds weigh "
                        "(default: %(default)s)")
    g = p.add_argument_group("alert feedback (vigil.feedback/v1: fp labels for the classifier, threshold floors "
                             "for the detector)")
    g.add_argument("--feedback-topic", nargs="?", const="", default=None, metavar="TOPIC",
                   help="read feedback from TOPIC (no value: the job configuration's, else vigil.alert-feedback)")
    g.add_argument("--alerts-topic", default=None, metavar="TOPIC",
                   help="the alerts the feedback refers to (default: the job configuration's, vigil.alerts)")
    g.add_argument("--feedback-file", default=None, metavar="PATH", help="read feedback from a JSON-lines file")
    g.add_argument("--alerts-file", default=None, metavar="PATH",
                   help="read the alerts from a JSON-lines file (with --feedback-file)")
    g.add_argument("--feedback-weight", type=float, default=HUMAN_WEIGHT, metavar="W",
                   help="how many synthetic candidates one human verdict weighs in the fp head (default: %(default)s)")


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
                                metavar="{train,ensure,backtest,list,show,promote,rollback,unshadow,diff}")
    p = sub.add_parser("train", help="train, evaluate and publish all four models",
                       description="Train, evaluate, export, parity-check and publish all four models.")
    _common(p)
    _training_args(p)
    p = sub.add_parser("ensure", help="train only if a model has no version yet",
                       description="Train all four models only if any of them has no version in the store.")
    _common(p)
    _training_args(p)
    p = sub.add_parser("backtest", help="rolling-origin backtest of the forecaster on a CSV of series",
                       description="Feed each series of a CSV through the job's series state and forecaster and "
                                   "print sMAPE, MASE and 80%% interval coverage per horizon beside seasonal naive "
                                   "and naive (see training/backtest.py).")
    _common(p)
    from training.backtest import add_arguments

    add_arguments(p)
    registry_cli.add_commands(sub)
    return parser


def _topic(topics: Any, names: Sequence[str], default: str) -> str:
    """The job configuration's topic under the first of ``names`` it has, else ``default``."""
    for n in names:
        v = getattr(topics, n, None)
        if isinstance(v, str) and v:
            return v
    return default


def build_inputs(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The run's :class:`~training.base.RetrainInputs` from the flags: reads drift events and feedback
    now (from files or topics); a replay is read when the run prepares its data."""
    from common.kafka_io import client_options, records_from_file, records_from_topic
    from training.base import RetrainInputs
    from training.drift import parse_drift, parse_time_ms
    from training.feedback import read_feedback
    from training.sources import DataConfig

    alerts_from_topic = args.alerts_topic is not None or (args.feedback_topic is not None and not args.alerts_file)
    kafka_needed = (args.data == "replay" or args.drift_topic is not None or args.feedback_topic is not None
                    or alerts_from_topic)
    bootstrap, topics, options = args.bootstrap, None, {}
    if kafka_needed:
        from common.config import VigilConfig

        cfg = VigilConfig.load(args.config)
        bootstrap = bootstrap or cfg.kafka.bootstrap_servers
        topics = cfg.kafka.topics
        options = client_options(cfg.kafka.client_properties())
    read = {"max_records": args.max_records, "timeout_s": args.read_timeout, "options": options,
            "progress": not args.no_progress}
    data = DataConfig(kind=args.data, nab_root=args.nab_root,
                      nab_files=tuple(args.nab_files) if args.nab_files else None, nab_limit=args.nab_limit,
                      bootstrap=bootstrap,
                      topic=args.topic or (topics.metrics if topics is not None else None),
                      max_records=args.max_records, timeout_s=args.read_timeout, background=args.background,
                      kafka_options=tuple(sorted(options.items())))
    drift = None
    if args.drift_topic is not None or args.drift_file:
        since = None
        if args.drift_since:
            since = parse_time_ms(args.drift_since)
            if since is None:
                raise ValueError(f"--drift-since must be ISO-8601 with a zone (e.g. 2026-01-02T00:00:00Z). "
                                 f"Got {args.drift_since!r}.")
        records, origin = [], {}
        if args.drift_file:
            records += records_from_file(args.drift_file)
            origin["file"] = args.drift_file
        if args.drift_topic is not None:
            topic = args.drift_topic or _topic(topics, ("drift",), "vigil.drift")
            got, r = records_from_topic(bootstrap, topic, **read)
            records += got
            origin["topic"] = r.describe()
        drift = parse_drift(records, since)
        drift.origin = origin
    feedback = None
    if args.feedback_topic is not None or args.feedback_file:
        if not (args.alerts_file or alerts_from_topic):
            raise ValueError("--feedback-file needs the alerts it refers to: --alerts-file or --alerts-topic")
        fb_records, al_records, origin = [], [], {}
        if args.feedback_file:
            fb_records += records_from_file(args.feedback_file)
            origin["feedback_file"] = args.feedback_file
        if args.alerts_file:
            al_records += records_from_file(args.alerts_file)
            origin["alerts_file"] = args.alerts_file
        if args.feedback_topic is not None:
            topic = args.feedback_topic or _topic(topics, ("alert_feedback", "feedback"), "vigil.alert-feedback")
            got, r = records_from_topic(bootstrap, topic, **read)
            fb_records += got
            origin["feedback_topic"] = r.describe()
        if alerts_from_topic:
            topic = args.alerts_topic or _topic(topics, ("alerts",), "vigil.alerts")
            got, r = records_from_topic(bootstrap, topic, **read)
            al_records += got
            origin["alerts_topic"] = r.describe()
        feedback = read_feedback(fb_records, al_records, origin)
    return RetrainInputs(data=data, drift=drift, feedback=feedback, feedback_weight=args.feedback_weight,
                         drift_weight=args.drift_weight)


def _f(v: Any) -> str:
    """A figure with three decimals, or "-" when it is undefined (e.g. an AUC on one class)."""
    return "-" if v is None else f"{v:.3f}"


def _summary(run) -> str:  # type: ignore[no-untyped-def]
    lines = []
    for name, t in run.trained.items():
        e = t.evaluation
        if name == "detector":
            fig = (f"AP {_f(e['average_precision'])}, ROC AUC {_f(e['roc_auc'])}, alert F1 {_f(e['alert_f1'])} "
                   f"(precision {_f(e['alert_precision'])}, incident recall {_f(e['incident_recall'])})")
            gen = e.get("generator_test")
            if gen:
                fig += f"; on the generator's held-out fleet: AP {_f(gen['average_precision'])}, " \
                       f"alert F1 {_f(gen['alert_f1'])}"
        elif name == "forecaster":
            fig = (f"MAE {_f(e['mae'])} vs naive {_f(e['naive_mae'])} (scale units), "
                   f"80% coverage {_f(e['coverage_80'])}")
            gen = e.get("generator_test")
            if gen:
                fig += f"; on the generator's held-out fleet: MAE {_f(gen['mae'])} vs naive {_f(gen['naive_mae'])}, " \
                       f"80% coverage {_f(gen['coverage_80'])}"
        elif name == "clusterer":
            fig = f"k={e['k']}, peer-drift AUC {_f(e['peer_drift_auc'])}"
        else:
            fig = ", ".join(f"{h} acc {_f(e[h]['accuracy'])} (majority {_f(e[h]['majority_accuracy'])})"
                            for h in ("priority", "category", "team")) + f", fp AUC {_f(e['fp'].get('auc'))}"
            per = e.get("candidates_per_trigger")
            if per:
                fig += "; candidates train/test " + ", ".join(
                    f"{t} {per['train'][t]['candidates']}/{per['test'][t]['candidates']}" for t in per["train"])
        lines.append(f"  {name:<11} {run.versions[name]} (parent {run.previous.get(name)})  {fig}")
        lin = t.fields["training_data"].get("lineage", {})
        used = lin.get("data", {})
        if used.get("requested", "generator") != "generator":
            note = used.get("fallback") or used.get("why")
            lines.append(f"  {'':<11} data: {used['used']}" + (f" ({note})" if note else ""))
        if name == "detector" and t.fields["postprocessing"].get("series_threshold_floor"):
            lines.append(f"  {'':<11} threshold floors on {len(t.fields['postprocessing']['series_threshold_floor'])}"
                         f" series from feedback")
        if name == "classifier" and "feedback" in e:
            f = e["feedback"]["fp_probability_on_feedback_rows"]
            lines.append(f"  {'':<11} mean fp probability on {e['feedback']['rows']} feedback rows, false positive / "
                         f"resolved: job {_f(f['job']['false_positive'])} / {_f(f['job']['resolved'])}, "
                         f"without feedback {_f(f['without_feedback']['false_positive'])} / "
                         f"{_f(f['without_feedback']['resolved'])}, with {_f(f['with_feedback']['false_positive'])} / "
                         f"{_f(f['with_feedback']['resolved'])}")
    first = next(iter(run.trained.values())).fields["training_data"].get("lineage", {})
    if "reason" in first:
        r = first["reason"]
        lines.append(f"  reason: drift on {len(r['drift'])} series from {r['events']} events")
    lines.append(f"  total {run.timings['total_s']:.1f} s; report: {run.report_path}")
    return "\n".join(lines)


def _report_inputs(inputs) -> None:  # type: ignore[no-untyped-def]
    """Say up front what drift and feedback were read, and what was refused."""
    if inputs.drift is not None:
        d = inputs.drift
        print(f"drift: {len(d.events)} events on {len(d.series)} series"
              + (f", {d.before_since} before --drift-since" if d.before_since else "")
              + (f"; {len(d.bad)} bad records: {dict(d.summary()['bad_by_reason'])}" if d.bad else ""))
    if inputs.feedback is not None:
        f = inputs.feedback.summary()
        print(f"feedback: {f['records']} records (false_positive {f['false_positive']}, resolved {f['resolved']}, "
              f"ack {f['ack']}), {f['classifier_rows']} classifier rows"
              + (f"; skipped {f['skipped']}" if f["skipped"] else "")
              + (f"; {f['bad']} bad records: {f['bad_by_reason']}" if f["bad"] else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its connection chatter is not the run's news
    if args.command in registry_cli.COMMANDS:
        return registry_cli.run(args)
    if args.command == "backtest":
        from training.backtest import main as backtest

        try:
            return backtest(args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from training.train import missing_models, run_training

    if args.command == "ensure":
        missing = missing_models(args.store)
        if not missing:
            print(f"all models present in {args.store}; nothing to train")
            return 0
        print(f"no version of {', '.join(missing)} with this release's features in {args.store}; training")
    from common.kafka_io import TopicReadError

    try:
        inputs = build_inputs(args)
        _report_inputs(inputs)
        run = run_training(args.store, seed=args.seed, quick=args.quick, runs_dir=args.runs_dir,
                           progress=not args.no_progress, workers=args.workers, inputs=inputs)
    except ParityError as exc:
        print(f"parity check failed, nothing written: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TopicReadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("trained:")
    print(_summary(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
