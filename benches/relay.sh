#!/usr/bin/env bash
# Relay benchmark: node A takes a publisher (curl -T, one session of SIZE MiB per round) and node B
# relays A's channel (`upstream`); one follower on A and one on B (curl, RFC 8673 open range from A's
# head) read each session. Printed per round: the direct follower's rate on A, the relay follower's on
# B, their ratio (B / A) and how long after A's follower B's finished; then the medians of ROUNDS
# interleaved rounds. Both followers are timed in the same round, so the direct follower is the
# baseline. Needs curl and a release build.
#   benches/relay.sh            (SIZE=256 ROUNDS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-256}
ROUNDS=${ROUNDS:-5}
BIN=$PWD/target/release/vcache
WORK=$(mktemp -d /tmp/vcache-relay-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(port); PB=$(port)
for n in a b; do mkdir -p "$WORK/$n"; done
cat > "$WORK/a/v.toml" <<EOF
[server]
listen = "127.0.0.1:$PA"
data_dir = "data"
write_token = "tok"
[[video]]
id = "ch"
kind = "live"
capacity = "512MiB"
EOF
sed -e "s/$PA/$PB/" "$WORK/a/v.toml" > "$WORK/b/v.toml"
echo "upstream = \"http://127.0.0.1:$PA/videos/ch\"" >> "$WORK/b/v.toml"
for n in a b; do
  (cd "$WORK/$n" && exec "$BIN" serve --config v.toml >log 2>&1) & PIDS+=($!)
done
for p in $PA $PB; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/healthz" && break; sleep 0.05; done
done
head -c $((SIZE << 20)) /dev/urandom > "$WORK/src"
OPEN=9007199254740991
echo "round  A follower MB/s  B (relay) follower MB/s  B/A    B ends after A (ms)"
: > "$WORK/rows"
for r in $(seq "$ROUNDS"); do
  head=$(curl -sI "http://127.0.0.1:$PA/videos/ch" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-live-head"{print $2}')
  curl -s -o /dev/null -r "$head-$OPEN" -w '%{time_total}\n' "http://127.0.0.1:$PA/videos/ch" > "$WORK/ta" & fa=$!
  curl -s -o /dev/null -r "$head-$OPEN" -w '%{time_total}\n' "http://127.0.0.1:$PB/videos/ch" > "$WORK/tb" & fb=$!
  sleep 0.3
  start=$(date +%s.%N)
  curl -s -o /dev/null -T "$WORK/src" -H "Authorization: Bearer tok" "http://127.0.0.1:$PA/videos/ch"
  wait $fa; ea=$(date +%s.%N)
  wait $fb; eb=$(date +%s.%N)
  python3 - "$SIZE" "$start" "$ea" "$eb" "$r" >> "$WORK/rows" <<'PY'
import sys
size, start, ea, eb, r = float(sys.argv[1]), *map(float, sys.argv[2:5]), sys.argv[5]
a, b = size * 1.048576 / (ea - start), size * 1.048576 / (eb - start)
print(f"{r} {a:.1f} {b:.1f} {b / a:.3f} {(eb - ea) * 1000:.1f}")
PY
  tail -1 "$WORK/rows" | awk '{printf "%-6s %-16s %-24s %-6s %s\n", $1, $2, $3, $4, $5}'
done
python3 - "$WORK/rows" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
med = [statistics.median(c) for c in zip(*rows)]
print(f"median {med[0]:.1f} MB/s direct, {med[1]:.1f} MB/s through the relay: ratio {med[2]:.3f}, "
      f"the relay's follower ends {med[3]:.1f} ms after the direct one")
PY
