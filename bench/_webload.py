"""Closed-loop HTTP load driver for bench/web.py, run as its own process (so the clients do not share
the server's GIL).

Reads a JSON plan on stdin: {"host", "port", "seconds", "clients", "keepalive", "timeout", "seed",
"routes": {name: {"paths": [...], "expect": status}}}. Each of `clients` threads loops for `seconds`,
picking a route at random (equal weights) and a path from it, and times one GET with http.client.
Prints JSON on stdout: {"wall": s, "routes": {name: {"latencies": [s, ...], "errors": n,
"samples": [error strings]}}}. Only ever connects to the host it is given (bench/web.py passes
127.0.0.1).
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time


def main() -> None:
    plan = json.load(sys.stdin)
    host, port = plan["host"], plan["port"]
    assert host == "127.0.0.1", "the bench only talks to loopback"
    routes = plan["routes"]
    names = sorted(routes)
    results = {n: {"latencies": [], "errors": 0, "samples": []} for n in names}
    lock = threading.Lock()
    start_gate = threading.Barrier(plan["clients"] + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        rng = random.Random(plan["seed"] + index)
        lat = {n: [] for n in names}
        errs = {n: 0 for n in names}
        samples: list[tuple[str, str]] = []
        conn = None
        start_gate.wait()
        while time.perf_counter() < deadline[0]:
            name = names[rng.randrange(len(names))]
            route = routes[name]
            path = route["paths"][rng.randrange(len(route["paths"]))]
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=plan["timeout"])
                conn.request("GET", path, headers={} if plan["keepalive"] else {"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if not plan["keepalive"] or resp.will_close:
                    conn.close()
                    conn = None
                ok = status == route["expect"]
                detail = f"HTTP {status}"
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error
                ok, detail = False, f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            elapsed = time.perf_counter() - t0
            lat[name].append(elapsed)
            if not ok:
                errs[name] += 1
                if len(samples) < 3:
                    samples.append((name, f"{detail} on {path[:40]}"))
        if conn is not None:
            conn.close()
        with lock:
            for n in names:
                results[n]["latencies"].extend(lat[n])
                results[n]["errors"] += errs[n]
            for n, s in samples:
                if len(results[n]["samples"]) < 5:
                    results[n]["samples"].append(s)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(plan["clients"])]
    for t in threads:
        t.start()
    begin = time.perf_counter()
    deadline[0] = begin + plan["seconds"]
    start_gate.wait()
    for t in threads:
        t.join(plan["seconds"] + plan["timeout"] + 30)
    wall = time.perf_counter() - begin
    json.dump({"wall": wall, "routes": results}, sys.stdout)


if __name__ == "__main__":
    main()
