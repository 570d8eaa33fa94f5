"""False detector candidates by the age of their series, on fleet scenarios no training role uses
(a benchmark: it reports, it never fails): ``python -m bench.learning [--store artifacts]``
writes ``reports/learning.json`` and ``reports/learning.md``.

Each scenario (:class:`training.data.ScenarioSpec` with seeds 2001 to 2004; training uses 1001 to
1099) goes through the job's own series and entity logic with the store's production models
(:func:`training.candidates.build_candidates`), and each detector candidate is labelled against
the incidents the scenario injected. A candidate's age is the number of detector scores its
series had before it: the scenarios sample every series once a minute from their start, and a
series is scored from its ``scoring.warmup``-th sample on. ``alerts.learning_scores`` (the
learning period, :data:`models.config.LEARNING_SCORES`) was read from this table: the age at
which the false candidates per bin fall from their early burst to the level they keep.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.kit import add_store, git_state, parser, short_commit
from common.config import ROOT
from models.config import LEARNING_SCORES, ScoringConfig
from models.pipeline import ModelBundle
from training.candidates import build_candidates
from training.data import ScenarioSpec
from training.simulate import MINUTE_MS

SEEDS = (2001, 2002, 2003, 2004)
BIN = 10  # scores per row of the table


def candidate_ages(store: str, seeds: Sequence[int] = SEEDS, hours: float = 8.0) -> list[tuple[int, bool]]:
    """(scores the series had before, false) of every detector candidate of the scenarios."""
    models = ModelBundle.load(store)
    warmup = ScoringConfig().warmup
    out: list[tuple[int, bool]] = []
    for seed in seeds:
        spec = ScenarioSpec(seed, hours, 8, 10)
        scenario = spec.build()
        for c, label in build_candidates(scenario, models.detector, models.forecaster, models.clusterer,
                                         instances=spec.instances):
            if label["trigger"] == "detector":
                out.append(((c["ts_ms"] - scenario.start_ms) // MINUTE_MS - warmup, bool(label["fp"])))
    return out


def table(ages: Sequence[tuple[int, bool]], width: int = BIN) -> list[dict[str, int]]:
    """Candidates and false ones per ``width`` scores of age.

    >>> table([(0, True), (3, False), (12, True)], 10)
    [{'from': 0, 'candidates': 2, 'false': 1}, {'from': 10, 'candidates': 1, 'false': 1}]
    """
    rows: dict[int, dict[str, int]] = {}
    for age, false in ages:
        r = rows.setdefault(age // width * width, {"from": age // width * width, "candidates": 0, "false": 0})
        r["candidates"] += 1
        r["false"] += int(false)
    return [rows[k] for k in sorted(rows)]


def render(rep: dict[str, Any]) -> str:
    lines = [f"# False detector candidates by series age (commit `{rep['commit']}`)", "",
             f"Detector `{rep['detector']}`, classifier-free: every detector candidate of {len(rep['seeds'])} fleet "
             f"scenarios (seeds {', '.join(map(str, rep['seeds']))}; training uses 1001 to 1099), {rep['hours']:g} h "
             f"each, one sample a minute per series. Age: detector scores the series had before the candidate. "
             f"Reproduce: `python -m bench.learning`.", "",
             f"The learning period, `alerts.learning_scores`, is {rep['learning_scores']} scores: a detector alert "
             f"below critical on a younger series is written suppressed (`suppressed_by: [\"learning\"]`).", "",
             "| age (scores) | detector candidates | false | true |", "|---:|---:|---:|---:|"]
    for r in rep["table"]:
        lines.append(f"| {r['from']}-{r['from'] + rep['bin'] - 1} | {r['candidates']} | {r['false']} | "
                     f"{r['candidates'] - r['false']} |")
    young = [r for r in rep["table"] if r["from"] < rep["learning_scores"]]
    old = [r for r in rep["table"] if r["from"] >= rep["learning_scores"]]
    if young and old:
        lines += ["", f"False candidates per {rep['bin']} scores: {min(r['false'] for r in young)} to "
                      f"{max(r['false'] for r in young)} before {rep['learning_scores']} scores, "
                      f"{min(r['false'] for r in old)} to {max(r['false'] for r in old)} after "
                      f"(median {sorted(r['false'] for r in old)[len(old) // 2]})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = parser("bench.learning", __doc__)
    add_store(p)
    p.add_argument("--out", default=str(ROOT / "reports"), help="folder for learning.json and learning.md")
    args = p.parse_args(argv)
    ages = candidate_ages(args.store)
    rep = {"commit": short_commit(), "git": git_state(), "detector": ModelBundle.load(args.store).detector.version,
           "seeds": list(SEEDS), "hours": 8.0, "bin": BIN, "learning_scores": LEARNING_SCORES,
           "table": table(ages)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out / "learning.md").write_text(render(rep))
    print(render(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
