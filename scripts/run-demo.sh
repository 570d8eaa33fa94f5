#!/usr/bin/env bash
# `make run`: the demo (demo/run.py) with Kafka and Redis started unless they already run, model
# versions made if there are none, and only what was started stopped at the end.
exec "$(dirname "$0")/with-services.sh" demo.run "$@"
