#!/usr/bin/env python3
"""Helpers of bench/compare.sh: sample a server's processes from /proc, read its memory,
turn the old `sluice-bench rtmp-play` text into the `load` JSON shape, print the table.

  measure.py sample --out F.jsonl --interval S (--pgid G | --nginx-pidfile F) --client PID
                    [--port P ...] [--pid NAME=PID ...]
  measure.py mem (--pgid G | --nginx-pidfile F) > mem.json
  measure.py legacy-json bench.txt > load.json
  measure.py table RUNDIR

Standard library only. A server's processes: Sluice = every process of the controller's
process group (connection processes come and go); nginx = the master (pid file) and every
process whose parent is the master (workers).
"""
import json
import os
import re
import signal
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def stat_fields(pid):
    """Fields after the comm of /proc/PID/stat (index 0 = state), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode("latin-1")
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def all_stats():
    """{pid: fields} of every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = stat_fields(d)
            if f is not None:
                out[int(d)] = f
    return out


def server_pids(stats, pgid=None, pidfile=None):
    if pgid is not None:
        return [p for p, f in stats.items() if int(f[2]) == pgid]
    try:
        master = int(open(pidfile).read().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    if master not in stats:
        return []
    return [master] + [p for p, f in stats.items() if int(f[1]) == master]


def ticks(pid, f):
    """CPU time of every thread of `pid`, in clock ticks (float).

    From /proc/PID/task/*/schedstat (run time in ns, exact), not utime+stime: those are
    sampled at the scheduler tick, and processes that run in short bursts between ticks (a
    Sluice viewer woken per packet) are charged far less than they ran (8x less, measured).
    Falls back to utime+stime when schedstat is missing."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return int(f[11]) + int(f[12])
    return total * CLK / 1e9


def established(ports):
    """Established TCP connections whose local port is one of `ports` (server side)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            if len(parts) > 3 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) in ports:
                n += 1
    return n


def machine_cpu():
    """(busy, total) jiffies of the whole machine."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def cmd_sample(args):
    """Every `interval` s, one JSON line: the server's cumulative CPU ticks (every process
    ever seen counts with its latest ticks, so processes that appear are counted whole and a
    process that exits keeps what it had used at its last sample), its process count, the
    client's ticks, server-side established connections, machine busy/total jiffies."""
    out = open(args["out"][0], "a", buffering=1)
    seen = {}  # (pid, starttime) -> latest ticks
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    extra = dict(x.split("=", 1) for x in args.get("pid", []))
    ports = {int(p) for p in args.get("port", [])}
    interval = float(args.get("interval", ["1"])[0])
    client = int(args["client"][0]) if "client" in args else None
    pgid = int(args["pgid"][0]) if "pgid" in args else None
    pidfile = args["nginx-pidfile"][0] if "nginx-pidfile" in args else None
    nxt = time.time()
    while not stop:
        t = time.time()
        stats = all_stats()
        pids = server_pids(stats, pgid, pidfile)
        for p in pids:
            f = stats[p]
            seen[(p, f[19])] = ticks(p, f)
        busy, total = machine_cpu()
        rec = {
            "t": round(t, 3),
            "srv_ticks": sum(seen.values()),
            "srv_procs": len(pids),
            "conns": established(ports) if ports else None,
            "busy": busy,
            "total": total,
        }
        if client is not None:
            rec["cli_ticks"] = ticks(client, stats[client]) if client in stats else None
        for name, p in extra.items():
            p = int(p)
            rec[name + "_ticks"] = ticks(p, stats[p]) if p in stats else None
        out.write(json.dumps(rec) + "\n")
        if client is not None and client not in stats:
            break
        nxt += interval
        while not stop and time.time() < nxt:
            time.sleep(min(0.1, max(0.0, nxt - time.time())))


def cmd_mem(args):
    """Sum of RSS and PSS (smaps_rollup) over the server's processes, KiB."""
    stats = all_stats()
    pgid = int(args["pgid"][0]) if "pgid" in args else None
    pidfile = args["nginx-pidfile"][0] if "nginx-pidfile" in args else None
    pids = server_pids(stats, pgid, pidfile)
    rss = pss = n = 0
    by_comm = {}
    for p in pids:
        try:
            txt = open(f"/proc/{p}/smaps_rollup").read()
            comm = open(f"/proc/{p}/comm").read().strip()
            title = open(f"/proc/{p}/cmdline").read().split("\0")[0]
            if title.startswith(comm + ":"):  # nginx: "nginx: worker process"
                comm = title.split(" process")[0] + " process"
        except OSError:
            continue
        r = int(re.search(r"^Rss:\s+(\d+)", txt, re.M).group(1))
        s = int(re.search(r"^Pss:\s+(\d+)", txt, re.M).group(1))
        rss += r
        pss += s
        n += 1
        c = by_comm.setdefault(comm, {"procs": 0, "rss_kb": 0, "pss_kb": 0})
        c["procs"] += 1
        c["rss_kb"] += r
        c["pss_kb"] += s
    ports = {int(p) for p in args.get("port", [])}
    print(json.dumps({"t": round(time.time(), 3), "procs": n, "rss_kb": rss, "pss_kb": pss,
                      "conns": established(ports) if ports else None, "by_comm": by_comm}))


def cmd_legacy_json(args):
    """`sluice-bench rtmp-play` text -> the subset of the `load` JSON the table reads."""
    txt = open(args["_"][0]).read()

    def dist(name):
        m = re.search(re.escape(name) + r"\s+n=(\d+)\s+min=(\S+) p50=(\S+) p99=(\S+) max=(\S+) ms", txt)
        if not m:
            return None
        f = lambda x: None if x == "NaN" else float(x)
        return {"p50": f(m.group(3)), "p99": f(m.group(4)), "max": f(m.group(5)), "n": int(m.group(1))}

    m = re.search(r"requested=(\d+) played=(\d+) clean=(\d+)", txt)
    d = re.search(r"delivered video frames\s+min=(\S+)% avg=(\S+)%", txt)
    fl = lambda x: None if x in ("NaN", "nan") else float(x)
    print(json.dumps({"legacy": "sluice-bench rtmp-play", "rtmp": {
        "players": int(m.group(1)) if m else None,
        "connected": int(m.group(2)) if m else None,
        "errors": {"other": (int(m.group(1)) - int(m.group(3))) if m else None},
        "delivered_pct": fl(d.group(2)) if d else None,
        "min_delivered_pct": fl(d.group(1)) if d else None,
        "first_frame_ms": dist("first video frame byte"),
        "first_key_ms": dist("first keyframe byte"),
        "latency_ms": None,
    }, "publishers": None, "hls": None}))


# ---------------------------------------------------------------- table

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pick_window(samples, t_open, t_close, by_conns):
    """The steady window: samples from t_open to t_close; where every load connection is
    persistent (RTMP players, publishers), narrowed to the first run of samples with at
    least 95% of the peak of server-side established connections. (first, last) or None."""
    inside = [s for s in samples if t_open - 0.05 <= s["t"] <= t_close + 0.05]
    cs = [s["conns"] for s in inside if s.get("conns") is not None]
    if by_conns and cs and max(cs) > 0:
        floor = 0.95 * max(cs)
        run = []
        for s in inside:
            if s.get("conns") is not None and s["conns"] >= floor:
                run.append(s)
            elif run:
                break
        inside = run
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def fmt(x, nd=1, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "–"
    return f"{x:.{nd}f}{unit}"


def pair(d, key, nd=0):
    d = (d or {}).get(key) or {}
    if not d:
        return "–"
    return f"{fmt(d.get('p50'), nd)} / {fmt(d.get('p99'), nd)}"


def errsum(e):
    if not e:
        return 0
    return sum(v for v in e.values() if isinstance(v, (int, float)))


def mib(kb):
    return kb / 1024.0


def cmd_table(args):
    rundir = args["_"][0]
    metas = []
    for name in sorted(os.listdir(rundir)):
        if name.endswith(".meta.json"):
            m = load_json(os.path.join(rundir, name))
            if m:
                metas.append(m)
    order = {"rtmp": 0, "hls": 1, "publishers": 2}
    metas.sort(key=lambda m: (order.get(m["scenario"], 9), m["order"]))
    rows = []
    notes = []
    breakdown = []
    for m in metas:
        base = os.path.join(rundir, m["tag"])
        load = load_json(base + ".load.json") or {}
        mem = load_json(base + ".mem.json") or {}
        samples = []
        try:
            for ln in open(base + ".samples.jsonl"):
                samples.append(json.loads(ln))
        except (OSError, ValueError):
            pass
        units = m["units"]
        w = pick_window(samples, m["t_client"] + m["open_s"], m["t_exit"] - m["end_margin_s"],
                        m["scenario"] != "hls")
        cpu_s = cpu_pct = cpu_vm = cli_pct = busy = conns = wlen = None
        if w:
            a, b = w
            wlen = b["t"] - a["t"]
            cpu_s = (b["srv_ticks"] - a["srv_ticks"]) / CLK
            cpu_pct = 100.0 * cpu_s / wlen
            cpu_vm = cpu_s / units / (wlen / 60.0) if units else None
            if a.get("cli_ticks") is not None and b.get("cli_ticks") is not None:
                cli_pct = 100.0 * (b["cli_ticks"] - a["cli_ticks"]) / CLK / wlen
            if b["total"] > a["total"]:
                busy = 100.0 * (b["busy"] - a["busy"]) / (b["total"] - a["total"])
            cs = [s["conns"] for s in samples if a["t"] <= s["t"] <= b["t"] and s.get("conns") is not None]
            conns = (min(cs), max(cs)) if cs else None
        else:
            notes.append(f"{m['tag']}: no CPU window (client ran {fmt(m.get('t_exit', 0) - m['t_client'])} s; "
                         f"window wanted from {m['open_s']:.1f} s after its start to {m['end_margin_s']} s before its end)")
        r = load.get("rtmp") or {}
        h = load.get("hls") or {}
        p = load.get("publishers") or {}
        sc = m["scenario"]
        if sc == "rtmp":
            what = f"{units} RTMP players"
            conn = f"{r.get('connected', '–')}/{r.get('players', units)}"
            deliv = f"{fmt(r.get('delivered_pct'), 1)} (min {fmt(r.get('min_delivered_pct'), 1)})"
            errs = errsum(r.get("errors")) + errsum(p.get("errors"))
        elif sc == "hls":
            what = f"{units} HLS players"
            conn = f"{h.get('connected', '–')}/{h.get('players', units)}"
            if h.get("delivered_pct") is not None:
                deliv = fmt(h.get("delivered_pct"), 1)
            elif h.get("segments") is not None:
                deliv = f"{h.get('segments')} segments, {h.get('stalls', '?')} stalls"
            else:
                deliv = "–"
            errs = errsum(h.get("errors")) + errsum(p.get("errors"))
        else:
            what = f"{units} publishers"
            conn = f"{p.get('count', units)}"
            deliv = f"{p.get('messages')} msgs" if p.get("messages") is not None else "–"
            errs = errsum(p.get("errors"))
        mem_ok = bool(mem.get("procs"))
        rows.append([
            m["server_label"], what, conn, deliv, str(errs),
            fmt(cpu_vm, 4), fmt(cpu_pct, 1, "%"),
            (f"{fmt(mib(mem['rss_kb']), 1)} / {fmt(mem['rss_kb'] / units, 0)} KiB" if mem_ok and units else "–"),
            (f"{fmt(mib(mem['pss_kb']), 1)} / {fmt(mem['pss_kb'] / units, 0)} KiB" if mem_ok and units else "–"),
            pair(r, "first_frame_ms"), pair(r, "first_key_ms"), pair(r, "latency_ms"),
            pair(h, "segment_fetch_ms") if sc != "rtmp" else "–",
            str(h.get("listed_but_missing", "–")) if sc == "hls" else "–",
            str(mem.get("procs", "–")),
            f"{conns[0]}–{conns[1]}" if conns else "–",
            fmt(cli_pct, 1, "%"), fmt(busy, 0, "%"), fmt(wlen, 1),
            str(m.get("client_exit", "?")),
        ])
        if m.get("note"):
            notes.append(f"{m['tag']}: {m['note']}")
        if mem.get("by_comm"):
            parts = ", ".join(f"{c} ×{v['procs']} {mib(v['rss_kb']):.1f}/{mib(v['pss_kb']):.1f}"
                              for c, v in sorted(mem["by_comm"].items(), key=lambda kv: -kv[1]["pss_kb"]))
            breakdown.append(f"- {m['tag']}: {parts}")
    head = ["server", "load", "connected", "delivered %", "errors",
            "CPU s / viewer-min (publishers: per publisher)", "server CPU (one core = 100%)",
            "RSS total MiB / per viewer", "PSS total MiB / per viewer",
            "first frame ms p50 / p99", "first key ms p50 / p99", "added latency ms p50 / p99",
            "HLS segment fetch ms p50 / p99", "HLS listed but missing",
            "server procs", "server conns", "client CPU", "machine busy", "window s", "client exit"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    if breakdown:
        print()
        print("Server processes mid-window (name ×count RSS/PSS MiB):")
        print()
        for b in breakdown:
            print(b)


def parse(argv):
    args = {"_": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            args.setdefault(a[2:], []).append(argv[i + 1])
            i += 2
        else:
            args["_"].append(a)
            i += 1
    return args


if __name__ == "__main__":
    cmd, rest = sys.argv[1], parse(sys.argv[2:])
    {"sample": cmd_sample, "mem": cmd_mem, "legacy-json": cmd_legacy_json,
     "table": cmd_table}[cmd](rest)
