#!/usr/bin/env python3
"""The tier test's driver (run by tests/tier/run.sh inside the client namespace, after it built the
namespaces): an nginx origin, vcache nodes n1..n3 (n4 joins later) and HAProxy routing by the video id.
Each check prints PASS or FAIL with its figures; the exit status is 1 if any failed."""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

ADDR = {"origin": "10.218.0.10", "n1": "10.218.0.1", "n2": "10.218.0.2", "n3": "10.218.0.3",
        "n4": "10.218.0.4", "lb": "10.218.0.20"}
NODES = ["n1", "n2", "n3", "n4"]
PORT = 8080
ORIGIN_PORT = 8000
VIDEOS = 60
FILL_BLOCK = 256 * 1024
DRAIN_MS = 3000
TOKEN = "tier-token"
LIVE = "ch"
LIVE_CAPACITY = 4 << 20
OPEN_END = 9_007_199_254_740_991

failures = []


def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def wait_until(what, seconds, cond):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out after {seconds} s waiting for {what}")


def request(host, path, method="GET", headers=None, port=PORT, timeout=20, body=None):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def rendezvous(nodes, video):
    """The nodes ranked for `video` as vcache ranks them (src/cluster.rs: FNV-1a, then splitmix64)."""
    m = (1 << 64) - 1

    def weight(n):
        h = 0xcbf29ce484222325
        for b in f"{ADDR[n]}:{PORT}/{video}".encode():
            h = ((h ^ b) * 0x100000001b3) & m
        z = (h + 0x9e3779b97f4a7c15) & m
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & m
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & m
        return z ^ (z >> 31)

    return sorted(nodes, key=weight, reverse=True)


def reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Tier:
    def __init__(self, args):
        self.work = args.work
        self.bin = args.bin
        self.prefix = args.prefix
        self.procs = {}
        rng = random.Random(18)
        self.ids = [f"v{i:03d}" for i in range(VIDEOS)]
        self.data = {i: rng.randbytes(rng.randrange(256 * 1024, 1280 * 1024)) for i in self.ids}

    def netns(self, member, argv, log):
        out = open(os.path.join(self.work, log), "ab")
        return subprocess.Popen(["ip", "netns", "exec", f"{self.prefix}-{member}"] + argv,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    # -- the origin ------------------------------------------------------------------------------

    def start_origin(self):
        d = os.path.join(self.work, "origin")
        os.makedirs(os.path.join(d, "www", "v"), exist_ok=True)
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        for i, blob in self.data.items():
            path = os.path.join(d, "www", "v", i)
            with open(path, "wb") as f:
                f.write(blob)
            os.utime(path, (1_700_000_000, 1_700_000_000))
        conf = f"""daemon off; master_process off; worker_processes 1; user root;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;
    log_format bytes '$remote_addr $status $body_bytes_sent $uri';
    access_log {d}/access.log bytes;
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{ listen {ADDR['origin']}:{ORIGIN_PORT}; root {d}/www; }}
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.procs["origin"] = self.netns("origin", ["nginx", "-p", d, "-c", f"{d}/nginx.conf",
                                                     "-e", f"{d}/error.log"], "origin.log")
        wait_until("nginx (origin)", 10, lambda: reachable(ADDR["origin"], ORIGIN_PORT))

    def origin_bytes(self, by=None):
        """Body bytes nginx sent, in all or to one node (by its address)."""
        total = 0
        with open(os.path.join(self.work, "origin", "access.log")) as f:
            for line in f:
                addr, _status, sent, _uri = line.split(" ", 3)
                if by is None or addr == ADDR[by]:
                    total += int(sent)
        return total

    # -- vcache nodes ------------------------------------------------------------------------------

    def node_config(self, name, peers):
        d = os.path.join(self.work, name)
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        lines = [f'[server]\nlisten = "{ADDR[name]}:{PORT}"\ndata_dir = "data"\nwrite_token = "{TOKEN}"\n',
                 f"[limits]\nshutdown_timeout_ms = 2000\n"]
        if self.features.get("cluster"):
            plist = ", ".join(f'"http://{ADDR[p]}:{PORT}"' for p in peers)
            lines.append(f'[cluster]\nself = "http://{ADDR[name]}:{PORT}"\npeers = [{plist}]\n'
                         f"drain_ms = {DRAIN_MS}\n")
        if self.features.get("cluster"):
            # The live channel: published on its owner; the second-ranked node relays it, the others
            # hold it plainly (and send a publisher to the owner).
            ranked = rendezvous(peers, LIVE)
            relay = (f'upstream = "http://{ADDR[ranked[0]]}:{PORT}/videos/{LIVE}"\n'
                     if len(ranked) > 1 and name == ranked[1] else "")
            lines.append(f'[[video]]\nid = "{LIVE}"\nkind = "live"\ncapacity = {LIVE_CAPACITY}\n{relay}')
        for i in self.ids:
            lines.append(f'[[video]]\nid = "{i}"\nkind = "origin"\n'
                         f'url = "http://{ADDR["origin"]}:{ORIGIN_PORT}/v/{i}"\n'
                         f'fill_block = "{FILL_BLOCK // 1024}KiB"\n')
        with open(os.path.join(d, "vcache.toml"), "w") as f:
            f.write("\n".join(lines))
        return os.path.join(d, "vcache.toml")

    def start_node(self, name, peers):
        conf = self.node_config(name, peers)
        self.procs[name] = self.netns(name, [self.bin, "serve", "--config", conf], f"{name}.log")
        wait_until(f"vcache {name}", 20, lambda: reachable(ADDR[name], PORT))

    def node_videos(self, name):
        _s, _h, body = request(ADDR[name], "/videos")
        return {v["id"]: v for v in json.loads(body)["videos"]}

    # -- HAProxy ---------------------------------------------------------------------------------------

    def start_haproxy(self):
        d = os.path.join(self.work, "lb")
        os.makedirs(d, exist_ok=True)
        servers = "\n".join(
            f"    server {n} {ADDR[n]}:{PORT} check inter 300ms fall 2 rise 2 "
            f"observe layer4 error-limit 1 on-error mark-down{' disabled' if n == 'n4' else ''}"
            for n in NODES)
        owner = rendezvous(["n1", "n2", "n3"], LIVE)[0]
        conf = f"""global
    stats socket {d}/admin.sock mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on all-retryable-errors
frontend videos
    bind {ADDR['lb']}:{PORT}
    default_backend vcache
backend vcache
    balance hash path,field(3,/)
    hash-type consistent
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header X-Served-By %[srv_name]
    # A live channel's publisher goes to its owner (vcache's rendezvous order; others answer 307).
    use-server {owner} if {{ method PUT POST }} {{ path /videos/{LIVE} }}
{servers}
"""
        with open(os.path.join(d, "haproxy.cfg"), "w") as f:
            f.write(conf)
        self.procs["lb"] = self.netns("lb", ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"], "lb.log")
        wait_until("haproxy", 10, lambda: reachable(ADDR["lb"], PORT))

    def haproxy_cmd(self, cmd):
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(self.work, "lb", "admin.sock"))
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out.decode()

    def served_by(self, path):
        _s, h, _b = request(ADDR["lb"], path, method="HEAD")
        by = h.get("x-served-by", "")
        # HAProxy names the server; nginx (the anchor) gives its address.
        return next((n for n in NODES if by in (n, f"{ADDR[n]}:{PORT}")), by)

    def placement(self):
        return {i: self.served_by(f"/videos/{i}") for i in self.ids}

    # -- reads -------------------------------------------------------------------------------------------

    def read_range(self, i, a, b, headers=None):
        """GET bytes a..=b of video i through HAProxy; None when right, else what was wrong."""
        h = {"Range": f"bytes={a}-{b}"}
        h.update(headers or {})
        try:
            status, _h, body = request(ADDR["lb"], f"/videos/{i}", headers=h)
        except (OSError, http.client.HTTPException) as e:
            return f"{i} {a}-{b}: {e!r}"
        if status != 206 or body != self.data[i][a:b + 1]:
            return f"{i} {a}-{b}: status {status}, {len(body)} bytes"
        return None

    def read_all(self):
        client = 0
        for i in self.ids:
            status, _h, body = request(ADDR["lb"], f"/videos/{i}")
            if status != 200 or body != self.data[i]:
                raise SystemExit(f"{i}: status {status}, {len(body)} bytes, not the object")
            client += len(body)
        return client

    def load(self, seconds, threads=4, span=65536):
        """Random ranges through HAProxy from `threads` clients for `seconds`: (requests, failures)."""
        stop = time.time() + seconds
        self.slowest = 0.0
        counts = [0] * threads
        failed = []

        def run(k):
            rng = random.Random(k)
            while time.time() < stop:
                i = rng.choice(self.ids)
                a = rng.randrange(len(self.data[i]))
                b = min(a + rng.randrange(1, span), len(self.data[i]) - 1)
                counts[k] += 1
                began = time.time()
                if (bad := self.read_range(i, a, b)) is not None:
                    failed.append(bad)
                self.slowest = max(self.slowest, time.time() - began)

        ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        return ts, counts, failed


def moved(before, after):
    return {i for i in before if before[i] != after[i]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--bench", action="store_true")
    args = p.parse_args()
    t = Tier(args)
    t.bench = args.bench
    t.features = {"cluster": os.environ.get("TIER_NO_CLUSTER") != "1"}
    try:
        run_checks(t)
    finally:
        t.stop_all()
    if failures:
        print(f"tier: {len(failures)} checks failed: {', '.join(failures)}")
        sys.exit(1)
    print("tier: every check passed")


def run_checks(t):
    t.start_origin()
    three = ["n1", "n2", "n3"]
    for n in three:
        t.start_node(n, three)
    t.start_haproxy()
    wait_until("haproxy to see n1..n3 up", 20,
               lambda: set(t.placement().values()) == set(three))
    figures = check_placement_and_ranges(t, three)
    check_validators(t, three)
    figures.update(check_live(t, three))
    figures.update(check_failover_and_return(t, three))
    figures.update(check_drain(t, three))
    figures.update(check_join(t, three))
    print("figures: " + json.dumps(figures), flush=True)
    if t.bench:
        anchor = nginx_anchor(t, three)
        print("anchor (nginx hash $uri consistent + slice): " + json.dumps(anchor), flush=True)
        print_table(figures, anchor)


def nginx_anchor(t, nodes):
    """The same tier with nginx caches (slice + proxy_cache) behind an nginx `hash $uri consistent`."""
    for name in nodes + ["n4", "lb"]:
        if name in t.procs and t.procs[name].poll() is None:
            t.procs[name].kill()
            t.procs[name].wait()
    # From before the first request: the placement HEADs fetch a first slice, as vcache's learn block 0.
    origin = t.origin_bytes()
    for n in nodes:
        start_nginx_cache(t, n)
    start_nginx_lb(t, nodes)
    wait_until("the nginx tier", 20, lambda: set(t.placement().values()) == set(nodes))
    client = t.read_all()
    cold = t.origin_bytes() - origin
    before = t.placement()
    mine = [i for i in t.ids if before[i] == "n2"]
    ts, counts, failed = t.load(6)
    time.sleep(2)
    t.procs["n2"].kill()
    t.procs["n2"].wait()
    for th in ts:
        th.join()
    after = t.placement()
    gone = moved(before, after)
    print(f"anchor: {len(gone)} ids moved, {len(mine)} were on n2", flush=True)
    # n2 back, then a fourth cache joins (the balancer restarted with four servers).
    start_nginx_cache(t, "n2")
    restart_nginx_lb(t, nodes)
    wait_until("n2 to take its share back", 20, lambda: t.placement() == before)
    t.read_all()
    start_nginx_cache(t, "n4")
    restart_nginx_lb(t, nodes + ["n4"])
    wait_until("n4 to take a share", 20, lambda: "n4" in t.placement().values())
    origin = t.origin_bytes()
    t.read_all()
    joined = t.origin_bytes() - origin
    return {"origin_per_client_cold": round(cold / client, 4), "failover_requests": sum(counts),
            "failover_failed": len(failed), "failover_key_space_moved": round(len(gone) / len(t.ids), 4),
            "join_origin_bytes": joined}


def nginx_conf(d, body):
    return f"""daemon off; master_process off; worker_processes 1; user root;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;
    access_log off;
    keepalive_requests 100000;
{body}
}}
"""


def start_nginx_cache(t, n):
    d = os.path.join(t.work, f"nginx-{n}")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    body = f"""    proxy_cache_path {d}/cache levels=1:2 keys_zone=c:10m max_size=1g inactive=1d use_temp_path=off;
    upstream origin {{ server {ADDR['origin']}:{ORIGIN_PORT}; keepalive 16; }}
    server {{
        listen {ADDR[n]}:{PORT};
        location /videos/ {{
            slice {FILL_BLOCK // 1024}k;
            proxy_cache c;
            proxy_cache_key $uri$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_valid 200 206 1d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin/v/;
        }}
    }}"""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(nginx_conf(d, body))
    t.procs[n] = t.netns(n, ["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"],
                         f"nginx-{n}.log")
    wait_until(f"nginx cache {n}", 10, lambda: reachable(ADDR[n], PORT))


def restart_nginx_lb(t, nodes):
    t.procs["lb"].kill()
    t.procs["lb"].wait()
    start_nginx_lb(t, nodes)


def start_nginx_lb(t, nodes):
    d = os.path.join(t.work, "nginx-lb")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    servers = "".join(f"        server {ADDR[n]}:{PORT} max_fails=1 fail_timeout=30s;\n" for n in nodes)
    body = f"""    upstream caches {{
        hash $uri consistent;
{servers}        keepalive 32;
    }}
    server {{
        listen {ADDR['lb']}:{PORT};
        location / {{
            proxy_pass http://caches;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            add_header X-Served-By $upstream_addr always;
        }}
    }}"""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(nginx_conf(d, body))
    t.procs["lb"] = t.netns("lb", ["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"],
                            "nginx-lb.log")
    wait_until("nginx balancer", 10, lambda: reachable(ADDR["lb"], PORT))


def print_table(v, a):
    print("| measure | vcache + HAProxy | nginx slice + hash $uri consistent |")
    print("|---|---|---|")
    print(f"| origin bytes per client byte, cold catalogue read | {v['origin_per_client_cold']:.3f} | "
          f"{a['origin_per_client_cold']:.3f} |")
    print(f"| failed requests during kill -9 of a node | {v['failover_failed']} of {v['failover_requests']} | "
          f"{a['failover_failed']} of {a['failover_requests']} |")
    print(f"| key space moved by the failover | {v['failover_key_space_moved']:.1%} | "
          f"{a['failover_key_space_moved']:.1%} |")
    print(f"| origin bytes re-fetched when a fourth node joins ({v['join_client_bytes']} client bytes read) | "
          f"{v['join_origin_bytes']} | {a['join_origin_bytes']} |")


def check_placement_and_ranges(t, nodes):
    client = t.read_all()
    origin = t.origin_bytes()
    where = t.placement()
    held = {n: t.node_videos(n) for n in nodes}
    holders = {i: [n for n in nodes if held[n][i]["present_bytes"] > 0] for i in t.ids}
    one = all(holders[i] == [where[i]] for i in t.ids)
    check("placement: each video on exactly the node HAProxy routes it to", one,
          f"{sum(len(h) for h in holders.values())} copies of {len(t.ids)} videos; "
          f"spread {dict((n, list(where.values()).count(n)) for n in nodes)}")
    offset_same = all(t.served_by(f"/videos/{i}/offset?t=00:00:01:00") == where[i] for i in t.ids)
    check("placement: /videos/ID/offset goes where /videos/ID goes", offset_same, "all ids")
    check("origin bytes per client byte on a cold read", origin <= 1.01 * client,
          f"{origin / client:.3f} ({origin} origin bytes for {client} client bytes)")
    rng = random.Random(7)
    bad = []
    for _ in range(300):
        i = rng.choice(t.ids)
        a = rng.randrange(len(t.data[i]))
        b = rng.randrange(a, len(t.data[i]))
        if (wrong := t.read_range(i, a, b)) is not None:
            bad.append(wrong)
    again = t.origin_bytes() - origin
    check("byte-exact ranges through HAProxy, from cache", not bad and again == 0,
          f"300 ranges, {len(bad)} wrong {bad[:3]}, {again} origin bytes")
    return {"origin_per_client_cold": round(origin / client, 4)}


def check_validators(t, nodes):
    """Each node's ETag and Last-Modified for a video equal the origin's."""
    sample = t.ids[:6]
    wrong = []
    for i in sample:
        _s, oh, _b = request(ADDR["origin"], f"/v/{i}", method="HEAD", port=ORIGIN_PORT)
        for n in nodes:
            s, h, _b = request(ADDR[n], f"/videos/{i}", headers={"Range": "bytes=0-0"})
            if s != 206 or h.get("etag") != oh["etag"] or h.get("last-modified") != oh["last-modified"]:
                wrong.append(f"{i}@{n}: {s} {h.get('etag')} {h.get('last-modified')} "
                             f"(origin {oh['etag']} {oh['last-modified']})")
    check("validators: every node answers with the origin's ETag and Last-Modified", not wrong,
          f"{len(sample)} videos x {len(nodes)} nodes; {wrong[:3]}")


def live_follower(host, start):
    """An RFC 8673 follower of the live channel from `start` on a thread: (thread, result dict)."""
    out = {}

    def run():
        c = http.client.HTTPConnection(host, PORT, timeout=60)
        c.request("GET", f"/videos/{LIVE}", headers={"Range": f"bytes={start}-{OPEN_END}"})
        r = c.getresponse()
        out["status"], out["range"] = r.status, r.getheader("Content-Range")
        out["body"] = r.read()
        c.close()

    th = threading.Thread(target=run)
    th.start()
    return th, out


def live_info(host):
    s, h, _b = request(host, f"/videos/{LIVE}", method="HEAD")
    return s, h


def check_live(t, nodes):
    """One publisher per channel and a relayed channel byte-identical on two nodes."""
    if not t.features.get("cluster"):
        return {}
    ranked = rendezvous(nodes, LIVE)
    owner, relay, other = ranked
    named = {n: live_info(ADDR[n])[1].get("x-vcache-owner") for n in nodes}
    check("live: every node names the same owner, the one vcache's ranking gives",
          set(named.values()) == {f"http://{ADDR[owner]}:{PORT}"}, f"{named}")
    # The publisher through HAProxy (use-server sends it to the owner), held open.
    pub = socket.create_connection((ADDR["lb"], PORT), timeout=20)
    pub.sendall(f"PUT /videos/{LIVE} HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode())
    rng = random.Random(81)
    first, rest = rng.randbytes(300_000), rng.randbytes(3 << 20)

    def send(data):
        for k in range(0, len(data), 65536):
            piece = data[k:k + 65536]
            pub.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")

    send(first)
    wait_until("the owner to take the publisher", 10,
               lambda: live_info(ADDR[owner])[1].get("x-live-head") == str(len(first)))
    wait_until("the relay to follow", 10,
               lambda: live_info(ADDR[relay])[1].get("x-live-head") == str(len(first)))
    # A second publisher on the third node: sent to the owner, and refused there while the first is on.
    s3, h3, _b = request(ADDR[other], f"/videos/{LIVE}", method="PUT", body=b"second",
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Length": "6"})
    loc = h3.get("location", "")
    s4, _h, b4 = request(ADDR[owner], f"/videos/{LIVE}", method="PUT", body=b"second",
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Length": "6"})
    s5, _h, b5 = request(ADDR[relay], f"/videos/{LIVE}", method="PUT", body=b"second",
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Length": "6"})
    heads = {n: live_info(ADDR[n])[1].get("x-live-head") for n in nodes}
    check("live: a second publisher is refused (307 to the owner elsewhere, 409 there and on the relay)",
          s3 == 307 and loc == f"http://{ADDR[owner]}:{PORT}/videos/{LIVE}" and s4 == 409 and s5 == 409
          and heads[other] == "0" and heads[owner] == str(len(first)),
          f"{other}: {s3} {loc}; {owner}: {s4} {b4[:60]!r}; {relay} (relay): {s5} {b5[:60]!r}; heads {heads}")
    # Followers on the owner and on the relay from the same offset read the same bytes.
    fo, out_o = live_follower(ADDR[owner], len(first))
    fr, out_r = live_follower(ADDR[relay], len(first))
    time.sleep(0.5)
    send(rest)
    pub.sendall(b"0\r\n\r\n")
    answer = pub.recv(4096).split(b"\r\n", 1)[0]
    pub.close()
    fo.join(60)
    fr.join(60)
    end = len(first) + len(rest)
    wait_until("the relay's head at the owner's", 10,
               lambda: live_info(ADDR[relay])[1].get("x-live-head") == str(end))
    windows = {n: live_info(ADDR[n])[1].get("x-live-window") for n in (owner, relay)}
    a, b = (int(x) for x in windows[owner].split("-"))
    _s, _h, win_o = request(ADDR[owner], f"/videos/{LIVE}", headers={"Range": f"bytes={a}-{b - 1}"})
    _s, _h, win_r = request(ADDR[relay], f"/videos/{LIVE}", headers={"Range": f"bytes={a}-{b - 1}"})
    whole = first + rest
    check("live: a relayed channel is byte-identical on two nodes at identical offsets",
          answer.startswith(b"HTTP/1.1 200") and out_o.get("status") == 206 and out_r.get("status") == 206
          and out_o.get("range") == out_r.get("range") == f"bytes {len(first)}-{OPEN_END}/*"
          and out_o.get("body") == out_r.get("body") == rest
          and windows[owner] == windows[relay] and win_o == win_r == whole[a:b],
          f"publisher {answer!r}; followers {out_o.get('status')}/{out_r.get('status')} with "
          f"{len(out_o.get('body', b''))}/{len(out_r.get('body', b''))} bytes of {len(rest)}; "
          f"windows {windows}")
    figures = {"live_relayed_bytes": len(rest)}
    figures.update(check_live_ffmpeg(t, owner, relay, other, end))
    return figures


def ffmpeg_publish(url):
    """Two seconds of MPEG-TS published by ffmpeg with `-method PUT` (as an encoder would)."""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
         "testsrc=size=160x120:rate=25", "-t", "2", "-c:v", "mpeg2video", "-f", "mpegts",
         "-method", "PUT", "-headers", f"Authorization: Bearer {TOKEN}\r\n", url],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


def check_live_ffmpeg(t, owner, relay, other, head):
    """ffmpeg does not follow a 307 for a PUT (nor look at a PUT's answer: it exits 0 having published
    nothing): through HAProxy (use-server) it reaches the owner; sent to another node nothing is
    written anywhere and the channel does not split."""
    heads = lambda: {n: live_info(ADDR[n])[1].get("x-live-head") for n in (owner, relay, other)}
    direct = ffmpeg_publish(f"http://{ADDR[other]}:{PORT}/videos/{LIVE}")
    after_direct = heads()
    via_lb = ffmpeg_publish(f"http://{ADDR['lb']}:{PORT}/videos/{LIVE}")
    wait_until("the relay to follow ffmpeg's session", 10,
               lambda: len(set(v for n, v in heads().items() if n != other)) == 1)
    final = heads()
    grown = int(final[owner]) - head
    check("live: ffmpeg publishes through HAProxy to the owner; sent elsewhere nothing is written, no split",
          after_direct[owner] == str(head) and after_direct[other] == "0"
          and via_lb.returncode == 0 and grown > 0 and final[relay] == final[owner]
          and final[other] == "0",
          f"direct to {other}: exit {direct.returncode} ({direct.stderr.decode()[-80:].strip()!r}); "
          f"through HAProxy: exit {via_lb.returncode}, {grown} bytes on the owner; heads {final}")
    return {"live_ffmpeg_bytes": grown}


def check_failover_and_return(t, nodes):
    before = t.placement()
    victim = "n2"
    mine = [i for i in t.ids if before[i] == victim]
    resumed = mine[0]
    _s, h, _b = request(ADDR["lb"], f"/videos/{resumed}", headers={"Range": "bytes=0-999"})
    etag = h.get("etag")
    ts, counts, failed = t.load(6)
    time.sleep(2)
    t.procs[victim].kill()  # SIGKILL
    t.procs[victim].wait()
    for th in ts:
        th.join()
    after = t.placement()
    gone = moved(before, after)
    check("failover: kill -9 of a node under load fails no request", not failed,
          f"{len(failed)} of {sum(counts)} failed {failed[:3]}; slowest {t.slowest:.2f} s")
    check("failover: only the dead node's share moved", gone == set(mine),
          f"{len(gone)} of {len(t.ids)} ids moved ({len(gone) / len(t.ids):.1%}), {len(mine)} were on {victim}")
    s, _h, body = request(ADDR["lb"], f"/videos/{resumed}",
                          headers={"Range": "bytes=1000-1999", "If-Range": etag or "\"none\""})
    check("failover: If-Range with the ETag from the dead node resumes with 206 elsewhere",
          s == 206 and body == t.data[resumed][1000:2000], f"status {s}, ETag {etag}")
    origin = t.origin_bytes()
    t.start_node(victim, nodes)
    wait_until(f"{victim} to take its share back", 20, lambda: t.placement() == before)
    client = t.read_all()
    replay = t.origin_bytes() - origin
    check("a returning node replays nothing from the origin", replay == 0,
          f"{replay} origin bytes for {client} client bytes after {victim} came back")
    return {"failover_requests": sum(counts), "failover_failed": len(failed),
            "failover_key_space_moved": round(len(gone) / len(t.ids), 4),
            "return_origin_bytes": replay}


def check_drain(t, nodes):
    """SIGTERM with drain_ms: /readyz turns 503 while the node still serves, HAProxy moves its share
    away before the listener closes, and no request fails."""
    if not t.features.get("cluster"):
        return {}
    victim = "n3"
    before = t.placement()
    ts, counts, failed = t.load(DRAIN_MS / 1000 + 3)
    time.sleep(1)
    t.procs[victim].send_signal(signal.SIGTERM)
    time.sleep(0.3)
    s, _h, body = request(ADDR[victim], "/readyz")
    s2, _h, _b = request(ADDR[victim], "/healthz")
    check("drain: /readyz answers 503 while /healthz stays 200", s == 503 and s2 == 200,
          f"/readyz {s} {body[:80]!r}, /healthz {s2}")
    for th in ts:
        th.join()
    t.procs[victim].wait(timeout=DRAIN_MS / 1000 + 10)
    check("drain: a planned stop under load fails no request", not failed,
          f"{len(failed)} of {sum(counts)} failed {failed[:3]}; slowest {t.slowest:.2f} s; "
          f"exit {t.procs[victim].returncode}")
    t.start_node(victim, nodes)
    wait_until(f"{victim} to take its share back", 20, lambda: t.placement() == before)
    return {"drain_requests": sum(counts), "drain_failed": len(failed)}


def check_join(t, nodes):
    """A fourth node joins: it takes about a quarter of the ids and fills them from their old home."""
    if not t.features.get("cluster"):
        return {}
    four = nodes + ["n4"]
    for n in nodes:  # the three learn of the fourth (a reload, as an operator would do)
        t.node_config(n, four)
        t.procs[n].send_signal(signal.SIGHUP)
    t.start_node("n4", four)
    time.sleep(1)
    before = t.placement()
    t.haproxy_cmd("enable server vcache/n4")
    wait_until("n4 to take a share", 20, lambda: "n4" in t.placement().values())
    after = t.placement()
    gained = moved(before, after)
    origin = t.origin_bytes()
    client = t.read_all()
    refetched = t.origin_bytes() - origin
    sibling = sum(t.node_videos("n4")[i]["present_bytes"] for i in gained)
    check("join: only ids moving to n4 moved", all(after[i] == "n4" for i in gained),
          f"{len(gained)} of {len(t.ids)} ids moved to n4")
    check("join: n4 fills its share from siblings, not the origin",
          gained and refetched == 0 and sibling == sum(len(t.data[i]) for i in gained),
          f"{refetched} origin bytes re-fetched, {sibling} bytes of {len(gained)} videos on n4")
    return {"join_moved": round(len(gained) / len(t.ids), 4), "join_origin_bytes": refetched,
            "join_client_bytes": client}


if __name__ == "__main__":
    main()
