#!/usr/bin/env bash
# I/O-bound jobs: the shop's welcome email as it is (a 50 ms provider call, then one insert
# through the job's transaction), JOBS jobs (default 4,000) drained by `shop worker --until-idle`
# at concurrency 16, 64 and 200, on PostgreSQL (under a role with CONNECTION LIMIT 25, the
# handlers' pool at 10) and on SQLite. Prints one markdown row per run: the drain's wall time
# (the worker process from start to exit) beside the ideal, JOBS × 50 ms / C.
#
#   bench/io_bound.sh                  # ~3 minutes on 2 cores
#   JOBS=1000 ROUNDS=1 bench/io_bound.sh
#
# PostgreSQL at SIGNALS_BENCH_POSTGRES_URL, else SIGNALS_TEST_POSTGRES_URL (default this
# machine's); each run's schema and role are dropped, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${JOBS:-4000}
rounds=${ROUNDS:-1}
pg_url=${SIGNALS_BENCH_POSTGRES_URL:-${SIGNALS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
cargo build --release --example shop -q
shop=target/release/examples/shop
dir=$(mktemp -d)
schema="" role=""
# drop_run: drops the current run's schema and role, if any.
drop_run() {
    [ -z "$schema" ] || psql "$pg_url" -qc "SET client_min_messages = warning;
        DROP SCHEMA IF EXISTS $schema CASCADE"
    [ -z "$role" ] || psql "$pg_url" -qc "SET client_min_messages = warning;
        DO \$\$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') THEN
            DROP OWNED BY $role; DROP ROLE $role; END IF; END \$\$"
    schema="" role=""
}
trap 'drop_run; rm -rf "$dir"' EXIT

# place DB: migrate, then JOBS orders (each its own transaction; not timed).
place() {
    "$shop" --db "$1" migrate
    "$shop" --db "$1" place --orders "$jobs" > /dev/null
}

# drain DB C: the worker's wall time in seconds; fails on any output to stderr.
drain() {
    local start end
    start=$(date +%s.%N)
    "$shop" --db "$1" worker --until-idle --concurrency "$2" --pool 10 --email-delay-ms 50 \
        2> "$dir/stderr"
    end=$(date +%s.%N)
    if [ -s "$dir/stderr" ]; then
        echo "the worker wrote to stderr:" >&2
        cat "$dir/stderr" >&2
        exit 1
    fi
    local emails
    emails=$("$shop" --db "$1" stats | sed 's/.*"emails": \([0-9]*\).*/\1/')
    [ "$emails" = "$jobs" ] || { echo "$emails of $jobs emails" >&2; exit 1; }
    echo "$end - $start" | bc -l
}

row() { # store C seconds
    local ideal target
    ideal=$(echo "$jobs * 0.05 / $2" | bc -l)
    target=$(echo "1.3 * $ideal + 1.5" | bc -l)
    printf '| %s | %s | %.2f s | %.2f s | %.2f× | %.2f s | %s |\n' "$1" "$2" "$ideal" "$3" \
        "$(echo "$3 / $ideal" | bc -l)" "$target" \
        "$(if (( $(echo "$3 <= $target" | bc -l) )); then echo met; else echo missed; fi)"
}

echo "| store | concurrency | ideal | measured | / ideal | target | |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
for round in $(seq 1 "$rounds"); do
    for concurrency in 16 64 200; do
        schema="io_bound_$$_${round}_$concurrency"
        role="io_bound_role_$$_${round}_$concurrency"
        psql "$pg_url" -qc "CREATE SCHEMA $schema"
        url="$pg_url?options=-c%20search_path%3D$schema"
        place "$url"
        psql "$pg_url" -qc "CREATE ROLE $role LOGIN CONNECTION LIMIT 25;
            GRANT USAGE ON SCHEMA $schema TO $role;
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA $schema TO $role;
            GRANT USAGE ON ALL SEQUENCES IN SCHEMA $schema TO $role;"
        seconds=$(drain "${url/postgres@/$role@}" "$concurrency")
        drop_run
        row "PostgreSQL" "$concurrency" "$seconds"

        db="sqlite://$dir/shop_${round}_$concurrency.db"
        place "$db"
        seconds=$(drain "$db" "$concurrency")
        row "SQLite" "$concurrency" "$seconds"
    done
done
