#!/usr/bin/env python3
"""analyze_store.py: what happened in the sessions of a store.

For every terminal session: how long it ran, the commands typed (input split
at Enter, backspaces applied), output volume, and the time spent waiting on
output: for each command, from the Enter key to the first output recorded
after it.

    analyze_store.py STORE_PATH [--json]

Exits 1 if the store has no sessions (so a test can tell an empty run).
"""

import json
import sys
from collections import Counter

import dispatch


def analyse_run(store: dispatch.EventStore, run_id: str) -> dict:
    commands, line = [], bytearray()
    waits, pending_enter = [], None
    out_bytes = in_bytes = events = 0
    first_ts = last_ts = None
    exit_info, kinds = None, Counter()
    for e in store.read(run_id):
        events += 1
        kinds[(e.channel, e.type)] += 1
        first_ts = e.ts_us if first_ts is None else first_ts
        last_ts = e.ts_us
        if e.channel == "pty:stdin" and e.encoding == "bytes":
            in_bytes += len(e.payload)
            for b in e.payload:
                if b in (0x0D, 0x0A):
                    commands.append(line.decode("utf-8", "replace"))
                    line.clear()
                    pending_enter = e.ts_us
                elif b in (0x7F, 0x08):
                    del line[-1:]
                else:
                    line.append(b)
        elif e.channel == "pty:stdout":
            out_bytes += len(e.payload)
            if pending_enter is not None:
                waits.append((e.ts_us - pending_enter) / 1000.0)
                pending_enter = None
        elif e.channel == "system:status" and e.type == "closed":
            exit_info = e.json()
    return {
        "run_id": run_id,
        "events": events,
        "duration_s": round(((last_ts or 0) - (first_ts or 0)) / 1e6, 3),
        "commands": commands,
        "input_bytes": in_bytes,
        "output_bytes": out_bytes,
        "wait_ms_total": round(sum(waits), 1),
        "wait_ms_max": round(max(waits), 1) if waits else 0.0,
        "exit": exit_info,
        "event_kinds": {f"{c}/{t}": n for (c, t), n in sorted(kinds.items())},
    }


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    as_json = "--json" in sys.argv[2:]
    with dispatch.EventStore(sys.argv[1], read_only=True) as store:
        sessions = store.sessions()
        if not sessions:
            print("no sessions in this store", file=sys.stderr)
            return 1
        report = []
        for s in sessions:
            r = analyse_run(store, s.run_id)
            r.update(kind=s.kind, status=s.status, workspace=s.workspace)
            report.append(r)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    for r in report:
        print(f"{r['run_id']} ({r['kind']}, {r['status']}): {r['events']} events over "
              f"{r['duration_s']} s, exit {r['exit']}")
        print(f"  typed {r['input_bytes']} B, got {r['output_bytes']} B of output; waited "
              f"{r['wait_ms_total']} ms on output (longest {r['wait_ms_max']} ms)")
        for c in r["commands"]:
            print(f"  $ {c}")
    total = Counter()
    for r in report:
        total.update(c.split()[0] for c in r["commands"] if c.strip())
    if total:
        print("most used commands: " + ", ".join(f"{c} ×{n}" for c, n in total.most_common(5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
