#!/usr/bin/env bash
# Runs every benchmark and regenerates bench/RESULTS.md, bench/chart.svg and the table in
# README.md's "Performance" section. The queue benchmark (SQLite) prints its own tables to
# target/bench-results/queue.md; bench/QUEUE.md quotes them by hand, with the machine's load.
#
#   scripts/bench.sh                 # about 23 minutes on 2 cores
#   ROUNDS=1 MEASURE=1 COMPILE_ROUNDS=1 scripts/bench.sh   # a quick look
#
# The dispatch benchmarks run ROUNDS times, one after another, and the report takes each
# benchmark's median across rounds: a shared, noisy machine then disturbs all of them alike.
# The compile-time comparison builds each of its three crates COMPILE_ROUNDS times, interleaved.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
measure=${MEASURE:-3}
criterion_args=(--warm-up-time 1 --measurement-time "$measure" --noplot)

rm -rf target/criterion target/bench-results
cargo bench -p signals-bench --no-run
for round in $(seq 1 "$rounds"); do
    echo "--- round $round of $rounds"
    cargo bench -p signals-bench --bench dispatch -- "${criterion_args[@]}" --save-baseline "round$round"
    cargo bench -p signals-bench --bench scale -- "${criterion_args[@]}" --save-baseline "round$round"
done

echo "--- queue (SQLite, rusqlite): $rounds interleaved rounds"
mkdir -p target/bench-results
ROUNDS="$rounds" cargo bench -p signals-bench --bench queue | tee target/bench-results/queue.md

echo "--- compile time and binary size"
python3 scripts/compile_bench.py --rounds "${COMPILE_ROUNDS:-3}"

echo "--- report"
python3 scripts/bench_report.py
