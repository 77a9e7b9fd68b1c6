#!/usr/bin/env bash
# The simulator's benchmark (issue "Marketing flows", item 9): N made-up contacts (100,000 by
# default) through the shipped welcome series on a virtual clock, 40 days, 40% answering the
# interests form a day after signing up and 20% the survey. Reports the wall time and the
# peak RSS of `enlace simulate`, and the report's counts. Release build; run it on a quiet
# machine. `SKIP_BUILD=1` uses the binary already built; `N`, `SEED`, `PARALLEL` change the run.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
SEED="${SEED:-42}"
PARALLEL="${PARALLEL:-64}"
TARGET="${CARGO_TARGET_DIR:-target}"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --bin enlace
BIN="$TARGET/release/enlace"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/events.jsonl" <<'JSON'
{"each_contact": {"after": "1d", "probability": 0.4}, "activity": "form_submitted", "data": {"form": "interests", "answers": {"pet": "dogs", "looking_for": "food"}}}
{"each_contact": {"after": "19d", "probability": 0.2}, "activity": "form_submitted", "data": {"form": "survey", "ratings": {"webinar": 5, "videos": 4}}}
JSON
/usr/bin/time -v "$BIN" simulate --recipes recipes/welcome-series.yaml --generate-contacts "$N" --seed "$SEED" \
  --events "$WORK/events.jsonl" --start 2026-12-01T00:00:00Z --duration 40d --parallel "$PARALLEL" \
  --list 1000 --out "$WORK/report.json" > "$WORK/summary.txt" 2> "$WORK/time.txt"
head -40 "$WORK/summary.txt"
echo
grep -E "Elapsed \(wall clock\)|Maximum resident set size" "$WORK/time.txt"
python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("runs:", r["runs"])
print("message decisions:", r["decisions"])
PY
