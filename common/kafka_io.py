"""Kafka I/O for every layer: topic administration, producing, end offsets and a consumer group's
progress, and bounded reads of a topic.

Topics made here have one partition and one replica (the job reads each topic with one source
split per partition; one partition keeps a replay in order). :func:`produce` waits for every
acknowledgement and raises :class:`ProduceError` naming how many records failed.

Bounded reads (for retraining): :func:`read_topic` takes the end offsets of every partition once,
at the start, and reads up to them (committed records only: the job's sinks are transactional),
so a topic that keeps growing while it is read still gives a finite, well-defined snapshot.
``settle_s`` first waits (that long at most) for the transactions open on the topic to end, so that
a read after a transactional writer stopped leaves nothing it committed unread; ``idle_s`` gives up
on a read that stalls (no record for that long) as ``timeout_s`` does on one that takes too long.
``max_records`` bounds the read to the *latest* records (each partition's share in proportion to
what it holds), since retraining wants the most recent behaviour. No consumer group is joined and
nothing is committed: reading for training never moves the job's offsets.

Live reads (the Alertmanager forwarder, the demo, benchmarks, tests): a :class:`Follower` reads
every partition of a topic from its beginning or its current end and keeps going; ``catch_up``
reads to the end offsets as they were when it was called, ``poll`` whatever has arrived since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TopicReadError(RuntimeError):
    """The topic cannot be read (broker unreachable, topic missing when it must exist)."""


@dataclass(frozen=True)
class Record:
    """One Kafka record as read: where it was and its raw value."""

    partition: int
    offset: int
    value: bytes
    timestamp_ms: int = 0
    key: bytes | None = None


@dataclass
class TopicRead:
    """Records read from one topic, in (partition, offset) order, and how the read went."""

    topic: str
    records: list[Record] = field(default_factory=list)
    exists: bool = True
    partitions: dict[int, dict[str, int]] = field(default_factory=dict)  # start, end, read
    truncated: bool = False  # max_records left older records out
    timed_out: bool = False

    def describe(self) -> dict[str, Any]:
        """Where the snapshot came from (lineage; not part of any fingerprint)."""
        return {"topic": self.topic, "exists": self.exists, "records": len(self.records),
                "partitions": {str(p): dict(v) for p, v in sorted(self.partitions.items())},
                "truncated_to_latest": self.truncated, "timed_out": self.timed_out}


# kafka-python spells client options in snake case; the job's config passes Java names through.
_CLIENT_OPTIONS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                   "sasl_kerberos_service_name", "sasl_oauth_token_provider", "ssl_cafile", "ssl_certfile",
                   "ssl_keyfile", "ssl_password", "ssl_check_hostname", "ssl_crlfile", "client_id",
                   "request_timeout_ms", "api_version")


def client_options(properties: Mapping[str, str]) -> dict[str, Any]:
    """kafka-python options from Java-style client properties (``security.protocol`` -> ``security_protocol``).

    Options kafka-python does not know are left out with a warning rather than failing the read.

    >>> client_options({"security.protocol": "SSL", "linger.ms": "5"})
    {'security_protocol': 'SSL'}
    """
    out: dict[str, Any] = {}
    for k, v in properties.items():
        name = k.replace(".", "_").replace("-", "_")
        if name in _CLIENT_OPTIONS:
            out[name] = v
        else:
            log.warning("Kafka client property %r has no kafka-python equivalent here; ignored for reading", k)
    return out


def read_topic(bootstrap: str, topic: str, *, max_records: int | None = None, timeout_s: float = 120.0,
               must_exist: bool = False, options: Mapping[str, Any] | None = None,
               progress: bool = False, committed: bool = True, settle_s: float = 0.0,
               idle_s: float | None = None) -> TopicRead:
    """Every committed record of ``topic`` (every record, open transactions' included, unless
    ``committed``) up to the end offsets taken at the start (the latest ``max_records`` of them
    when bounded).

    A missing topic reads as empty (``exists`` False) unless ``must_exist``. With ``settle_s``, the
    end offsets are taken once no transaction is open on the topic any more, or after ``settle_s``
    regardless. The read stops at the end offsets, or after ``timeout_s`` (or ``idle_s`` without a
    record) with ``timed_out`` set (what was read is kept).
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from tqdm.auto import tqdm

    if max_records is not None and max_records < 1:
        raise ValueError(f"The 'max_records' parameter of read_topic must be a positive integer. Got {max_records!r}.")
    try:
        # kafka-python checks each batch's CRC-32C in pure Python: 15 s of a 19 s read of 200k records
        # here; the broker checked it when the batch was produced, so a training read skips it.
        consumer = KafkaConsumer(**{"bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False,
                                    "isolation_level": "read_committed" if committed else "read_uncommitted",
                                    "auto_offset_reset": "earliest",
                                    "check_crcs": False, "max_partition_fetch_bytes": 8 << 20,
                                    "fetch_max_bytes": 32 << 20, **dict(options or {})})
    except KafkaError as exc:
        raise TopicReadError(f"cannot connect to Kafka at {bootstrap}: {exc}") from exc
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            if must_exist:
                raise TopicReadError(f"topic {topic!r} does not exist on {bootstrap} (or holds no partition)")
            log.warning("topic %s does not exist on %s: read as empty", topic, bootstrap)
            return TopicRead(topic, exists=False)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if committed and settle_s > 0:
            _settle(bootstrap, consumer, tps, settle_s, options)
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        start = _bounded_starts(begin, end, max_records)
        out = TopicRead(topic, truncated=any(start[tp] > begin[tp] for tp in tps))
        for tp in tps:
            consumer.seek(tp, start[tp])
            out.partitions[tp.partition] = {"start": int(start[tp]), "end": int(end[tp]), "read": 0}
        pending = {tp for tp in tps if start[tp] < end[tp]}
        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        bar = tqdm(total=sum(end[tp] - start[tp] for tp in tps), desc=f"reading {topic}", unit="record",
                   disable=not progress, mininterval=1.0)
        while pending:
            if time.monotonic() > deadline:
                out.timed_out = True
                log.warning("reading %s timed out after %.0f s with %d records", topic, timeout_s, len(out.records))
                break
            if idle_s is not None and time.monotonic() - last_record > idle_s:
                out.timed_out = True
                log.warning("reading %s stalled: no record for %.0f s, %d read", topic, idle_s, len(out.records))
                break
            batches = consumer.poll(timeout_ms=500, max_records=50_000)
            if batches:
                last_record = time.monotonic()
            for tp, msgs in batches.items():
                for m in msgs:
                    if m.offset < end[tp]:
                        out.records.append(Record(tp.partition, m.offset, m.value or b"", int(m.timestamp or 0)))
                        out.partitions[tp.partition]["read"] += 1
                bar.update(len(msgs))
            # a transaction marker can hold the last offset: the position, not the last record, says when we are done
            for tp in list(pending):
                if consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        bar.close()
        out.records.sort(key=lambda r: (r.partition, r.offset))
        return out
    except KafkaError as exc:
        raise TopicReadError(f"cannot read topic {topic!r} from {bootstrap}: {exc}") from exc
    finally:
        consumer.close()


def _settle(bootstrap: str, consumer: Any, tps: Sequence[Any], settle_s: float,
            options: Mapping[str, Any] | None) -> None:
    """Wait (``settle_s`` at most) until the last stable offset of every partition of ``tps`` has
    reached its high watermark: no transaction open on them any more."""
    from kafka import KafkaConsumer

    raw = KafkaConsumer(**{"bootstrap_servers": bootstrap, "group_id": None,
                           "isolation_level": "read_uncommitted", **dict(options or {})})
    try:
        deadline = time.monotonic() + settle_s
        while True:
            stable, high = consumer.end_offsets(tps), raw.end_offsets(tps)
            if all(stable[tp] >= high[tp] for tp in tps) or time.monotonic() > deadline:
                return
            time.sleep(0.5)
    finally:
        raw.close()


def _bounded_starts(begin: Mapping[Any, int], end: Mapping[Any, int], max_records: int | None) -> dict[Any, int]:
    """Start offsets so that at most ``max_records`` of the latest records are read, shared in
    proportion to what each partition holds.

    >>> _bounded_starts({"a": 0, "b": 10}, {"a": 100, "b": 20}, 55)
    {'a': 50, 'b': 15}
    """
    sizes = {tp: max(int(end[tp]) - int(begin[tp]), 0) for tp in begin}
    total = sum(sizes.values())
    if max_records is None or total <= max_records:
        return {tp: int(begin[tp]) for tp in begin}
    return {tp: int(end[tp]) - (sizes[tp] * max_records) // total for tp in begin}


def records_from_file(path: str | Path) -> list[tuple[str, bytes]]:
    """``(where, raw record)`` per non-blank line of a JSON-lines file (``where`` = ``path:line``)."""
    p = Path(path)
    try:
        lines = p.read_bytes().splitlines()
    except OSError as exc:
        raise TopicReadError(f"cannot read {p}: {exc}") from exc
    return [(f"{p.name}:{i}", line) for i, line in enumerate(lines, 1) if line.strip()]


def records_from_topic(bootstrap: str, topic: str, *, max_records: int | None = None, timeout_s: float = 120.0,
                       options: Mapping[str, Any] | None = None, progress: bool = False
                       ) -> tuple[list[tuple[str, bytes]], TopicRead]:
    """``(where, raw record)`` of every committed record of ``topic`` (``where`` = ``topic:partition:offset``)."""
    r = read_topic(bootstrap, topic, max_records=max_records, timeout_s=timeout_s, options=options,
                   progress=progress)
    return [(f"{topic}:{rec.partition}:{rec.offset}", rec.value) for rec in r.records], r


class ProduceError(RuntimeError):
    """Some records could not be produced; the message says how many and why."""


def create_topics(bootstrap: str, topics: Iterable[str], *, compact: bool = False, partitions: int = 1) -> list[str]:
    """Create each of ``topics`` that does not exist yet (compacted when ``compact``; one partition
    unless told otherwise); returns those created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    configs = {"cleanup.policy": "compact"} if compact else {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    created = []
    try:
        for t in topics:
            try:
                admin.create_topics([NewTopic(t, partitions, 1, topic_configs=configs)])
                created.append(t)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created


def delete_topics(bootstrap: str, topics: Iterable[str]) -> list[str]:
    """Delete those of ``topics`` that exist; returns them."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        mine = sorted(set(topics) & set(admin.list_topics()))
        if mine:
            admin.delete_topics(mine)
        return mine
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, payloads: Sequence[bytes], *, keys: Sequence[bytes | None] | None = None,
            partition: int | None = None, **options: Any) -> list[int]:
    """Send every payload (to ``partition`` when given, else where the partitioner puts it; acks from
    all replicas unless ``options`` say otherwise) and wait for them; returns the offset each got,
    or raises :class:`ProduceError`."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 20, "batch_size": 512 * 1024, "acks": "all",
                                                        **options})
    try:
        futures = [p.send(topic, v, key=None if keys is None else keys[i], partition=partition)
                   for i, v in enumerate(payloads)]
        p.flush()
    finally:
        p.close()
    failed = [f for f in futures if f.failed()]
    if failed:
        raise ProduceError(f"{len(failed)} of {len(payloads)} records could not be produced to {topic}: "
                           f"{failed[0].exception}")
    return [f.value.offset for f in futures]


def end_offset(bootstrap: str, topic: str, *, committed: bool = False) -> int:
    """The end offset of partition 0 of ``topic``: of committed transactions only when ``committed``,
    else the high watermark (open transactions included)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap,
                      isolation_level="read_committed" if committed else "read_uncommitted")
    tp = TopicPartition(topic, 0)
    try:
        return int(c.end_offsets([tp])[tp])
    finally:
        c.close()


class GroupProgress:
    """How far consumer group ``group`` has got on partition 0 of ``topic``, for a caller that asks
    every few seconds: one admin client and one consumer, each opened on first use and kept until
    :meth:`close` (or the end of a ``with`` block)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self._admin: Any = None
        self._consumer: Any = None

    def committed(self) -> int:
        """The offset the group has committed (0 when none yet)."""
        from kafka import KafkaAdminClient, TopicPartition
        from kafka.errors import KafkaError

        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        tp = TopicPartition(self.topic, 0)
        try:
            offs = self._admin.list_group_offsets(self.group).get(self.group, {})
        except KafkaError:  # on a new broker the group coordinator takes a moment to exist
            return 0
        return offs[tp].offset if tp in offs and offs[tp].offset >= 0 else 0

    def end(self) -> int:
        """The topic's high watermark (open transactions included)."""
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level="read_uncommitted")
        tp = TopicPartition(self.topic, 0)
        return int(self._consumer.end_offsets([tp])[tp])

    def __call__(self) -> tuple[int, int]:
        """(records the group has committed, records in the topic)."""
        return self.committed(), self.end()

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                client.close()
        self._admin = self._consumer = None

    def __enter__(self) -> GroupProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Follower:
    """A live reader of every partition of ``topic``, without a consumer group: from the earliest
    record (``start="earliest"``) or from the end as it is now (``"latest"``); committed
    transactions only unless ``committed`` is False. ``options`` go to the consumer (client
    properties through :func:`client_options`, fetch tuning). A topic that does not exist yet is
    waited for, ``wait_s`` at most (for ever when None), looking every ``retry_s`` and telling
    ``on_wait`` each time; past that,
    :class:`TopicReadError`. Close it, or use it in a ``with`` block."""

    def __init__(self, bootstrap: str, topic: str, *, start: str = "earliest", committed: bool = True,
                 wait_s: float | None = 30.0, on_wait: Any = None, retry_s: float = 0.5, **options: Any) -> None:
        from kafka import KafkaConsumer, TopicPartition

        if start not in ("earliest", "latest"):
            raise ValueError(f"The 'start' parameter of Follower must be 'earliest' or 'latest'. Got {start!r}.")
        self.topic = topic
        self.consumer = KafkaConsumer(**{"bootstrap_servers": bootstrap, "group_id": None,
                                         "enable_auto_commit": False,
                                         "isolation_level": "read_committed" if committed else "read_uncommitted",
                                         **options})
        deadline = None if wait_s is None else time.monotonic() + wait_s
        found = self.consumer.partitions_for_topic(topic)
        while not found:
            if deadline is not None and time.monotonic() > deadline:
                self.consumer.close()
                raise TopicReadError(f"topic {topic!r} did not appear on {bootstrap} within {wait_s:g} s")
            if on_wait is not None:
                on_wait(topic)
            time.sleep(retry_s)
            self.consumer.topics()  # refreshes the metadata
            found = self.consumer.partitions_for_topic(topic)
        self.partitions = [TopicPartition(topic, p) for p in sorted(found)]
        self.consumer.assign(self.partitions)
        if start == "earliest":
            self.consumer.seek_to_beginning(*self.partitions)
        else:
            self.consumer.seek_to_end(*self.partitions)
        for tp in self.partitions:
            self.consumer.position(tp)  # resolve now: "latest" means the end as it is at this call

    def poll(self, timeout_s: float = 0.5) -> list[Record]:
        """The records that arrived since the last call (waiting ``timeout_s`` at most for one)."""
        got = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [Record(tp.partition, m.offset, m.value or b"", int(m.timestamp or 0), m.key)
                for tp, msgs in got.items() for m in msgs]

    def catch_up(self, timeout_s: float | None = 120.0) -> list[Record]:
        """Every record up to the end offsets as they are now (and any that came with them);
        :class:`TopicReadError` past ``timeout_s`` (no limit when None)."""
        end = self.consumer.end_offsets(self.partitions)
        out: list[Record] = []
        deadline = float("inf") if timeout_s is None else time.monotonic() + timeout_s
        # a transaction marker can hold the last offset: the position, not the last record, says when we are done
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise TopicReadError(f"catching up on {self.topic!r} took over {timeout_s:g} s ({len(out)} read)")
            out.extend(self.poll())
        return out

    def where(self, r: Record) -> str:
        """``topic/partition@offset``, for messages about a record."""
        return f"{self.topic}/{r.partition}@{r.offset}"

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
