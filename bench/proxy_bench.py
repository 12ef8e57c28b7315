#!/usr/bin/env python3
"""Proxy benchmark: tandem proxy vs haproxy and nginx (Debian's packages), on loopback.

One origin (nginx, one worker, `return 200` with a 1 KB body) and these paths to it:

    direct          client -> origin
    tandem x1       client -> tandem proxy -> origin
    tandem x2       client -> tandem proxy -> tandem proxy -> origin   (client + server sidecar)
    haproxy x1/x2   the same through haproxy
    nginx x1/x2     the same through nginx (proxy_pass with upstream keep-alive)

Every proxy process gets 2 worker threads/processes (Istio's benchmark setup) and no access
log. In each round, every path is measured in a shuffled order (interleaved, so a noisy
neighbour hits them all alike):
  - latency at a fixed 1000 requests/s over 4 keep-alive connections (Istio's setup):
    p50/p90/p99 from request written to response read (`tandem-loadgen --rate`);
  - the proxy processes' CPU time during that phase, per 1000 requests;
  - maximum throughput over 64 connections (`tandem-loadgen`, closed loop).
Idle RSS is read once every proxy listens, before any traffic; peak RSS (VmHWM) at the end.
The report gives medians over rounds and the latency each proxy adds over `direct`.

Usage: bench/proxy_bench.py [--tandem target/release/tandem]
                            [--loadgen target/release/tandem-loadgen]
                            [--rounds 5] [--duration 5] [--max-duration 3]
                            [--only tandem,haproxy,nginx] [--access-log]
"""

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ORIGIN = 18080
BODY = "x" * 1024


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"port {port} not listening after {timeout}s")


def nginx_conf(tmp, name, server_block, workers):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    conf = f"""
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    {server_block}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path]


def origin_cmd(tmp):
    block = f"""
    server {{
        listen 127.0.0.1:{ORIGIN} reuseport;
        location / {{ default_type text/plain; return 200 "{BODY}"; }}
    }}"""
    return nginx_conf(tmp, "origin", block, 1)


def nginx_proxy_cmd(tmp, listen, upstream):
    block = f"""
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 100000000; }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}"""
    return nginx_conf(tmp, f"nginx-{listen}", block, 2)


def haproxy_cmd(tmp, listen, upstream):
    path = os.path.join(tmp, f"haproxy-{listen}.cfg")
    with open(path, "w") as f:
        f.write(f"""
global
    nbthread 2
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend f
    bind 127.0.0.1:{listen}
    default_backend b
backend b
    server origin 127.0.0.1:{upstream}
""")
    return ["haproxy", "-db", "-f", path]


def tandem_cmd(tandem, tmp, listen, upstream, access_log):
    cmd = [tandem, "proxy", "--listen", f"127.0.0.1:{listen}",
           "--upstream", f"127.0.0.1:{upstream}", "--workers", "2"]
    if access_log:
        cmd += ["--access-log", os.path.join(tmp, f"access-{listen}.log")]
    return cmd


def tree_pids(pid):
    """The process and its descendants (nginx forks its workers)."""
    pids = [pid]
    for p in pids:
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def cpu_ns(pids):
    """CPU time of every thread of these processes, in ns (schedstat: ns resolution)."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def status_kb(pids, field):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Path:
    def __init__(self, name, port, procs):
        self.name, self.port, self.procs = name, port, procs
        self.rounds = []

    @property
    def hops(self):
        return len(self.procs)

    def pids(self):
        return [p for proc in self.procs for p in tree_pids(proc.pid)]


def loadgen(exe, port, *args):
    out = subprocess.run([exe, f"127.0.0.1:{port}", *map(str, args)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"loadgen against :{port} failed: {out.stdout} {out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default="target/release/tandem")
    ap.add_argument("--loadgen", default="target/release/tandem-loadgen")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--max-duration", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--only", default="tandem,haproxy,nginx")
    ap.add_argument("--access-log", action="store_true",
                    help="tandem proxies write a TEXT access log to a file")
    args = ap.parse_args()
    tandem = os.path.abspath(args.tandem)
    lg = os.path.abspath(args.loadgen)
    kinds = args.only.split(",")
    for tool in ["nginx"] + [k for k in kinds if k == "haproxy"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install {tool}")

    tmp = tempfile.mkdtemp(prefix="tandem-proxy-bench-")
    procs = []

    def spawn(cmd, port):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_port(port, p)
        return p

    try:
        spawn(origin_cmd(tmp), ORIGIN)
        paths = [Path("direct", ORIGIN, [])]
        base = 18100
        for kind in kinds:
            for hops in (1, 2):
                base += 100
                chain = []
                # Build from the origin side outwards: the last hop talks to the origin.
                ports = [base + i for i in range(hops)]
                for i in reversed(range(hops)):
                    listen = ports[i]
                    upstream = ports[i + 1] if i + 1 < hops else ORIGIN
                    if kind == "tandem":
                        cmd = tandem_cmd(tandem, tmp, listen, upstream, args.access_log)
                    elif kind == "haproxy":
                        cmd = haproxy_cmd(tmp, listen, upstream)
                    else:
                        cmd = nginx_proxy_cmd(tmp, listen, upstream)
                    chain.insert(0, spawn(cmd, listen))
                paths.append(Path(f"{kind} x{hops}", ports[0], chain))
        time.sleep(0.5)
        # Per proxy: the RSS of all its processes (nginx: master + workers) over the hops.
        idle_rss = {p.name: status_kb(p.pids(), "VmRSS") / max(1, p.hops) for p in paths}

        for r in range(args.rounds):
            order = paths[:]
            random.shuffle(order)
            for p in order:
                pids = p.pids()
                c0 = cpu_ns(pids)
                fixed = loadgen(lg, p.port, "--rate", args.rate, "-c", 4,
                                "--duration", args.duration)
                c1 = cpu_ns(pids)
                peak = loadgen(lg, p.port, "-c", 64, "--duration", args.max_duration)
                cpu_per_1000 = (c1 - c0) / 1e9 / (fixed["requests"] / 1000.0)
                p.rounds.append({"fixed": fixed, "max": peak, "cpu_per_1000": cpu_per_1000})
                print(f"round {r + 1} {p.name:12s} p50 {fixed['p50_us']:7.1f} "
                      f"p90 {fixed['p90_us']:7.1f} p99 {fixed['p99_us']:7.1f} µs  "
                      f"max {peak['rps']:9.0f} rps  cpu/1000 {cpu_per_1000 * 1000:6.1f} ms",
                      file=sys.stderr, flush=True)

        peak_rss = {p.name: status_kb(p.pids(), "VmHWM") / max(1, p.hops) for p in paths}
        direct = paths[0]

        def med(p, f):
            return statistics.median(f(x) for x in p.rounds)

        def added(p, q):
            # Per round, so both sides of the difference share the round's noise.
            return statistics.median(
                (x["fixed"][q] - d["fixed"][q]) / p.hops for x, d in zip(p.rounds, direct.rounds))

        print(f"\nProxy benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
              f"{os.cpu_count()} CPUs, {platform.release()}; {args.rounds} rounds, "
              f"{args.rate:.0f} rps x {args.duration:.0f} s over 4 connections, "
              f"max throughput 64 connections x {args.max_duration:.0f} s; medians over rounds"
              + ("; tandem with access log" if args.access_log else ""))
        print()
        print("| path | p50 µs | p90 µs | p99 µs | added/proxy p50 | added/proxy p90 "
              "| added/proxy p99 | max rps (64 conns) | CPU s/1000 req per proxy "
              "| idle RSS MB per proxy | peak RSS MB per proxy |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for p in paths:
            f = lambda q: med(p, lambda x: x["fixed"][q])  # noqa: E731
            if p.hops:
                add = [f"+{added(p, q):.1f}" for q in ("p50_us", "p90_us", "p99_us")]
                cpu = f"{med(p, lambda x: x['cpu_per_1000']) / p.hops:.4f}"
                rss = f"{idle_rss[p.name] / 1024:.1f}"
                hwm = f"{peak_rss[p.name] / 1024:.1f}"
            else:
                add, cpu, rss, hwm = ["-"] * 3, "-", "-", "-"
            print(f"| {p.name} | {f('p50_us'):.1f} | {f('p90_us'):.1f} | {f('p99_us'):.1f} | "
                  f"{' | '.join(add)} | {med(p, lambda x: x['max']['rps']):.0f} | {cpu} | "
                  f"{rss} | {hwm} |")
        errors = sum(x["fixed"]["errors"] + x["max"]["errors"] + x["fixed"]["non_2xx"]
                     for p in paths for x in p.rounds)
        print(f"\nerrors/non-2xx over all runs: {errors}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
