#!/bin/sh
# Check the systemd units: `systemd-analyze verify` on both (with ExecStart pointing at a real vcache
# binary) and `systemd-analyze security --offline=yes` rating vcache.service at most 2.0 (the exposure
# score: 0 is best, 10 worst). Needs no running systemd (works in a container, as root or not).
#
# usage: systemd/check-units.sh [PATH-TO-VCACHE]   (default: target/release/vcache, else target/debug/vcache)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
max_exposure=2.0

bin=${1:-}
if [ -z "$bin" ]; then
    for b in "$root/target/release/vcache" "$root/target/debug/vcache"; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "check-units: no vcache binary (build one, or pass its path)" >&2
    exit 2
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-units: systemd-analyze not found (apt-get install systemd)" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
for u in vcache.service vcache.socket; do
    sed "s|/usr/local/bin/vcache|$bin|g" "$here/$u" >"$work/$u"
done

status=0
# verify prints problems on stderr and exits non-zero on errors; warnings count as failures here too.
if ! (cd "$work" && systemd-analyze verify --man=no "$work/vcache.socket" "$work/vcache.service") \
    >"$work/verify.out" 2>&1; then
    status=1
fi
if [ -s "$work/verify.out" ]; then
    echo "check-units: systemd-analyze verify reported:" >&2
    cat "$work/verify.out" >&2
    status=1
else
    echo "check-units: systemd-analyze verify: both units OK"
fi

if ! systemd-analyze security --offline=yes "$work/vcache.service" >"$work/security.out" 2>&1; then
    # The command exits non-zero only with --threshold; any failure here is the tool's.
    cat "$work/security.out" >&2
    echo "check-units: systemd-analyze security failed" >&2
    exit 1
fi
score=$(sed -n 's/.*Overall exposure level for [^:]*: *\([0-9][0-9.]*\).*/\1/p' "$work/security.out" | tail -n 1)
if [ -z "$score" ]; then
    cat "$work/security.out" >&2
    echo "check-units: no exposure score in the output of systemd-analyze security" >&2
    exit 1
fi
if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
    echo "check-units: vcache.service exposure $score (at most $max_exposure): OK"
else
    grep -E '^✗' "$work/security.out" >&2 || true
    echo "check-units: vcache.service exposure $score is above $max_exposure" >&2
    status=1
fi
exit $status
