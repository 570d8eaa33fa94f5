"""`python -m training {list,show,promote,rollback,diff}`: the model registry from the command line.

Addresses come from the job configuration (``flink-conf/vigil.yaml``, or ``--config``): the
Redis URL for the index and aliases, the Kafka brokers and the model-updates topic that tells a
running job to swap.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

COMMANDS = ("list", "show", "promote", "rollback", "unshadow", "diff")


def add_commands(sub: Any) -> None:
    """Register the registry subcommands on an argparse subparsers object."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", default="artifacts", help="artifact store folder (default: %(default)s)")
        p.add_argument("--config", default=None, help="job YAML with Redis and Kafka addresses "
                                                      "(default: flink-conf/vigil.yaml)")

    p = sub.add_parser("list", help="versions of each model with their aliases",
                       description="List every version of each model, oldest first, with aliases.")
    common(p)
    p.add_argument("--model", default=None, help="only this model")
    p = sub.add_parser("show", help="the manifest of one version", description="Print a version's manifest.")
    common(p)
    p.add_argument("model")
    p.add_argument("version")
    for name, helptext in (("promote", "point an alias at a version and tell the running job"),
                           ("rollback", "point an alias back at its previous version")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        common(p)
        p.add_argument("model")
        if name == "promote":
            p.add_argument("version")
        p.add_argument("--alias", default="production", choices=("production", "shadow"))
        p.add_argument("--by", default="cli", help="who did it, recorded in the update event")
    p = sub.add_parser("unshadow", help="stop scoring a shadow version beside production",
                       description="Drop a model's shadow alias and tell the running job to stop shadowing it.")
    common(p)
    p.add_argument("model")
    p.add_argument("--by", default="cli", help="who did it, recorded in the update event")
    p = sub.add_parser("diff", help="evaluation figures of two versions side by side (--live: on live traffic)",
                       description="Evaluation figures of two versions of one model side by side; with --live, "
                                   "how production A and shadow B answered the same live inputs (the job's "
                                   "shadow topic).")
    common(p)
    p.add_argument("model")
    p.add_argument("a", help="version A (with --live: the production version)")
    p.add_argument("b", help="version B (with --live: the shadow version)")
    p.add_argument("--live", action="store_true", help="compare on the shadow topic's records instead")
    p.add_argument("--max-records", type=int, default=None, help="with --live: read at most this many records")


def run(args: argparse.Namespace) -> int:
    from common.config import VigilConfig
    from models.artifact import ArtifactStore
    from models.catalog import FEATURE_SCHEMAS
    from models.context import connect
    from registry.client import Registry, RegistryError, kafka_publisher

    cfg = VigilConfig.load(args.config)
    store = ArtifactStore(args.store)
    publish = None
    if args.command in ("promote", "rollback", "unshadow"):
        publish = kafka_publisher(cfg.kafka.bootstrap_servers, cfg.kafka.topics.model_updates)
    reg = Registry(store, connect(cfg.redis.url, timeout_s=cfg.redis.timeout_s), publish)
    try:
        if args.command == "list":
            for model in [args.model] if args.model else sorted(FEATURE_SCHEMAS):
                reg.sync(model)
                aliases = reg.aliases(model)
                print(f"{model}:")
                for v in store.versions(model):
                    m = store.manifest(model, v)
                    tags = ",".join(a for a, av in aliases.items() if av == v)
                    print(f"  {v}  {m.get('created_at', '?')}  parent {m.get('parent_version')}"
                          + (f"  [{tags}]" if tags else ""))
        elif args.command == "show":
            print(json.dumps(reg.show(args.model, args.version), indent=2))
        elif args.command == "promote":
            print(json.dumps(reg.promote(args.model, args.version, args.alias, args.by)))
        elif args.command == "rollback":
            print(json.dumps(reg.rollback(args.model, args.alias, args.by)))
        elif args.command == "unshadow":
            print(json.dumps(reg.clear_shadow(args.model, args.by)))
        elif args.live:
            from registry.shadow import live_diff, read_shadow_topic

            recs = read_shadow_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topics.shadow, args.max_records)
            d = live_diff(recs, args.model, args.a, args.b)
            width = max(len(k) for k in d)
            for k, v in d.items():
                print(f"{k:<{width}}  {_fmt(v)}")
            if not d["inputs"]:
                print(f"no shadow records of {args.model} with production {args.a} and shadow {args.b} "
                      f"on {cfg.kafka.topics.shadow}: promote {args.b} with --alias shadow while the job runs")
                return 1
        else:
            rows = reg.diff(args.model, args.a, args.b)
            width = max((len(k) for k, _, _ in rows), default=10)
            print(f"{'metric':<{width}}  {args.a:>16}  {args.b:>16}")
            for k, va, vb in rows:
                print(f"{k:<{width}}  {_fmt(va):>16}  {_fmt(vb):>16}")
    except RegistryError as e:
        print(f"error: {e}")
        return 2
    return 0


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
