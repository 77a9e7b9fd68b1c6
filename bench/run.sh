#!/usr/bin/env bash
# bench/run.sh - the benchmark of ../shared/bench/README.md, run on Enlace and on the bare
# forwarder (this machine's limit for the hop), on loopback, and printed as one table.
#
#   bash bench/run.sh                      # forwarder, Enlace async, Enlace sync, async with synchronous=NORMAL
#   REPEAT=3 bash bench/run.sh             # three rounds (configs interleaved), plus a medians table
#   CONFIGS="forwarder async" DURATION=30 bash bench/run.sh
#   PEERS=1 SKIP_INSTALL=1 bash bench/run.sh   # run ../shared/bench/run-peers.sh first, same session
#
# For each configuration: a fresh sink (node ../shared/bench/sink.js 18080), the target on a
# fresh data dir under $WORK, a smoke request, then
#   1. warm-up          wrk -t1 -c10 -d${WARMUP}s
#   2. 1 connection     wrk -t1 -c1  -d${C1_DURATION}s            -> p50/p99
#   3. main run         wrk -t1 -c${CONNS} -d${DURATION}s          -> p50/p99, wrk rps, and the
#                       steady rate AT THE SINK between t=5 s and t=DURATION-1 s
#   4. constant rate    enlace-bench-loadgen --rate ${RATE} for ${RATE_DURATION}s (open loop,
#                       latency from the scheduled send time)
# with a drain (queue empty, sink count still) after each phase. It samples VmRSS of the
# target every 0.5 s, reads VmHWM at the end, and for Enlace compares the runs in SQLite
# with the requests the sink received.
#
# Knobs (environment):
#   CONFIGS="forwarder async sync async-normal"   also: sync-normal
#   DURATION=20 CONNS=50 WARMUP=5 C1_DURATION=10 RATE=1000 RATE_DURATION=20 RATE_WARMUP=2
#   REPEAT=1           rounds; with more than one, a table of medians follows the rows
#   DRAIN_TIMEOUT=60   seconds to wait for the queue to empty after a phase
#   STUCK_AFTER=5      a queue that has not moved for this many seconds (and a sink that
#                      has not counted anything) is reported as stuck instead of waited for
#   SKIP_BUILD=1       use the binaries in target/release as they are
#   WORK=/tmp/enlace-bench   scratch folder (data dirs, logs, raw output)
#   KEEP_DATA=1        keep the Enlace data dirs after the run
#   PEERS=1            run ../shared/bench/run-peers.sh first (SKIP_INSTALL, PEERS_DIR pass
#                      through; PEER_LIST="node-red n8n" selects peers)
#   SINK_PORT=18080 ENLACE_PORT=18081 FWD_PORT=18090   (the recipes' sink URL follows SINK_PORT)
#   SHARED_BENCH=../shared/bench (relative to the repo root)
#   RESULTS_FILE=bench/results/latest.md   where the table is written (besides stdout)
#
# Everything runs on 127.0.0.1. Every process this script starts is recorded by PID and
# stopped by PID (no pkill/killall).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
SHARED="${SHARED_BENCH:-$ROOT/../shared/bench}"
SHARED="$(cd "$SHARED" && pwd)"
PAYLOAD="$SHARED/payload.json"
POSTLUA="$SHARED/post.lua"

CONFIGS="${CONFIGS:-forwarder async sync async-normal}"
DURATION="${DURATION:-20}"
CONNS="${CONNS:-50}"
WARMUP="${WARMUP:-5}"
C1_DURATION="${C1_DURATION:-10}"
RATE="${RATE:-1000}"
RATE_DURATION="${RATE_DURATION:-20}"
RATE_WARMUP="${RATE_WARMUP:-2}"
REPEAT="${REPEAT:-1}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-60}"
STUCK_AFTER="${STUCK_AFTER:-5}"
WORK="${WORK:-/tmp/enlace-bench}"
SINK_PORT="${SINK_PORT:-18080}"
ENLACE_PORT="${ENLACE_PORT:-18081}"
FWD_PORT="${FWD_PORT:-18090}"
SINK="http://127.0.0.1:$SINK_PORT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
RESULTS_DIR="$BENCH/results"
ROWS="$WORK/rows.tsv"
CLK_TCK=$(getconf CLK_TCK)

[[ "$DURATION" -ge 10 ]] || { echo "DURATION must be >= 10 s" >&2; exit 2; }
mkdir -p "$WORK" "$RESULTS_DIR"
STARTED_PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_pid() { # TERM, wait (Enlace drains for up to 20 s), then KILL; by PID only
  local pid=$1 i
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid did not stop in 30 s; KILL"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  wait "$pid" 2>/dev/null || true
  local keep=() x
  for x in "${STARTED_PIDS[@]:-}"; do [[ -n "$x" && "$x" != "$pid" ]] && keep+=("$x"); done
  STARTED_PIDS=("${keep[@]:-}")
}

cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    if [[ -n "$pid" ]]; then stop_pid "$pid"; fi
  done
  return 0
}
trap cleanup EXIT
trap 'log "error: command failed at line $LINENO (exit $?)"' ERR
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port, seconds
  local i
  for i in $(seq 1 $(($2 * 10))); do port_busy "$1" && return 0; sleep 0.1; done
  return 1
}

kv() { sed -nE "s/.* $2=([^ ]+).*/\1/p" <<<" $1" | head -n 1; }

sink_count() { # "count bad"
  { curl -s -m 5 "$SINK/count"; echo; } | sed -nE 's/^\{"count":([0-9]+),"bad":([0-9]+).*/\1 \2/p' | head -n 1
}

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k/1024}'; }

db_q() { sqlite3 -cmd '.timeout 5000' "$1" "$2" 2>/dev/null; }
pending_runs() { # queued + running (+ waiting) runs, or 0 for the forwarder
  [[ -n "${DB:-}" && -f "$DB" ]] || { echo 0; return; }
  db_q "$DB" "select count(*) from runs where status in ('queued','running','waiting')" || echo 0
}

# Waits until the queue is empty and the sink has stopped counting. Prints
# "seconds_waited pending_left". A queue that has not moved for STUCK_AFTER s while the
# sink counted nothing is reported as it is, not waited for.
drain() {
  local t0=$SECONDS p s last_p=-1 last_s=-1 still=0
  while true; do
    p=$(pending_runs); read -r s _ < <(sink_count)
    if [[ "$p" == 0 && "$s" == "$last_s" ]]; then break; fi
    if [[ "$p" == "$last_p" && "$s" == "$last_s" ]]; then still=$((still + 1)); else still=0; fi
    [[ $still -ge $((STUCK_AFTER * 2)) ]] && break
    [[ $((SECONDS - t0)) -ge "$DRAIN_TIMEOUT" ]] && break
    last_p=$p; last_s=$s
    sleep 0.5
  done
  echo "$((SECONDS - t0)) $p"
}

wrk_run() { # conns seconds url -> WRK_SUMMARY line
  (cd "$SHARED" && PAYLOAD="$PAYLOAD" wrk -t1 -c"$1" -d"$2s" --timeout 30s -s "$POSTLUA" "$3") | grep WRK_SUMMARY \
    || echo "WRK_SUMMARY requests=0 duration_s=1 rps=0 p50_ms=0 p90_ms=0 p99_ms=0 max_ms=0 mean_ms=0 err_connect=0 err_read=0 err_write=0 err_status=0 err_timeout=0"
}
wrk_errors() { local l=$1; echo $(($(kv "$l" err_connect) + $(kv "$l" err_read) + $(kv "$l" err_write) + $(kv "$l" err_status) + $(kv "$l" err_timeout))); }

# start_enlace DIR LOGFILE [ENV=VAL...] -> ENLACE_PID
start_enlace() {
  local dir=$1 logf=$2; shift 2
  env -u ENLACE_DATABASE_URL -u ENLACE_DATA_DIR -u ENLACE_RECIPES -u ENLACE_LISTEN -u ENLACE_CONCURRENCY \
    -u ENLACE_SQLITE_SYNCHRONOUS ENLACE_ALLOW_PRIVATE_NETWORKS=true "$@" \
    "$BIN/enlace" serve --listen "127.0.0.1:$ENLACE_PORT" --data-dir "$dir/data" --recipes "$dir/recipes" >"$logf" 2>&1 &
  ENLACE_PID=$!; STARTED_PIDS+=("$ENLACE_PID")
  wait_port "$ENLACE_PORT" 30 || { log "Enlace did not start; see $logf"; return 1; }
}

runs_summary() { # "succeeded other" where other is "none" or "status n, ..."
  local ok other
  ok=$(db_q "$DB" "select count(*) from runs where status='succeeded'")
  other=$(db_q "$DB" "select group_concat(status || ' ' || n, ', ') from (select status, count(*) n from runs where status <> 'succeeded' group by status)")
  echo "${ok:-0} ${other:-none}"
}

# ---------------------------------------------------------------- one configuration
# measure ROUND CONFIG -> appends one row to $ROWS
measure() {
  local round=$1 cfg=$2 url recipe="" envs=() dir="$WORK/$cfg"
  case $cfg in
    forwarder) url="http://127.0.0.1:$FWD_PORT/hook" ;;
    async) recipe=bench-async.yaml ;;
    sync) recipe=bench-sync.yaml ;;
    async-normal) recipe=bench-async.yaml; envs=(ENLACE_SQLITE_SYNCHRONOUS=normal) ;;
    sync-normal) recipe=bench-sync.yaml; envs=(ENLACE_SQLITE_SYNCHRONOUS=normal) ;;
    *) log "unknown config $cfg (forwarder, async, sync, async-normal, sync-normal)"; return 1 ;;
  esac
  rm -rf "$dir"; mkdir -p "$dir"
  for p in $SINK_PORT $ENLACE_PORT $FWD_PORT; do
    if port_busy "$p"; then log "port $p is already taken by a process this script did not start; stop it first"; return 1; fi
  done

  node "$SHARED/sink.js" "$SINK_PORT" >"$dir/sink.log" 2>&1 &
  local sink_pid=$!; STARTED_PIDS+=("$sink_pid")
  wait_port "$SINK_PORT" 20 || { log "the sink did not start; see $dir/sink.log"; return 1; }

  local pid
  DB=""
  if [[ $cfg == forwarder ]]; then
    "$BIN/enlace-bench-forwarder" --listen "127.0.0.1:$FWD_PORT" --sink "$SINK/sink" >"$dir/target.log" 2>&1 &
    pid=$!; STARTED_PIDS+=("$pid")
    wait_port "$FWD_PORT" 20 || { log "the forwarder did not start; see $dir/target.log"; return 1; }
  else
    url="http://127.0.0.1:$ENLACE_PORT/hooks/hook"
    mkdir -p "$dir/recipes"
    sed "s|http://127.0.0.1:18080/sink|$SINK/sink|" "$BENCH/recipes/$recipe" >"$dir/recipes/$recipe"
    DB="$dir/data/enlace.db"
    start_enlace "$dir" "$dir/target.log" "${envs[@]}" || return 1
    pid=$ENLACE_PID
  fi
  local code
  code=$(curl -s -o "$dir/smoke.out" -w '%{http_code}' -m 10 -X POST -H 'content-type: application/json' --data-binary @"$PAYLOAD" "$url")
  [[ $code == 200 || $code == 202 ]] || { log "$cfg: smoke request answered $code: $(cat "$dir/smoke.out")"; return 1; }
  log "$cfg (round $round): smoke $code $(head -c 80 "$dir/smoke.out")"
  local rss_start; rss_start=$(rss_kb "$pid")

  # RSS sampler for the whole life of the target: "max_main max_all" (KiB). max_main is
  # the peak while the file $dir/in-main exists (the main run).
  local peak_file="$dir/rss.peak"; echo "0 0" >"$peak_file"
  ( m=0; a=0
    while kill -0 "$pid" 2>/dev/null; do
      r=$(rss_kb "$pid"); r=${r:-0}
      [[ $r -gt $a ]] && a=$r
      [[ -e "$dir/in-main" && $r -gt $m ]] && m=$r
      echo "$m $a" >"$peak_file"
      sleep 0.5
    done ) &
  local sampler=$!; STARTED_PIDS+=("$sampler")

  log "$cfg: warm-up ${WARMUP}s at 10 connections"
  [[ "$WARMUP" -gt 0 ]] && wrk_run 10 "$WARMUP" "$url" >"$dir/warmup.out"
  local d; d=$(drain); log "$cfg: drained after warm-up in ${d% *}s, ${d#* } runs pending"
  local rss_warm; rss_warm=$(rss_kb "$pid")

  local c1="WRK_SUMMARY requests=0 p50_ms=- p99_ms=- err_connect=0 err_read=0 err_write=0 err_status=0 err_timeout=0"
  if [[ "$C1_DURATION" -gt 0 ]]; then
    log "$cfg: 1 connection, ${C1_DURATION}s"
    c1=$(wrk_run 1 "$C1_DURATION" "$url"); echo "$c1" >"$dir/c1.out"
    d=$(drain); log "$cfg: c1 $c1"
  fi

  log "$cfg: $CONNS connections, ${DURATION}s"
  local sink_before t_a c_a t_b c_b cpu_a cpu_b tm_a tm_b
  read -r sink_before _ < <(sink_count)
  touch "$dir/in-main"
  cpu_a=$(cpu_ticks "$pid"); tm_a=$(date +%s.%N)
  (cd "$SHARED" && PAYLOAD="$PAYLOAD" exec wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 30s -s "$POSTLUA" "$url") >"$dir/main.out" 2>&1 &
  local wrkpid=$!; STARTED_PIDS+=("$wrkpid")
  sleep 5
  t_a=$(date +%s.%N); read -r c_a _ < <(sink_count)
  sleep $((DURATION - 6))
  t_b=$(date +%s.%N); read -r c_b _ < <(sink_count)
  wait "$wrkpid" || true
  stop_pid "$wrkpid"
  cpu_b=$(cpu_ticks "$pid"); tm_b=$(date +%s.%N)
  rm -f "$dir/in-main"
  local backlog; backlog=$(pending_runs)
  local main; main=$(grep WRK_SUMMARY "$dir/main.out" || echo "WRK_SUMMARY requests=0 duration_s=1 rps=0 p50_ms=0 p99_ms=0 err_connect=0 err_read=0 err_write=0 err_status=0 err_timeout=0")
  local steady cpu
  steady=$(awk -v a="$c_a" -v b="$c_b" -v ta="$t_a" -v tb="$t_b" 'BEGIN{printf "%.0f", (b-a)/(tb-ta)}')
  cpu=$(awk -v a="$cpu_a" -v b="$cpu_b" -v ta="$tm_a" -v tb="$tm_b" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/hz/(tb-ta)}')
  local drain_main; drain_main=$(drain)
  local sink_after; read -r sink_after _ < <(sink_count)
  local main_req; main_req=$(kv "$main" requests)
  # every answered request must have reached the sink; the sink may lead by at most the
  # requests in flight when wrk stopped (<= CONNS)
  local delta=$((sink_after - sink_before)) main_check=ok
  if [[ $delta -lt $main_req || $delta -gt $((main_req + CONNS)) ]]; then main_check="sink $delta vs wrk $main_req"; fi
  log "$cfg: main $main steady_at_sink=$steady cpu=$cpu backlog=$backlog drain=${drain_main% *}s pending_left=${drain_main#* } check=$main_check"

  local rate="LOADGEN_SUMMARY ok=0 p50_ms=- p99_ms=- max_ms=- err_status=0 err_timeout=0 err_connect=0 err_other=0" rate_sink="-"
  if [[ "$RATE_DURATION" -gt 0 ]]; then
    log "$cfg: constant ${RATE}/s for ${RATE_DURATION}s (+${RATE_WARMUP}s warm-up)"
    local r_a r_b rt_a rt_b
    read -r r_a _ < <(sink_count); rt_a=$(date +%s.%N)
    "$BIN/enlace-bench-loadgen" --url "$url" --body "$PAYLOAD" --rate "$RATE" --duration "$RATE_DURATION" --warmup "$RATE_WARMUP" \
      --timeout 30 >"$dir/rate.out" 2>&1 &
    local lgpid=$!; STARTED_PIDS+=("$lgpid")
    wait "$lgpid" || true
    stop_pid "$lgpid"
    read -r r_b _ < <(sink_count); rt_b=$(date +%s.%N)
    rate=$(grep LOADGEN_SUMMARY "$dir/rate.out" || echo "$rate")
    rate_sink=$(awk -v a="$r_a" -v b="$r_b" -v ta="$rt_a" -v tb="$rt_b" 'BEGIN{printf "%.0f", (b-a)/(tb-ta)}')
    d=$(drain)
    log "$cfg: $rate sink_rate_during=$rate_sink"
  fi

  # the end: VmHWM, then the run history against the sink
  local hwm; hwm=$(hwm_kb "$pid")
  local sink_total sink_bad
  read -r sink_total sink_bad < <(sink_count)
  local runs_ok="-" runs_other="-" hist_check="-" stuck=0
  if [[ -n "$DB" ]]; then
    local left; left=$(drain); stuck=${left#* }
    read -r runs_ok runs_other < <(runs_summary)
    read -r sink_total sink_bad < <(sink_count)
    db_q "$DB" "select status, count(*) from runs group by status" >"$dir/runs-by-status.txt"
    if [[ "$runs_ok" == "$sink_total" && "$runs_other" == none ]]; then hist_check=ok
    else hist_check="sink $sink_total vs $runs_ok succeeded, other: $runs_other"; fi
    log "$cfg: runs succeeded=$runs_ok other=[$runs_other] sink_total=$sink_total bad=$sink_bad -> $hist_check"
  fi

  stop_pid "$sampler"
  local peak_main peak_all; read -r peak_main peak_all <"$peak_file"
  local errors=$(( $(wrk_errors "$main") + $(wrk_errors "$c1") + sink_bad \
    + $(kv "$rate" err_status) + $(kv "$rate" err_timeout) + $(kv "$rate" err_connect) + $(kv "$rate" err_other) ))
  log "$cfg: stopping (pid $pid)"
  stop_pid "$pid"
  if [[ -n "$DB" && "$hist_check" != ok && "${RESTART_CHECK:-1}" == 1 ]]; then
    # Runs left 'running' are only requeued when a process starts (recover_orphans):
    # restart on the same data dir and check that every accepted run reaches the sink then.
    log "$cfg: restarting Enlace on the same data dir to see whether the runs left behind still run"
    if start_enlace "$dir" "$dir/target-restart.log" "${envs[@]}"; then
      local d2; d2=$(drain)
      local ok2 other2 sink2
      read -r ok2 other2 < <(runs_summary)
      read -r sink2 sink_bad < <(sink_count)
      if [[ "$ok2" == "$sink2" && "$other2" == none ]]; then
        hist_check="$stuck accepted runs stuck 'running' until a restart; after it all ran (sink $sink2 = $ok2 succeeded)"
      else
        hist_check="$hist_check; after a restart: sink $sink2 vs $ok2 succeeded, other: $other2"
      fi
      log "$cfg: after restart: succeeded=$ok2 other=[$other2] sink_total=$sink2 (drain ${d2% *}s) -> $hist_check"
      stop_pid "$ENLACE_PID"
    fi
  fi
  stop_pid "$sink_pid"
  if [[ -n "$DB" && "${KEEP_DATA:-0}" != 1 ]]; then
    du -sk "$dir/data" | awk '{print $1}' >"$dir/data.kb" 2>/dev/null || true
    rm -rf "$dir/data"
  fi

  printf '%s\t' "$round" "$cfg" "$steady" "$(kv "$main" rps)" "$main_req" "$(kv "$main" p50_ms)" "$(kv "$main" p99_ms)" \
    "$(kv "$c1" p50_ms)" "$(kv "$c1" p99_ms)" "$(kv "$rate" p50_ms)" "$(kv "$rate" p99_ms)" "$(kv "$rate" max_ms)" "$rate_sink" \
    "$errors" "$(mib "$rss_start")" "$(mib "$rss_warm")" "$(mib "$peak_main")" "$(mib "$hwm")" "$cpu" "$backlog" "${drain_main#* }" \
    "$main_check" "$sink_total" "$runs_ok" "$runs_other" >>"$ROWS"
  printf '%s\n' "$hist_check" >>"$ROWS"
}

# ---------------------------------------------------------------- main
command -v wrk >/dev/null || { log "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
command -v sqlite3 >/dev/null || { log "installing sqlite3 (Debian package)"; apt-get install -y -qq sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3 >/dev/null; }; }
command -v node >/dev/null || { log "node is needed for the sink (../shared/bench/sink.js)"; exit 1; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release -p enlace -p enlace-bench-forwarder -p enlace-bench-loadgen"
  (cd "$ROOT" && cargo build --release -p enlace -p enlace-bench-forwarder -p enlace-bench-loadgen)
fi
for r in "$BENCH"/recipes/*.yaml; do "$BIN/enlace" validate "$r" >&2; done
# What was measured: the tree the binary was built from (the workspace may be shared and
# keep changing while this runs).
BUILD_ID="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
if ! git -C "$ROOT" diff --quiet HEAD -- . ':!bench' 2>/dev/null; then
  BUILD_ID+=" + uncommitted changes outside bench/ (diff sha256 $(git -C "$ROOT" diff HEAD -- . ':!bench' | sha256sum | cut -c1-12))"
fi
BUILD_ID+="; target/release/enlace built $(date -u -r "$BIN/enlace" +%Y-%m-%dT%H:%M:%SZ)"
log "measuring: $BUILD_ID"

PEERS_MD=""
if [[ "${PEERS:-0}" == 1 ]]; then
  log "running $SHARED/run-peers.sh first (same session)"
  PEERS_MD="$WORK/peers.md"
  peer_env=(DURATION="$DURATION" CONNS="$CONNS" WARMUP="$WARMUP" C1_DURATION="$C1_DURATION")
  # run-peers.sh reads PEERS as its list of peers; ours (PEERS=1) must not leak into it
  peer_env+=(PEERS="${PEER_LIST:-node-red n8n}")
  [[ -n "${SKIP_INSTALL:-}" ]] && peer_env+=(SKIP_INSTALL="$SKIP_INSTALL")
  [[ -n "${PEERS_DIR:-}" ]] && peer_env+=(PEERS_DIR="$PEERS_DIR")
  env "${peer_env[@]}" bash "$SHARED/run-peers.sh" | tee "$PEERS_MD" || log "run-peers.sh failed; see its output above"
fi

: >"$ROWS"
started=$(date -u +%Y-%m-%dT%H:%MZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$REPEAT"); do
  for cfg in $CONFIGS; do
    measure "$round" "$cfg" || { log "$cfg (round $round) failed; see $WORK/$cfg"; cleanup; STARTED_PIDS=(); }
  done
done

# ---------------------------------------------------------------- report
label() {
  case $1 in
    forwarder) echo "bare forwarder (axum + reqwest, stores nothing)" ;;
    async) echo "Enlace async (202 after durable write, sync=FULL)" ;;
    sync) echo "Enlace sync (answers with the sink's answer, sync=FULL)" ;;
    async-normal) echo "Enlace async, ENLACE_SQLITE_SYNCHRONOUS=normal" ;;
    sync-normal) echo "Enlace sync, ENLACE_SQLITE_SYNCHRONOUS=normal" ;;
    *) echo "$1" ;;
  esac
}

HEADER='| round | config | steady runs/s at the sink (t=5–19 s) | vs forwarder, same round | wrk answers/s | p50 / p99 at 50 conns (ms) | p50 / p99 at 1 conn (ms) | at 1,000 req/s: p50 / p99 / max (ms) | sink /s during the 1,000/s run | errors | RSS start → after warm-up → peak in main run (MiB) | VmHWM (MiB) | CPU in main run (cores) | queued/running at end of main run → still there after the drain | sink hits / runs succeeded / other runs | check |'
SEP='|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'

report() {
  echo "## Enlace benchmark, $started (UTC)"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); shared and noisy (another build may be running); load average before the run: $LOAD_BEFORE."
  echo "Enlace $BUILD_ID (release build)."
  echo "Load: \`wrk -t1 -c$CONNS -d${DURATION}s\` with ../shared/bench/post.lua and payload.json ($(wc -c <"$PAYLOAD") bytes), after ${WARMUP} s at 10 connections; 1 conn = \`wrk -t1 -c1 -d${C1_DURATION}s\`;"
  echo "constant rate = \`enlace-bench-loadgen --rate $RATE --duration $RATE_DURATION --warmup $RATE_WARMUP\` (open loop, latency from the scheduled send)."
  echo "For Enlace async the latencies are accept latencies (202 after the durable write); for sync and the forwarder they are webhook → sink → answer."
  echo
  echo "$HEADER"
  echo "$SEP"
  awk -F'\t' -v OFS=' | ' '
    $2 == "forwarder" { fwd[$1] = $3 }
    { rows[NR] = $0 }
    END {
      for (i = 1; i <= NR; i++) {
        split(rows[i], f, "\t")
        ratio = (fwd[f[1]] != "" && fwd[f[1]] + 0 > 0) ? sprintf("%.2fx", f[3] / fwd[f[1]]) : "-"
        if (f[2] == "forwarder") ratio = "1.00x"
        other = (f[25] == "-" ? "-" : f[25])
        printf "| %s | %s | **%s** | %s | %s | %s / %s | %s / %s | %s / %s / %s | %s | %s | %s → %s → %s | %s | %s | %s → %s | %s / %s / %s | %s |\n",
          f[1], f[2], f[3], ratio, f[4], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14],
          f[15], f[16], f[17], f[18], f[19], f[20], f[21], f[23], f[24], other, (f[26] == "-" ? "answers: " f[22] : "answers: " f[22] "; history: " f[26])
      }
    }' "$ROWS"
  if [[ "$REPEAT" -gt 1 ]]; then
    echo
    echo "Medians over $REPEAT rounds (ratio = median of the per-round ratios to the forwarder):"
    echo
    echo '| config | steady runs/s at the sink | vs forwarder | wrk answers/s | p50 / p99 at 50 conns (ms) | p50 / p99 at 1 conn (ms) | at 1,000 req/s: p50 / p99 / max (ms) | VmHWM (MiB) | CPU (cores) |'
    echo '|---|---|---|---|---|---|---|---|---|'
    for cfg in $CONFIGS; do
      awk -F'\t' -v c="$cfg" '
        function med(arr, n,   i, j, t) {
          for (i = 2; i <= n; i++) { t = arr[i]; j = i - 1; while (j >= 1 && arr[j] + 0 > t + 0) { arr[j + 1] = arr[j]; j-- } arr[j + 1] = t }
          return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
        }
        $2 == "forwarder" { fwd[$1] = $3 }
        $2 == c { n++; for (k = 3; k <= 19; k++) v[k, n] = $k; rnd[n] = $1 }
        END {
          if (!n) exit
          for (k = 3; k <= 19; k++) { for (i = 1; i <= n; i++) a[i] = v[k, i]; m[k] = med(a, n) }
          rn = 0; for (i = 1; i <= n; i++) if (fwd[rnd[i]] + 0 > 0) { rn++; r[rn] = v[3, i] / fwd[rnd[i]] }
          ratio = rn ? sprintf("%.2fx", med(r, rn)) : "-"
          printf "| %s | **%.0f** | %s | %.0f | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f / %.2f | %.0f | %.2f |\n",
            c, m[3], ratio, m[4], m[6], m[7], m[8], m[9], m[10], m[11], m[12], m[18], m[19]
        }' "$ROWS"
    done
  fi
  echo
  echo "Configs: $(for c in $CONFIGS; do printf '`%s` = %s; ' "$c" "$(label "$c")"; done)"
  echo "Raw rows: $ROWS; per-config logs and tool output under $WORK/<config>/."
  if [[ -n "$PEERS_MD" && -s "$PEERS_MD" ]]; then
    echo
    echo "### Peers, same session (../shared/bench/run-peers.sh)"
    echo
    grep -E '^(\||## )' "$PEERS_MD" || true
  fi
  return 0
}

report | tee "${RESULTS_FILE:-$RESULTS_DIR/latest.md}"
