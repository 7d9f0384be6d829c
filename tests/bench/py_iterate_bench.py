#!/usr/bin/env python3
"""py_iterate_bench.py: iterating a stored run from Python.

Prints JSON lines {"metric", "value", "unit"}:
  py_iterate_100k_ms            read 100K x 100 B events of a run from a file store
                                into Python Event objects, touching seq and payload
                                (best of 7, warm cache). Target <= 30.
  baseline_py_tuples_100k_ms    the same loop over 100K ready-made (seq, payload)
                                tuples in a Python list: the floor of the loop itself.
  py_iterate_100k_cpu_ms, baseline_py_tuples_100k_cpu_ms
                                the same two measured in process CPU time (on a shared,
                                loaded machine the wall time includes waiting for a core).
  py_read_list_100k_ms          list(store.read(run)): materialise all 100K Events.
  py_append_100k_ms             append 100K NewEvents in batches of 10K (for reference).

    PYTHONPATH=<build>/bindings/python /usr/bin/python3 tests/bench/py_iterate_bench.py
"""

import json
import os
import sys
import tempfile
import time

import dispatch

N = 100_000


def best_ms(fn, repeat=7, clock=time.perf_counter):
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return round(best * 1000, 2)


def emit(metric, value, unit="ms"):
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def main():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.db")
        with dispatch.EventStore(path) as store:
            # Terminal-like payloads: 100 B lines that differ.
            events = [dispatch.NewEvent("pty:stdout", "chunk",
                                        (b"%08d drwxr-xr-x 2 root root 4096 Nov 22 05:00 /usr/lib/"
                                         b"x86_64-linux-gnu/" % i).ljust(100, b"."))
                      for i in range(N)]
            t = time.perf_counter()
            for i in range(0, N, 10_000):
                store.append("bench", events[i:i + 10_000])
            emit("py_append_100k_ms", round((time.perf_counter() - t) * 1000, 2))
            del events

            def iterate():
                total = 0
                for e in store.read("bench"):
                    total += e.seq + len(e.payload)
                assert total == N * (N + 1) // 2 + N * 100

            tuples = [(i + 1, b"x" * 100) for i in range(N)]

            def baseline():
                total = 0
                for seq, payload in tuples:
                    total += seq + len(payload)
                assert total == N * (N + 1) // 2 + N * 100

            def as_list():
                assert len(list(store.read("bench"))) == N

            iterate()  # warm the cache
            emit("py_iterate_100k_ms", best_ms(iterate))
            emit("baseline_py_tuples_100k_ms", best_ms(baseline))
            # CPU time of this process: what the loop costs when other
            # processes compete for the cores (wall time then includes waiting).
            emit("py_iterate_100k_cpu_ms", best_ms(iterate, clock=time.process_time))
            emit("baseline_py_tuples_100k_cpu_ms", best_ms(baseline, clock=time.process_time))
            emit("py_read_list_100k_ms", best_ms(as_list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
