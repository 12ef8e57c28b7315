#!/usr/bin/env python3
"""Pod network benchmark against a real `tandem up` (run as root).

Runs the cluster in a private network namespace (nothing touches the machine's own
network), deploys one `tandem/httpbin` pod behind a Service, and from the cluster's host
namespace measures, interleaved request by request at a fixed rate, a fresh TCP connection
+ `GET /ip` + response:
  (a) to the pod IP directly, and
  (b) to the Service's ClusterIP (nftables DNAT, the Service hop),
reporting p50/p99 of each and the difference. Then times programming N Services (default
500) from `kubectl apply` until the last one's rule is in the nftables table.

Usage: bench/network_bench.py [--tandem target/release/tandem] [--requests 3000]
                              [--rate 500] [--services 500]
"""

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KUBECTL = os.path.join(os.path.dirname(__file__), "..", ".venv", "bin", "kubectl")


def sh(ns, *args, check=True, **kw):
    return subprocess.run(["nsenter", f"--net=/proc/{ns}/ns/net", "--", *args],
                          check=check, capture_output=True, text=True, **kw)


def kubectl(ns, kubeconfig, *args, **kw):
    return sh(ns, KUBECTL, f"--kubeconfig={kubeconfig}", *args, **kw).stdout.strip()


def request(ip, port):
    t0 = time.perf_counter_ns()
    with socket.create_connection((ip, port), timeout=5) as s:
        s.sendall(b"GET /ip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(4096):
            pass
    return (time.perf_counter_ns() - t0) / 1000.0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default="target/release/tandem")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--services", type=int, default=500)
    args = ap.parse_args()
    tandem = os.path.abspath(args.tandem)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: {os.cpu_count()} cores, "
          f"{platform.release()}; tandem = {args.tandem}", flush=True)

    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    time.sleep(0.2)
    ns = holder.pid
    sh(ns, "ip", "link", "set", "lo", "up")
    tmp = tempfile.mkdtemp(prefix="tandem-net-")
    data = os.path.join(tmp, "data")
    kc = os.path.join(data, "kubeconfig")
    up = subprocess.Popen(["nsenter", f"--net=/proc/{ns}/ns/net", "--", tandem, "up",
                           "--data-dir", data], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(tmp, "up.log"), "wb"))
    try:
        for _ in range(300):
            if os.path.exists(kc) and sh(ns, KUBECTL, f"--kubeconfig={kc}", "get", "ns",
                                         check=False).returncode == 0:
                break
            time.sleep(0.1)
        manifest = os.path.join(tmp, "one.yaml")
        with open(manifest, "w") as f:
            f.write("""apiVersion: v1
kind: Service
metadata: {name: target}
spec:
  selector: {app: target}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: target, labels: {app: target}}
spec:
  containers: [{name: httpbin, image: tandem/httpbin}]
""")
        kubectl(ns, kc, "apply", "-f", manifest)
        kubectl(ns, kc, "wait", "--for=condition=ready", "pod/target", "--timeout=60s")
        pod_ip = kubectl(ns, kc, "get", "pod", "target", "-o", "jsonpath={.status.podIP}")
        vip = kubectl(ns, kc, "get", "svc", "target", "-o", "jsonpath={.spec.clusterIP}")
        for _ in range(100):
            if "target" in kubectl(ns, kc, "get", "endpointslices", "-o", "name"):
                break
            time.sleep(0.1)
        time.sleep(0.5)

        # Measure from inside the namespace: run this same script's client loop there.
        code = f"""
import socket, time, json
def request(ip, port):
    t0 = time.perf_counter_ns()
    with socket.create_connection((ip, port), timeout=5) as s:
        s.sendall(b"GET /ip HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        while s.recv(4096):
            pass
    return (time.perf_counter_ns() - t0) / 1000.0
for _ in range(200):
    request("{pod_ip}", 8080); request("{vip}", 80)
direct, service = [], []
period = 1.0 / {args.rate}
nxt = time.perf_counter()
for i in range({args.requests}):
    nxt += period
    d = time.perf_counter() - nxt
    if d < 0: time.sleep(-d)
    if i % 2 == 0:
        direct.append(request("{pod_ip}", 8080)); service.append(request("{vip}", 80))
    else:
        service.append(request("{vip}", 80)); direct.append(request("{pod_ip}", 8080))
print(json.dumps({{"direct": direct, "service": service}}))
"""
        import json
        out = sh(ns, sys.executable, "-c", code).stdout
        res = json.loads(out)
        d, s = res["direct"], res["service"]
        print(f"requests: {len(d)} each, interleaved, {args.rate:.0f} pairs/s, new connection + GET /ip each")
        print(f"  pod IP directly : p50 {pct(d, .5):7.1f} us  p99 {pct(d, .99):7.1f} us")
        print(f"  via ClusterIP   : p50 {pct(s, .5):7.1f} us  p99 {pct(s, .99):7.1f} us")
        diffs = [b - a for a, b in zip(d, s)]
        print(f"  Service hop     : p50 of per-pair difference {statistics.median(diffs):+.1f} us; "
              f"p50 difference {pct(s, .5) - pct(d, .5):+.1f} us, p99 difference {pct(s, .99) - pct(d, .99):+.1f} us",
              flush=True)

        # Programming N Services.
        many = os.path.join(tmp, "many.yaml")
        with open(many, "w") as f:
            for i in range(args.services):
                f.write(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
                        f"spec:\n  selector: {{app: target}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n")
        t0 = time.monotonic()
        kubectl(ns, kc, "apply", "-f", many)
        applied = time.monotonic() - t0
        last = None
        while time.monotonic() - t0 < 300:
            ip = kubectl(ns, kc, "get", "svc", f"s{args.services - 1}", "-o", "jsonpath={.spec.clusterIP}")
            table = sh(ns, "nft", "list", "map", "ip", "tandem", "service-ips", check=False).stdout
            if ip and ip in table and table.count(" : goto ") >= args.services:
                last = time.monotonic() - t0
                break
            time.sleep(0.05)
        print(f"{args.services} Services: kubectl apply {applied:.2f} s; all in nftables after "
              f"{last:.2f} s" if last else "TIMEOUT", flush=True)
    finally:
        subprocess.run(["nsenter", f"--net=/proc/{ns}/ns/net", "--", tandem, "down", "--data-dir", data],
                       capture_output=True)
        up.terminate()
        up.wait()
        holder.kill()


if __name__ == "__main__":
    main()
