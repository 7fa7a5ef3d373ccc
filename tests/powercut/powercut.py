#!/usr/bin/env python3
"""Host-side helpers for tests/powercut/run.sh (Python 3 standard library only).

Subcommands:
  kmods MODROOT NAME...         print the .ko paths (relative to MODROOT) of NAME and their
                                dependencies, dependencies first (reads each module's .modinfo)
  cpio OUT ROOT                 write ROOT as an uncompressed newc cpio archive (an initramfs)
  freeport                      print a free TCP port on 127.0.0.1
  wait PORT TIMEOUT QEMU_PID    poll GET /healthz until 200; fail if qemu dies or TIMEOUT passes
  check ...                     after a boot: verify every present byte, the promises, monotonicity
  load ...                      drive ranged PUTs into the slot's holes, SIGKILL qemu at CUT seconds
  eio ...                       drive PUTs, make the guest fail the data file's writes, check the
                                sync failure is reported and nothing more is acknowledged, restore,
                                SIGKILL qemu
  ready PORT TIMEOUT            poll GET /readyz until 200 (print its body); fail after TIMEOUT
  origin --port P --seed S --size N
                                the host's origin for the guest's `origin` video (reached through
                                user-mode networking at 10.0.2.2): GET/HEAD of /film with Range,
                                a strong ETag, content OriginPattern(S)

Each round loads one video kind (`load --kind`), so that vcache_commits_total counts that video's
commits only: `slot` (ranged PUTs into the upload slot), `delete-commit` (PUTs, then a DELETE, and
the power is cut while its durable commit runs), `live` (POSTs appended to the live channel `ch`),
`origin` (ranged GETs of the origin video `org`, each filling blocks from the host's origin).

The expected content of the slot is a pure function of (seed, offset), so the checker can
recompute any byte: 4 KiB block j is P xor K(j), where P is a seeded random 4096-byte pattern
and K(j) repeats a 64-bit word derived from j. A byte that was never written (zeros), written at
the wrong offset, or written from an older/other block differs from it.
"""

import http.client
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

TOKEN = "powercut"
VIDEO = "slot"
LIVE = "ch"
ORIGIN = "org"
BLOCK = 4096
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
REP = sum(1 << (64 * i) for i in range(BLOCK // 8))


# ---------------------------------------------------------------- content


class Pattern:
    def __init__(self, seed):
        self.seed = seed & MASK64
        self.p = int.from_bytes(random.Random(f"vcache-powercut:{seed}").randbytes(BLOCK), "little")

    def block(self, j):
        k = ((j + 1) * GOLDEN + self.seed) & MASK64
        return (self.p ^ (k * REP)).to_bytes(BLOCK, "little")

    def bytes(self, a, b):
        """Expected bytes of [a, b)."""
        if a >= b:
            return b""
        j0, j1 = a // BLOCK, (b - 1) // BLOCK
        buf = b"".join(self.block(j) for j in range(j0, j1 + 1))
        off = a - j0 * BLOCK
        return buf[off : off + (b - a)]


def live_pattern(seed):
    """What the publisher writes at each logical offset of the live channel."""
    return Pattern(seed ^ 0x4C495645)


def origin_pattern(seed):
    """The origin's object."""
    return Pattern(seed ^ 0x4F524947)


# ---------------------------------------------------------------- interval sets


def norm(iv):
    """Sorted, merged, non-empty half-open intervals."""
    out = []
    for a, b in sorted((a, b) for a, b in iv if a < b):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def union(x, y):
    return norm(list(x) + list(y))


def minus(x, y):
    """x - y for normalised interval lists."""
    out = []
    y = norm(y)
    i = 0
    for a, b in norm(x):
        cur = a
        while i < len(y) and y[i][1] <= cur:
            i += 1
        k = i
        while cur < b and k < len(y) and y[k][0] < b:
            if y[k][0] > cur:
                out.append((cur, y[k][0]))
            cur = max(cur, y[k][1])
            k += 1
        if cur < b:
            out.append((cur, b))
    return out


def total(x):
    return sum(b - a for a, b in x)


def fmt_iv(x, n=4):
    s = ", ".join(f"[{a},{b})" for a, b in x[:n])
    return s + (f", … ({len(x)} ranges)" if len(x) > n else "")


# ---------------------------------------------------------------- kmods, cpio, freeport, wait


def modinfo_depends(path):
    with open(path, "rb") as f:
        data = f.read()
    i = data.find(b"\0depends=")
    if i < 0:
        if data.startswith(b"depends="):
            i = -1
        else:
            return []
    j = data.find(b"\0", i + 1)
    deps = data[i + 1 + len("depends=") : j].decode()
    return [d for d in deps.split(",") if d]


def cmd_kmods(args):
    root, names = args[0], args[1:]
    index = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".ko"):
                index[f[:-3].replace("-", "_")] = os.path.relpath(os.path.join(dirpath, f), root)
    order, seen = [], set()

    def visit(name):
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        if key not in index:
            sys.exit(f"kmods: module {name} not found under {root} (built in?)")
        for d in modinfo_depends(os.path.join(root, index[key])):
            visit(d)
        order.append(index[key])

    for n in names:
        visit(n)
    print("\n".join(order))


def cmd_cpio(args):
    out, root = args
    ino = 1

    def entry(f, name, mode, data, nlink=1, dev=(0, 0)):
        nonlocal ino
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, dev[0], dev[1], len(nameb), 0)
        )
        ino += 1
        f.write(hdr.encode() + nameb)
        f.write(b"\0" * ((4 - (110 + len(nameb)) % 4) % 4))
        f.write(data)
        f.write(b"\0" * ((4 - len(data) % 4) % 4))

    with open(out, "wb") as f:
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                entry(f, rel, 0o040755, b"", nlink=2)
            for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(dirpath, d))):
                p = os.path.join(dirpath, name)
                r = os.path.normpath(os.path.join(rel, name))
                st = os.lstat(p)
                if os.path.islink(p):
                    entry(f, r, 0o120777, os.readlink(p).encode())
                else:
                    with open(p, "rb") as g:
                        entry(f, r, 0o100000 | (st.st_mode & 0o7777), g.read())
        entry(f, "TRAILER!!!", 0, b"")


def cmd_freeport(_):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of the shell still "exists": look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def cmd_wait(args):
    port, timeout, pid = int(args[0]), float(args[1]), int(args[2])
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not alive(pid):
            print(f"wait: qemu (pid {pid}) exited before vcache served")
            sys.exit(2)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                print(f"{time.monotonic() - t0:.1f}")
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    print(f"wait: /healthz not 200 after {timeout:.0f} s")
    sys.exit(1)


# ---------------------------------------------------------------- state


def load_state(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {
        "union": [],  # every byte reported present after any boot (must stay present)
        "required": [],  # every byte the promise says must be present (must stay present)
        "sent": [],  # every byte ever sent in a PUT body (acknowledged or not)
        "size": None,
    }


def save_state(path, st):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    os.replace(tmp, path)


def get_videos(port, video=VIDEO, wait=120.0):
    """The video's entry in GET /videos, once it is open (vcache serves while it opens the videos;
    one still being opened is listed with "opening")."""
    deadline = time.monotonic() + wait
    while True:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/videos")
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"GET /videos: {r.status}")
        entry = next((v for v in json.loads(body)["videos"] if v["id"] == video), None)
        if entry is None:
            raise RuntimeError(f"GET /videos: no video {video!r}")
        if "opening" not in entry or time.monotonic() > deadline:
            return entry
        time.sleep(0.1)


def has_video(port, video):
    try:
        get_videos(port, video)
        return True
    except RuntimeError:
        return False


# ---------------------------------------------------------------- check


def verify_range(port, pat, a, b, problems, video=VIDEO):
    """GET [a, b) and compare with the pattern. Returns bytes compared."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", f"/videos/{video}", headers={"Range": f"bytes={a}-{b - 1}"})
    r = c.getresponse()
    if r.status != 206:
        problems.append(f"{video}: GET [{a},{b}): status {r.status}, expected 206")
        r.read()
        c.close()
        return 0
    cr = r.getheader("Content-Range", "")
    if not cr.startswith(f"bytes {a}-{b - 1}/"):
        problems.append(f"GET [{a},{b}): Content-Range {cr!r} (range cut although reported present)")
    pos, bad, first_bad = a, 0, None
    step = 1 << 20
    while pos < b:
        want = min(step, b - pos)
        got = r.read(want)
        if not got:
            break
        exp = pat.bytes(pos, pos + len(got))
        if got != exp:
            for i in range(len(got)):
                if got[i] != exp[i]:
                    bad += 1
                    if first_bad is None:
                        first_bad = pos + i
        pos += len(got)
    c.close()
    if pos < b:
        problems.append(f"GET [{a},{b}): short body, ended at {pos}")
    if bad:
        problems.append(f"GET [{a},{b}): {bad} bytes differ from what was written, first at offset {first_bad}")
    return pos - a


def read_log(path):
    evs = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    evs.append(json.loads(line))
    return evs


def cmd_check(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="powercut.py check")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--log", help="the previous round's load log (absent on the first boot)")
    ap.add_argument("--promise", choices=["always", "interval"], required=True)
    ap.add_argument("--margin-ms", type=float, default=3000)
    ap.add_argument("--result", required=True, help="write the round's result JSON here")
    ap.add_argument("--require-json", help="dm-log-writes replay: the acknowledged ranges that must be present")
    a = ap.parse_args(argv)

    pat = Pattern(a.seed)
    st = load_state(a.state)
    problems = []
    v = get_videos(a.port)
    if st["size"] is None:
        st["size"] = v["size"]
    elif v["size"] != st["size"]:
        problems.append(f"size {v['size']} != {st['size']}")
    present = norm((r["start"], r["end"]) for r in v["cached_ranges"])
    if total(present) != v["present_bytes"]:
        problems.append(f"present_bytes {v['present_bytes']} != sum of cached_ranges {total(present)}")

    # 1. every byte reported present is exactly the byte written there
    checked = 0
    for s, e in present:
        checked += verify_range(a.port, pat, s, e, problems)

    # 2. present bytes never vanish (unless DELETEd: see below, where the state is reset)

    # 3. the promise for the round that was just cut
    evs = read_log(a.log)
    cut = next((e["t"] for e in evs if e["ev"] == "cut"), None)
    # a DELETE in the round (the PUTs were paused around it, none in flight): acknowledged, nothing
    # sent before it may be present again and nothing present before it need stay; unanswered,
    # either is allowed
    dels = [e for e in evs if e["ev"] == "delete"]
    dacked = next((e for e in dels if 200 <= e["st"] < 300), None)
    # a DELETE cut before its answer (its durable commit was running): either it landed and nothing
    # is present, or it did not and the slot is checked as after any cut — never a mix
    unanswered = dacked is None and bool(dels)
    if dacked is not None:
        st["union"], st["required"], st["sent"] = [], [], []
        evs = [e for e in evs if e.get("t", e.get("ts", 0)) > dacked["t"] or e["ev"] in ("cut", "commits")]
    elif unanswered and not present:
        # it landed: as after an acknowledged DELETE, nothing from before it is promised any more,
        # and nothing sent before it may come back (the PUTs were paused: no ack follows it)
        st["union"], st["required"], st["sent"] = [], [], []
        sent_at = min(e["ts"] for e in dels)
        evs = [e for e in evs if e.get("t", e.get("ts", 0)) > sent_at or e["ev"] in ("cut", "commits")]
    acks = [e for e in evs if e["ev"] == "ack"]
    sends = [(e["a"], e["b"]) for e in evs if e["ev"] == "send"]
    st["sent"] = union(st["sent"], sends)
    acked = norm((e["a"], e["b"]) for e in acks)
    polls = sorted((e for e in evs if e["ev"] == "commits"), key=lambda e: e["ts"])
    margin_missing = []
    if cut is not None:
        if a.promise == "always":
            req = acked
        else:
            # The promise is "after the next completed checkpoint". An ack at t is covered once
            # vcache_commits_total, read by a poll sent at or after t as v, has reached v + 2 in a
            # poll answered before the cut: commit v + 1 may have taken its snapshot before t, but
            # commit v + 2 was created after that poll (one commit in flight per video, and
            # a commit is counted only once durable).
            w = max((e["n"] for e in polls if e["tr"] <= cut), default=None)
            req = []
            for e in acks:
                v = next((p["n"] for p in polls if p["ts"] >= e["t"]), None)
                if v is not None and w is not None and w >= v + 2:
                    req.append((e["a"], e["b"]))
            req = norm(req)
            # The time margin (informational): acks older than it at the cut that are gone.
            old = norm((e["a"], e["b"]) for e in acks if e["t"] <= cut - a.margin_ms / 1000.0)
            margin_missing = minus(old, present)
    else:
        req = []
    vanished = minus(st["union"], present)
    if vanished:
        problems.append(f"{total(vanished)} bytes present after an earlier boot are gone: {fmt_iv(vanished)}")
    if a.require_json:
        with open(a.require_json) as f:
            req = norm(json.load(f))
    st["required"] = union(st["required"], req)
    missing = minus(st["required"], present)
    if missing:
        problems.append(
            f"{total(missing)} acknowledged bytes the '{a.promise}' promise covers are missing: {fmt_iv(missing)}"
        )
    # 4. nothing is present that was never sent
    unsent = minus(present, st["sent"])
    if unsent:
        problems.append(f"{total(unsent)} present bytes were never sent by any PUT: {fmt_iv(unsent)}")

    # information: acknowledged bytes lost (allowed in interval mode inside the margin)
    lost = minus(acked, present)
    lost_age = 0.0
    if cut is not None and lost:
        for e in acks:
            if minus([(e["a"], e["b"])], present):
                lost_age = max(lost_age, cut - e["t"])
    st["union"] = union(st["union"], present)
    live = check_live(a, st, evs, cut, problems)
    origin = check_origin(a, st, evs, problems)
    save_state(a.state, st)
    res = {
        "acked_puts": len(acks),
        "acked_bytes": total(acked),
        "required_bytes": total(req),
        "present_bytes": total(present),
        "present_ranges": len(present),
        "checked_bytes": checked,
        "lost_acked_bytes": total(lost),
        "lost_beyond_margin_bytes": total(margin_missing),
        "commits_seen": (polls[-1]["n"] - polls[0]["n"]) if polls else 0,
        "oldest_lost_ack_s": round(lost_age, 3),
        "deleted": dacked is not None,
        "delete_unanswered": ("landed" if not present else "not landed") if unanswered else None,
        "live": live,
        "origin": origin,
        "violations": len(problems),
        "problems": problems[:20],
    }
    with open(a.result, "w") as f:
        json.dump(res, f)
    for p in problems[:20]:
        print(f"  VIOLATION: {p}", file=sys.stderr)


def covered_acks(acks, polls, cut):
    """interval promise: the acks a completed checkpoint covers before the cut (see cmd_check)."""
    w = max((e["n"] for e in polls if e["tr"] <= cut), default=None)
    out = []
    for e in acks:
        v = next((p["n"] for p in polls if p["ts"] >= e["t"]), None)
        if v is not None and w is not None and w >= v + 2:
            out.append(e)
    return out


def check_live(a, st, evs, cut, problems):
    """The live channel: it starts; every byte in its window is what was published at that offset;
    its head is never behind the last acknowledged durable point; a publish continued at the head."""
    if not has_video(a.port, LIVE):
        return None
    v = get_videos(a.port, LIVE)
    if v.get("error"):
        problems.append(f"{LIVE}: not servable after the boot: {v['error']}")
        return None
    head, start = v["head"], v["window_start"]
    lv = st.setdefault("live", {"required_head": 0, "max_head": 0})
    checked = 0
    if head > start:
        checked = verify_range(a.port, live_pattern(a.seed), start, head, problems, LIVE)
    acks = [e for e in evs if e["ev"] == "live_ack"]
    polls = sorted((e for e in evs if e["ev"] == "commits"), key=lambda e: e["ts"])
    if cut is not None and acks:
        req = acks if a.promise == "always" else covered_acks(acks, polls, cut)
        lv["required_head"] = max([lv["required_head"]] + [e["b"] for e in req])
    if head < lv["required_head"]:
        problems.append(
            f"{LIVE}: head {head} is behind the last acknowledged durable point {lv['required_head']}"
        )
    if start > head or head - start > v["capacity"]:
        problems.append(f"{LIVE}: window {start}-{head} is not inside a ring of {v['capacity']}")
    for e in evs:
        if e["ev"] == "live_gap":
            problems.append(f"{LIVE}: a publish was written at {e['got']}, the head was {e['want']}")
    lost = max((e["b"] for e in acks), default=head) - head if acks else 0
    lv["max_head"] = max(lv["max_head"], head)
    return {
        "head": head,
        "window_start": start,
        "required_head": lv["required_head"],
        "acked_posts": len(acks),
        "acked_bytes": sum(e["b"] - e["a"] for e in acks),
        "lost_acked_bytes": max(0, lost),
        "checked_bytes": checked,
    }


def check_origin(a, st, evs, problems):
    """The origin video: every byte reported present (and every byte a reader got during the round)
    is the origin's byte."""
    for e in evs:
        if e["ev"] == "origin_bad":
            problems.append(f"{ORIGIN}: a read of [{e['a']},{e['b']}) during the round differed from the origin")
    if not has_video(a.port, ORIGIN):
        return None
    v = get_videos(a.port, ORIGIN)
    if v.get("error"):
        problems.append(f"{ORIGIN}: not servable after the boot: {v['error']}")
        return None
    present = norm((r["start"], r["end"]) for r in v.get("cached_ranges", []))
    pat = origin_pattern(a.seed)
    checked = sum(verify_range(a.port, pat, s0, e0, problems, ORIGIN) for s0, e0 in present)
    og = st.setdefault("origin", {"max_present": 0})
    og["max_present"] = max(og["max_present"], total(present))
    return {"present_bytes": total(present), "checked_bytes": checked}


# ---------------------------------------------------------------- load


class Allocator:
    """Hands out disjoint ranges from the holes of the slot, in random places and sizes."""

    def __init__(self, size, taken, rng, max_put):
        self.size = size
        self.busy = norm(taken)  # present at boot, in flight, or acknowledged
        self.rng = rng
        self.max_put = max_put
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            holes = minus([(0, self.size)], self.busy)
            if not holes:
                return None
            # pick a hole weighted by its length, then a place inside it
            tot = total(holes)
            x = self.rng.randrange(tot)
            for h0, h1 in holes:
                if x < h1 - h0:
                    break
                x -= h1 - h0
            n = int(2 ** self.rng.uniform(0, self.max_put.bit_length() - 1))  # log-uniform sizes
            n = max(1, min(n, self.max_put))
            a = h0 + x  # anywhere; half of the time rounded down to a 4 KiB boundary
            if self.rng.random() < 0.5 and a // BLOCK * BLOCK >= h0:
                a = a // BLOCK * BLOCK
            b = min(h1, a + n)
            self.busy = union(self.busy, [(a, b)])
            return a, b

    def release(self, a, b):
        with self.lock:
            self.busy = minus(self.busy, [(a, b)])


def cmd_load(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="powercut.py load")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--round-seed", type=int, required=True)
    ap.add_argument("--qemu-pid", type=int, required=True)
    ap.add_argument("--cut-after", type=float, required=True, help="seconds after the first PUT")
    ap.add_argument("--log", required=True)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--max-put", type=int, default=2 << 20)
    ap.add_argument("--marker-port", type=int, help="dm-log-writes: send a mark to the guest after each 2xx")
    ap.add_argument("--delete-at", type=float, default=None,
                    help="pause the PUTs this many seconds into the load, DELETE the slot, resume")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="dm-log-writes: stop the load, mark 'end', wait this long, then kill qemu")
    ap.add_argument("--origin-size", type=int, default=64 << 20)
    ap.add_argument("--kind", choices=["slot", "delete-commit", "live", "origin"], default="slot",
                    help="which video the round loads (see the module's help)")
    ap.add_argument("--delete-cut-max", type=float, default=1.0,
                    help="delete-commit: the cut comes 1 ms to this many seconds (log-uniform) after "
                         "the DELETE is sent")
    a = ap.parse_args(argv)
    if a.kind == "delete-commit" and a.delete_at is None:
        a.delete_at = a.cut_after

    pat = Pattern(a.seed)
    rng = random.Random(a.round_seed)
    v = get_videos(a.port)
    size = v["size"]
    present = [(r["start"], r["end"]) for r in v["cached_ranges"]]
    alloc = Allocator(size, present, rng, a.max_put)
    log = []
    log_lock = threading.Lock()
    stop = threading.Event()
    pause = threading.Event()
    inflight = [0]

    def rec(ev):
        with log_lock:
            log.append(ev)

    marks = []  # (name, a, b) queued after each 2xx
    marks_cv = threading.Condition()
    marker_done = threading.Event()

    def marker():
        """One connection to the guest's marker; each line becomes `dmsetup message lw 0 mark NAME`."""
        try:
            m = socket.create_connection(("127.0.0.1", a.marker_port), timeout=30)
            f = m.makefile("rwb")
            while True:
                with marks_cv:
                    while not marks and not marker_done.is_set():
                        marks_cv.wait(0.2)
                    if not marks:
                        break
                    name, s0, e0 = marks.pop(0)
                f.write(name.encode() + b"\n")
                f.flush()
                line = f.readline()
                if not line.startswith(b"ok"):
                    rec({"ev": "note", "msg": f"marker answered {line!r}", "t": time.monotonic()})
                    break
                rec({"ev": "mark", "name": name, "a": s0, "b": e0, "t": time.monotonic()})
            m.close()
        except OSError as ex:
            rec({"ev": "note", "msg": f"marker: {ex}", "t": time.monotonic()})

    def mark(name, s0, e0):
        if a.marker_port:
            with marks_cv:
                marks.append((name, s0, e0))
                marks_cv.notify()

    def worker(i):
        conn = None
        while not stop.is_set():
            with log_lock:
                if pause.is_set():
                    rg = False
                else:
                    inflight[0] += 1
                    rg = True
            if not rg:
                time.sleep(0.02)
                continue
            try:
                one(i, conn_box)
            finally:
                with log_lock:
                    inflight[0] -= 1

    conn_box = {}

    def one(i, box):
        conn = box.get(i)
        if True:
            rg = alloc.take()
            if rg is None:
                time.sleep(0.05)
                return
            s, e = rg
            body = pat.bytes(s, e)
            rec({"ev": "send", "a": s, "b": e, "t": time.monotonic(), "w": i})
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=20)
                conn.request(
                    "PUT",
                    f"/videos/{VIDEO}",
                    body=body,
                    headers={
                        "Authorization": f"Bearer {TOKEN}",
                        "Content-Range": f"bytes {s}-{e - 1}/{size}",
                        "Content-Type": "application/octet-stream",
                    },
                )
                r = conn.getresponse()
                r.read()
                t = time.monotonic()
                if 200 <= r.status < 300:
                    rec({"ev": "ack", "a": s, "b": e, "t": t, "st": r.status})
                    mark(f"ack{s}-{e}", s, e)
                else:
                    rec({"ev": "nack", "a": s, "b": e, "t": t, "st": r.status})
                    alloc.release(s, e)
                    if r.status == 507 or r.status == 409:
                        time.sleep(0.05)
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as ex:
                rec({"ev": "err", "a": s, "b": e, "t": time.monotonic(), "err": type(ex).__name__})
                if conn is not None:
                    conn.close()
                conn = None
                if not stop.is_set():
                    time.sleep(0.1)  # bytes of a failed PUT may still be claimed: keep them busy
            box[i] = conn

    def delete_slot():
        """Pause the PUTs, wait for those in flight, DELETE the slot (retrying a 503 while a write
        is still on for up to 5 s), then resume with the whole slot free."""
        pause.set()
        t1 = time.monotonic() + 25
        while time.monotonic() < t1:
            with log_lock:
                if inflight[0] == 0:
                    break
            time.sleep(0.01)
        t1 = time.monotonic() + 5
        while True:
            ts = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=20)
                c.request("DELETE", f"/videos/{VIDEO}", headers={"Authorization": f"Bearer {TOKEN}"})
                r = c.getresponse()
                r.read()
                c.close()
                st = r.status
            except (OSError, http.client.HTTPException) as ex:
                rec({"ev": "delete", "ts": ts, "t": time.monotonic(), "st": 0, "err": type(ex).__name__})
                return
            rec({"ev": "delete", "ts": ts, "t": time.monotonic(), "st": st})
            if st != 503 or time.monotonic() > t1:
                break
            time.sleep(0.1)
        if 200 <= st < 300:
            with alloc.lock:
                alloc.busy = []
        pause.clear()

    live_pat = live_pattern(a.seed)

    def publisher():
        """POST pieces to the live channel, each appended at the head; a 200 acknowledges it (synced
        first with sync = always)."""
        head = None
        conn = None
        while not stop.is_set():
            try:
                if head is None:
                    head = get_videos(a.port, LIVE)["head"]
                n = int(2 ** rng.uniform(10, 18))
                body = live_pat.bytes(head, head + n)
                rec({"ev": "live_send", "a": head, "b": head + n, "t": time.monotonic()})
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=20)
                conn.request("POST", f"/videos/{LIVE}", body=body, headers={
                    "Authorization": f"Bearer {TOKEN}", "Content-Type": "video/mp2t"})
                r = conn.getresponse()
                text = r.read()
                t = time.monotonic()
                if r.status != 200:
                    rec({"ev": "live_nack", "st": r.status, "t": t})
                    head = None
                    time.sleep(0.1)
                    continue
                w = json.loads(text)["written"]
                if w["start"] != head or w["end"] != head + n:
                    rec({"ev": "live_gap", "want": head, "got": w["start"], "t": t})
                rec({"ev": "live_ack", "a": w["start"], "b": w["end"], "t": t})
                head = w["end"]
            except (OSError, http.client.HTTPException, ValueError, KeyError, RuntimeError) as ex:
                rec({"ev": "err", "t": time.monotonic(), "err": type(ex).__name__})
                if conn is not None:
                    conn.close()
                conn = None
                head = None
                if not stop.is_set():
                    time.sleep(0.1)

    org_pat = origin_pattern(a.seed)

    def reader(i):
        """Ranged GETs of the origin video: each fills the blocks it needs from the host's origin."""
        conn = None
        size = None
        while not stop.is_set():
            try:
                if size is None:
                    size = get_videos(a.port, ORIGIN).get("size") or a.origin_size
                n = int(2 ** rng.uniform(12, 21))
                s0 = rng.randrange(max(1, size - n))
                e0 = min(size, s0 + n)
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
                conn.request("GET", f"/videos/{ORIGIN}", headers={"Range": f"bytes={s0}-{e0 - 1}"})
                r = conn.getresponse()
                got = r.read()
                t = time.monotonic()
                if r.status == 206 and got == org_pat.bytes(s0, s0 + len(got)):
                    rec({"ev": "origin_read", "a": s0, "b": s0 + len(got), "t": t})
                elif r.status == 206:
                    rec({"ev": "origin_bad", "a": s0, "b": e0, "t": t})
                else:
                    rec({"ev": "origin_nack", "st": r.status, "t": t})
                    time.sleep(0.1)
            except (OSError, http.client.HTTPException, RuntimeError) as ex:
                rec({"ev": "err", "t": time.monotonic(), "err": type(ex).__name__})
                if conn is not None:
                    conn.close()
                conn = None
                if not stop.is_set():
                    time.sleep(0.1)

    def delete_in_commit():
        """Pause the PUTs, wait for those in flight, send the DELETE on its own thread and cut the
        power while its durable commit runs (before the answer, if it has not come yet)."""
        pause.set()
        t1 = time.monotonic() + 25
        while time.monotonic() < t1:
            with log_lock:
                if inflight[0] == 0:
                    break
            time.sleep(0.01)
        answer = {}

        def send():
            ts = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
                c.request("DELETE", f"/videos/{VIDEO}", headers={"Authorization": f"Bearer {TOKEN}"})
                r = c.getresponse()
                r.read()
                answer["ev"] = {"ev": "delete", "ts": ts, "t": time.monotonic(), "st": r.status}
            except (OSError, http.client.HTTPException) as ex:
                answer["ev"] = {"ev": "delete", "ts": ts, "t": time.monotonic(), "st": -1,
                                "err": type(ex).__name__}

        th = threading.Thread(target=send, daemon=True)
        th.start()
        # log-uniform from 1 ms: most cuts land while the commit runs, some after its answer
        time.sleep(min(a.delete_cut_max, 2 ** rng.uniform(-10, 0)))
        return th, answer

    def poller():
        """Watch vcache_commits_total: a commit is counted only after it is durable, and a video's
        next commit is created (its snapshot taken) only after the previous one is counted."""
        conn = None
        while not stop.is_set():
            ts = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read().decode()
                tr = time.monotonic()
                for line in body.splitlines():
                    if line.startswith("vcache_commits_total "):
                        rec({"ev": "commits", "ts": ts, "tr": tr, "n": int(line.split()[1])})
            except (OSError, http.client.HTTPException, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.1)

    if a.kind == "live":
        ths = [threading.Thread(target=publisher, daemon=True)]
    elif a.kind == "origin":
        ths = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(a.threads)]
    else:
        ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.threads)]
    ths.append(threading.Thread(target=poller, daemon=True))
    mth = threading.Thread(target=marker, daemon=True) if a.marker_port else None
    if mth:
        mth.start()
    t0 = time.monotonic()
    for t in ths:
        t.start()
    in_commit = None
    if a.kind == "delete-commit":
        time.sleep(max(0.0, t0 + a.delete_at - time.monotonic()))
        in_commit = delete_in_commit()
    elif a.delete_at is not None and a.delete_at < a.cut_after:
        time.sleep(max(0.0, t0 + a.delete_at - time.monotonic()))
        delete_slot()
    if in_commit is None:
        time.sleep(max(0.0, t0 + a.cut_after - time.monotonic()))
    if a.settle:
        # dm-log-writes run: the cuts are made later by replaying the log, so end cleanly enough
        # that the log holds everything (and its super block counts it: a mark updates it)
        stop.set()
        for t in ths:
            t.join(timeout=25)
        if mth:
            mark("end", 0, 0)
            marker_done.set()
            mth.join(timeout=60)
        time.sleep(a.settle)
    tcut = time.monotonic()
    try:
        os.kill(a.qemu_pid, signal.SIGKILL)
    except ProcessLookupError:
        rec({"ev": "note", "msg": "qemu already gone at the cut", "t": tcut})
    rec({"ev": "cut", "t": tcut})
    stop.set()
    if in_commit is not None:
        th, answer = in_commit
        th.join(timeout=60)
        ev = answer.get("ev") or {"ev": "delete", "ts": tcut, "t": tcut, "st": -1}
        rec(ev)
    for t in ths:
        t.join(timeout=25)
    with open(a.log, "w") as f:
        for ev in log:
            f.write(json.dumps(ev) + "\n")
    acks = [e for e in log if e["ev"] == "ack"]
    late = [e for e in acks if e["t"] > tcut]
    print(
        json.dumps(
            {
                "acked_puts": len(acks),
                "acked_bytes": sum(e["b"] - e["a"] for e in acks),
                "nacks": sum(1 for e in log if e["ev"] == "nack"),
                "errors": sum(1 for e in log if e["ev"] == "err"),
                "acks_after_cut": len(late),
                "delete": next(({"st": e["st"], "t": round(e["t"] - t0, 2)} for e in log
                                if e["ev"] == "delete" and 200 <= e["st"] < 300), None),
                "delete_cut": next(({"st": e["st"], "answered_before_cut": e["st"] > 0 and e["t"] <= tcut,
                                     "sent_s_before_cut": round(tcut - e["ts"], 2)}
                                    for e in log if e["ev"] == "delete" and a.kind == "delete-commit"), None),
                "live_acked_posts": sum(1 for e in log if e["ev"] == "live_ack"),
                "live_acked_bytes": sum(e["b"] - e["a"] for e in log if e["ev"] == "live_ack"),
                "origin_reads": sum(1 for e in log if e["ev"] == "origin_read"),
                "origin_bad_reads": sum(1 for e in log if e["ev"] == "origin_bad"),
                "load_s": round(tcut - t0, 2),
            }
        )
    )


# ---------------------------------------------------------------- injected EIO


def http_get(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def cmd_ready(argv):
    port, timeout = int(argv[0]), float(argv[1])
    t0 = time.monotonic()
    st, body = None, ""
    while time.monotonic() - t0 < timeout:
        try:
            st, body = http_get(port, "/readyz")
            if st == 200:
                print(body.strip())
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    print(f"ready: /readyz {st} after {timeout:.0f} s: {body.strip()}")
    sys.exit(1)


def unavailable_sync_failed(body):
    try:
        return any(u.get("id") == VIDEO and u.get("reason") == "sync_failed" for u in json.loads(body)["unavailable"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def metric_sync_failed(body):
    for line in body.splitlines():
        if line.startswith("vcache_video_unavailable{") and f'id="{VIDEO}"' in line and 'reason="sync_failed"' in line:
            try:
                return float(line.split()[-1]) == 1
            except ValueError:
                return False
    return False


def cmd_eio(argv):
    """Load, then switch the guest's data-file extents to the error target (control port), and check:
    /readyz turns 503 naming the video with reason sync_failed, /metrics says so too, vcache keeps
    serving (healthz, GET /videos), and no PUT sent after the 503 was seen gets a 2xx. Then restore
    the table and SIGKILL qemu; the log has the load log's format (check --log reads it)."""
    import argparse

    ap = argparse.ArgumentParser(prog="powercut.py eio")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ctl-port", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--round-seed", type=int, required=True)
    ap.add_argument("--qemu-pid", type=int, required=True)
    ap.add_argument("--before", type=float, default=3.0, help="seconds of load before the failure")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of load after /readyz reports it")
    ap.add_argument("--after-restore", type=float, default=3.0,
                    help="seconds of load after the device works again (vcache is not restarted)")
    ap.add_argument("--detect-timeout", type=float, default=20.0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--max-put", type=int, default=2 << 20)
    a = ap.parse_args(argv)

    pat = Pattern(a.seed)
    rng = random.Random(a.round_seed)
    v = get_videos(a.port)
    size = v["size"]
    alloc = Allocator(size, [(r["start"], r["end"]) for r in v["cached_ranges"]], rng, a.max_put)
    log, log_lock = [], threading.Lock()
    stop = threading.Event()
    problems = []

    def rec(ev):
        with log_lock:
            log.append(ev)

    def worker(i):
        conn = None
        while not stop.is_set():
            rg = alloc.take()
            if rg is None:
                time.sleep(0.05)
                continue
            s, e = rg
            body = pat.bytes(s, e)
            tsend = time.monotonic()
            rec({"ev": "send", "a": s, "b": e, "t": tsend, "w": i})
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=20)
                conn.request("PUT", f"/videos/{VIDEO}", body=body, headers={
                    "Authorization": f"Bearer {TOKEN}",
                    "Content-Range": f"bytes {s}-{e - 1}/{size}",
                    "Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                r.read()
                t = time.monotonic()
                if 200 <= r.status < 300:
                    rec({"ev": "ack", "a": s, "b": e, "t": t, "st": r.status, "ts": tsend})
                else:
                    rec({"ev": "nack", "a": s, "b": e, "t": t, "st": r.status, "ts": tsend})
                    alloc.release(s, e)
                    time.sleep(0.05)
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as ex:
                rec({"ev": "err", "a": s, "b": e, "t": time.monotonic(), "err": type(ex).__name__})
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)

    def poller():
        while not stop.is_set():
            ts = time.monotonic()
            try:
                st, body = http_get(a.port, "/metrics", 5)
                tr = time.monotonic()
                for line in body.splitlines():
                    if line.startswith("vcache_commits_total "):
                        rec({"ev": "commits", "ts": ts, "tr": tr, "n": int(line.split()[1])})
                st, body = http_get(a.port, "/readyz", 5)
                rec({"ev": "readyz", "ts": ts, "tr": time.monotonic(), "st": st,
                     "sync_failed": unavailable_sync_failed(body)})
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)

    def ctl(cmd):
        with socket.create_connection(("127.0.0.1", a.ctl_port), timeout=60) as c:
            f = c.makefile("rwb")
            f.write(cmd.encode() + b"\n")
            f.flush()
            return f.readline().decode(errors="replace").strip()

    ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.threads)]
    ths.append(threading.Thread(target=poller, daemon=True))
    t0 = time.monotonic()
    for t in ths:
        t.start()
    time.sleep(a.before)
    tf = time.monotonic()
    ans = ctl("fail")
    rec({"ev": "fail", "t": tf, "answer": ans})
    if not ans.startswith("ok"):
        problems.append(f"the guest could not switch the data file to the error target: {ans!r}")
    t_seen = None
    while ans.startswith("ok") and time.monotonic() - tf < a.detect_timeout:
        with log_lock:
            hit = [e for e in log if e["ev"] == "readyz" and e["st"] == 503 and e["sync_failed"] and e["ts"] >= tf]
        if hit:
            t_seen = hit[0]["tr"]
            break
        time.sleep(0.1)
    if ans.startswith("ok") and t_seen is None:
        problems.append(f"/readyz did not report {VIDEO} sync_failed within {a.detect_timeout:.0f} s of the failure")
    time.sleep(a.after)
    # the state while the device still fails: vcache serves, reports the video, reads go on
    try:
        st, _ = http_get(a.port, "/healthz")
        if st != 200:
            problems.append(f"/healthz {st} after the failure")
        st, body = http_get(a.port, "/readyz")
        if st != 503 or not unavailable_sync_failed(body):
            problems.append(f"/readyz after the failure: {st} {body.strip()!r} (expected 503 naming {VIDEO} sync_failed)")
        readyz_body = body.strip()
        st, body = http_get(a.port, "/metrics")
        if not metric_sync_failed(body):
            problems.append(f'/metrics has no vcache_video_unavailable{{id="{VIDEO}",reason="sync_failed"}} 1')
        get_videos(a.port)
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as ex:
        problems.append(f"vcache did not answer after the failure ({type(ex).__name__}: {ex}): did it crash?")
        readyz_body = ""
    if not alive(a.qemu_pid):
        problems.append("qemu is gone")
    # the device works again, vcache is not restarted: a retried sync would now succeed without the
    # pages whose writeback failed, so the video must stay poisoned (the recovery is a restart)
    tr = time.monotonic()
    rans = ctl("restore")
    rec({"ev": "restore", "t": tr, "answer": rans})
    if rans != "ok":
        problems.append(f"the guest could not restore the table: {rans!r}")
    time.sleep(a.after_restore)
    stop.set()
    for t in ths:
        t.join(timeout=25)
    try:
        st, body = http_get(a.port, "/readyz")
        if st != 503 or not unavailable_sync_failed(body):
            problems.append(f"/readyz after the device was restored: {st} {body.strip()!r} (expected 503 until a restart)")
    except (OSError, http.client.HTTPException) as ex:
        problems.append(f"vcache did not answer after the device was restored ({type(ex).__name__}: {ex})")
    # no PUT sent after the 503 was seen may be acknowledged
    late_acks, late_5xx, late_other, between = 0, 0, 0, 0
    for e in log:
        if e["ev"] not in ("ack", "nack"):
            continue
        sent = e["ts"]
        if e["ev"] == "ack" and tf <= e["t"] and (t_seen is None or sent <= t_seen):
            between += 1
        if t_seen is None or sent <= t_seen:
            continue
        if e["ev"] == "ack":
            late_acks += 1
        elif 500 <= e["st"] < 600:
            late_5xx += 1
        else:
            late_other += 1
    if late_acks:
        problems.append(f"{late_acks} PUTs sent after /readyz reported the sync failure were acknowledged with 2xx")
    if t_seen is not None and late_5xx == 0:
        problems.append("no PUT was answered 5xx after the sync failure (nothing was tested)")
    if late_other:
        problems.append(f"{late_other} PUTs sent after the sync failure got a non-5xx error status")
    statuses = sorted({e["st"] for e in log if e["ev"] == "nack" and t_seen is not None and e["ts"] > t_seen})
    tcut = time.monotonic()
    try:
        os.kill(a.qemu_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    rec({"ev": "cut", "t": tcut})
    with open(a.log, "w") as f:
        for ev in log:
            f.write(json.dumps(ev) + "\n")
    acks = [e for e in log if e["ev"] == "ack"]
    print(json.dumps({
        "acked_puts": len(acks),
        "acked_before_failure": sum(1 for e in acks if e["t"] < tf),
        "acked_between_failure_and_report": between,
        "detect_s": round(t_seen - tf, 2) if t_seen is not None else None,
        "after_report_puts_5xx": late_5xx,
        "after_report_statuses": statuses,
        "after_report_acked": late_acks,
        "acked_after_restore": sum(1 for e in acks if e["t"] >= tr),
        "last_ack_after_failure_s": round(max((e["t"] - tf for e in acks if e["t"] >= tf), default=0.0), 2),
        "fail_answer": ans,
        "readyz": readyz_body,
        "load_s": round(tcut - t0, 2),
        "violations": len(problems),
        "problems": problems,
    }))


# ---------------------------------------------------------------- dm-log-writes

LOG_FLUSH, LOG_FUA, LOG_DISCARD, LOG_MARK = 1, 2, 4, 8
WRITE_LOG_MAGIC = 0x6A736677736872


def lw_entries(logpath):
    """The entries of a dm-log-writes log: (index, flags, sector, nr_sectors, data_offset, mark)."""
    out = []
    with open(logpath, "rb") as f:
        magic, version, nr, ssz = struct.unpack("<QQQI", f.read(28))
        if magic != WRITE_LOG_MAGIC:
            raise RuntimeError(f"{logpath}: not a dm-log-writes log (magic {magic:#x})")
        pos = ssz
        for i in range(nr):
            f.seek(pos)
            sector, nsec, flags, dlen = struct.unpack("<QQQQ", f.read(32))
            mark = None
            if flags & LOG_MARK:
                mark = f.read(dlen).decode(errors="replace")
            out.append((i, flags, sector, nsec, pos + ssz, mark))
            pos += ssz
            if not flags & (LOG_DISCARD | LOG_MARK):
                pos += nsec * ssz
    return out, ssz


def cmd_lwinfo(argv):
    """lwinfo LOG LOADLOG NPOINTS SEED OUTDIR: pick replay points (flush or FUA entries), write for
    each the acknowledged ranges whose mark precedes it (OUTDIR/require-K.json); print the points."""
    logpath, loadlog, npoints, seed, outdir = argv[0], argv[1], int(argv[2]), argv[3], argv[4]
    ents, _ = lw_entries(logpath)
    flushes = [e[0] for e in ents if e[1] & (LOG_FLUSH | LOG_FUA)]
    marks = {e[5]: e[0] for e in ents if e[5] is not None}
    acks = [e for e in read_log(loadlog) if e["ev"] == "ack"]
    rng = random.Random(f"lw:{seed}")
    # the interesting points come after the first acknowledgement's mark (before it, nothing is promised)
    first_mark = min((i for name, i in marks.items() if name.startswith("ack")), default=0)
    cand = [k for k in flushes[:-1] if k > first_mark] or flushes[:-1]
    pts = sorted(set(rng.sample(cand, min(npoints - 1, len(cand))) + flushes[-1:]))
    for k in pts:
        req = [(e["a"], e["b"]) for e in acks if marks.get(f"ack{e['a']}-{e['b']}", 1 << 62) < k]
        with open(os.path.join(outdir, f"require-{k}.json"), "w") as f:
            json.dump(norm(req), f)
    marked = sum(1 for e in acks if f"ack{e['a']}-{e['b']}" in marks)
    print(json.dumps({"entries": len(ents), "flush_points": len(flushes), "marks": len(marks),
                      "acks": len(acks), "acks_marked": marked, "points": pts}))


def cmd_lwreplay(argv):
    """lwreplay LOG IMAGE FROM TO: apply entries FROM..TO (inclusive) of LOG to IMAGE."""
    logpath, image, lo, hi = argv[0], argv[1], int(argv[2]), int(argv[3])
    ents, ssz = lw_entries(logpath)
    with open(logpath, "rb") as lg, open(image, "r+b") as img:
        for i, flags, sector, nsec, doff, mark in ents[lo : hi + 1]:
            if flags & LOG_MARK or nsec == 0:
                continue
            img.seek(sector * ssz)
            if flags & LOG_DISCARD:
                img.write(b"\0" * (nsec * ssz))  # a discard may read back as zeros
            else:
                lg.seek(doff)
                img.write(lg.read(nsec * ssz))


def cmd_origin(argv):
    """The guest's origin: /film of --size bytes, OriginPattern(--seed), one Range per request."""
    import argparse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ap = argparse.ArgumentParser(prog="powercut.py origin")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    a = ap.parse_args(argv)
    pat = origin_pattern(a.seed)
    etag = f'"pc-{a.seed}-{a.size}"'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, body):
            if self.path.split("?")[0] != "/film":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = 0, a.size - 1
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            partial = rng is not None and (if_range is None or if_range == etag)
            if partial:
                spec = rng.removeprefix("bytes=")
                lo, _, hi = spec.partition("-")
                if lo == "":
                    first = max(0, a.size - int(hi))
                else:
                    first = int(lo)
                    last = min(last, int(hi)) if hi else last
                if first > last or first >= a.size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{a.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{a.size}")
            else:
                self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            self.end_headers()
            pos = first
            while body and pos <= last:
                end = min(last + 1, pos + (1 << 20))
                self.wfile.write(pat.bytes(pos, end))
                pos = end

        def do_GET(self):
            self.answer(True)

        def do_HEAD(self):
            self.answer(False)

    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.serve_forever()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    {
        "kmods": cmd_kmods,
        "cpio": cmd_cpio,
        "freeport": cmd_freeport,
        "wait": cmd_wait,
        "check": cmd_check,
        "load": cmd_load,
        "eio": cmd_eio,
        "ready": cmd_ready,
        "lwinfo": cmd_lwinfo,
        "lwreplay": cmd_lwreplay,
        "origin": cmd_origin,
    }[cmd](rest)


if __name__ == "__main__":
    main()
