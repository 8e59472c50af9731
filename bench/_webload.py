"""Closed-loop HTTP load driver for bench/web.py, run as its own process (so the clients do not share
the server's GIL).

Reads a JSON plan on stdin: {"host", "port", "seconds", "clients", "keepalive", "timeout", "seed",
"think", "routes": {name: {"paths": [...], "expect": status}}}. Each of `clients` threads first makes
one untimed warm-up request (which opens its keep-alive connection), then all start together and loop
for `seconds`: pick a route at random (equal weights) and a path from it, time one GET with
http.client, then sleep a think time drawn from an exponential distribution with mean `think`
seconds (0: none, the next request goes out at once). With a think time each client first sleeps one
such draw, so the clients do not all fire at the same instant.

Writes "start" to stderr when the timed part begins and "end" when every client has finished it.
Prints JSON on stdout: {"wall": s, "routes": {name: {"latencies": [s, ...], "errors": n,
"samples": [error strings]}}}, plus "trace": [[start offset s, latency s, route], ...] when the plan
asks for it. Only ever connects to the host it is given (bench/web.py passes 127.0.0.1).
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time


class Client:
    """One simulated recipient: a connection (kept alive unless the plan says otherwise) and its tallies."""

    def __init__(self, plan: dict, names: list[str], index: int):
        self.plan, self.names = plan, names
        self.rng = random.Random(plan["seed"] + index)
        self.conn: http.client.HTTPConnection | None = None
        self.latencies: dict[str, list[float]] = {n: [] for n in names}
        self.errors = {n: 0 for n in names}
        self.samples: list[tuple[str, str]] = []
        self.trace: list[tuple[float, float, str]] = []

    def pick(self) -> tuple[str, dict, str]:
        name = self.names[self.rng.randrange(len(self.names))]
        route = self.plan["routes"][name]
        return name, route, route["paths"][self.rng.randrange(len(route["paths"]))]

    def get(self, path: str) -> int:
        """One GET; returns the status or raises. Reconnects when the server closed the connection."""
        plan = self.plan
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(plan["host"], plan["port"], timeout=plan["timeout"])
            self.conn.request("GET", path, headers={} if plan["keepalive"] else {"Connection": "close"})
            resp = self.conn.getresponse()
            resp.read()
            if not plan["keepalive"] or resp.will_close:
                self.close()
            return resp.status
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def timed(self, begin: float) -> None:
        name, route, path = self.pick()
        t0 = time.perf_counter()
        try:
            status = self.get(path)
            ok, detail = status == route["expect"], f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - t0
        self.latencies[name].append(elapsed)
        if self.plan.get("trace"):
            self.trace.append((round(t0 - begin, 4), round(elapsed, 4), name))
        if not ok:
            self.errors[name] += 1
            if len(self.samples) < 3:
                self.samples.append((name, f"{detail} on {path[:40]}"))


def main() -> None:
    plan = json.load(sys.stdin)
    assert plan["host"] == "127.0.0.1", "the bench only talks to loopback"
    names = sorted(plan["routes"])
    think = float(plan.get("think") or 0.0)
    clients = [Client(plan, names, i) for i in range(plan["clients"])]
    # Generous timeouts: a barrier only breaks if a client hangs, which the JSON then shows as missing data.
    clock = {"begin": 0.0, "deadline": 0.0}

    def start_clock() -> None:  # runs once every client is warm, before any is released
        clock["begin"] = time.perf_counter()
        clock["deadline"] = clock["begin"] + plan["seconds"]
        print("start", file=sys.stderr, flush=True)  # bench/web.py starts its own accounting here

    def stop_clock() -> None:
        print("end", file=sys.stderr, flush=True)

    start_gate = threading.Barrier(len(clients) + 1, action=start_clock, timeout=plan["timeout"] + 60)
    end_gate = threading.Barrier(len(clients), action=stop_clock, timeout=plan["timeout"] + 60)

    def sleep_until_at_most(seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, clock["deadline"] - time.perf_counter())))

    def run(client: Client) -> None:
        try:
            # Warm-up, untimed: opens the connection; a failure here shows up again in the timed loop.
            try:
                client.get(client.pick()[2])
            except Exception:  # noqa: BLE001
                pass
            start_gate.wait()
            if think:  # exponential think times are memoryless: one draw first is the steady state
                sleep_until_at_most(client.rng.expovariate(1 / think))
            while time.perf_counter() < clock["deadline"]:
                client.timed(clock["begin"])
                if think:
                    sleep_until_at_most(client.rng.expovariate(1 / think))
            # Connections are closed only once every client is done, so no timed request shares the
            # server with a wave of closing connections.
            end_gate.wait()
        except threading.BrokenBarrierError:
            pass
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    start_gate.wait()
    for t in threads:
        t.join(plan["seconds"] + plan["timeout"] + 90)
    wall = time.perf_counter() - clock["begin"]
    results = {n: {"latencies": [], "errors": 0, "samples": []} for n in names}
    for c in clients:
        for n in names:
            results[n]["latencies"].extend(c.latencies[n])
            results[n]["errors"] += c.errors[n]
        for n, s in c.samples:
            if len(results[n]["samples"]) < 5:
                results[n]["samples"].append(s)
    out = {"wall": wall, "routes": results}
    if plan.get("trace"):
        out["trace"] = sorted(r for c in clients for r in c.trace)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
