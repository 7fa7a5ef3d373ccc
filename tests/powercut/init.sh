#!/bin/sh
# /init of the power-cut guest (busybox). Parameters come from the kernel command line:
#   pc.sync=always|interval  pc.interval=MS  pc.size=BYTES  pc.lw=0|1  pc.eio=0|1
#   pc.origin=PORT (0: none)  pc.cap=BYTES: with an origin port, a live channel `ch` of pc.cap bytes and
#   an origin video `org` fetched from the host (user-mode networking: 10.0.2.2:PORT) are configured too
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "powercut: $*" > /dev/ttyS0; }

for m in $(cat /etc/modules.load); do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done

SYNC=always; INTERVAL=1000; SIZE=268435456; LW=0; EIO=0; ORIGIN=0; CAP=16777216
for a in $(cat /proc/cmdline); do
  case "$a" in
    pc.sync=*) SYNC="${a#pc.sync=}" ;;
    pc.interval=*) INTERVAL="${a#pc.interval=}" ;;
    pc.size=*) SIZE="${a#pc.size=}" ;;
    pc.lw=*) LW="${a#pc.lw=}" ;;
    pc.eio=*) EIO="${a#pc.eio=}" ;;
    pc.origin=*) ORIGIN="${a#pc.origin=}" ;;
    pc.cap=*) CAP="${a#pc.cap=}" ;;
  esac
done

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

DEV=/dev/vda
if [ "$LW" = 1 ]; then
  # dm-log-writes: every write, flush and FUA to vda is logged in order on vdb; the host
  # replays the log to flush points later. A mark is logged for each acknowledged PUT: the
  # host sends its name on one connection to port 9000 and waits for "ok".
  i=0
  while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if ! dmsetup --noudevsync create lw --table "0 $(cat /sys/block/vda/size) log-writes /dev/vda /dev/vdb"; then
    say "FATAL: dmsetup create log-writes failed"
    poweroff -f
  fi
  dmsetup --noudevsync mknodes lw
  DEV=/dev/mapper/lw
  cat > /bin/marker <<'EOF2'
#!/bin/sh
while read -r m; do
  if dmsetup message lw 0 mark "$m" > /dev/null 2>&1; then echo ok; else echo fail; fi
done
EOF2
  chmod 755 /bin/marker
  nc -ll -p 9000 -e /bin/marker &
  say "dm-log-writes on $DEV, marker on port 9000"
fi

if [ "$EIO" = 1 ]; then
  # injected EIO: the data disk behind a dm table that is a plain linear map of vda until the host
  # sends "fail" on port 9000; then the extents of the slot's data file (from filefrag) are mapped
  # to the error target (reads and writes of them fail with EIO; the rest of the file system, its
  # journal and flushes, and the metadata file keep working) until "restore" maps it all back.
  if ! dmsetup --noudevsync create eio --table "0 $(cat /sys/block/vda/size) linear /dev/vda 0"; then
    say "FATAL: dmsetup create eio failed"
    poweroff -f
  fi
  dmsetup --noudevsync mknodes eio
  DEV=/dev/mapper/eio
  cat > /bin/eioctl <<'EOF2'
#!/bin/sh
total=$(cat /sys/block/vda/size)
swap() {
  dmsetup --noudevsync suspend --nolockfs eio &&
    dmsetup --noudevsync load eio /tmp/table &&
    dmsetup --noudevsync resume eio
}
while read -r c; do
  case "$c" in
    fail)
      filefrag -e /data/vc/slot.data > /tmp/ff 2>&1
      bs=$(sed -n 's/.*blocks of \([0-9]*\) bytes.*/\1/p' /tmp/ff)
      [ -n "$bs" ] || bs=4096
      tr -d ' ' < /tmp/ff |
        awk -F'[:.]+' -v f=$((bs / 512)) '$1 ~ /^[0-9]+$/ && NF >= 5 { printf "%d %d\n", $4 * f, ($5 - $4 + 1) * f }' |
        sort -n |
        awk -v total="$total" '{ if ($1 > pos) printf "%d %d linear /dev/vda %d\n", pos, $1 - pos, pos
                                 printf "%d %d error\n", $1, $2; pos = $1 + $2 }
                               END { if (pos < total) printf "%d %d linear /dev/vda %d\n", pos, total - pos, pos }' > /tmp/table
      n=$(grep -c ' error' /tmp/table)
      b=$(awk '$3 == "error" { s += $2 } END { printf "%d", s * 512 }' /tmp/table)
      if [ "$n" -gt 0 ] && swap; then echo "ok $n extents $b bytes"; else echo "fail $(tr '\n' ' ' < /tmp/ff)"; fi
      ;;
    restore)
      echo "0 $total linear /dev/vda 0" > /tmp/table
      if swap; then echo ok; else echo fail; fi
      ;;
    *) echo "unknown command" ;;
  esac
done
EOF2
  chmod 755 /bin/eioctl
  nc -ll -p 9000 -e /bin/eioctl &
  say "eio: data disk on $DEV, control on port 9000"
fi

mkdir -p /data
if ! mount -t ext4 "$DEV" /data; then
  say "FATAL: cannot mount $DEV"
  poweroff -f
fi
mkdir -p /data/vc
cat > /etc/vcache.toml <<EOF
[server]
listen = "0.0.0.0:8080"
data_dir = "/data/vc"
write_token = "powercut"
sync = "$SYNC"
checkpoint_interval_ms = $INTERVAL

[[video]]
id = "slot"
kind = "upload"
size = $SIZE
EOF
if [ "$ORIGIN" != 0 ]; then
  cat >> /etc/vcache.toml <<EOF

[[video]]
id = "ch"
kind = "live"
capacity = $CAP

[[video]]
id = "org"
kind = "origin"
url = "http://10.0.2.2:$ORIGIN/film"
fill_block = "256KiB"
EOF
fi
say "boot_id $(cat /proc/sys/kernel/random/boot_id) sync=$SYNC interval=$INTERVAL size=$SIZE origin=$ORIGIN cap=$CAP"
RUST_LOG=info RUST_LOG_STYLE=never /bin/vcache serve --config /etc/vcache.toml > /dev/ttyS0 2>&1 &
wait $!
say "vcache exited with status $?"
while true; do sleep 3600; done
