#!/usr/bin/env bash
# bench/scale.sh - completed runs per second of the shared workload on SQLite (one
# process) and on PostgreSQL with 1, 2 and 4 `enlace worker` processes behind one
# ingress-only `enlace serve --no-workers`, side by side in one session.
#
#   bash bench/scale.sh                        # ~6 min: sqlite pg-1 pg-2 pg-4, one round
#   REPEAT=3 bash bench/scale.sh               # three rounds, configs interleaved; medians
#   CONFIGS="sqlite pg-2" DURATION=30 bash bench/scale.sh
#
# Each configuration: a fresh sink (../shared/bench/sink.js), a fresh store (an SQLite
# data dir, or a new PostgreSQL database on 127.0.0.1:5432), warm-up (wrk -c10 5 s), then
# the main run, wrk -c50 for DURATION s with bench/recipes/bench-async.yaml (202 after the
# durable write). "completed/s" is the sink's count between t=5 s and t=DURATION-1 s of the
# main run, divided by that time: runs that finished their HTTP call, counted at the sink.
# "drain" is how long the backlog took to reach the sink after wrk stopped. CPU is in
# cores over the main run: Enlace's processes, and PostgreSQL's (all its processes).
#
# Knobs: CONFIGS, REPEAT=1, DURATION=20, CONNS=50, WARMUP=5, PG_ADMIN_URL
# (postgres://root@127.0.0.1:5432/test), SINK_PORT=18080, ENLACE_PORT=18081, WORK.
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
SHARED="$(cd "${SHARED_BENCH:-$ROOT/../shared/bench}" && pwd)"
CONFIGS="${CONFIGS:-sqlite pg-1 pg-2 pg-4}"
REPEAT="${REPEAT:-1}"
DURATION="${DURATION:-20}"
CONNS="${CONNS:-50}"
WARMUP="${WARMUP:-5}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://root@127.0.0.1:5432/test}"
SINK_PORT="${SINK_PORT:-18080}"
ENLACE_PORT="${ENLACE_PORT:-18081}"
WORK="${WORK:-/tmp/enlace-scale}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/enlace"
CLK_TCK=$(getconf CLK_TCK)
export ENLACE_SECRET_KEY=5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff5ca1e0ff

[[ "${SKIP_BUILD:-0}" == 1 ]] || (cd "$ROOT" && cargo build --release -p enlace)
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v psql >/dev/null || apt-get install -y -qq postgresql-client >/dev/null
mkdir -p "$WORK"
rm -f "$WORK/rows.tsv"

PIDS=()
log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
stop_all() {
  local p
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && { timeout 30 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; }; done
  PIDS=()
}
trap stop_all EXIT
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { local i; for i in $(seq 1 100); do port_busy "$1" && return 0; sleep 0.1; done; return 1; }
sink_count() { curl -s -m 5 "http://127.0.0.1:$SINK_PORT/count" | sed -nE 's/^\{"count":([0-9]+).*/\1/p'; }
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
pg_pids() { pgrep -x postgres || true; } # read-only use: CPU accounting, never signalled
pg_db_url() { sed -E "s#/[^/?]+(\?|$)#/$1\1#" <<<"$PG_ADMIN_URL"; }

for port in "$SINK_PORT" "$ENLACE_PORT"; do
  port_busy "$port" && { echo "port $port is taken; stop what holds it" >&2; exit 1; }
done

run_config() { # name
  local name=$1 dir="$WORK/$1" db="" url="" enlace_pids=() workers=0
  rm -rf "$dir"; mkdir -p "$dir/recipes"
  cp "$BENCH/recipes/bench-async.yaml" "$dir/recipes/"
  node "$SHARED/sink.js" "$SINK_PORT" >"$dir/sink.log" 2>&1 & PIDS+=($!)
  wait_port "$SINK_PORT"
  local common=(env ENLACE_ALLOW_PRIVATE_NETWORKS=true ENLACE_LOG=warn)
  if [[ $name == sqlite ]]; then
    "${common[@]}" "$BIN" serve --listen "127.0.0.1:$ENLACE_PORT" --data-dir "$dir/data" --recipes "$dir/recipes" >"$dir/serve.log" 2>&1 & PIDS+=($!); enlace_pids+=($!)
  else
    workers=${name#pg-}
    db="enlace_bench_$(date +%s%N)"
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
    url=$(pg_db_url "$db")
    "${common[@]}" ENLACE_DATABASE_URL="$url" "$BIN" serve --no-workers --listen "127.0.0.1:$ENLACE_PORT" --data-dir "$dir/data" --recipes "$dir/recipes" >"$dir/serve.log" 2>&1 & PIDS+=($!); enlace_pids+=($!)
    wait_port "$ENLACE_PORT" || { log "the ingress node did not start; see $dir/serve.log"; exit 1; }
    local i
    for i in $(seq 1 "$workers"); do
      "${common[@]}" ENLACE_DATABASE_URL="$url" "$BIN" worker --data-dir "$dir/data" >"$dir/worker-$i.log" 2>&1 & PIDS+=($!); enlace_pids+=($!)
    done
  fi
  wait_port "$ENLACE_PORT" || { log "$name did not start; see $dir"; exit 1; }
  sleep 1
  (cd "$SHARED" && PAYLOAD="$SHARED/payload.json" exec wrk -t1 -c10 -d"${WARMUP}s" -s "$SHARED/post.lua" "http://127.0.0.1:$ENLACE_PORT/hooks/hook") >"$dir/warmup.out" 2>&1
  local s; s=$(sink_count); while sleep 1; do local s2; s2=$(sink_count); [[ "$s2" == "$s" ]] && break; s=$s2; done
  local base; base=$(sink_count)
  local pg; pg=($(pg_pids))
  local c0 p0; c0=$(ticks "${enlace_pids[@]}"); p0=$(ticks "${pg[@]}")
  (cd "$SHARED" && PAYLOAD="$SHARED/payload.json" exec wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 30s -s "$SHARED/post.lua" "http://127.0.0.1:$ENLACE_PORT/hooks/hook") >"$dir/wrk.out" 2>&1 &
  local wrk_pid=$!
  sleep 5; local a; a=$(sink_count); local ta; ta=$(date +%s.%N)
  sleep $((DURATION - 6)); local b; b=$(sink_count); local tb; tb=$(date +%s.%N)
  wait "$wrk_pid"
  local c1 p1; c1=$(ticks "${enlace_pids[@]}"); p1=$(ticks "${pg[@]}")
  local t_end; t_end=$(date +%s.%N)
  local accepted; accepted=$(awk '/requests in/{print $1}' "$dir/wrk.out")
  local non2xx; non2xx=$(awk '/Non-2xx/{print $NF}' "$dir/wrk.out"); non2xx=${non2xx:-0}
  if [[ "$non2xx" != 0 ]]; then log "$name: $non2xx answers were not 2xx; see $dir/wrk.out and $dir/serve.log"; exit 1; fi
  local target=$((base + accepted)) drain_s=0
  while [[ $(sink_count) -lt $target ]]; do sleep 0.2; [[ $(awk -v a="$t_end" -v b="$(date +%s.%N)" 'BEGIN{print int(b-a)}') -ge 120 ]] && break; done
  drain_s=$(awk -v a="$t_end" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  local done_total; done_total=$(( $(sink_count) - base ))
  local rate; rate=$(awk -v a="$a" -v b="$b" -v ta="$ta" -v tb="$tb" 'BEGIN{printf "%.0f", (b-a)/(tb-ta)}')
  local acc_rate; acc_rate=$(awk -v n="$accepted" -v d="$DURATION" 'BEGIN{printf "%.0f", n/d}')
  local cpu_e cpu_p
  cpu_e=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN{printf "%.2f", (b-a)/hz/d}')
  cpu_p=$(awk -v a="$p0" -v b="$p1" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN{printf "%.2f", (b-a)/hz/d}')
  [[ $name == sqlite ]] && cpu_p="-"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rate" "$acc_rate" "$accepted" "$done_total" "$drain_s" "$cpu_e" "$cpu_p" >>"$WORK/rows.tsv"
  log "$name: completed/s=$rate accepted/s=$acc_rate accepted=$accepted completed=$done_total drain=${drain_s}s cpu enlace=$cpu_e pg=$cpu_p"
  stop_all
  [[ -n "$db" ]] && { sleep 1; psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; }
  return 0
}

log "measuring $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores"
for r in $(seq 1 "$REPEAT"); do
  for c in $CONFIGS; do log "round $r: $c"; run_config "$c"; done
done

{
  echo "| config | completed runs/s at the sink (median of $REPEAT) | accepted/s (202) | CPU: enlace / postgres (cores) | drain after load |"
  echo "|---|---|---|---|---|"
  for c in $CONFIGS; do
    awk -F'\t' -v c="$c" '$1==c' "$WORK/rows.tsv" | sort -t$'\t' -k2,2n | awk -F'\t' -v n="$REPEAT" '
      { rate[NR]=$2; acc[NR]=$3; ce[NR]=$7; cp[NR]=$8; dr[NR]=$6; name=$1 }
      END { m=int((NR+1)/2); printf "| %s | %s | %s | %s / %s | %s s |\n", name, rate[m], acc[m], ce[m], cp[m], dr[m] }'
  done
} | tee "$WORK/scale.md"
