"""``common.kafka_io`` without a broker: how a read ends when the broker stops sending."""

from __future__ import annotations

import time
from types import SimpleNamespace

import kafka
import pytest

from common import kafka_io


class StalledConsumer:
    """A consumer of a one-partition topic whose broker hands out the first ``sent`` of ``end``
    records, then nothing more."""

    def __init__(self, end: int, sent: int) -> None:
        self.end, self.sent, self.pos = end, sent, 0

    def partitions_for_topic(self, topic):
        return {0}

    def assign(self, tps):
        self.tp = tps[0]

    def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps):
        return {tp: self.end for tp in tps}

    def seek(self, tp, offset):
        self.pos = offset

    def position(self, tp):
        return self.pos

    def poll(self, timeout_ms, max_records):
        if self.pos >= self.sent:
            time.sleep(timeout_ms / 10_000)  # a tenth of the wait: the test's clock is what matters
            return {}
        recs = [SimpleNamespace(offset=i, value=b"%d" % i, timestamp=0) for i in range(self.pos, self.sent)]
        self.pos = self.sent
        return {self.tp: recs}

    def close(self):
        self.closed = True


@pytest.fixture
def stalled(monkeypatch):
    consumer = StalledConsumer(end=5, sent=3)
    monkeypatch.setattr(kafka, "KafkaConsumer", lambda **kw: consumer)
    return consumer


def test_a_stalled_read_stops_after_idle_s_and_keeps_what_it_read(stalled):
    t0 = time.monotonic()
    r = kafka_io.read_topic("broker:9092", "t", idle_s=0.3, timeout_s=60)
    assert [x.value for x in r.records] == [b"0", b"1", b"2"] and r.timed_out
    assert r.partitions == {0: {"start": 0, "end": 5, "read": 3}}
    assert time.monotonic() - t0 < 10 and stalled.closed


def test_without_idle_s_only_the_overall_timeout_ends_a_stalled_read(stalled):
    r = kafka_io.read_topic("broker:9092", "t", timeout_s=0.5)
    assert [x.value for x in r.records] == [b"0", b"1", b"2"] and r.timed_out
