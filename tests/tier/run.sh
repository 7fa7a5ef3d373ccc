#!/usr/bin/env bash
# The tier test: an nginx origin, vcache nodes and HAProxy, each in its own network namespace joined by
# veth pairs to one bridge, checked by tests/tier/tier.py (placement, byte-exact ranges, failover, a
# returning node, validators, draining, sibling fills). Needs root, ip(8), nginx, haproxy, python3 and a
# release build (`cargo build --release`, done here). A few minutes; everything is removed on exit.
#   tests/tier/run.sh            the checks
#   tests/tier/run.sh --bench    also the nginx `hash $uri consistent` + slice anchor for benches/RESULTS.md
#   TIER_NO_CLUSTER=1 ...        nodes without a [cluster] table: the drain and join checks are skipped
#   KEEP_WORK=1 ...              keep the work directory (configs, logs, nginx's access log)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "tests/tier/run.sh: needs root (network namespaces)" >&2; exit 2; }
for tool in ip nginx haproxy python3 curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "tests/tier/run.sh: $tool is missing" >&2; exit 2; }
done
cargo build --release -q
PREFIX=vt18
HUB=$PREFIX-hub
MEMBERS=(origin n1 n2 n3 n4 lb cl)
declare -A ADDR=([origin]=10.218.0.10 [n1]=10.218.0.1 [n2]=10.218.0.2 [n3]=10.218.0.3 [n4]=10.218.0.4
                 [lb]=10.218.0.20 [cl]=10.218.0.30)
WORK=$(mktemp -d /tmp/vcache-tier.XXXXXX)
chmod 755 "$WORK"

teardown() {
  # The driver stops what it started; these are the namespaces' last processes, if it could not.
  for m in "${MEMBERS[@]}"; do
    for pid in $(ip netns pids "$PREFIX-$m" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$PREFIX-$m" 2>/dev/null || true
  done
  ip netns del "$HUB" 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap teardown EXIT
teardown_quiet() { KEEP_WORK=1 teardown >/dev/null 2>&1 || true; }
teardown_quiet  # leftovers of an interrupted run

ip netns add "$HUB"
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
for m in "${MEMBERS[@]}"; do
  ns=$PREFIX-$m
  ip netns add "$ns"
  ip link add "v$PREFIX$m" type veth peer name eth0 netns "$ns"
  ip link set "v$PREFIX$m" netns "$HUB"
  ip -n "$HUB" link set "v$PREFIX$m" master br0 up
  ip -n "$ns" addr add "${ADDR[$m]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

ip netns exec "$PREFIX-cl" python3 tests/tier/tier.py --work "$WORK" --bin "$PWD/target/release/vcache" \
  --prefix "$PREFIX" "$@"
