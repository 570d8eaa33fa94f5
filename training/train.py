"""Train, evaluate, export, parity-check and publish the four Vigil models.

``train_all(store_root, seed, quick)`` is the whole pipeline: generate labelled scenarios
(:mod:`training.simulate`), replay them through the job's feature code (:func:`prepare`), fit each
model, export it to ONNX, check the ONNX output against scikit-learn on fixed data, evaluate on
scenarios it was not trained on (:func:`fit_all`, each model by its trainer in
:mod:`training.specs`), and only when all four pass write four new artifact versions
(:func:`publish`). What the driver and the trainers share is in :mod:`training.base`.
Which data trains what (``s = seed * 1000``; every scenario has its own incidents):

==============  =========================================  ====================================
model           fit on                                     evaluated on
==============  =========================================  ====================================
detector        clean points of s+1..3 (8 h, 8 instances)  s+99 (8 h, 8 instances)
                thresholds and ensemble weight on s+4
forecaster      s+11..13 (72 h, 2 instances) and the       s+98 (72 h) and corpus s+23;
                synthetic corpus s+21 (training.corpus)    intervals from s+14 and corpus s+22
clusterer       normal entity steps of s+1..3 and s+11..13 s+99 (peer-drift entities)
classifier      candidates of s+5..8 (10 h, 8 instances)   candidates of s+99
                (the job's logic, all three triggers)
==============  =========================================  ====================================

That is the default run. :class:`~training.base.RetrainInputs` changes it: ``--data nab|replay`` gives the
detector's and the forecaster's roles to another source (:mod:`training.sources`; the clusterer
and the classifier keep the generator), drift events add a reason and a data selection
(:mod:`training.drift`), and alert feedback adds labelled rows to the classifier's fp head and
threshold floors to the detector (:mod:`training.feedback`). Each manifest's
``training_data.lineage`` says what fed the model.

Everything is seeded and single-threaded where threads could reorder floating-point sums, so
the same seed gives byte-identical ONNX and the same content-addressed versions. Scenarios are
replayed in parallel worker processes (:class:`~training.base.Workers`, one per CPU by default); each is
independent, so the number of workers changes the wall time and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from models.artifact import ArtifactStore, stamp_manifest
from models.catalog import FEATURE_SCHEMAS, MODEL_NAMES
from training import corpus
from training import evaluate as ev
from training.base import (
    Datasets,
    FitContext,
    RetrainInputs,
    TrainConfig,
    Trained,
    Workers,
    scenario_cost,
    using_workers,
)
from training.data import Extract, ScenarioSpec, extract
from training.sources import (
    SeriesSpec,
    detector_shortfall,
    extract_job,
    extract_series,
    forecaster_shortfall,
    nab_jobs,
    nab_series,
    read_metrics,
    replay_jobs,
    select_series,
)
from training.specs import TRAINERS

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


CORPUS_EVERY = {"corpus_train": 11, "corpus_cal": 13, "corpus_test": 17}


def _corpus_job(job: tuple[str, int, int]) -> Extract:
    role, seed, n = job
    spec = SeriesSpec("corpus", role, (("seed", seed), ("series", n)))
    return extract_series(corpus.generate(seed, n), spec, detector=False, forecast_every=CORPUS_EVERY[role],
                          forecast_steps=corpus.FORECAST_STEPS)


def _extract_job(job: tuple[ScenarioSpec, dict]) -> Extract:
    spec, kw = job
    e = extract(spec, **kw)
    e.scenario.events = []  # not needed any more; candidates replay the scenario from its spec
    return e


def prepare(cfg: TrainConfig, workers: Workers | None = None, inputs: RetrainInputs | None = None) -> Datasets:
    """Generate and replay every scenario the run needs (over ``workers``, or ``cfg.n_workers`` new ones),
    and, for ``--data nab|replay``, the other source's series (see :mod:`training.sources`).

    The other source is read first, so a missing corpus or an unreachable broker fails before
    anything is generated. The generator's scenarios are always replayed: the clusterer and the
    classifier need them, and a model the other source cannot feed falls back to them.
    """
    inputs = inputs or RetrainInputs()
    kind = inputs.data.kind
    source = _source_jobs(cfg, inputs) if kind != "generator" else None
    with using_workers(cfg, workers) as w:
        data = _prepare_generator(cfg, w)
        data.used = {name: {"requested": kind, "used": "generator"} for name in MODEL_NAMES}
        if source is None:
            if inputs.drifted:
                assert inputs.drift is not None
                data.weights = {"metric_kinds": {m: inputs.drift.metric_kinds(m) for m in ("detector", "forecaster")},
                                "weight": float(inputs.drift_weight)}
            return data
        jobs, origin, det_roles, fc_roles = source
        desc = "replaying NAB files" if kind == "nab" else "replaying the metrics topic"
        ext = dict(zip([r for r, _ in jobs], w.map(extract_job, [j for _, j in jobs], desc, cfg.progress),
                       strict=True))
    data.used["clusterer"]["why"] = "needs a fleet of entities (several metrics per instance, peers per service)"
    data.used["classifier"]["why"] = "needs labelled alerts of every trigger from a fleet of entities"
    _use_source(data, kind, tuple(ext[r] for r in det_roles), tuple(ext[r] for r in fc_roles), origin)  # type: ignore[arg-type]
    if all(data.used[m]["used"] == "generator" for m in ("detector", "forecaster")):
        raise ValueError(f"--data {kind} could feed neither the detector nor the forecaster: "
                         f"{data.used['detector'].get('fallback')}; {data.used['forecaster'].get('fallback')}")
    return data


def _use_source(data: Datasets, kind: str, det: tuple[Extract, Extract, Extract],
                fc: tuple[Extract, Extract, Extract], origin: dict[str, Any]) -> None:
    """Point the detector's and the forecaster's roles at ``kind``'s extracts where they can feed them."""
    data.cl_train_ = data.det_train + data.fc_train  # the clusterer keeps the generator's entities
    short = detector_shortfall(*det)
    if short is None:
        data.det_train, data.det_val, data.det_test_ = [det[0]], det[1], det[2]
        data.used["detector"] = {"requested": kind, "used": kind, **origin}
    else:
        data.used["detector"]["fallback"] = short
        log.warning("--data %s cannot feed the detector (%s): it trains on the generator", kind, short)
    short = forecaster_shortfall(*fc)
    if short is None:
        data.generator_fc_eval = data.fc_eval
        data.fc_train, data.fc_cal, data.fc_eval = [fc[0]], fc[1], fc[2]
        data.used["forecaster"] = {"requested": kind, "used": kind, **origin}
    else:
        data.used["forecaster"]["fallback"] = short
        log.warning("--data %s cannot feed the forecaster (%s): it trains on the generator", kind, short)


SourceJobs = tuple[list[tuple[str, tuple]], dict[str, Any], tuple[str, str, str], tuple[str, str, str]]


def _source_jobs(cfg: TrainConfig, inputs: RetrainInputs) -> SourceJobs:
    """Read ``--data nab|replay``'s series; the extract jobs, the lineage, and which roles feed which model."""
    dc = inputs.data
    if dc.kind == "nab":
        from training.nab import nab_root

        series = nab_series(dc.nab_root, dc.nab_files, dc.nab_limit)
        jobs = nab_jobs(series, cfg.seed, dc.nab_limit)
        origin = {"nab_root": str(nab_root(dc.nab_root)), "files": len(series),
                  "split": {r: len(j[0]) for r, j in jobs},
                  "benchmark": "trained on NAB: never use this version for `make bench-nab` figures (look-ahead)"}
        roles = ("fit", "validation", "test")
        return jobs, origin, roles, roles
    replay = inputs.replay
    if replay is None:
        if not dc.bootstrap or not dc.topic:
            raise ValueError("--data replay needs the Kafka bootstrap servers and the metrics topic")
        replay = read_metrics(dc, dc.bootstrap, dc.topic, progress=cfg.progress)
    series = replay.series
    digest_fields: tuple[tuple[str, Any], ...] = ()
    if inputs.drifted:
        assert inputs.drift is not None
        series, replay.selection = select_series(series, inputs.drift.series, dc.background, cfg.seed)
        if not replay.selection["drifted_found"]:
            log.warning("none of the %d drifted series is on the metrics topic: the replay is background only",
                        replay.selection["drifted_requested"])
        digest_fields = (("selection", {"drifted": replay.selection["drifted_found"],
                                        "background": replay.selection["background"]}),)
    if not series:
        raise ValueError(f"--data replay found no series to train on ({replay.records} records read, "
                         f"dead letters {replay.dead_letters})")
    return (replay_jobs(series, cfg.seed, digest_fields), {"replay": replay.describe()},
            ("fit", "det_validation", "det_test"), ("fit", "fc_calibration", "fc_test"))


def _prepare_generator(cfg: TrainConfig, workers: Workers | None = None) -> Datasets:
    """Generate and replay every generator scenario the run needs."""
    specs = cfg.specs()
    jobs: list[tuple[str, ScenarioSpec, dict]] = []
    for spec in specs["det_train"]:
        jobs.append(("det_train", spec, {}))
    jobs.append(("det_val", specs["det_val"][0], {"entities": False}))
    jobs.append(("eval", specs["eval"][0], {}))
    for spec in specs["fc_train"]:
        jobs.append(("fc_train", spec, {"detector": False, "forecast_every": 10}))
    jobs.append(("fc_cal", specs["fc_cal"][0], {"detector": False, "entities": False, "forecast_every": 10}))
    jobs.append(("fc_eval", specs["fc_eval"][0], {"detector": False, "entities": False, "forecast_every": 15}))
    out: dict[str, list[Extract]] = {}
    with using_workers(cfg, workers) as w:
        extracts = w.map(_extract_job, [(spec, kw) for _, spec, kw in jobs], "replaying scenarios", cfg.progress,
                         scenario_cost)
        fc_corpus = w.map(_corpus_job, [(role, seed, n) for role, (seed, n) in cfg.corpus().items()],
                          "replaying the forecaster's corpus", cfg.progress)
    for (role, _, _), e in zip(jobs, extracts, strict=True):
        out.setdefault(role, []).append(e)
    return Datasets(out["det_train"], out["det_val"][0], out["eval"][0], out["fc_train"], out["fc_cal"][0],
                    out["fc_eval"][0], specs["cls_train"], fc_corpus=fc_corpus)


# --------------------------------------------------------------------------------------------
# Fitting, publishing, reporting
# --------------------------------------------------------------------------------------------


def fit_all(cfg: TrainConfig, data: Datasets, workers: Workers | None = None,
            inputs: RetrainInputs | None = None) -> dict[str, Trained]:
    """Fit, export and parity-check all four models (raises :class:`~training.export.ParityError`).

    Each model's trainer (:data:`training.specs.TRAINERS`, in ``MODEL_NAMES`` order) sees the ones
    fitted before it. Then every manifest gets its ``training_data.lineage`` (the data source, the
    drift reason, and what the trainer says it learned from), and a model trained on upstream
    models' output (the classifier) names their exact versions.
    """
    inputs = inputs or RetrainInputs()
    ctx = FitContext(inputs, workers)
    steps = tqdm(total=len(TRAINERS), desc="fitting models", unit="model", disable=not cfg.progress)
    try:
        for name, fit in TRAINERS.items():
            ctx.trained[name] = fit(cfg, data, ctx)
            steps.update()
    finally:
        steps.close()
    out = ctx.trained
    for name, t in out.items():
        lineage: dict[str, Any] = {"data": data.used.get(name, {"requested": "generator", "used": "generator"})}
        if inputs.drift is not None:
            lineage["reason"] = inputs.drift.reason()
        t.fields["training_data"]["lineage"] = {**lineage, **t.lineage}
    # the versions are final once every lineage is in
    for t in out.values():
        up = t.fields["training_data"].get("upstream", {})
        for name in up:
            up[name] = stamp_manifest(name, out[name].onnx_bytes, out[name].fields)["version"]
    return out


def publish(store: ArtifactStore, trained: dict[str, Trained]) -> dict[str, str]:
    """Write every trained model (parent = the store's previous latest); returns name -> version."""
    return {name: store.write(name, t.onnx_bytes, t.fields) for name, t in trained.items()}


@dataclass
class TrainRun:
    """What one training run produced."""

    versions: dict[str, str]
    previous: dict[str, str | None]
    trained: dict[str, Trained]
    timings: dict[str, float]
    report_path: Path | None


def run_training(store_root: str | Path, seed: int = 1, quick: bool = False, runs_dir: str | Path | None = "runs",
                 progress: bool = True, workers: int | None = None, inputs: RetrainInputs | None = None) -> TrainRun:
    """:func:`train_all` with everything it produced (models, figures, timings, report path).

    ``inputs`` adds a data source other than the generator, drift events and alert feedback
    (see :class:`RetrainInputs`); without it the run is exactly what it always was.
    """
    cfg = TrainConfig(seed=seed, quick=quick, progress=progress, workers=workers)
    inputs = inputs or RetrainInputs()
    t0 = time.perf_counter()
    with Workers(cfg.n_workers) as pool:
        data = prepare(cfg, pool, inputs)
        t_data = time.perf_counter() - t0
        trained = fit_all(cfg, data, pool, inputs)
    t_fit = time.perf_counter() - t0 - t_data
    store = ArtifactStore(store_root)
    previous = {name: store.latest(name) for name in MODEL_NAMES}
    versions = publish(store, trained)
    timings = {"data_s": t_data, "fit_s": t_fit, "total_s": time.perf_counter() - t0,
               **{f"{n}_s": t.seconds for n, t in trained.items()}}
    path = (report(Path(runs_dir), cfg, trained, versions, previous, timings, inputs)
            if runs_dir is not None else None)
    return TrainRun(versions, previous, trained, timings, path)


def train_all(store_root: str | Path, seed: int = 1, quick: bool = False, runs_dir: str | Path | None = "runs",
              progress: bool = True, workers: int | None = None, inputs: RetrainInputs | None = None
              ) -> dict[str, str]:
    """Train, evaluate, export, parity-check and publish all four models; returns ``{name: version}``.

    Nothing is written unless every model passes its parity check. With ``runs_dir`` set, a
    ``train-<UTC time>/report.md`` with figures and plots is written there. The same seed,
    ``quick`` flag and inputs (data, drift, feedback) give the same versions.
    """
    return run_training(store_root, seed, quick, runs_dir, progress, workers, inputs).versions


def missing_models(store_root: str | Path) -> list[str]:
    """Models with no version in the store whose feature schema is the one this code computes (a
    store made by an older release, whose features have changed since, needs training again)."""
    store = ArtifactStore(store_root)
    out = []
    for name in MODEL_NAMES:
        latest = store.latest(name)
        schema = () if latest is None else tuple(
            e["name"] if isinstance(e, dict) else e for e in store.manifest(name, latest).get("feature_schema", []))
        if schema != tuple(FEATURE_SCHEMAS[name]):
            out.append(name)
    return out


def report(runs_dir: Path, cfg: TrainConfig, trained: dict[str, Trained], versions: dict[str, str],
           previous: dict[str, str | None], timings: dict[str, float], inputs: RetrainInputs | None = None) -> Path:
    """Write ``runs_dir/train-<UTC>/report.md`` and its plots; returns the report path."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = runs_dir / f"train-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, t in trained.items():
        if t.plot is not None:
            t.plot(run_dir / f"{name}.png")
            plots[name] = f"{name}.png"
    header = {"created_at": _dt.datetime.now(_dt.UTC).isoformat(), "seed": cfg.seed, "quick": cfg.quick,
              "versions": {n: f"{v} (parent {previous.get(n)})" for n, v in versions.items()},
              "timings_s": {k: round(v, 2) for k, v in timings.items()},
              "data": {n: t.fields["training_data"].get("lineage", {}).get("data") for n, t in trained.items()}}
    if inputs is not None and inputs.drift is not None:
        header["drift"] = inputs.drift.summary()
    if inputs is not None and inputs.feedback is not None:
        header["feedback"] = inputs.feedback.summary()
    sections = {name: {**t.fields["evaluation"], "postprocessing": _brief(t.fields["postprocessing"])}
                for name, t in trained.items()}
    return ev.write_report(run_dir, header, sections, plots)


def _brief(post: dict[str, Any]) -> dict[str, Any]:
    skip = {"calibration", "explain", "centroids"}
    return {k: v for k, v in post.items() if k not in skip}
