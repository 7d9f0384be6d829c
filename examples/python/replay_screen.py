#!/usr/bin/env python3
"""replay_screen.py: what a recorded terminal showed, at any point of its history.

Prints the screen of a pty run (the latest, or after --at SEQ) with its cursor,
size and title, and optionally exports the run as an asciicast v2 recording
(`asciinema play run.cast`).

    replay_screen.py STORE [RUN_ID] [--at SEQ] [--cast PATH]
    (RUN_ID defaults to the store's last pty session)
"""

import argparse
import sys

import dispatch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("run_id", nargs="?")
    ap.add_argument("--at", type=int, default=None, help="the screen after this seq")
    ap.add_argument("--cast", help="also write the run as asciicast v2 to this path")
    args = ap.parse_args()

    with dispatch.EventStore(args.store, read_only=True) as store:
        run_id = args.run_id
        if run_id is None:
            ptys = [s for s in store.sessions() if s.kind == "pty"]
            if not ptys:
                print("no pty session in the store", file=sys.stderr)
                return 1
            run_id = max(ptys, key=lambda s: s.created_us).run_id
        try:
            sc = dispatch.screen(store, run_id, args.at)
        except dispatch.NotFound:
            print(f"run {run_id} has no events", file=sys.stderr)
            return 1
        status = dispatch.session_status(store, run_id, args.at)
        print(f"{run_id} after seq {sc.seq}: {sc.cols}x{sc.rows}, cursor {sc.cursor}, "
              f"status {status['status']}"
              + (f", title {sc.title!r}" if sc.title else "")
              + (", alternate screen" if sc.alt_screen else ""))
        border = "+" + "-" * sc.cols + "+"
        print(border)
        last = max((i for i, line in enumerate(sc.lines) if line), default=0)
        for line in sc.lines[:max(last + 1, sc.cursor[0] + 1)]:
            print("|" + line.ljust(sc.cols) + "|")
        print(border)
        if args.cast:
            stats = dispatch.export_asciicast(store, run_id, args.cast)
            print(f"wrote {args.cast}: {stats['output_events']} output events, "
                  f"{stats['resize_events']} resizes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
