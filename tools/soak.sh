#!/usr/bin/env bash
# Long crash soak: the SIGKILL crash loop of the test suite with many more
# rounds. Each round runs `evlog append` under a workload, kills it with
# SIGKILL at a random moment (sometimes during startup recovery), reopens
# the log and checks that every acknowledged event is present and intact.
#
#   tools/soak.sh [ROUNDS]        (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-1000}"
EVLOG_CRASH_ROUNDS="$rounds" cargo test --release --test suite -- crash_loop --nocapture
