"""Property-based fuzzing of the three parsers: whatever the bytes, valid results or dead letters.

Hypothesis draws a seed and a JSON-ish value per example; each example feeds a batch of inputs
derived from them (mutations of valid records of every shape, random bytes, deep nesting, huge
numbers, odd unicode, wrong types; see fuzz_corpus), so that a run feeds over 100,000 inputs in
well under a minute. Runs are derandomized, hence reproducible. No input may take the parsers'
last line of defence (reason ``unparseable``): that path exists to keep the job alive, and the
fuzz run is there to find what it would hide. ``VIGIL_FUZZ_SCALE=10`` runs ten times as many.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter

import pytest
from fuzz_corpus import (
    NOW_MS,
    encode,
    feedback,
    hostile_feedback,
    hostile_metric,
    hostile_model_update,
    model_update,
    native,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.artifact import check_version
from udfs.parse import (
    MAX_NAME,
    MODEL_ALIASES,
    MODEL_NAMES,
    REASONS,
    SKIP_REASONS,
    STATE_REASONS,
    VERDICTS,
    VERSION_PATTERN,
    DeadLetter,
    Feedback,
    MetricEvent,
    ModelUpdate,
    ParseLimits,
    parse,
    parse_feedback,
    parse_model_update,
    split_series_key,
)

pytestmark = pytest.mark.fuzz

BATCH = 50
SCALE = int(os.environ.get("VIGIL_FUZZ_SCALE", "1"))  # more examples for a longer hunt, e.g. 10
RUNS = settings(deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
LIMITS = (
    ParseLimits(),
    ParseLimits(max_past_s=None, max_future_s=None),  # replays: only the absolute time bounds hold
    ParseLimits(max_depth=3, max_tags=2, max_tag_key_len=5, max_tag_value_len=6, max_bytes=300),
)
# any JSON value, surrogates and non-finite floats included (the random parts come from the seed)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(st.characters(exclude_categories=()), max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _refusal(out: DeadLetter, payload: bytes) -> str:
    assert out.reason in REASONS and out.reason != "unparseable", (payload[:300], out)
    assert isinstance(out.detail, str) and out.detail
    rec = json.loads(out.to_json(payload, "t", 0, 0, NOW_MS))  # the dead-letter record can be written
    assert rec["reason"] == out.reason
    return out.reason


def check_record(payload: bytes, limits: ParseLimits) -> str:
    """Feed one metric payload; return its outcome ('ok', 'skipped' or the first refusal's reason)
    after checking the property: every part is an event, a dead letter or a counted skip."""
    out = parse(payload, NOW_MS, limits)
    assert out.events or out.dead or out.skipped, payload  # nothing vanishes without a count
    assert set(out.skipped) <= set(SKIP_REASONS) and all(n > 0 for n in out.skipped.values()), out.skipped
    reasons = [_refusal(d, part if part is not None else payload) for d, part in out.dead]
    for ev in out.events:
        assert type(ev) is MetricEvent
        assert type(ev.value) is float and math.isfinite(ev.value)
        assert type(ev.ts_ms) is int and 0 <= ev.ts_ms < 2**63
        assert 0 < len(ev.service) <= MAX_NAME and 0 < len(ev.metric) <= MAX_NAME
        assert len(ev.tags) <= limits.max_tags
        assert all(len(k) <= limits.max_tag_key_len and len(v) <= limits.max_tag_value_len for k, v in ev.tags)
        assert list(ev.tags) == sorted(ev.tags) and len({k for k, _ in ev.tags}) == len(ev.tags)
        assert split_series_key(ev.series) == (ev.service, ev.metric, ev.tags)
        ev.series.encode("utf-8")  # no lone surrogates reach keys, state or sinks
    if reasons:
        return reasons[0]
    return "ok" if out.events else "skipped"


def check_feedback(payload: bytes) -> str:
    out = parse_feedback(payload)
    if isinstance(out, DeadLetter):
        return _refusal(out, payload)
    assert type(out) is Feedback and out.verdict in VERDICTS and type(out.at_ms) is int
    assert out.service and out.service == split_series_key(out.series)[0]
    (out.series + out.alert_id + out.by + out.category + out.reason).encode("utf-8")
    return "ok"


def check_update(payload: bytes) -> str:
    out = parse_model_update(payload)
    if isinstance(out, DeadLetter):
        return _refusal(out, payload)
    assert type(out) is ModelUpdate and out.model in MODEL_NAMES and out.alias in MODEL_ALIASES
    if out.version is None:
        assert out.alias == "shadow"
    else:
        assert VERSION_PATTERN.fullmatch(out.version) and check_version(out.version) == out.version
    return "ok"


def _run(make, check, examples: int, extra) -> tuple[int, Counter, float]:
    """Run ``examples`` hypothesis examples of BATCH inputs each; return (inputs fed, outcomes, seconds)."""
    outcomes: Counter = Counter()
    t0 = time.perf_counter()

    @settings(RUNS, max_examples=examples * SCALE)
    @given(seed=st.integers(0, 2**64 - 1), value=JSON_VALUES)
    def batch(seed: int, value) -> None:
        rng = random.Random(seed)
        for payload in extra(value, rng):
            outcomes[check(payload, rng)] += 1
        for _ in range(BATCH - 3):
            outcomes[check(make(rng), rng)] += 1

    batch()
    assert sum(outcomes.values()) == examples * BATCH * SCALE
    return sum(outcomes.values()), outcomes, time.perf_counter() - t0


def _with_value(make):
    """Three inputs from hypothesis's value: the whole record, a field of a valid one, its tags."""
    def extra(value, rng: random.Random) -> list[bytes]:
        rec = make(rng)
        field = rng.choice(sorted(rec))
        return [encode(value, rng), encode({**rec, field: value}, rng), encode({**rec, "tags": value}, rng)]
    return extra


def test_parse_turns_every_input_into_events_dead_letters_or_counted_skips():
    fed, outcomes, seconds = _run(hostile_metric, lambda p, rng: check_record(p, rng.choice(LIMITS)), 1300,
                                  _with_value(native))
    print(f"parse: {fed} inputs in {seconds:.1f} s: {dict(outcomes.most_common())}")
    assert fed >= 60_000
    # the corpus reaches every way a metric record can fail, and valid records still get through
    assert set(outcomes) >= set(REASONS) - set(STATE_REASONS) - {"unparseable"} | {"ok", "skipped"}, outcomes
    assert outcomes["ok"] > fed // 50


def test_parse_feedback_turns_every_input_into_a_verdict_or_one_dead_letter():
    fed, outcomes, seconds = _run(hostile_feedback, lambda p, rng: check_feedback(p), 400, _with_value(feedback))
    print(f"parse_feedback: {fed} inputs in {seconds:.1f} s: {dict(outcomes.most_common())}")
    assert fed >= 20_000
    assert {"ok", "not_json", "not_utf8", "invalid_value", "wrong_type", "missing_field"} <= set(outcomes), outcomes


def test_parse_model_update_turns_every_input_into_an_update_or_one_dead_letter():
    fed, outcomes, seconds = _run(hostile_model_update, lambda p, rng: check_update(p), 400,
                                  _with_value(model_update))
    print(f"parse_model_update: {fed} inputs in {seconds:.1f} s: {dict(outcomes.most_common())}")
    assert fed >= 20_000
    assert {"ok", "not_json", "not_utf8", "invalid_value", "wrong_type", "missing_field"} <= set(outcomes), outcomes
