#!/usr/bin/env python3
"""Benchmarks for `tandem play` (run as root): prints min/median/max over several runs.

  (a) play start -> the pod's `Running` row, for a pod with one regular init container,
      one sidecar with an exec startup probe and one main container;
  (b) the main container's exit -> the `0/2 Completed` row (phase Succeeded) for the
      blog's exiting pod;
  (c) 200 such pods at once: time until all are Running, and the agent's peak RSS and
      CPU seconds (the `tandem play` process; containers run under their own shims).

Usage: bench/play_bench.py [--tandem target/release/tandem] [--runs 15] [--pods 200]
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

POD_A = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: init, image: debian:12, command: ["true"]}}
  - name: proxy
    image: debian:12
    restartPolicy: Always
    command: [sleep, infinity]
    startupProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
  containers:
  - {{name: app, image: debian:12, command: [sleep, "{app_seconds}"]}}
"""

POD_B = """
apiVersion: v1
kind: Pod
metadata: {{name: sleep}}
spec:
  restartPolicy: Never
  volumes: [{{name: rec, hostPath: {{path: {rec}}}}}]
  initContainers:
  - {{name: proxy, image: debian:12, restartPolicy: Always, command: [sleep, infinity]}}
  containers:
  - name: sleep
    image: debian:12
    command: [sh, -c, "sleep 1; date +%s.%N > /rec/exit"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
"""


def proc_stats(pid):
    """(peak RSS in MiB, CPU seconds) of a live process."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return rss, cpu


def run_play(tandem, manifest, until, timeout=120):
    """Starts `tandem play`, reads rows until `until(row_fields, seen)` returns True.

    Returns (seconds from spawn to that row, peak RSS MiB, CPU s at that moment, proc).
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        [tandem, "play", manifest, "--timeout", f"{timeout}s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen = {}
    hit = None
    stats = (0.0, 0.0)
    for line in proc.stdout:
        fields = line.split()
        if not fields or fields[0] == "NAME":
            continue
        now = time.monotonic()
        if until(fields, seen, now):
            hit = now - start
            stats = proc_stats(proc.pid)
            break
    return hit, stats[0], stats[1], proc


def finish(proc):
    proc.send_signal(2)
    proc.wait(timeout=120)


def summary(label, values, unit, scale=1.0):
    values = sorted(v * scale for v in values)
    print(
        f"{label}: min {values[0]:.1f} {unit}, median {statistics.median(values):.1f} {unit}, "
        f"max {values[-1]:.1f} {unit} (n={len(values)})"
    )
    return statistics.median(values)


def bench_a(tandem, runs, tmp):
    manifest = os.path.join(tmp, "a.yaml")
    with open(manifest, "w") as f:
        f.write(POD_A.format(name="a", app_seconds="infinity"))
    times = []
    for _ in range(runs):
        t, _, _, proc = run_play(tandem, manifest, lambda r, s, n: r[2] == "Running")
        finish(proc)
        times.append(t)
    return summary("(a) play start -> Running", times, "ms", 1000)


def bench_b(tandem, runs, tmp):
    rec = os.path.join(tmp, "rec")
    os.makedirs(rec, exist_ok=True)
    manifest = os.path.join(tmp, "b.yaml")
    with open(manifest, "w") as f:
        f.write(POD_B.format(rec=rec))
    times = []
    for _ in range(runs):
        exit_file = os.path.join(rec, "exit")
        if os.path.exists(exit_file):
            os.remove(exit_file)
        wall = {}

        def until(r, s, n):
            if r[1] == "0/2" and r[2] == "Completed":
                wall["done"] = time.time()
                return True
            return False

        _, _, _, proc = run_play(tandem, manifest, until)
        proc.wait(timeout=60)
        with open(exit_file) as f:
            exited = float(f.read().strip())
        times.append(wall["done"] - exited)
    return summary("(b) main exit -> Succeeded", times, "ms", 1000)


def bench_c(tandem, pods, runs, tmp):
    manifest = os.path.join(tmp, "c.yaml")
    with open(manifest, "w") as f:
        f.write("---".join(POD_A.format(name=f"p{i}", app_seconds="infinity") for i in range(pods)))
    times, rsss, cpus = [], [], []
    for _ in range(runs):

        def until(r, s, n):
            if r[2] == "Running":
                s[r[0]] = True
            return len(s) == pods

        t, rss, cpu, proc = run_play(tandem, manifest, until, timeout=300)
        finish(proc)
        times.append(t)
        rsss.append(rss)
        cpus.append(cpu)
    summary(f"(c) {pods} pods -> all Running", times, "s")
    summary(f"(c) agent peak RSS", rsss, "MiB")
    summary(f"(c) agent CPU until all Running", cpus, "s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tandem", default="target/release/tandem")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--big-runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: pods need namespaces")
    print(f"# {time.strftime('%Y-%m-%d')} on {platform.node()}: {os.cpu_count()} cores, "
          f"{platform.release()}; tandem = {args.tandem}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_a(args.tandem, args.runs, tmp)
        bench_b(args.tandem, args.runs, tmp)
        bench_c(args.tandem, args.pods, args.big_runs, tmp)


if __name__ == "__main__":
    main()
