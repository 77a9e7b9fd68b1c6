#!/usr/bin/env bash
# bench/timers.sh - "a million pending timers cost disk, not memory, and a due one fires on
# time". Fills a store with N waiting runs (a 30-day delay each, journaled exactly as the
# runner writes them), starts `enlace serve` on it, and reports:
#   - resident memory after start and after the measured timers fired, next to the same
#     figures on an empty store;
#   - how late each of 5 five-second delays fired (journal: the next step's start minus the
#     delay's due time), with N timers pending.
#
#   bash bench/timers.sh              # N=1000000
#   N=100000 bash bench/timers.sh
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
SHARED="$(cd "${SHARED_BENCH:-$ROOT/../shared/bench}" && pwd)"
N="${N:-1000000}"
WORK="${WORK:-/tmp/enlace-timers}"
PORT="${PORT:-18281}"
SINK_PORT=18080
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/enlace"
[[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$ROOT" && cargo build --release -p enlace)
command -v sqlite3 >/dev/null || { apt-get install -y sqlite3 >/dev/null; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if ss -ltn | grep -q "127.0.0.1:$SINK_PORT "; then echo "port $SINK_PORT is taken; stop what holds it" >&2; exit 1; fi
node "$SHARED/sink.js" "$SINK_PORT" >/dev/null 2>&1 & pids+=($!)

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

serve() { # data-dir -> pid
  ENLACE_ALLOW_PRIVATE_NETWORKS=true ENLACE_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$1" --recipes "$BENCH/timers" >"$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  echo "$pid"
}

measure() { # data-dir label
  local data=$1 label=$2 pid
  pid=$(serve "$data"); pids+=("$pid")
  sleep 2
  local rss_start; rss_start=$(rss "$pid")
  for i in 1 2 3 4 5; do
    curl -sf -X POST "127.0.0.1:$PORT/hooks/short-wait" -H 'content-type: application/json' -d "{\"i\":$i}" >/dev/null
    sleep 1.3
  done
  for _ in $(seq 200); do
    local done_n; done_n=$(sqlite3 "$data/enlace.db" "select count(*) from runs where recipe_id='short-wait' and status='succeeded'")
    [[ "$done_n" == 5 ]] && break; sleep 0.1
  done
  local late; late=$(sqlite3 "$data/enlace.db" "select group_concat(s2.started_at - json_extract(s1.output, '\$.until_ms'), ' ') from steps s1 join steps s2 on s2.run_id = s1.run_id and s2.step_id = 'post' join runs r on r.id = s1.run_id where s1.step_id = 'wait' and r.recipe_id = 'short-wait'")
  local pending; pending=$(sqlite3 "$data/enlace.db" "select count(*) from runs where status = 'waiting'")
  local db_mb; db_mb=$(du -sm "$data" | cut -f1)
  printf '| %s | %s | %s MiB | %s MiB | %s MiB | %s |\n' "$label" "$pending" "$rss_start" "$(rss "$pid")" "$db_mb" "$late"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

rm -rf "$WORK"; mkdir -p "$WORK"
# Create both stores with their recipes.
for d in empty full; do
  pid=$(serve "$WORK/$d"); kill "$pid"; wait "$pid" 2>/dev/null || true
done
# N waiting runs in the full store, each with its journal entry for the delay.
start=$(date +%s%3N)
until_ms=$((start + 30 * 86400000))
version=$(sqlite3 "$WORK/full/enlace.db" "select version from recipes where id = 'long-wait'")
sqlite3 "$WORK/full/enlace.db" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO events (id, recipe_id, source, dedupe_key, payload, received_at)
  SELECT 'ev-' || i, 'long-wait', 'webhook', NULL, '{"body":{},"headers":{},"query":{},"received_at":"","path":"long-wait"}', $start FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO runs (id, recipe_id, recipe_version, event_id, status, due_at, attempt, created_at, started_at, updated_at)
  SELECT 'run-' || i, 'long-wait', $version, 'ev-' || i, 'waiting', $until_ms, 1, $start, $start, $start FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO steps (run_id, key, seq, step_id, kind, status, output, attempts, started_at)
  SELECT 'run-' || i, 'wait', 1, 'wait', 'delay', 'waiting', json_object('until', '', 'until_ms', $until_ms), 0, $start FROM n;
COMMIT;
SQL
echo "filled $N pending timers in $(( $(date +%s%3N) - start )) ms"
echo
echo "| store | pending timers | RSS after start | RSS after the 5 delays fired | data dir on disk | lateness of the five 5 s delays (ms) |"
echo "|---|---|---|---|---|---|"
measure "$WORK/empty" "empty"
measure "$WORK/full" "$N timers"
