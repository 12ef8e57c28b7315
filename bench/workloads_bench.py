#!/usr/bin/env python3
"""Workload benchmarks against a real `tandem up` (run as root, release build).

  (1) a Deployment whose pods have one native sidecar (`sleep infinity`) and one main
      container (`sleep infinity`), scaled 0 -> N (default 200) through its `scale`
      subresource: time until `status.readyReplicas == N`, polling the Deployment every
      50 ms; then scaled back to 0 and waited until every pod is gone, RUNS times;
  (2) a Job (completions=100, parallelism=10) whose pods have the same sidecar and a main
      container `sleep 0.5`: time from the POST until condition Complete=True, the
      overhead per pod beyond the pods' own run time, and the CPU seconds of the
      `tandem up` process (API server, controllers and node agent all live in it;
      containers run under their own shim processes).

A pod watch runs alongside and timestamps each pod's first sighting, binding, Running,
Ready/Succeeded and each container's states, to show where the time goes; for the Job it
breaks one slot's cycle (a pod's main container exits -> its replacement's runs) into
stages: sidecar stopped, pod Succeeded, replacement created, bound, started.

Usage: bench/workloads_bench.py [--tandem target/release/tandem] [--replicas 200] [--runs 3]
                                [--job-runs 3]
"""

import argparse
import base64
import http.client
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

NS = "default"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, port, kubeconfig):
        text = open(kubeconfig).read()
        ca = token = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("certificate-authority-data:"):
                ca = base64.b64decode(line.split(":", 1)[1].strip()).decode()
            if line.startswith("token:"):
                token = line.split(":", 1)[1].strip().strip('"')
        self.ctx = ssl.create_default_context(cadata=ca)
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def conn(self, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)

    def request(self, conn, method, path, body=None, content_type="application/json"):
        headers = dict(self.headers, Accept="application/json")
        headers["Content-Type"] = content_type
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return json.loads(data) if data else None


def cpu_seconds(pid):
    """(utime+stime, cutime+cstime) of a live process, in seconds."""
    u, s, cu, cs = cpu_detail(pid)
    return u + s, cu + cs


def cpu_detail(pid):
    """(utime, stime, cutime, cstime) of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return tuple(int(x) / TICKS for x in fields[11:15])


def machine_busy():
    """Total non-idle CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals[:8]) - idle) / TICKS


def summary(label, values, unit, scale=1.0, digits=2):
    v = sorted(x * scale for x in values)
    print(f"{label}: min {v[0]:.{digits}f} {unit}, median {statistics.median(v):.{digits}f} {unit}, "
          f"max {v[-1]:.{digits}f} {unit} (n={len(v)})", flush=True)


def pod_template(labels, main_command, restart_policy):
    return {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": restart_policy,
            "initContainers": [{"name": "proxy", "image": "debian:12", "restartPolicy": "Always",
                                "command": ["sleep", "infinity"]}],
            "containers": [{"name": "app", "image": "debian:12", "command": main_command}],
        },
    }


class PodWatch:
    """Timestamps (time.monotonic) per pod: first seen, bound, Running, Ready, Succeeded, gone."""

    def __init__(self, api, selector):
        self.api = api
        self.selector = selector
        self.seen = {}
        self.failures = []
        self.lock = threading.Lock()
        self.stop = False
        conn = api.conn()
        rv = api.request(conn, "GET", f"/api/v1/namespaces/{NS}/pods?limit=1")["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self.run, args=(rv,), daemon=True)
        self.thread.start()

    def run(self, rv):
        conn = self.api.conn(timeout=3600)
        headers = dict(self.api.headers, Accept="application/json")
        conn.request("GET", f"/api/v1/namespaces/{NS}/pods?watch=true&allowWatchBookmarks=false"
                     f"&labelSelector={self.selector}&resourceVersion={rv}", headers=headers)
        resp = conn.getresponse()
        while not self.stop:
            line = resp.readline()
            if not line:
                return
            if not line.strip():
                continue
            now = time.monotonic()
            event = json.loads(line)
            obj = event.get("object", {})
            name = obj.get("metadata", {}).get("name")
            if not name:
                continue
            with self.lock:
                rec = self.seen.setdefault(name, {"added": now})
                if event["type"] == "DELETED":
                    rec.setdefault("gone", now)
                    continue
                spec, status = obj.get("spec", {}), obj.get("status", {})
                if obj["metadata"].get("deletionTimestamp"):
                    rec.setdefault("deleting", now)
                if spec.get("nodeName"):
                    rec.setdefault("bound", now)
                if status.get("phase") == "Running":
                    rec.setdefault("running", now)
                if status.get("phase") == "Succeeded":
                    rec.setdefault("succeeded", now)
                if status.get("phase") == "Failed" and "failed" not in rec:
                    rec["failed"] = now
                    deleting = "deleting" if obj["metadata"].get("deletionTimestamp") else "not deleted"
                    self.failures.append((name, now, f"{deleting}; {failure_reason(status)}"))
                for c in status.get("conditions") or []:
                    if c.get("type") == "Ready" and c.get("status") == "True":
                        rec.setdefault("ready", now)
                # Each container's first sighting in each state, e.g. "app.running".
                for key in ("initContainerStatuses", "containerStatuses"):
                    for c in status.get(key) or []:
                        for state in (c.get("state") or {}):
                            rec.setdefault(f"{c['name']}.{state}", now)

    def snapshot(self):
        with self.lock:
            return {k: dict(v) for k, v in self.seen.items()}

    def reset(self):
        with self.lock:
            self.seen.clear()


def failure_reason(status):
    """A Failed pod's reason, message and its containers' terminated states, briefly."""
    parts = [f"{status.get('reason', '')} {status.get('message', '')}".strip()]
    for key in ("initContainerStatuses", "containerStatuses"):
        for c in status.get(key) or []:
            t = (c.get("state") or {}).get("terminated")
            if t:
                parts.append(f"{c['name']}: exit {t.get('exitCode')} {t.get('reason', '')} {t.get('message', '')}".strip())
    return "; ".join(p for p in parts if p)


def quantiles(values):
    v = sorted(values)
    if not v:
        return "n/a"
    return f"min {v[0] * 1000:.0f}, median {statistics.median(v) * 1000:.0f}, max {v[-1] * 1000:.0f} ms"


def slot_cycles(snap, parallelism, seconds, main="app", sidecar="proxy"):
    """The stages between one pod's main container exit and its replacement's main
    container running, as the pod watch saw them. The k-th pod created after the first
    `parallelism` replaces the k-th pod whose main container exited."""
    exited = sorted((r for r in snap.values() if f"{main}.terminated" in r),
                    key=lambda r: r[f"{main}.terminated"])
    created = sorted(snap.values(), key=lambda r: r["added"])[parallelism:]
    stages = [
        ("main exited -> sidecar terminated", "prev", f"{main}.terminated", "prev", f"{sidecar}.terminated"),
        ("sidecar terminated -> pod Succeeded", "prev", f"{sidecar}.terminated", "prev", "succeeded"),
        ("pod Succeeded -> next pod created (controller)", "prev", "succeeded", "next", "added"),
        ("created -> bound (scheduler)", "next", "added", "next", "bound"),
        ("bound -> sidecar running (node)", "next", "bound", "next", f"{sidecar}.running"),
        ("sidecar running -> main running", "next", f"{sidecar}.running", "next", f"{main}.running"),
        ("TOTAL main exited -> next main running", "prev", f"{main}.terminated", "next", f"{main}.running"),
        (f"(main running -> main exited: the {seconds} s sleep)", "next", f"{main}.running", "next",
         f"{main}.terminated"),
    ]
    out = []
    for label, a_pod, a_key, b_pod, b_key in stages:
        values = []
        for prev, nxt in zip(exited, created):
            pods = {"prev": prev, "next": nxt}
            if a_key in pods[a_pod] and b_key in pods[b_pod]:
                values.append(pods[b_pod][b_key] - pods[a_pod][a_key])
        out.append((label, values))
    return out


def wait_for(cond, timeout, period=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(period)
    return None


def count_pods(api, conn, selector):
    return len(api.request(conn, "GET", f"/api/v1/namespaces/{NS}/pods?labelSelector={selector}")["items"])


def bench_deployment(api, up_pid, replicas, runs, timeout):
    name = "scale"
    selector = "app%3Dscale"
    conn = api.conn()
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "scale"}},
            "template": pod_template({"app": "scale"}, ["sleep", "infinity"], "Always"),
        },
    }
    api.request(conn, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", dep)
    watch = PodWatch(api, selector)
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    ups, downs, cpus, busy = [], [], [], []
    for run in range(runs):
        watch.reset()
        cpu0, machine0 = cpu_seconds(up_pid)[0], machine_busy()
        start = time.monotonic()
        api.request(conn, "PATCH", path + "/scale", {"spec": {"replicas": replicas}},
                    content_type="application/merge-patch+json")
        last = {}

        def ready():
            status = api.request(conn, "GET", path).get("status") or {}
            last.update(status)
            return status.get("readyReplicas", 0) == replicas

        ok = wait_for(ready, timeout)
        took = time.monotonic() - start
        cpu = cpu_seconds(up_pid)[0] - cpu0
        mbusy = machine_busy() - machine0
        if not ok:
            print(f"  run {run + 1}: TIMEOUT after {took:.1f} s, last status {last}", flush=True)
            return False
        ups.append(took)
        cpus.append(cpu)
        busy.append(mbusy)
        time.sleep(0.3)  # let the watch catch the last events
        snap = watch.snapshot()

        def offsets(key):
            return [r[key] - start for r in snap.values() if key in r]

        def lifecycle(a, b):
            return [r[b] - r[a] for r in snap.values() if a in r and b in r]

        print(f"  run {run + 1}: {replicas} Ready in {took:.2f} s; tandem up CPU {cpu:.2f} s, "
              f"whole machine busy {mbusy:.2f} CPU-s", flush=True)
        print(f"    last pod seen {max(offsets('added'), default=0):.2f} s, bound {max(offsets('bound'), default=0):.2f} s, "
              f"Running {max(offsets('running'), default=0):.2f} s, Ready {max(offsets('ready'), default=0):.2f} s "
              f"after the PATCH", flush=True)
        print(f"    per pod: seen->bound {quantiles(lifecycle('added', 'bound'))}; "
              f"bound->Running {quantiles(lifecycle('bound', 'running'))}; "
              f"Running->Ready {quantiles(lifecycle('running', 'ready'))}", flush=True)

        start = time.monotonic()
        api.request(conn, "PATCH", path + "/scale", {"spec": {"replicas": 0}},
                    content_type="application/merge-patch+json")
        gone = wait_for(lambda: count_pods(api, conn, selector) == 0, timeout, period=0.2)
        took = time.monotonic() - start
        if not gone:
            print(f"  run {run + 1}: scale to 0 TIMEOUT after {took:.1f} s "
                  f"({count_pods(api, conn, selector)} pods left)", flush=True)
            return False
        downs.append(took)
        time.sleep(0.3)
        gone_at = sorted(r["gone"] - start for r in watch.snapshot().values() if "gone" in r)
        spread = (f"; pods' DELETED events from {gone_at[0]:.2f} s (median {statistics.median(gone_at):.2f} s) "
                  f"to {gone_at[-1]:.2f} s") if gone_at else ""
        print(f"    scale {replicas} -> 0, all pods gone: {took:.2f} s{spread}", flush=True)
        snap = watch.snapshot()
        deleting = sorted(r["deleting"] - start for r in snap.values() if "deleting" in r)
        if deleting:
            print(f"    deletionTimestamp set from {deleting[0]:.2f} s (median "
                  f"{statistics.median(deleting):.2f} s) to {deleting[-1]:.2f} s", flush=True)
        stages = [("deleting", "app.terminated", "deletion seen -> app terminated"),
                  ("app.terminated", "proxy.terminated", "app terminated -> sidecar terminated"),
                  ("proxy.terminated", "gone", "sidecar terminated -> pod gone")]
        for a, b, label in stages:
            print(f"      {label:40} {quantiles([r[b] - r[a] for r in snap.values() if a in r and b in r])}",
                  flush=True)
    watch.stop = True
    print()
    summary(f"(1) Deployment 0 -> {replicas} replicas, until readyReplicas == {replicas}", ups, "s")
    summary(f"(1) tandem up CPU during scale-up", cpus, "s")
    summary(f"(1) whole machine CPU during scale-up (2 cores => max 2 CPU-s/s)", busy, "CPU-s")
    summary(f"(1) Deployment {replicas} -> 0, until no pod left", downs, "s")
    api.request(conn, "DELETE", path)
    return True


def bench_job(api, up_pid, runs, timeout, completions=100, parallelism=10, seconds=0.5):
    conn = api.conn()
    totals, overheads, cpus, ccpus, busy = [], [], [], [], []
    ideal = completions / parallelism * seconds
    for run in range(runs):
        name = f"batch-{run}"
        selector = f"job-name%3D{name}"
        job = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "completions": completions, "parallelism": parallelism, "backoffLimit": 6,
                "template": pod_template({"bench": "job"}, ["sh", "-c", f"sleep {seconds}"], "Never"),
            },
        }
        watch = PodWatch(api, selector)
        detail0 = cpu_detail(up_pid)
        (cpu0, child0), machine0 = cpu_seconds(up_pid), machine_busy()
        start = time.monotonic()
        api.request(conn, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", job)
        path = f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"
        last = {}

        def complete():
            status = api.request(conn, "GET", path).get("status") or {}
            last.update(status)
            for c in status.get("conditions") or []:
                if c.get("type") == "Failed" and c.get("status") == "True":
                    raise RuntimeError(f"job failed: {status}")
                if c.get("type") == "Complete" and c.get("status") == "True":
                    return True
            return False

        ok = wait_for(complete, timeout)
        took = time.monotonic() - start
        cpu1, child1 = cpu_seconds(up_pid)
        detail = [b - a for a, b in zip(detail0, cpu_detail(up_pid))]
        mbusy = machine_busy() - machine0
        if not ok:
            print(f"  run {run + 1}: TIMEOUT after {took:.1f} s, last status {last}", flush=True)
            return False
        overhead = (took - ideal) / completions
        totals.append(took)
        overheads.append(overhead)
        cpus.append(cpu1 - cpu0)
        ccpus.append(child1 - child0)
        busy.append(mbusy)
        time.sleep(0.3)
        watch.stop = True
        snap = watch.snapshot()
        succ = [r for r in snap.values() if "succeeded" in r]
        print(f"  run {run + 1}: Complete after {took:.2f} s (ideal {ideal:.1f} s) => "
              f"{overhead * 1000:.1f} ms/pod; succeeded={last.get('succeeded')}, failed={last.get('failed', 0)}, "
              f"pods seen {len(snap)}; tandem up CPU {cpu1 - cpu0:.2f} s "
              f"(+ reaped children {child1 - child0:.2f} s), whole machine busy {mbusy:.2f} CPU-s", flush=True)
        print(f"    per pod: seen->bound {quantiles([r['bound'] - r['added'] for r in snap.values() if 'bound' in r])}; "
              f"bound->Running {quantiles([r['running'] - r['bound'] for r in snap.values() if 'bound' in r and 'running' in r])}; "
              f"seen->Succeeded {quantiles([r['succeeded'] - r['added'] for r in succ])} (includes the 0.5 s sleep)",
              flush=True)
        print(f"    tandem up user {detail[0]:.2f} s, sys {detail[1]:.2f} s; reaped children user "
              f"{detail[2]:.2f} s, sys {detail[3]:.2f} s", flush=True)
        for pod, at, why in watch.failures[:5]:
            print(f"    FAILED pod {pod} at {at - start:.2f} s: {why}", flush=True)
        # The controller's reaction: a pod's Succeeded -> the next pod's first sighting.
        done = sorted(r["succeeded"] for r in succ)
        added = sorted(r["added"] for r in snap.values())
        if done and added:
            print(f"    first pod seen {added[0] - start:.3f} s after the POST; last Succeeded "
                  f"{done[-1] - start:.2f} s; Complete seen {took - (done[-1] - start):.3f} s after that",
                  flush=True)
        cycles = slot_cycles(snap, parallelism, seconds)
        if cycles:
            print("    one slot's cycle, previous pod's main exit -> next pod's main running "
                  f"({len(cycles[-1][1])} pairs):", flush=True)
            for label, values in cycles:
                print(f"      {label:<44} {quantiles(values)}", flush=True)
        api.request(conn, "DELETE", path + "?propagationPolicy=Background")
        wait_for(lambda: count_pods(api, conn, selector) == 0, timeout, period=0.2)
    print()
    summary(f"(2) Job {completions} completions x {parallelism} parallel, POST -> Complete", totals, "s")
    summary(f"(2) Job overhead per pod beyond ({completions}/{parallelism})*{seconds} s", overheads, "ms", 1000, 1)
    summary(f"(2) tandem up process CPU (API server + controllers + node agent) during the Job", cpus, "s")
    summary(f"(2) reaped children of tandem up CPU during the Job", ccpus, "s")
    summary(f"(2) whole machine CPU during the Job", busy, "CPU-s")
    return True


def leftovers(data):
    out = subprocess.run(["pgrep", "-f", data], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


def stop(tandem, up, data):
    # `tandem down` stops every pod, then the server, then removes the pod network.
    if up.poll() is None:
        down = subprocess.run([tandem, "down", "--data-dir", data], capture_output=True, text=True, timeout=300)
        print(f"tandem down: exit {down.returncode} {down.stderr.strip()[:200]}", flush=True)
    try:
        up.wait(timeout=120)
    except subprocess.TimeoutExpired:
        print("tandem up did not stop within 120 s of tandem down; killing it", flush=True)
        up.kill()
        up.wait()
    print(f"tandem up exited with {up.returncode}", flush=True)
    left = leftovers(data)
    if left:
        print(f"leftover processes after down: {left}; killing them", flush=True)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        print(f"still left: {leftovers(data)}", flush=True)
    else:
        print("no leftover processes", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tandem", default="target/release/tandem")
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--job-runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--skip-deployment", action="store_true")
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--pod-network", default="bridge", choices=["bridge", "none"],
                        help="tandem up --pod-network (bridge: every pod gets a veth and an address)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: tandem up runs a node")
    tandem = os.path.abspath(args.tandem)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
          f"{platform.release()}; tandem = {args.tandem}; --pod-network {args.pod_network}; loadavg {open('/proc/loadavg').read().split()[:3]}", flush=True)
    tmp = tempfile.mkdtemp(prefix="tandem-wl-")
    data = os.path.join(tmp, "data")
    port = free_port()
    log = open(os.path.join(tmp, "up.log"), "wb")
    up = subprocess.Popen([tandem, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                           "--pod-network", args.pod_network],
                          stdout=log, stderr=log)
    try:
        if not wait_for(lambda: os.path.exists(os.path.join(data, "tandem.pid")), 30, 0.1):
            raise RuntimeError("tandem up did not start")
        api = wait_for(lambda: try_api(port, os.path.join(data, "kubeconfig")), 30, 0.1)
        if not api:
            raise RuntimeError("API server did not answer")
        conn = api.conn()
        # The node must be registered and Ready before pods can be bound.
        if not wait_for(lambda: node_ready(api, conn), 30, 0.1):
            raise RuntimeError("no Ready node")
        if not args.skip_deployment:
            bench_deployment(api, up.pid, args.replicas, args.runs, args.timeout)
            print()
        if not args.skip_job:
            bench_job(api, up.pid, args.job_runs, args.timeout)
        rss = [l for l in open(f"/proc/{up.pid}/status") if l.startswith("VmHWM")]
        print(f"tandem up peak RSS: {rss[0].split(':')[1].strip() if rss else '?'}")
    finally:
        stop(tandem, up, data)
        log.close()
        if os.environ.get("KEEP_LOG"):
            print(f"log kept in {tmp}/up.log")
        else:
            subprocess.run(["rm", "-rf", tmp])


def try_api(port, kubeconfig):
    try:
        api = Api(port, kubeconfig)
        api.request(api.conn(timeout=2), "GET", f"/api/v1/namespaces/{NS}")
        return api
    except Exception:
        return None


def node_ready(api, conn):
    for node in api.request(conn, "GET", "/api/v1/nodes")["items"]:
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                return True
    return False


if __name__ == "__main__":
    main()
