"""The model registry: versions on disk, an index and aliases in Redis, updates on a Kafka topic.

- Artifacts stay in the :class:`~models.artifact.ArtifactStore` (a folder per version).
- Redis holds, per model, the known versions (``vigil:registry:<model>:versions``, a sorted set
  by creation time), one key per alias (``vigil:registry:<model>:<alias>``, e.g. ``production``
  or ``shadow``) and each alias's history (``...:<alias>:history``, newest first) for rollbacks.
- Promoting or rolling back writes a ``vigil.model-update/v1`` event, keyed by model name (and
  alias, when it is not ``production``), to the compacted model-updates topic; every operator of
  the running job loads, verifies and swaps to the version it names, or refuses it and keeps
  serving the old one.

A promotion is refused up front when the version does not load and verify here (hash, schema,
smoke inference): a broken artifact never reaches the topic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from common.kafka_io import create_topics, produce
from models.artifact import ArtifactError, ArtifactStore
from models.catalog import FEATURE_SCHEMAS
from udfs.records import ModelUpdateRecord

ALIASES = ("production", "shadow")


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why."""


def _key(name: str, *parts: str) -> str:
    return ":".join(("vigil", "registry", name, *parts))


def update_event(model: str, version: str | None, alias: str, previous: str | None, action: str, by: str) -> dict:
    return ModelUpdateRecord(model, version, alias, previous, action, by, datetime.now(UTC).isoformat()).to_dict()


class Registry:
    """Index, aliases and update events over an artifact store.

    ``publish_update`` is called with each event (e.g. a Kafka producer send to the compacted
    model-updates topic, keyed by model name); it may be None when no job listens.
    """

    def __init__(self, store: ArtifactStore, redis_client: Any,
                 publish_update: Callable[[dict], None] | None = None) -> None:
        self.store = store
        self.redis = redis_client
        self.publish_update = publish_update

    def _check_model(self, name: str) -> None:
        if name not in FEATURE_SCHEMAS:
            raise RegistryError(f"Unknown model {name!r}. Known models: {sorted(FEATURE_SCHEMAS)}.")

    def sync(self, name: str) -> list[str]:
        """Index every version the store holds (by creation time); return them oldest first."""
        self._check_model(name)
        versions = self.store.versions(name)
        for v in versions:
            created = self.store.manifest(name, v).get("created_at")
            ts = datetime.fromisoformat(created).timestamp() if created else 0.0
            self.redis.zadd(_key(name, "versions"), {v: ts}, nx=True)
        return versions

    def versions(self, name: str) -> list[str]:
        self._check_model(name)
        return [v.decode() if isinstance(v, bytes) else v for v in self.redis.zrange(_key(name, "versions"), 0, -1)]

    def alias(self, name: str, alias: str = "production") -> str | None:
        raw = self.redis.get(_key(name, alias))
        return raw.decode() if isinstance(raw, bytes) else raw

    def aliases(self, name: str) -> dict[str, str | None]:
        return {a: self.alias(name, a) for a in ALIASES}

    def show(self, name: str, version: str) -> dict:
        self._check_model(name)
        if version not in self.store.versions(name):
            raise RegistryError(f"Model {name!r} has no version {version!r}. Versions: {self.store.versions(name)}.")
        return self.store.manifest(name, version)

    def promote(self, name: str, version: str, alias: str = "production", by: str = "cli") -> dict:
        """Point ``alias`` at ``version`` after verifying it loads; publish the update event."""
        self._check_model(name)
        if alias not in ALIASES:
            raise RegistryError(f"Unknown alias {alias!r}. Known aliases: {list(ALIASES)}.")
        try:
            self.store.load(name, version, FEATURE_SCHEMAS[name])
        except ArtifactError as e:
            raise RegistryError(f"Refusing to promote {name} {version}: {e}") from e
        self.sync(name)
        previous = self.alias(name, alias)
        if previous == version:
            return update_event(name, version, alias, previous, "unchanged", by)
        pipe = self.redis.pipeline()
        if previous is not None:
            pipe.lpush(_key(name, alias, "history"), previous)
        pipe.set(_key(name, alias), version)
        pipe.execute()
        event = update_event(name, version, alias, previous, "promote", by)
        if self.publish_update is not None:
            self.publish_update(event)
        return event

    def rollback(self, name: str, alias: str = "production", by: str = "cli") -> dict:
        """Point ``alias`` back at the version it named before; publish the update event."""
        self._check_model(name)
        raw = self.redis.lpop(_key(name, alias, "history"))
        if raw is None:
            raise RegistryError(f"{name} {alias} has no earlier version to roll back to.")
        target = raw.decode() if isinstance(raw, bytes) else raw
        current = self.alias(name, alias)
        self.redis.set(_key(name, alias), target)
        event = update_event(name, target, alias, current, "rollback", by)
        if self.publish_update is not None:
            self.publish_update(event)
        return event

    def clear_shadow(self, name: str, by: str = "cli") -> dict:
        """Stop shadowing ``name``: drop the ``shadow`` alias and tell the job (an event with no version)."""
        self._check_model(name)
        current = self.alias(name, "shadow")
        if current is None:
            raise RegistryError(f"{name} has no shadow version.")
        pipe = self.redis.pipeline()
        pipe.lpush(_key(name, "shadow", "history"), current)
        pipe.delete(_key(name, "shadow"))
        pipe.execute()
        event = update_event(name, None, "shadow", current, "clear", by)
        if self.publish_update is not None:
            self.publish_update(event)
        return event

    def diff(self, name: str, a: str, b: str) -> list[tuple[str, Any, Any]]:
        """Evaluation figures of two versions side by side: (metric, value in a, value in b)."""
        ea = _flatten(self.show(name, a).get("evaluation", {}))
        eb = _flatten(self.show(name, b).get("evaluation", {}))
        return [(k, ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb))]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float, str, bool)) or d is None:
        out[prefix[:-1]] = d
    return out


def kafka_publisher(bootstrap: str, topic: str, **props: Any) -> Callable[[dict], None]:
    """A ``publish_update`` that writes events to ``topic`` keyed by model name, and waits for the ack."""
    create_topics(bootstrap, [topic], compact=True)

    def publish(event: dict) -> None:
        # compaction keeps the last event per key: one key per model and alias ("detector", "detector@shadow")
        alias = event.get("alias", "production")
        key = event["model"] if alias == "production" else f"{event['model']}@{alias}"
        produce(bootstrap, topic, [json.dumps(event).encode()], keys=[key.encode()], linger_ms=0, **props)

    return publish
