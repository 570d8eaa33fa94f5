"""``common.kafka_io`` against the real broker: reads around open transactions, a consumer group's
progress and live reads with a follower (bounded reads are in ``tests/training/test_retrain_kafka.py``,
a stalled read in ``tests/common/test_kafka_io.py``)."""

from __future__ import annotations

import threading
import time

import pytest

from common import kafka_io

pytestmark = pytest.mark.integration


def _transactional(bootstrap: str, name: str):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=name, acks="all")
    p.init_transactions()
    return p


def _values(r: kafka_io.TopicRead) -> list[bytes]:
    return [x.value for x in r.records]


def test_a_read_waits_for_open_transactions_to_end_when_told_to_settle(kafka_bootstrap: str,
                                                                       topic_prefix: str) -> None:
    t = f"{topic_prefix}.tx"
    kafka_io.create_topics(kafka_bootstrap, [t])
    p = _transactional(kafka_bootstrap, f"{topic_prefix}-tx")
    try:
        p.begin_transaction()
        for v in (b"a", b"b", b"c"):
            p.send(t, v)
        p.commit_transaction()
        p.begin_transaction()
        for v in (b"d", b"e"):
            p.send(t, v)
        p.flush()  # d and e are on the broker, in a transaction still open

        assert _values(kafka_io.read_topic(kafka_bootstrap, t, timeout_s=30)) == [b"a", b"b", b"c"]
        assert _values(kafka_io.read_topic(kafka_bootstrap, t, timeout_s=30, committed=False)) == \
            [b"a", b"b", b"c", b"d", b"e"]
        t0 = time.monotonic()  # a transaction that stays open: the settle gives up after settle_s
        assert _values(kafka_io.read_topic(kafka_bootstrap, t, timeout_s=30, settle_s=1.5)) == [b"a", b"b", b"c"]
        assert 1.5 <= time.monotonic() - t0 < 20

        committer = threading.Timer(1.0, p.commit_transaction)
        committer.start()
        try:  # one that commits while the read waits: its records are read too
            settled = kafka_io.read_topic(kafka_bootstrap, t, timeout_s=30, settle_s=30)
        finally:
            committer.join()
        assert _values(settled) == [b"a", b"b", b"c", b"d", b"e"] and not settled.timed_out
    finally:
        p.close()


def test_group_progress_reads_committed_offset_and_end_over_clients_it_keeps(kafka_bootstrap: str,
                                                                             topic_prefix: str) -> None:
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

    t, group = f"{topic_prefix}.progress", f"{topic_prefix}-g"
    kafka_io.create_topics(kafka_bootstrap, [t])
    kafka_io.produce(kafka_bootstrap, t, [b"%d" % i for i in range(5)])
    with kafka_io.GroupProgress(kafka_bootstrap, group, t) as progress:
        assert progress() == (0, 5)  # no offset committed yet
        admin, consumer = progress._admin, progress._consumer
        c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
        try:
            c.commit({TopicPartition(t, 0): OffsetAndMetadata(3, "", -1)})
        finally:
            c.close()
        kafka_io.produce(kafka_bootstrap, t, [b"5"])
        assert progress() == (3, 6)
        assert (progress._admin, progress._consumer) == (admin, consumer)  # the same clients, asked again
    assert progress._admin is None and progress._consumer is None


def test_a_follower_catches_up_then_sees_what_comes_and_skips_open_transactions(kafka_bootstrap: str,
                                                                               topic_prefix: str) -> None:
    t = f"{topic_prefix}.follow"
    kafka_io.create_topics(kafka_bootstrap, [t], partitions=2)
    kafka_io.produce(kafka_bootstrap, t, [b"a", b"b"], keys=[b"k1", b"k2"], partition=0)
    kafka_io.produce(kafka_bootstrap, t, [b"c"], partition=1)
    with kafka_io.Follower(kafka_bootstrap, t) as early, \
            kafka_io.Follower(kafka_bootstrap, t, start="latest") as late:
        got = early.catch_up(timeout_s=30)
        assert sorted((r.partition, r.value, r.key) for r in got) == \
            [(0, b"a", b"k1"), (0, b"b", b"k2"), (1, b"c", None)]
        assert early.where(got[0]).startswith(f"{t}/")
        assert late.catch_up(timeout_s=30) == []  # it started at the end

        p = _transactional(kafka_bootstrap, f"{topic_prefix}-follow")
        try:
            p.begin_transaction()
            p.send(t, b"open", partition=0)
            p.flush()
            kafka_io.produce(kafka_bootstrap, t, [b"d"], partition=1)
            seen: list[bytes] = []
            deadline = time.monotonic() + 30
            while b"d" not in seen and time.monotonic() < deadline:
                seen += [r.value for r in late.poll(0.5)]
            assert seen == [b"d"]  # the open transaction's record is not visible
            p.commit_transaction()
            deadline = time.monotonic() + 30
            while b"open" not in seen and time.monotonic() < deadline:
                seen += [r.value for r in late.poll(0.5)]
            assert seen == [b"d", b"open"]
        finally:
            p.close()


def test_a_follower_waits_for_its_topic_then_names_it(kafka_bootstrap: str, topic_prefix: str) -> None:
    t = f"{topic_prefix}.later"
    waits: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(kafka_io.TopicReadError, match=t):
        kafka_io.Follower(kafka_bootstrap, t, wait_s=1.0, on_wait=waits.append, retry_s=0.2)
    assert 1.0 <= time.monotonic() - t0 < 15 and waits and set(waits) == {t}

    creator = threading.Timer(1.0, kafka_io.create_topics, (kafka_bootstrap, [t]))
    creator.start()
    try:
        with kafka_io.Follower(kafka_bootstrap, t, wait_s=30, retry_s=0.2) as f:
            assert [tp.partition for tp in f.partitions] == [0]
    finally:
        creator.join()
