#!/usr/bin/env bash
# Power-cut test for vcache: run the real binary in a qemu guest on a raw ext4 disk, drive ranged
# PUTs at it from the host, SIGKILL qemu at a random moment (the guest's page cache and everything
# it did not make durable are gone), boot again and check what the daemon promised.
# See docs/powercut.md. Needs: qemu-system-x86, busybox-static, e2fsprogs, python3, and either
# apt-get (to download the Debian kernel package once) or --kernel-dir.
set -euo pipefail
{ # the whole script is read before it runs, so editing it during a run cannot break that run

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY="$HERE/powercut.py"

BIN="$ROOT/target/release/vcache"
ROUNDS=4
MODE=both
SEED=""
KEEP=0
SELFTEST=0
INTERVAL=1000
MARGIN_MS=""
SLOT_SIZE=$((256 << 20))
DISK_SIZE=1G
SMP=2
MEM=1024
ACCEL=tcg
THREADS=3
CUT_MIN=0.5
CUT_MAX=8
BOOT_TIMEOUT=180
CACHE="${VCACHE_POWERCUT_CACHE:-$ROOT/target/powercut-cache}"
KERNEL_DIR=""
WORK=""
LW_POINTS=2
LW_LOAD=4
BOOT_CUTS=1
EIO=0
EIO_BOOT=0
DELETES=1
KINDS="slot live origin delete-commit"
ORIGIN_SIZE=$((64 << 20))
LIVE_CAP=$((16 << 20))
GUEST_ORIGIN=0
ORIGIN_PORT=0
OPID=""

usage() {
  cat <<EOF
usage: $0 [options]
  --bin PATH            vcache binary (default target/release/vcache)
  --rounds N            power cuts per sync mode (default $ROUNDS)
  --mode M              always | interval | both (default $MODE)
  --seed S              seed for content, sizes, places and cut moments (default: random, printed)
  --interval-ms MS      checkpoint_interval_ms in the guest (default $INTERVAL)
  --margin-ms MS        interval promise: acks older than this at the cut must survive
                        (default 2 x interval + 1000)
  --slot-size BYTES     size of the upload slot (default $SLOT_SIZE)
  --threads N           concurrent PUT connections (default $THREADS)
  --cut-min S --cut-max S   the cut comes uniformly between these seconds of load (default $CUT_MIN..$CUT_MAX)
  --smp N --mem MiB     guest CPUs and memory (default $SMP, $MEM)
  --accel A             qemu accelerator (default tcg; kvm if you have it)
  --kernel-dir DIR      an extracted linux-image package (boot/vmlinuz-*, lib/modules/*)
                        (default: downloaded once with apt-get into \$VCACHE_POWERCUT_CACHE,
                        default target/powercut-cache)
  --work DIR            work directory (default: a new one under \${TMPDIR:-/tmp})
  --keep                keep the work directory (disk images, consoles, logs)
  --lw-points N         also a dm-log-writes run per mode: log every write/flush/FUA with a
                        mark after each 2xx, then replay the log to N flush points (the last one
                        and N-1 chosen at random) and check each like a cut (default 2; 0: off;
                        needs dmsetup on the host to copy into the guest)
  --kinds "K..."        what the rounds load, in turn (default "$KINDS"): slot (ranged PUTs
                        into the upload slot), live (POSTs appended to the live channel ch),
                        origin (ranged GETs of the origin video org, filled from a server on the
                        host), delete-commit (PUTs, then a DELETE, and the cut lands while its
                        durable commit runs); each round loads one video, so the commit counter
                        the interval check reads is that video's
  --origin-size BYTES   the host origin's object (default $ORIGIN_SIZE)
  --live-capacity BYTES the live channel's ring (default $LIVE_CAP)
  --no-deletes          no DELETE rounds (default: in a third of the slot rounds whose cut comes after
                        1.5 s the PUTs pause, the slot is DELETEd, and they resume before the cut)
  --no-boot-cuts        do not cut the power during a third of the boots after a cut (default: do)
  --lw-load S           seconds of load in the dm-log-writes run (default $LW_LOAD)
  --eio                 instead of the power cuts: the injected-EIO test (in the --mode sync modes):
                        fail the data file's blocks under load, check the sync failure is reported
                        and no later PUT is acknowledged, restore, cut the power, check, write again
  --self-test-broken    run sync="interval" (checkpoint 5 s) but check the "always" promise:
                        passes only if the checker reports lost acknowledged bytes
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --interval-ms) INTERVAL=$2; shift 2 ;;
    --margin-ms) MARGIN_MS=$2; shift 2 ;;
    --slot-size) SLOT_SIZE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --cut-min) CUT_MIN=$2; shift 2 ;;
    --cut-max) CUT_MAX=$2; shift 2 ;;
    --smp) SMP=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --accel) ACCEL=$2; shift 2 ;;
    --kernel-dir) KERNEL_DIR=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --self-test-broken) SELFTEST=1; shift ;;
    --lw-points) LW_POINTS=$2; shift 2 ;;
    --lw-load) LW_LOAD=$2; shift 2 ;;
    --no-boot-cuts) BOOT_CUTS=0; shift ;;
    --no-deletes) DELETES=0; shift ;;
    --kinds) KINDS=$2; shift 2 ;;
    --origin-size) ORIGIN_SIZE=$2; shift 2 ;;
    --live-capacity) LIVE_CAP=$2; shift 2 ;;
    --eio) EIO=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$MODE" in always|interval|both) ;; *) echo "--mode: always, interval or both" >&2; exit 2 ;; esac
[ -n "$SEED" ] || SEED=$(( (RANDOM << 15) | RANDOM ))

if [ "$SELFTEST" = 1 ]; then
  MODE=interval
  [ "$INTERVAL" = 1000 ] && INTERVAL=5000
fi
[ -n "$MARGIN_MS" ] || MARGIN_MS=$((2 * INTERVAL + 1000))

die() { echo "powercut: $*" >&2; exit 2; }
for t in qemu-system-x86_64 mkfs.ext4 python3; do
  command -v "$t" >/dev/null || die "$t not found (apt-get install qemu-system-x86 e2fsprogs python3)"
done
BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do
  if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then BUSYBOX=$b; break; fi
done
[ -n "$BUSYBOX" ] || die "a static busybox is needed (apt-get install busybox-static)"
[ -x "$BIN" ] || die "no vcache binary at $BIN (cargo build --release, or --bin)"
BIN=$(readlink -f "$BIN")

# ---------------------------------------------------------------- work dir, cleanup

if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/vcache-powercut.XXXXXX"); else mkdir -p "$WORK"; fi
WORK=$(readlink -f "$WORK")
QPID=""
cleanup() {
  local rc=$?
  [ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null || true
  [ -n "$QPID" ] && wait "$QPID" 2>/dev/null || true
  [ -n "$OPID" ] && kill "$OPID" 2>/dev/null || true
  [ -n "$OPID" ] && wait "$OPID" 2>/dev/null || true
  if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
    echo "powercut: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- kernel

if [ -z "$KERNEL_DIR" ]; then
  KERNEL_DIR="$CACHE/kernel"
  if ! ls "$KERNEL_DIR"/boot/vmlinuz-* >/dev/null 2>&1; then
    command -v apt-get >/dev/null || die "no kernel: pass --kernel-dir (an extracted linux-image-*-amd64 .deb)"
    echo "powercut: downloading the Debian kernel package into $CACHE"
    mkdir -p "$CACHE/dl" && chmod 777 "$CACHE/dl"
    (
      cd "$CACHE/dl"
      timeout 300 apt-get download -q linux-image-amd64 >/dev/null 2>&1 ||
        { apt-get update -qq && timeout 300 apt-get download -q linux-image-amd64; }
      meta=$(ls linux-image-amd64_*.deb | head -n1)
      dep=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ (]*\).*/\1/p' | head -n1)
      [ -n "$dep" ] || { echo "cannot read the kernel package from $meta" >&2; exit 1; }
      timeout 300 apt-get download -q "$dep" >/dev/null
      rm -rf "$KERNEL_DIR.tmp" && mkdir -p "$KERNEL_DIR.tmp"
      dpkg-deb -x "$(ls "${dep}"_*.deb | head -n1)" "$KERNEL_DIR.tmp"
      rm -rf "$KERNEL_DIR" && mv "$KERNEL_DIR.tmp" "$KERNEL_DIR"
      rm -f ./*.deb
    )
  fi
fi
VMLINUZ=$(ls "$KERNEL_DIR"/boot/vmlinuz-* | head -n1)
MODROOT=$(ls -d "$KERNEL_DIR"/lib/modules/* | head -n1)
[ -f "$VMLINUZ" ] && [ -d "$MODROOT" ] || die "no kernel or modules under $KERNEL_DIR"

# ---------------------------------------------------------------- initramfs

IR="$WORK/initramfs"
rm -rf "$IR"
mkdir -p "$IR"/{bin,etc,proc,sys,dev,data,lib/modules,tmp}
cp "$BUSYBOX" "$IR/bin/busybox"
ln -s busybox "$IR/bin/sh"
cp "$HERE/init.sh" "$IR/init"
chmod 755 "$IR/init"
cp "$BIN" "$IR/bin/vcache"
# debug info is most of the binary; a smaller initramfs unpacks faster under TCG
command -v objcopy >/dev/null && objcopy --strip-debug "$IR/bin/vcache" 2>/dev/null || true
ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
  mkdir -p "$IR$(dirname "$lib")"
  cp -L "$lib" "$IR$lib"
done
: > "$IR/etc/modules.load"
python3 "$PY" kmods "$MODROOT" virtio_pci virtio_blk virtio_net crc32c_generic ext4 dm-mod dm-log-writes dm-flakey |
  while read -r ko; do
    cp "$MODROOT/$ko" "$IR/lib/modules/"
    basename "$ko" >> "$IR/etc/modules.load"
  done
if [ "$EIO" = 1 ]; then LW_POINTS=0; fi
copy_tool() {  # copy_tool PATH NAME: a host tool and its shared libraries into the initramfs
  cp "$1" "$IR/bin/$2"
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    mkdir -p "$IR$(dirname "$lib")"
    cp -L "$lib" "$IR$lib"
  done
}
if [ "$LW_POINTS" -gt 0 ] || [ "$EIO" = 1 ]; then
  DMSETUP=$(command -v dmsetup || true)
  [ -n "$DMSETUP" ] || die "--lw-points and --eio need dmsetup on the host (apt-get install dmsetup)"
  copy_tool "$DMSETUP" dmsetup
fi
if [ "$EIO" = 1 ]; then
  FILEFRAG=$(command -v filefrag || ls /usr/sbin/filefrag /sbin/filefrag 2>/dev/null | head -n1 || true)
  [ -n "$FILEFRAG" ] || die "--eio needs filefrag on the host (e2fsprogs)"
  copy_tool "$FILEFRAG" filefrag
fi
python3 "$PY" cpio "$WORK/initramfs.cpio" "$IR"
echo "powercut: seed $SEED, kernel $(basename "$VMLINUZ"), vcache $BIN, initramfs $(( $(stat -c %s "$WORK/initramfs.cpio") >> 20 )) MiB, work $WORK"

# ---------------------------------------------------------------- guest

# boot DIR SYNC NAME: start qemu on DIR/disk.img, wait until vcache answers /healthz.
# Sets QPID and PORT; returns non-zero (after printing the console's tail) if it never serves.
# boot DIR SYNC NAME [LW [CUT]]: with CUT, SIGKILL the guest CUT seconds after vcache is started.
boot() {
  local dir=$1 sync=$2 name=$3 lw=${4:-0} cutat=${5:-}
  local extra=() fwd=""
  PORT=$(python3 "$PY" freeport)
  if [ "$lw" = 1 ]; then
    MPORT=$(python3 "$PY" freeport)
    extra=(-drive "file=$dir/log.img,format=raw,if=virtio,cache=none,aio=threads")
    fwd=",hostfwd=tcp:127.0.0.1:$MPORT-:9000"
  elif [ "$EIO_BOOT" = 1 ]; then
    MPORT=$(python3 "$PY" freeport)
    fwd=",hostfwd=tcp:127.0.0.1:$MPORT-:9000"
  fi
  qemu-system-x86_64 -accel "$ACCEL" -cpu max -smp "$SMP" -m "$MEM" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$dir/console-$name.log" \
    -kernel "$VMLINUZ" -initrd "$WORK/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 loglevel=4 pc.sync=$sync pc.interval=$INTERVAL pc.size=$SLOT_SIZE pc.lw=$lw pc.eio=$EIO_BOOT pc.origin=$GUEST_ORIGIN pc.cap=$LIVE_CAP" \
    -drive "file=$dir/disk.img,format=raw,if=virtio,cache=none,aio=threads" "${extra[@]}" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:8080$fwd" -device virtio-net-pci,netdev=n0 \
    > "$dir/qemu-$name.log" 2>&1 &
  QPID=$!
  if [ -n "$cutat" ]; then
    # CUT seconds after init has mounted the disk and is starting vcache (its recovery runs then)
    local deadline=$((SECONDS + BOOT_TIMEOUT))
    until grep -q "powercut: boot_id" "$dir/console-$name.log" 2>/dev/null || [ $SECONDS -ge $deadline ]; do
      sleep 0.1
    done
    sleep "$cutat"
    stop_guest
    return 0
  fi
  local t
  if ! t=$(python3 "$PY" wait "$PORT" "$BOOT_TIMEOUT" "$QPID"); then
    echo "powercut: boot $name: $t" >&2
    tail -n 30 "$dir/console-$name.log" "$dir/qemu-$name.log" >&2 || true
    return 1
  fi
  BOOT_S=$t
}

stop_guest() {
  if [ -n "$QPID" ]; then
    kill -9 "$QPID" 2>/dev/null || true
    wait "$QPID" 2>/dev/null || true
    QPID=""
  fi
}

uniform() { python3 -c "import random,sys; print(round(random.Random(sys.argv[1]).uniform($1, $2), 2))" "$3"; }
jget() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

RESULTS="$WORK/results.tsv"
printf 'mode\tround\tcut_s\tacked_puts\tacked_bytes\trequired_bytes\tchecked_bytes\tlost_acked\toldest_lost_s\tround_s\tviolations\tkind\n' > "$RESULTS"
FAILED=0

# the origin of the guest's `org` video: a server on the host, reached through user-mode networking
start_origin() {
  [ -z "$OPID" ] || return 0
  local port
  port=$(python3 "$PY" freeport)
  python3 "$PY" origin --port "$port" --seed "$SEED" --size "$ORIGIN_SIZE" > "$WORK/origin.log" 2>&1 &
  OPID=$!
  ORIGIN_PORT=$port
}

run_mode() {
  local sync=$1 promise=$2
  local dir="$WORK/$sync" r
  local kinds
  read -r -a kinds <<< "$KINDS"
  start_origin
  GUEST_ORIGIN=$ORIGIN_PORT
  mkdir -p "$dir"
  rm -f "$dir/disk.img" "$dir/state.json"
  truncate -s "$DISK_SIZE" "$dir/disk.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dir/disk.img"
  # boot 0: a fresh disk, nothing written yet (checks that an empty slot reports nothing present)
  if ! boot "$dir" "$sync" 0; then
    echo "$sync  boot 0  FAIL: vcache did not start"
    FAILED=1; return
  fi
  timeout 900 python3 "$PY" check --port "$PORT" --state "$dir/state.json" --seed "$SEED" \
    --promise "$promise" --margin-ms "$MARGIN_MS" --result "$dir/result-0.json" || { FAILED=1; return; }
  echo "$sync  boot 0  up in ${BOOT_S}s, slot of $SLOT_SIZE bytes, $(jget "$dir/result-0.json" present_bytes) present"
  for r in $(seq 1 "$ROUNDS"); do
    local t0 cut lj rj kind
    kind=${kinds[$(( (r - 1) % ${#kinds[@]} ))]}
    t0=$(date +%s.%N)
    cut=$(uniform "$CUT_MIN" "$CUT_MAX" "$SEED:$sync:$r")
    local delarg=()
    if [ "$kind" = slot ] && [ "$DELETES" = 1 ] && python3 -c "import random,sys; sys.exit(not (random.Random(sys.argv[1]).random() < 1/3 and $cut >= 1.5))" "$SEED:$sync:$r:delete"; then
      delarg=(--delete-at "$(python3 -c "print(round($cut * $(uniform 0.3 0.7 "$SEED:$sync:$r:deleteat"), 2))")")
    fi
    lj=$(timeout $((${cut%.*} + 90)) python3 "$PY" load --port "$PORT" --seed "$SEED" "${delarg[@]}" \
      --round-seed "$(( SEED * 1000 + r ))$([ "$sync" = always ] && echo 1 || echo 2)" \
      --qemu-pid "$QPID" --cut-after "$cut" --log "$dir/load-$r.jsonl" --threads "$THREADS" \
      --kind "$kind" --origin-size "$ORIGIN_SIZE") || {
      echo "$sync  round $r  FAIL: the load driver failed"; FAILED=1; stop_guest; return; }
    stop_guest   # it was SIGKILLed by the driver; reap it (and make sure)
    # a third of the rounds also cut the power during the next boot: while ext4 replays its journal,
    # vcache recovers (syncs data and metadata, picks slots) or has just started serving
    if [ "$BOOT_CUTS" = 1 ] && python3 -c "import random,sys; sys.exit(random.Random(sys.argv[1]).random() >= 1/3)" "$SEED:$sync:$r:boot"; then
      local bcut
      bcut=$(uniform 0 3 "$SEED:$sync:$r:bootcut")
      echo "$sync  round $r  (the power is also cut in the next boot, ${bcut}s after vcache was started on the mounted disk)"
      boot "$dir" "$sync" "$r-bootcut" 0 "$bcut"
    fi
    if ! boot "$dir" "$sync" "$r"; then
      echo "$sync  round $r  FAIL: vcache did not start after the cut"
      printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t1\t%s\n' "$sync" "$r" "$cut" "$kind" >> "$RESULTS"
      FAILED=1; return
    fi
    timeout 900 python3 "$PY" check --port "$PORT" --state "$dir/state.json" --seed "$SEED" --log "$dir/load-$r.jsonl" \
      --promise "$promise" --margin-ms "$MARGIN_MS" --result "$dir/result-$r.json" ||
      { echo "$sync  round $r  FAIL: the checker failed"; FAILED=1; return; }
    rj="$dir/result-$r.json"
    local secs viol
    secs=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    viol=$(jget "$rj" violations)
    python3 - "$rj" "$sync" "$r" "$cut" "$secs" "$lj" "$RESULTS" "$kind" <<'EOF'
import json, sys
rj, sync, r, cut, secs, lj, out, kind = sys.argv[1:]
x = json.load(open(rj)); l = json.loads(lj)
res = "ok" if x["violations"] == 0 else f"VIOLATIONS {x['violations']}"
lv, og = x.get("live") or {}, x.get("origin") or {}
if kind == "live":
    # the live channel's figures in the common columns: POSTs, bytes, the durable head promised
    cols = (lv.get("acked_posts", 0), lv.get("acked_bytes", 0), lv.get("required_head", 0),
            lv.get("checked_bytes", 0), lv.get("lost_acked_bytes", 0), 0)
    what = (f"acked POSTs {cols[0]:>5}  acked bytes {cols[1]:>10}  head {lv.get('head')} (window from "
            f"{lv.get('window_start')}), durable point promised {cols[2]}  window bytes checked {cols[3]:>10}  "
            f"acked bytes past the head {cols[4]}")
elif kind == "origin":
    cols = (l.get("origin_reads", 0), 0, 0, og.get("checked_bytes", 0), 0, 0)
    what = (f"reads {cols[0]:>5} ({l.get('origin_bad_reads', 0)} differed)  present {og.get('present_bytes', 0):>10}  "
            f"bytes checked against the origin {cols[3]:>10}")
else:
    cols = (x["acked_puts"], x["acked_bytes"], x["required_bytes"], x["checked_bytes"], x["lost_acked_bytes"],
            x["oldest_lost_ack_s"])
    what = (f"acked PUTs {x['acked_puts']:>5}  acked bytes {x['acked_bytes']:>10}  promised {x['required_bytes']:>10}  "
            f"bytes checked {x['checked_bytes']:>10}  lost acked {x['lost_acked_bytes']:>9} (oldest {x['oldest_lost_ack_s']:.2f}s)")
dc = l.get("delete_cut")
print(f"{sync:<8} round {r:>2} {kind:<13} cut at {float(cut):5.2f}s  {what}  "
      f"commits {x['commits_seen']:>3}  {secs:>5}s  {res}"
      + (f"  [DELETE acknowledged at {l['delete']['t']}s: nothing sent before it may be present]" if l.get("delete") else "")
      + (f"  [cut {dc['sent_s_before_cut']}s after the DELETE was sent, "
         + ("after its answer" if dc["answered_before_cut"] else f"before its answer: it {x['delete_unanswered']}")
         + "]" if dc else "")
      + (f"  [note: {x['lost_beyond_margin_bytes']} B acked more than the time margin before the cut are gone]"
         if x["lost_beyond_margin_bytes"] else ""), flush=True)
with open(out, "a") as f:
    f.write("\t".join(str(v) for v in (sync, r, cut) + cols + (secs, x["violations"], kind)) + "\n")
EOF
    [ "$viol" = 0 ] || FAILED=1
  done
  stop_guest
}

# dm-log-writes: one run with every block write logged, then N replays of the log to flush points,
# each booted and checked like a cut. Only flushed writes are in the log at a flush point (the
# target logs a write once a flush covers it), so a replay is what a disk with a volatile cache
# may hold after a power cut at that moment.
lw_mode() {
  local sync=$1 promise=$2
  GUEST_ORIGIN=0
  local dir="$WORK/$sync-lw" k last=-1 info pts
  mkdir -p "$dir"
  rm -f "$dir"/*.img "$dir/state.json"
  truncate -s "$DISK_SIZE" "$dir/base.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dir/base.img"
  cp --sparse=always "$dir/base.img" "$dir/disk.img"
  truncate -s 4G "$dir/log.img"
  if ! boot "$dir" "$sync" lw 1; then
    echo "$sync-lw  FAIL: vcache did not start on dm-log-writes"; FAILED=1; return
  fi
  timeout $((LW_LOAD + 200)) python3 "$PY" load --port "$PORT" --seed "$SEED" --round-seed "$((SEED * 1000 + 990))$([ "$sync" = always ] && echo 1 || echo 2)" \
    --qemu-pid "$QPID" --cut-after "$LW_LOAD" --log "$dir/load-lw.jsonl" --threads "$THREADS" \
    --marker-port "$MPORT" --settle 3 > "$dir/load-lw.json" ||
    { echo "$sync-lw  FAIL: the load driver failed"; FAILED=1; stop_guest; return; }
  stop_guest
  info=$(timeout 300 python3 "$PY" lwinfo "$dir/log.img" "$dir/load-lw.jsonl" "$LW_POINTS" "$SEED:$sync" "$dir")
  echo "$sync-lw  logged: $info"
  pts=$(python3 -c "import json,sys; print(' '.join(map(str, json.loads(sys.argv[1])['points'])))" "$info")
  cp --sparse=always "$dir/base.img" "$dir/replay.img"
  for k in $pts; do
    local t0 rj secs
    t0=$(date +%s.%N)
    timeout 600 python3 "$PY" lwreplay "$dir/log.img" "$dir/replay.img" $((last + 1)) "$k"
    last=$k
    cp --sparse=always "$dir/replay.img" "$dir/disk.img"
    if [ "$promise" != always ]; then echo '[]' > "$dir/require-$k.json"; fi
    if ! boot "$dir" "$sync" "replay-$k"; then
      echo "$sync-lw  point $k  FAIL: vcache did not start on the replayed disk"
      printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t1\tslot\n' "$sync-lw" "$k" "-" >> "$RESULTS"
      FAILED=1; stop_guest; continue
    fi
    rj="$dir/result-$k.json"
    timeout 900 python3 "$PY" check --port "$PORT" --state "$dir/state.json" --seed "$SEED" --log "$dir/load-lw.jsonl" \
      --promise "$promise" --margin-ms "$MARGIN_MS" --result "$rj" --require-json "$dir/require-$k.json" ||
      { echo "$sync-lw  point $k  FAIL: the checker failed"; FAILED=1; stop_guest; continue; }
    stop_guest
    secs=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    python3 - "$rj" "$sync-lw" "$k" "$secs" "$RESULTS" <<'EOF'
import json, sys
rj, mode, k, secs, out = sys.argv[1:]
x = json.load(open(rj))
res = "ok" if x["violations"] == 0 else f"VIOLATIONS {x['violations']}"
print(f"{mode:<11} flush point {k:>6}  acked+marked before it {x['required_bytes']:>10} B  "
      f"present {x['present_bytes']:>10} B  bytes checked {x['checked_bytes']:>10}  {secs:>5}s  {res}", flush=True)
with open(out, "a") as f:
    f.write("\t".join(str(v) for v in (mode, k, "-", x["acked_puts"], x["acked_bytes"], x["required_bytes"],
        x["checked_bytes"], x["lost_acked_bytes"], x["oldest_lost_ack_s"], secs, x["violations"], "slot")) + "\n")
EOF
    [ "$(jget "$rj" violations)" = 0 ] || FAILED=1
  done
}

# injected EIO (eio_mode SYNC): boot 0 with the data disk behind a dm table the host can switch;
# load, switch the slot's data-file extents to the error target, check the failure is reported and
# nothing sent after it is acknowledged (powercut.py eio), restore the table and load on (still
# nothing acknowledged: the video stays poisoned until a restart), cut the power. Boot 1:
# /readyz 200 (the marker is gone, the video reopened from its last durable record), the usual checks
# (every present byte is what was sent; the interval promise up to the failure). Then a load round
# that must be acknowledged again, a cut, boot 2 and the checks once more.
eio_mode() {
  local sync=$1
  GUEST_ORIGIN=0
  local dir="$WORK/eio-$sync" ej lj t0 tag="eio-$sync"
  mkdir -p "$dir"
  rm -f "$dir/disk.img" "$dir/state.json"
  truncate -s "$DISK_SIZE" "$dir/disk.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dir/disk.img"
  t0=$(date +%s.%N)
  EIO_BOOT=1
  if ! boot "$dir" "$sync" 0; then
    EIO_BOOT=0; echo "$tag  boot 0  FAIL: vcache did not start on the dm device"; FAILED=1; return
  fi
  EIO_BOOT=0
  echo "$tag  boot 0  up in ${BOOT_S}s"
  ej=$(timeout 300 python3 "$PY" eio --port "$PORT" --ctl-port "$MPORT" --seed "$SEED" \
    --round-seed "$((SEED * 1000 + 777))$([ "$sync" = always ] && echo 1 || echo 2)" --qemu-pid "$QPID" --log "$dir/load-1.jsonl" --threads "$THREADS") || {
    echo "$tag  FAIL: the eio driver failed"; FAILED=1; stop_guest; return; }
  stop_guest
  echo "$ej" > "$dir/eio.json"
  python3 - "$dir/eio.json" "$tag" <<'EOF2'
import json, sys
x = json.load(open(sys.argv[1])); tag = sys.argv[2]
print(f"{tag}  failure injected ({x['fail_answer']}); reported by /readyz after {x['detect_s']} s: {x['readyz']}")
print(f"{tag}  acked PUTs {x['acked_puts']} ({x['acked_before_failure']} before the failure, "
      f"{x['acked_between_failure_and_report']} between it and the report, the last {x['last_ack_after_failure_s']} s after the failure); PUTs sent after the report: "
      f"{x['after_report_puts_5xx']} answered 5xx {x['after_report_statuses']}, {x['after_report_acked']} acknowledged "
      f"(acknowledged after the device was restored: {x['acked_after_restore']})  "
      + ("ok" if x["violations"] == 0 else f"VIOLATIONS {x['violations']}"))
for p in x["problems"]:
    print(f"  VIOLATION: {p}")
EOF2
  [ "$(jget "$dir/eio.json" violations)" = 0 ] || FAILED=1
  local r
  for r in 1 2; do
    if ! boot "$dir" "$sync" "$r"; then
      echo "$tag  boot $r  FAIL: vcache did not start after the failure"; FAILED=1; return
    fi
    local rb
    if ! rb=$(python3 "$PY" ready "$PORT" 30); then
      echo "$tag  boot $r  FAIL: $rb"; FAILED=1
    fi
    timeout 900 python3 "$PY" check --port "$PORT" --state "$dir/state.json" --seed "$SEED" --log "$dir/load-$r.jsonl" \
      --promise "$sync" --margin-ms "$MARGIN_MS" --result "$dir/result-$r.json" ||
      { echo "$tag  boot $r  FAIL: the checker failed"; FAILED=1; stop_guest; return; }
    python3 - "$dir/result-$r.json" "$r" "$rb" "$tag" <<'EOF2'
import json, sys
x = json.load(open(sys.argv[1])); tag = sys.argv[4]
print(f"{tag}  boot {sys.argv[2]}  /readyz {sys.argv[3]}  present {x['present_bytes']} B, promised {x['required_bytes']} B, "
      f"bytes checked {x['checked_bytes']}, acked bytes lost {x['lost_acked_bytes']}  "
      + ("ok" if x["violations"] == 0 else f"VIOLATIONS {x['violations']} (listed above)"))
EOF2
    [ "$(jget "$dir/result-$r.json" violations)" = 0 ] || FAILED=1
    if [ "$r" = 1 ]; then
      # the video accepts writes again
      lj=$(timeout 120 python3 "$PY" load --port "$PORT" --seed "$SEED" --round-seed "$((SEED * 1000 + 778))$([ "$sync" = always ] && echo 1 || echo 2)" \
        --qemu-pid "$QPID" --cut-after 3 --log "$dir/load-2.jsonl" --threads "$THREADS") || {
        echo "$tag  FAIL: the load driver failed after the restart"; FAILED=1; stop_guest; return; }
      stop_guest
      local n
      n=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['acked_puts'])" "$lj")
      if [ "$n" -gt 0 ]; then
        echo "$tag  after the restart: $lj  ok"
      else
        echo "$tag  after the restart: $lj  VIOLATION: no PUT was acknowledged"; FAILED=1
      fi
    fi
  done
  stop_guest
  echo "$tag  $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
}

T_START=$(date +%s)
if [ "$EIO" = 1 ]; then
  [ "$MODE" = interval ] || eio_mode always
  [ "$MODE" = always ] || eio_mode interval
  exit $FAILED
fi
if [ "$SELFTEST" = 1 ]; then
  echo "powercut: SELF-TEST: sync=interval (checkpoint ${INTERVAL} ms) checked against the 'always' promise; violations are expected"
  run_mode interval always
elif [ "$MODE" = both ]; then
  run_mode always always
  run_mode interval interval
else
  run_mode "$MODE" "$MODE"
fi
if [ "$LW_POINTS" -gt 0 ]; then
  if [ "$SELFTEST" = 1 ]; then
    lw_mode interval always
  else
    [ "$MODE" = interval ] || lw_mode always always
    [ "$MODE" = always ] || lw_mode interval interval
  fi
fi

python3 - "$RESULTS" "$MARGIN_MS" "$INTERVAL" "$(( $(date +%s) - T_START ))" <<'EOF'
import sys, csv
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
margin, interval, wall = sys.argv[2], sys.argv[3], sys.argv[4]
print(f"\nsummary (checkpoint_interval_ms={interval}, interval margin {margin} ms, {wall} s in all)")
print("(-lw rows: one logged run per mode replayed to N flush points; its PUTs are counted once;")
print(" live rows: acked POSTs and bytes, the sum of the durable heads promised, window bytes checked;")
print(" origin rows: reads, bytes checked against the origin)")
print(f"{'mode':<12}{'kind':<14}{'rounds':>7}{'acked':>11}{'acked bytes':>13}{'promised':>12}{'checked B':>12}{'lost acked':>11}{'s/round':>8}{'violations':>11}")
for mode, kind in [(m, k) for m in ("always", "interval", "always-lw", "interval-lw")
                   for k in ("slot", "delete-commit", "live", "origin")]:
    rs = [r for r in rows if r["mode"] == mode and r.get("kind", "slot") == kind]
    if not rs:
        continue
    vals = lambda k: [int(r[k]) for r in rs if r[k] not in ("-", "")]
    once = mode.endswith("-lw")
    n = lambda k: (max(vals(k), default=0) if once else sum(vals(k)))
    secs = [float(r["round_s"]) for r in rs if r["round_s"] not in ("-", "")]
    lost = "-" if once else n("lost_acked")
    print(f"{mode:<12}{kind:<14}{len(rs):>7}{n('acked_puts'):>11}{n('acked_bytes'):>13}{sum(vals('required_bytes')):>12}"
          f"{sum(vals('checked_bytes')):>12}{lost:>11}{(sum(secs) / len(secs) if secs else 0):>8.1f}"
          f"{sum(vals('violations')):>11}")
EOF

if [ "$SELFTEST" = 1 ]; then
  # every kind of run that was made must have reported a violation (and vcache must have started)
  FAILED=0
  for kind in interval interval-lw; do
    rows=$(awk -F'\t' -v k="$kind" 'NR > 1 && $1 == k' "$RESULTS" | wc -l)
    [ "$rows" -gt 0 ] || continue
    bad=$(awk -F'\t' -v k="$kind" 'NR > 1 && $1 == k && $4 ~ /^[0-9]+$/ && $11 > 0' "$RESULTS" | wc -l)
    nostart=$(awk -F'\t' -v k="$kind" 'NR > 1 && $1 == k && $4 !~ /^[0-9]+$/' "$RESULTS" | wc -l)
    if [ "$bad" -gt 0 ] && [ "$nostart" = 0 ]; then
      echo "powercut: self-test ($kind): the checker reported lost acknowledged bytes in $bad of $rows rounds — it discriminates"
    else
      echo "powercut: self-test ($kind) FAILED: $bad of $rows rounds reported a loss, $nostart did not start"
      FAILED=1
    fi
  done
fi
exit $FAILED
}
