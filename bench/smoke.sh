#!/usr/bin/env bash
# Runs every benchmark once at a tiny size, so that a benchmark broken by a change elsewhere
# (a schema change under a hand-written floor, a renamed API) fails CI instead of waiting for the
# next person who measures. Measures nothing: the figures it prints are noise.
#
#   bench/smoke.sh          # a few minutes on 2 cores once built (the peers build takes longer)
#
# Every benchmark of bench/benches (criterion ones in `--test` mode or with tiny measurement
# times, the queue and broker programs with ROUNDS=1 and a few hundred jobs), bench/io_bound.sh,
# and bench/peers. PostgreSQL and NATS are the tests' (SIGNALS_TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/test; SIGNALS_TEST_NATS_URL, default nats://127.0.0.1:4222);
# every run makes its own schema, database or stream there and drops it. Fails on the first
# benchmark that fails or panics.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
pg_url=${SIGNALS_BENCH_POSTGRES_URL:-${SIGNALS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
nats_url=${SIGNALS_BENCH_NATS_URL:-${SIGNALS_TEST_NATS_URL:-nats://127.0.0.1:4222}}
export SIGNALS_BENCH_POSTGRES_URL=$pg_url SIGNALS_BENCH_NATS_URL=$nats_url
export SIGNALS_TEST_POSTGRES_URL=$pg_url SIGNALS_TEST_NATS_URL=$nats_url

started=$(date +%s)
ran=0 # seconds spent in the benchmarks themselves (builds left out)
# smoke NAME [VAR=VALUE...] COMMAND...: runs one benchmark with those variables set, and says
# how long it took. COMMAND `bench BENCH ARGS...` is `cargo bench` of one signals-bench benchmark.
# (`env`, not `export`: bash's own SECONDS would export the shell's uptime.)
smoke() {
    local name=$1 start took vars=()
    shift
    while [[ $1 == *=* ]]; do
        vars+=("$1")
        shift
    done
    if [ "$1" = bench ]; then
        set -- cargo bench -q -p signals-bench --bench "$2" -- "${@:3}"
    fi
    echo "--- smoke: $name"
    start=$(date +%s)
    env "${vars[@]}" "$@"
    took=$(($(date +%s) - start))
    ran=$((ran + took))
    echo "--- smoke: $name passed in $took s"
}

echo "--- smoke: cargo bench -p signals-bench --no-run"
cargo bench -q -p signals-bench --no-run

# Criterion: dispatch once per benchmark; scale with short measurements, so that its fresh
# processes (first notify, start-up next to startup_baseline) run too.
smoke dispatch bench dispatch --test
smoke startup_baseline bench startup_baseline
smoke scale bench scale --warm-up-time 0.1 --measurement-time 0.1 --sample-size 10 --noplot

# The queue and broker programs: every section, one round, a few hundred jobs.
smoke queue ROUNDS=1 JOBS=200 SECONDS=0.5 bench queue
smoke queue_async ROUNDS=1 JOBS=200 ENQUEUE_JOBS=50 SECONDS=0.5 bench queue_async
smoke broker ROUNDS=1 JOBS=200 SECONDS=0.5 bench broker
smoke app_cost ROUNDS=1 REQUESTS=100 bench app_cost
smoke churn JOBS=1000 BATCH=200 BACKLOG=1000 bench churn
smoke retention ROWS=2000 bench retention

smoke io_bound.sh JOBS=200 ROUNDS=1 bench/io_bound.sh

# The peers: a workspace of their own (bench/peers/target), built in release.
echo "--- smoke: cargo build --release --manifest-path bench/peers/Cargo.toml"
cargo build -q --release --locked --manifest-path bench/peers/Cargo.toml
smoke peers ROUNDS=1 JOBS=200 ENQUEUE_JOBS=50 CONCURRENCIES=4 PACED_TIMEOUT_SECS=2 \
    DRAIN_TIMEOUT_SECS=60 bench/peers/target/release/signals-bench-peers

echo "--- smoke: every benchmark passed: $ran s running, $(($(date +%s) - started)) s with the builds"
