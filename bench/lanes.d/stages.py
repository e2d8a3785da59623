#!/usr/bin/env python3
"""bench/lanes.d/stages.py WORK PHASE [UNTIL_NS] -- where a transactional message's time went.

Joins, per message of PHASE (WORK/PHASE.tx: "id commit_ns backend_pid", committed
before UNTIL_NS when given): the NOTIFYs the idle LISTEN-only probe read
(WORK/listen: "pid payload ns"), the scheduler's sched_trace lines (WORK/scheduler.log:
"notify", "loaded", "lease") and the simulator's receipts (WORK/receipts).  The i-th
NOTIFY of the enqueuer's backend is its i-th commit (one connection, one message per
transaction).  Prints a markdown table of p50/p90/p99 per stage, in ms.
"""
import re
import sys
from collections import defaultdict


def pct(vals, p):
    if not vals:
        return float("nan")
    v = sorted(vals)
    i = max(0, min(len(v) - 1, int(len(v) * p + 0.999999) - 1))
    return v[i]


def main():
    work, phase = sys.argv[1], sys.argv[2]
    until = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else 0
    msgs = []
    for line in open(f"{work}/{phase}.tx"):
        f = line.split()
        msgs.append((int(f[0]), int(f[1]), int(f[2]) if len(f) > 2 else 0))
    probe = defaultdict(list)
    try:
        for line in open(f"{work}/listen"):
            f = line.split()
            probe[int(f[0])].append(int(f[2]) / 1000)
    except FileNotFoundError:
        pass
    loop = defaultdict(list)
    loaded, leased = {}, {}
    rx_n = re.compile(r"trace: notify tenant=\S+ pid=(\d+) at_us=(\d+)")
    rx_l = re.compile(r"trace: loaded tenant=\S+ batch=(\d+) lane=transactional notified_us=\d+ sent_us=(\d+) loaded_us=(\d+)")
    rx_s = re.compile(r"trace: lease=\d+ tenant=\S+ batch=(\d+) .* at_us=(\d+)")
    for line in open(f"{work}/scheduler.log"):
        if "trace:" not in line:
            continue
        m = rx_n.search(line)
        if m:
            loop[int(m[1])].append(int(m[2]))
            continue
        m = rx_l.search(line)
        if m:
            loaded.setdefault(int(m[1]), (int(m[2]), int(m[3])))
            continue
        m = rx_s.search(line)
        if m:
            leased.setdefault(int(m[1]), int(m[2]))
    receipt = {}
    for line in open(f"{work}/receipts"):
        f = line.split()
        if len(f) >= 6 and f[2] == "tx":
            receipt[int(f[5])] = int(f[0]) / 1000
    seen = defaultdict(int)
    st = defaultdict(list)
    names = [
        ("probe", "COMMIT -> NOTIFY read by an idle LISTEN-only connection (another process)"),
        ("loop", "COMMIT -> the loop takes the NOTIFY"),
        ("wait", "loop took the NOTIFY -> the read covering it sent (0 if sent before)"),
        ("cwait", "COMMIT -> the read covering it sent (0 if sent before)"),
        ("read", "read sent -> rows loaded (off the loop)"),
        ("lease", "loaded -> leased"),
        ("send", "leased -> simulator's receipt (ZeroMQ, worker, HTTP)"),
        ("total", "COMMIT -> receipt"),
    ]
    for mid, cns, pid in msgs:
        k = seen[pid]
        seen[pid] += 1
        if until and cns >= until:
            continue
        c = cns / 1000
        b = mid // 4096
        if k < len(probe[pid]):
            st["probe"].append(probe[pid][k] - c)
        lu = loop[pid][k] if k < len(loop[pid]) else None
        if lu is not None:
            st["loop"].append(lu - c)
        if b in loaded:
            s_us, l_us = loaded[b]
            if lu is not None:
                st["wait"].append(max(0, s_us - lu))
            st["cwait"].append(max(0, s_us - c))
            st["read"].append(l_us - s_us)
            if b in leased:
                st["lease"].append(leased[b] - l_us)
        if b in leased and mid in receipt:
            st["send"].append(receipt[mid] - leased[b])
        if mid in receipt:
            st["total"].append(receipt[mid] - c)
    print(f"{phase}: per stage, ms (n = messages with that stage traced)")
    print("| stage | n | p50 | p90 | p99 | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, label in names:
        v = st[key]
        print(f"| {label} | {len(v)} | " + " | ".join(f"{pct(v, p) / 1000:.1f}" for p in (0.5, 0.9, 0.99, 1.0)) + " |")
    slow = [l for l in open(f"{work}/scheduler.log") if "trace: slow turn" in l]
    tot = defaultdict(int)
    for l in slow:
        for k, v in re.findall(r" (\w+)=(\d+)", l.split("slow turn", 1)[1]):
            tot[k] += int(v)
    if slow:
        print(f"slow loop turns (whole run): {len(slow)}, " + ", ".join(f"{k} {v} ms" for k, v in tot.items() if v))


if __name__ == "__main__":
    main()
