"""Service context from Redis (owner, criticality, revenue and users per minute), cached.

The job reads it when an operator opens and again every ``refresh_s`` seconds of processing time.
When Redis is down, or comes back empty (restarted without its data), the last known context keeps
serving: scoring never waits on Redis. Keys are
hashes ``vigil:service:<service>`` with fields owner, criticality, revenue_per_min, users and
description (the demo seeds them with :func:`seed`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

log = logging.getLogger(__name__)
PREFIX = "vigil:service:"
_NUMERIC = {"criticality": float, "revenue_per_min": float, "users": int}


def connect(url: str, timeout_s: float = 0.5) -> redis.Redis:
    """A client that fails fast: a slow Redis must not stall the pipeline."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def seed(client: redis.Redis, services: dict[str, dict[str, Any]]) -> None:
    """Write the context of each service (only the context fields)."""
    for name, spec in services.items():
        fields = {k: spec[k] for k in ("owner", "criticality", "revenue_per_min", "users", "description") if k in spec}
        client.hset(PREFIX + name, mapping={k: str(v) for k, v in fields.items()})


class ContextCache:
    """Service name -> context dict, refreshed now and then, kept when Redis is unreachable."""

    def __init__(self, client: redis.Redis | None, refresh_s: float, clock=time.monotonic) -> None:
        self.client = client
        self.refresh_s = refresh_s
        self.clock = clock
        self.data: dict[str, dict[str, Any]] = {}
        self.next_refresh = 0.0
        self.failures = 0

    def refresh(self) -> bool:
        """Re-read every service's context; on failure keep the old one. True if it succeeded."""
        self.next_refresh = self.clock() + self.refresh_s
        if self.client is None:
            return False
        try:
            data = {}
            for key in self.client.scan_iter(match=PREFIX + "*", count=500):
                k = key.decode() if isinstance(key, bytes) else key
                raw: dict = self.client.hgetall(k)  # type: ignore[assignment]  # a sync client
                data[k[len(PREFIX):]] = {
                    (f.decode() if isinstance(f, bytes) else f): _typed(f, v) for f, v in raw.items()
                }
        except redis.RedisError as e:
            self.failures += 1
            log.warning("service context refresh failed (%s); keeping %d known services", e, len(self.data))
            return False
        if not data and self.data:  # a Redis back without its data (restarted, not persisted): keep what we know
            log.warning("service context refresh found no services; keeping %d known services", len(self.data))
            return False
        self.data = data
        return True

    def __call__(self, service: str) -> dict[str, Any]:
        if self.clock() >= self.next_refresh:
            self.refresh()
        return self.data.get(service, {})


def _typed(field: bytes | str, value: bytes | str) -> Any:
    f = field.decode() if isinstance(field, bytes) else field
    v = value.decode() if isinstance(value, bytes) else value
    conv = _NUMERIC.get(f)
    if conv is None:
        return v
    try:
        return conv(float(v)) if conv is int else conv(v)
    except ValueError:
        return v
