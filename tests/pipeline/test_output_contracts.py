"""What the scoring logic emits conforms to the published schemas (``schemas/``): every alert revision
(open to resolved), forecast, drift event, shadow comparison, score and dead letter of a scenario."""

from __future__ import annotations

import json

from jobs.inprocess import InProcessJob
from models.pipeline import ModelBundle, score_json
from tests.contracts import check_all
from tests.pipeline.test_lifecycle import CTX, START, _payloads, scenario  # noqa: F401 - a fixture


def test_every_record_the_logic_emits_conforms_to_its_schema(cfg, trained_store, scenario):  # noqa: F811
    models = ModelBundle.load(trained_store)  # a bundle of its own: the shadow must not leak to other tests
    for name, version in models.versions().items():
        models.swap(trained_store, name, version, alias="shadow")
    bad = [b"{not json", b'{"metric":"m","value":"x","timestamp":1,"service":"s"}', b"\xff"]
    job = InProcessJob(cfg, models, context=CTX.get).run(bad + _payloads(scenario), START)
    job.sweep(START + 10 * 3600_000)  # quiet past the grouping window: every group resolves
    alerts = [json.loads(a) for a in job.alerts]
    assert {a["status"] for a in alerts} >= {"open", "resolved"}
    check_all("alert", alerts)
    check_all("forecast", [json.loads(f) for f in job.forecasts])
    assert job.drift and job.shadow
    check_all("drift", [json.loads(d) for d in job.drift])
    shadow = [json.loads(s) for s in job.shadow]
    assert {s["model"] for s in shadow} == {"detector", "forecaster", "clusterer", "classifier"}
    check_all("shadow", shadow)
    check_all("score", [json.loads(score_json(s)) for s in job.scored])
    dead = [json.loads(d.to_json(p, "vigil.metrics", 0, i, START)) for i, (d, p) in
            enumerate(zip(job.dead_letters, job.dead_payloads, strict=True))]
    assert len(dead) == len(bad)
    check_all("dead-letter", dead)
