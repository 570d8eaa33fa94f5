#!/usr/bin/env bash
# Resolves the jars Vigil runs on from Maven Central into .cache/jars (git ignores it):
#   .cache/jars/kafka  Apache Kafka 4.x broker (KRaft) and its runtime dependencies
#   .cache/jars/flink  the Flink SQL Kafka connector, pinned to PyFlink's minor version
# Idempotent: does nothing when the jars are already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jars="$root/.cache/jars"
connector="org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
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
