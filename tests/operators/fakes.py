"""Stand-ins for Flink's metric group in unit tests: counters and gauges by name, subgroups by name
or, for a key-value group (a Prometheus label), by ``(key, value)``."""

from __future__ import annotations


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class FakeGroup:
    def __init__(self, path: tuple[str, ...] = ()) -> None:
        self.path = path
        self.counters: dict[str, FakeCounter] = {}
        self.gauges: dict[str, object] = {}
        self.groups: dict[object, FakeGroup] = {}

    def add_group(self, name: str, value: str | None = None) -> FakeGroup:
        key = name if value is None else (name, value)
        return self.groups.setdefault(key, FakeGroup(self.path + (name,) + (() if value is None else (value,))))

    def counter(self, name: str) -> FakeCounter:
        return self.counters.setdefault(name, FakeCounter())

    def gauge(self, name: str, fn) -> None:
        self.gauges[name] = fn


class FakeContext:
    def __init__(self) -> None:
        self.group = FakeGroup()

    def get_metrics_group(self) -> FakeGroup:
        return self.group
