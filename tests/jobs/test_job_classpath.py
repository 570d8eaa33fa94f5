"""jobs.vigil_job's classpath folder for the MiniCluster: its links are made, and mended when stale."""

from __future__ import annotations

from pyflink import java_gateway

from jobs import vigil_job


def test_a_dangling_or_stale_link_is_replaced_and_a_good_one_kept(tmp_path, monkeypatch):
    jars = tmp_path / "jars"
    jars.mkdir()
    reporter = jars / "flink-metrics-prometheus-2.2.0.jar"
    reporter.write_bytes(b"jar")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / reporter.name).symlink_to(tmp_path / "moved-away" / reporter.name)  # its checkout is gone
    monkeypatch.setattr(vigil_job, "REPORTER_JARS", jars)
    monkeypatch.setattr(vigil_job, "LOCAL_LIB", lib)
    monkeypatch.setattr(java_gateway, "_gateway", None)
    monkeypatch.delenv("PYFLINK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("FLINK_LIB_DIR", "unset")  # restored after the test, as is FLINK_HOME
    monkeypatch.setenv("FLINK_HOME", "unset")
    vigil_job._reporter_on_classpath()
    link = lib / reporter.name
    assert link.resolve() == reporter.resolve() and link.read_bytes() == b"jar"
    assert any(p.name.startswith("flink-dist") for p in lib.iterdir())  # PyFlink's own lib/ beside it
    assert not [p for p in lib.iterdir() if p.name.endswith(".tmp")]
    before = link.lstat().st_mtime_ns
    vigil_job._reporter_on_classpath()  # a link that is right is left as it is
    assert link.lstat().st_mtime_ns == before
