#!/usr/bin/env python3
"""API server benchmarks against a real `tandem up` (run as root, release build).

  - create throughput: 1,000 pods POSTed by 16 concurrent clients (the pods are bound to a
    node that does not exist, so nothing runs them);
  - with 1,000 pods stored: latency of a pod list as a Table (what `kubectl get pods`
    asks for) and as a plain PodList (what client libraries such as kube-rs ask for), and
    the wall time of the real `kubectl get pods` command;
  - watch fan-out: 100 watchers on pods, 50 updates; delivery latency from the update's
    acknowledgement to each watcher's receipt of the event.

Usage: bench/api_bench.py [--tandem target/release/tandem] [--kubectl .venv/bin/kubectl]
"""

import argparse
import base64
import http.client
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time


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

    def request(self, conn, method, path, body=None, accept="application/json"):
        headers = dict(self.headers, Accept=accept)
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
        return data


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report(label, values, unit="ms", scale=1000):
    v = [x * scale for x in values]
    print(f"{label}: median {statistics.median(v):.1f} {unit}, p99 {pct(v, 99):.1f} {unit}, "
          f"min {min(v):.1f}, max {max(v):.1f} (n={len(v)})")


def pod(i):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"bench-{i}", "labels": {"app": "bench"}},
        "spec": {
            "nodeName": "no-such-node",
            "initContainers": [{"name": "proxy", "image": "debian:12", "restartPolicy": "Always",
                                "command": ["sleep", "infinity"]}],
            "containers": [{"name": "app", "image": "debian:12", "command": ["sleep", "infinity"]}],
        },
    }


def bench_creates(api, n=1000, clients=16):
    def worker(ids):
        conn = api.conn()
        for i in ids:
            api.request(conn, "POST", "/api/v1/namespaces/default/pods", pod(i))
    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(range(c, n, clients),)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    print(f"create {n} pods ({clients} clients): {took:.2f} s, {n / took:.0f} objects/s")


def bench_lists(api, kubectl, kubeconfig, runs=31):
    table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    conn = api.conn()
    for label, accept in (("list 1,000 pods as Table", table), ("list 1,000 pods as PodList", "application/json")):
        times = []
        for _ in range(runs):
            t = time.monotonic()
            api.request(conn, "GET", "/api/v1/namespaces/default/pods?limit=500", accept=accept)
            times.append(time.monotonic() - t)
        report(label, times)
    if kubectl:
        env = dict(os.environ, KUBECONFIG=kubeconfig, KUBECACHEDIR=tempfile.mkdtemp())
        subprocess.run([kubectl, "get", "pods"], env=env, capture_output=True, check=True)
        times = []
        for _ in range(11):
            t = time.monotonic()
            subprocess.run([kubectl, "get", "pods"], env=env, capture_output=True, check=True)
            times.append(time.monotonic() - t)
        report("`kubectl get pods` wall time (1,000 rows, incl. kubectl start)", times)


def bench_watch(api, watchers=100, updates=50):
    received = [[] for _ in range(watchers)]
    ready = threading.Barrier(watchers + 1)

    def watcher(k):
        conn = api.conn(timeout=120)
        headers = dict(api.headers, Accept="application/json")
        conn.request("GET", "/api/v1/namespaces/default/pods?watch=true&fieldSelector=metadata.name%3Dbench-0"
                     "&resourceVersion=" + rv, headers=headers)
        resp = conn.getresponse()
        ready.wait()
        while len(received[k]) < updates:
            line = resp.readline()
            if not line:
                return
            if not line.strip():
                continue
            event = json.loads(line)
            if event["type"] == "MODIFIED":
                received[k].append((event["object"]["metadata"]["labels"]["n"], time.monotonic()))

    conn = api.conn()
    rv = json.loads(api.request(conn, "GET", "/api/v1/namespaces/default/pods/bench-0"))["metadata"]["resourceVersion"]
    threads = [threading.Thread(target=watcher, args=(k,), daemon=True) for k in range(watchers)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.5)
    acked = {}
    for n in range(updates):
        body = {"metadata": {"labels": {"n": str(n)}}}
        headers = dict(api.headers, **{"Content-Type": "application/merge-patch+json"})
        conn.request("PATCH", "/api/v1/namespaces/default/pods/bench-0", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        resp.read()
        acked[str(n)] = time.monotonic()
        time.sleep(0.02)
    for t in threads:
        t.join(timeout=30)
    delays = [at - acked[n] for events in received for (n, at) in events if n in acked]
    missing = watchers * updates - len(delays)
    report(f"watch delivery, {watchers} watchers x {updates} updates", [max(d, 0) for d in delays])
    if missing:
        print(f"  ({missing} events not received)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tandem", default="target/release/tandem")
    parser.add_argument("--kubectl", default=".venv/bin/kubectl")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: tandem up runs a node")
    kubectl = args.kubectl if os.path.exists(args.kubectl) else None
    print(f"# {time.strftime('%Y-%m-%d')} on {platform.node()}: {os.cpu_count()} cores, {platform.release()}")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        data = os.path.join(tmp, "data")
        up = subprocess.Popen([args.tandem, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            kubeconfig = os.path.join(data, "kubeconfig")
            for _ in range(300):
                if os.path.exists(os.path.join(data, "tandem.pid")):
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            api = Api(port, kubeconfig)
            bench_creates(api)
            bench_lists(api, kubectl, kubeconfig)
            bench_watch(api)
        finally:
            up.terminate()
            up.wait()


if __name__ == "__main__":
    main()
