"""Training datasets and evaluation helpers."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import CLUSTERER_FEATURES, DETECTOR_FEATURES
from training.data import IncidentIndex, ScenarioSpec, extract, fingerprint, iter_steps, normalise_event
from training.evaluate import alert_f1, classification_metrics, conformal_quantile
from training.simulate import Incident, series_key


def test_normalise_event_accepts_native_and_telegraf_shapes() -> None:
    native = normalise_event({"metric": "cpu_util", "value": 41.5, "timestamp": 1_780_000_060_000,
                              "service": "search", "tags": {"instance": "i-1"}})
    telegraf = normalise_event({"name": "disk", "fields": {"util": 35.25}, "timestamp": 1_780_000_060,
                                "tags": {"service": "search", "instance": "i-1"}})
    assert (native.service, native.metric, native.tags, native.ts_ms, native.value) == (
        "search", "cpu_util", {"instance": "i-1"}, 1_780_000_060_000, 41.5)
    assert (telegraf.service, telegraf.metric, telegraf.tags, telegraf.ts_ms, telegraf.value) == (
        "search", "disk_util", {"instance": "i-1"}, 1_780_000_060_000, 35.25)
    assert telegraf.key == series_key("search", "disk_util", {"instance": "i-1"})


def test_iter_steps_groups_by_timestamp_across_shapes() -> None:
    events = [{"metric": "m", "value": 1, "timestamp": 60_000, "service": "s", "tags": {}},
              {"name": "disk", "fields": {"util": 2}, "timestamp": 60, "tags": {"service": "s"}},
              {"metric": "m", "value": 3, "timestamp": 120_000, "service": "s", "tags": {}}]
    steps = list(iter_steps(events))
    assert [(ts, [s.value for s in ss]) for ts, ss in steps] == [(60_000, [1.0, 2.0]), (120_000, [3.0])]


def test_scenario_spec_keeps_incidents_on_existing_instances() -> None:
    sc = ScenarioSpec(seed=3, hours=2, instances=2, n_incidents=10).build()
    assert len(sc.incidents) == 10
    assert {i.instance for i in sc.incidents} <= {None, "i-0", "i-1"}
    assert len({i.id for i in sc.incidents}) == 10


def test_extract_labels_rows_inside_incident_windows() -> None:
    e = extract(ScenarioSpec(seed=8, hours=3, instances=2, n_incidents=5))
    d = e.detector
    assert d.X.shape[1] == len(DETECTOR_FEATURES) and d.X.dtype == np.float32
    assert 0 < d.label.mean() < 0.5
    assert not (d.clean & d.label).any()
    # every labelled row's series and time really are inside its incident window (+10 min)
    for i in np.flatnonzero(d.label)[:200]:
        inc = d.incidents[d.incident[i]]
        assert d.keys[d.series[i]].startswith(inc.service + "|")
    ent = e.entities
    assert ent.X.shape[1] == len(CLUSTERER_FEATURES) and len(ent.X) == len(ent.kind)


def test_incident_index_windows_include_the_margin() -> None:
    inc = Incident("a", "spike", "search", "i-1", ("cpu_util",), 1000 * 60_000, 1005 * 60_000, "saturation")
    idx = IncidentIndex([inc], instances=2)
    key = series_key("search", "cpu_util", {"instance": "i-1"})
    assert idx.series_incident(key, 999 * 60_000) is None
    assert idx.series_incident(key, 1000 * 60_000) is inc
    assert idx.series_incident(key, 1015 * 60_000) is inc
    assert idx.series_incident(key, 1016 * 60_000) is None
    assert idx.series_incident(series_key("search", "cpu_util", {"instance": "i-0"}), 1001 * 60_000) is None


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert fingerprint(a, sources=[{"seed": 1}]) == fingerprint(a.copy(), sources=[{"seed": 1}])
    b = a.copy()
    b[1, 1] = np.nextafter(b[1, 1], np.float32(100))
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a, sources=[{"seed": 1}]) != fingerprint(a, sources=[{"seed": 2}])
    assert fingerprint(a) != fingerprint(a.astype(np.float64))


def test_conformal_quantile_has_finite_sample_correction() -> None:
    r = np.arange(1, 11, dtype=float)  # 10 residuals
    assert conformal_quantile(r, 0.8) == 9.0  # ceil(11 * 0.8) = 9th smallest
    assert conformal_quantile(r, 0.95) == 10.0
    with pytest.raises(ValueError):
        conformal_quantile(np.array([]), 0.8)


def test_alert_f1_counts_alert_precision_and_incident_recall() -> None:
    # two incidents: #0 on series 0 and 1, #1 on series 2; one false alert on series 3
    series = np.array([0, 0, 1, 2, 3, 3])
    incident = np.array([0, 0, 0, -1, -1, -1])
    label = incident >= 0
    alert = np.array([True, False, False, False, True, False])
    f = alert_f1(alert, label, incident, series, {0: 2, 1: 1})
    assert f["precision"] == 0.5
    assert f["recall"] == pytest.approx((1 / 2 + 0) / 2)
    assert f["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)


def test_classification_metrics_compare_with_the_training_majority() -> None:
    m = classification_metrics(["a", "b", "b", "c"], ["a", "b", "b", "b"], ["a", "a", "a", "b"])
    assert m["accuracy"] == 0.75 and m["majority_label"] == "a" and m["majority_accuracy"] == 0.25
    assert m["test_majority_accuracy"] == 0.5
