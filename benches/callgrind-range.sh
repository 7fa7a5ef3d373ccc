#!/usr/bin/env bash
# Instructions vcache executes per 64 KiB range request, counted by callgrind (repeatable run to run,
# whatever else the machine does): the daemon serves a 1 GiB file video, one keep-alive client sends
# N sequential random-range GETs; the figure is (instructions for N+1 requests - for 1) / N.
#   benches/callgrind-range.sh [path/to/vcache] [N]
set -euo pipefail
bin=$(readlink -f "${1:-target/release/vcache}")
n=${2:-2000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
head -c $((1 << 30)) /dev/zero > "$dir/big.ts"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[server]\nlisten = "127.0.0.1:%s"\ndata_dir = "data"\nwrite_token = "t"\n\n[[video]]\nid = "big"\nkind = "file"\npath = "big.ts"\n' "$port" > "$dir/c.toml"
cat > "$dir/get.py" <<'PY'
import random, socket, sys
port, n, size = int(sys.argv[1]), int(sys.argv[2]), 65536
random.seed(1)
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
for _ in range(n):
    a = random.randrange(0, (1 << 30) - size) // 4096 * 4096
    s.sendall(f"GET /videos/big HTTP/1.1\r\nHost: x\r\nRange: bytes={a}-{a+size-1}\r\n\r\n".encode())
    length = None
    while (line := f.readline()) != b"\r\n":
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    assert length == size, length
    f.read(length)
PY
count() {
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve --config "$dir/c.toml" 2>/dev/null &
  local pid=$!
  until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.2; done
  python3 "$dir/get.py" "$port" "$1"
  kill "$pid"; wait "$pid" || true
  callgrind_annotate "$dir/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
one=$(count 1)
many=$(count $((n + 1)))
echo "instructions per 64 KiB range request: $(( (many - one) / n )) ($n requests; $bin)"
