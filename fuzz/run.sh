#!/usr/bin/env bash
# Runs one fuzz target with the settings used for the recorded runs:
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags...]
# Seeds the corpus first if it is empty. Needs cargo-fuzz; works on a
# stable toolchain through RUSTC_BOOTSTRAP=1. Set SANITIZER=none if the
# address sanitizer does not build here.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh TARGET [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
if [ ! -d "corpus/$target" ] || [ -z "$(ls -A "corpus/$target" 2>/dev/null)" ]; then
    cargo run --quiet --example gen_seeds corpus
fi
extra=()
if [ "$target" = open_dir ]; then
    extra+=(-dict=open_dir.dict -max_len=131072)
fi
RUSTC_BOOTSTRAP=1 exec cargo fuzz run --sanitizer "${SANITIZER:-address}" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    "${extra[@]}" "$@"
