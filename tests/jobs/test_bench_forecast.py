"""bench.forecast: NAB's files laid on a grid, and a folder without them refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from bench import forecast as bf


def _nab(tmp_path, rows: list[tuple[str, float]], cat: str = "realTweets", name: str = "x"):
    d = tmp_path / "data" / cat
    d.mkdir(parents=True)
    (d / f"{name}.csv").write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    return tmp_path


def test_a_file_is_laid_on_the_grid_as_bucket_means(tmp_path):
    root = _nab(tmp_path, [("2015-01-01 00:00:00", 1.0), ("2015-01-01 00:02:00", 3.0),
                           ("2015-01-01 00:05:00", 10.0), ("2015-01-01 00:15:00", 4.0)])
    (s,) = bf.nab_series(root, 300_000)
    assert s.id == "realTweets/x"
    assert s.values.tolist() == [2.0, 10.0, 4.0]  # 00:00 and 00:02 share a bucket; 00:10 holds none
    assert np.diff(s.ts_ms).tolist() == [300_000, 600_000]
    # a file sampled more coarsely than the grid is left out of a setting that needs its native spacing
    assert bf.nab_series(root, 60_000, native_ms=60_000) == []


def test_a_folder_without_nab_series_is_refused(trained_store, tmp_path):
    with pytest.raises(SystemExit, match=r"no NAB series under .*data .*pass --nab-root"):
        bf.run(str(trained_store), tmp_path / "out", tmp_path / "runs", nab=str(tmp_path / "empty"))
