#!/usr/bin/env bash
# Resolves the jars Vigil runs on from Maven Central into .cache/jars (git ignores it):
#   .cache/jars/kafka  Apache Kafka 4.x broker (KRaft) and its runtime dependencies
#   .cache/jars/flink  the Flink SQL Kafka connector, pinned to PyFlink's minor version
#   .cache/jars/flink-metrics  Flink's Prometheus metrics reporter (on the JVM's classpath, not a job jar)
#   .cache/jars/vigil  Vigil's own Java operators (operators/java), built with Maven
# Idempotent: does nothing when the jars are already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jars="$root/.cache/jars"
connector="org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
reporter="org.apache.flink:flink-metrics-prometheus:2.2.0"  # pinned to PyFlink's version
if [ ! -f "$jars/kafka/.complete" ]; then
  rm -rf "$jars/kafka"
  mvn -q -B -f "$root/scripts/maven/kafka-broker.pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$jars/kafka" -DincludeScope=runtime
  touch "$jars/kafka/.complete"
fi
if [ ! -f "$jars/flink/.complete" ]; then
  rm -rf "$jars/flink"
  mvn -q -B dependency:copy -Dartifact="$connector" -DoutputDirectory="$jars/flink"
  touch "$jars/flink/.complete"
fi
if [ ! -f "$jars/flink-metrics/.complete" ]; then
  rm -rf "$jars/flink-metrics"
  mvn -q -B dependency:copy -Dartifact="$reporter" -DoutputDirectory="$jars/flink-metrics"
  touch "$jars/flink-metrics/.complete"
fi
# Vigil's own Java piece (operators/java), compiled against the Flink jars inside the PyFlink
# package; rebuilt whenever its sources change
src="$root/operators/java"
stamp="$(cat "$src/pom.xml" $(find "$src/src" -name '*.java' | sort) | sha256sum | cut -c1-16)"
if [ ! -f "$jars/vigil/vigil-flink.jar" ] || [ "$(cat "$jars/vigil/.stamp" 2>/dev/null)" != "$stamp" ]; then
  pylib="$("$root/.venv/bin/python" -c 'import os, pyflink; print(os.path.join(os.path.dirname(pyflink.__file__), "lib"))')"
  mvn -q -B -f "$src/pom.xml" -Dpyflink.lib="$pylib" package
  mkdir -p "$jars/vigil"
  cp "$src/target/vigil-flink.jar" "$jars/vigil/vigil-flink.jar"
  rm -rf "$src/target"
  echo "$stamp" > "$jars/vigil/.stamp"
fi
