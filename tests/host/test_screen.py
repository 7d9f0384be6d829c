"""Attach with a screen (run:attach {screen: true}) and slow clients that are
still catching up, against the real dispatch-host with python3-websockets.

The screen test renders what two clients received through the library's own
terminal emulator (the `dispatch` Python package: events appended to a temp
store, then `dispatch.screen`): the full history event by event, and the
run:screen repaint followed by the events after its seq. Both must give the
same screen, cell by cell."""
import asyncio
import base64
import json
import os
import socket
import tempfile
import time

import pytest
import websockets

from host_fixture import Host
from test_ws import Client, assert_contiguous, metric, run, stored_output_tail

dispatch = pytest.importorskip("dispatch")


def payload_bytes(e):
    if e["encoding"] == "bytes":
        return base64.b64decode(e["payload"])
    if e["encoding"] == "json":
        return json.dumps(e["payload"]).encode()
    return e["payload"].encode()


def as_new_event(e):
    enc = e["encoding"]
    data = payload_bytes(e)
    return dispatch.NewEvent(e["channel"], e["type"], data,
                             encoding="json" if enc == "json" else enc)


def render(store, run_id, events):
    store.append(run_id, events)
    return dispatch.screen(store, run_id, use_snapshots=False)


def screen_state(sc):
    cells = [[sc.cell(r, c) for c in range(sc.cols)] for r in range(sc.rows)]
    return {"size": sc.size, "lines": sc.lines, "cursor": sc.cursor, "title": sc.title,
            "alt": sc.alt_screen, "cursor_visible": sc.cursor_visible, "cells": cells}


def screen_of(frame):
    d = frame["data"]
    data = d["data"].encode() if d["encoding"] == "text" else base64.b64decode(d["data"])
    return d, data


async def produce_long_colourful_history(h, run_id):
    """Thousands of lines with colour, a resize mid-way and a title."""
    a = await Client.connect(h)
    await a.request("run:attach", {"runId": run_id})
    await a.request("run:input", {"runId": run_id, "data":
        "for i in $(seq 1 2500); do printf '\\033[3%dmline %d \\033[1mbold\\033[0m tail\\n' "
        "$((i % 7 + 1)) $i; done; echo done-$((20+1))\r"})
    await a.wait_output(run_id, b"done-21", 60)
    await a.request("run:resize", {"runId": run_id, "cols": 70, "rows": 20})
    await a.request("run:input", {"runId": run_id, "data":
        "printf '\\033]0;screen-title\\007\\033[44mblue bg\\033[0m\\n'; seq 1 400; "
        "printf '\\033[7mrev\\033[0m \\303\\251t\\303\\251 \\342\\224\\200\\n'; echo fin-$((3*3))\r"})
    await a.wait_output(run_id, b"fin-9", 60)
    return a


async def wait_output_http(h, run_id, needle, timeout=60):
    """Until the session's newest stored output contains `needle` and no
    event follows it; returns the last seq."""
    end = time.time() + timeout
    while time.time() < end:
        last, out = stored_output_tail(h, run_id)
        if needle in out:
            await asyncio.sleep(0.3)
            _, again, _ = h.request("GET", f"/api/sessions/{run_id}")
            if again["lastSeq"] == last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the stored output")


async def wait_quiet(h, run_id, client):
    """Until the client has every committed event (the shell is idle)."""
    last = -1
    for _ in range(200):
        status, s, _ = h.request("GET", f"/api/sessions/{run_id}")
        evs = client.events(run_id)
        if evs and evs[-1]["seq"] == s["lastSeq"] and s["lastSeq"] == last:
            return s["lastSeq"]
        last = s["lastSeq"]
        await asyncio.sleep(0.1)
    raise AssertionError("session did not go quiet")


@pytest.mark.parametrize("transport_scrollback", [False, True])
def test_screen_attach_equals_full_replay_then_live_without_gap(transport_scrollback):
    h = Host()
    tmp = tempfile.mkdtemp(prefix="screen-ref-")
    try:
        run_id = h.create_session("pty", shell="/bin/sh", cols=100, rows=30)

        async def go():
            a = await produce_long_colourful_history(h, run_id)
            mark = await wait_quiet(h, run_id, a)

            b = await Client.connect(h)
            req = {"runId": run_id, "screen": True}
            if transport_scrollback:
                req["scrollback"] = True
            ack = await b.request("run:attach", req)
            assert ack["event"] == "ack" and ack["data"]["screen"] is True, ack
            assert ack["data"]["toSeq"] == mark
            attached = await b.wait(lambda f: f["event"] == "run:attached", 60, "run:attached")
            assert attached["data"]["toSeq"] == mark

            # Order: the screen first, then only events after its seq, then
            # run:attached.
            kinds = [f["event"] for f in b.frames if f["event"] != "ack"]
            first = kinds.index("run:screen")
            assert kinds.count("run:screen") == 1
            assert all(k not in ("run:event", "run:event:batch") for k in kinds[:first])
            scr_frame = next(f for f in b.frames if f["event"] == "run:screen")
            scr, repaint = screen_of(scr_frame)
            assert scr["runId"] == run_id and 0 < scr["seq"] <= mark
            assert (scr["cols"], scr["rows"]) == (70, 20)
            assert scr["title"] == "screen-title"
            tail = b.events(run_id)
            if tail:
                assert_contiguous(tail, scr["seq"] + 1)
            assert scr["seq"] + len(tail) == mark
            # Far less than the history: one screen instead of 2900 lines.
            full_bytes = sum(len(payload_bytes(e)) for e in a.events(run_id))
            assert full_bytes > 80000
            if not transport_scrollback:
                assert len(repaint) < full_bytes / 20, (len(repaint), full_bytes)

            # Live after the attach: no gap, no duplicate, same as client A.
            await a.request("run:input", {"runId": run_id, "data": "echo live-$((40+2))\r"})
            await b.wait_output(run_id, b"live-42", 30)
            await a.wait_output(run_id, b"live-42", 30)
            end = await wait_quiet(h, run_id, b)
            tail = b.events(run_id)
            assert_contiguous(tail, scr["seq"] + 1)
            assert tail[-1]["seq"] == end
            full = a.events(run_id)
            assert_contiguous(full, 1)
            assert full[scr["seq"]:end] == tail

            # Render both in a reference terminal (the library's emulator).
            with dispatch.EventStore(os.path.join(tmp, "ref.db")) as store:
                ref = render(store, "full", [as_new_event(e) for e in full])
                got = render(store, "screen",
                             [dispatch.NewEvent("pty:resize", "dimensions",
                                                {"cols": scr["cols"], "rows": scr["rows"]}),
                              dispatch.NewEvent("pty:stdout", "chunk", repaint)] +
                             [as_new_event(e) for e in tail])
                assert screen_state(got) == screen_state(ref)
                assert "live-42" in ref.text
                if transport_scrollback:
                    assert got.scrollback == ref.scrollback
                    assert len(ref.scrollback) > 500
            await a.close()
            await b.close()
            assert metric(h, "dispatch_ws_screen_attach_total") == 1
            # The rebuild replayed the long tail: it is kept for the next attach.
            assert metric(h, "dispatch_ws_screen_snapshots_saved_total") == 1

        run(go())
    finally:
        h.close()


def test_screen_attach_options_and_fallbacks(tmp_path):
    h = Host()
    try:
        run_id = h.create_session("pty", shell="/bin/sh")

        async def go():
            a = await produce_long_colourful_history(h, run_id)
            mark = await wait_quiet(h, run_id, a)
            c = await Client.connect(h)
            # Bad values are refused.
            for bad in ({"screen": "yes"}, {"screen": 1}, {"screen": True, "scrollback": "no"}):
                r = await c.request("run:attach", {"runId": run_id, **bad})
                assert r["event"] == "error" and r["data"]["code"] == "invalid_argument", r
            # "auto" with a long backlog: a screen; with a short one: events.
            r = await c.request("run:attach", {"runId": run_id, "screen": "auto"})
            assert r["data"]["screen"] is True
            await c.wait(lambda f: f["event"] == "run:attached", 60)
            await c.request("run:detach", {"runId": run_id})
            n = len(c.frames)
            r = await c.request("run:attach", {"runId": run_id, "screen": "auto",
                                               "afterSeq": mark - 5})
            assert r["data"]["screen"] is False
            await c.wait(lambda f: f["event"] == "run:attached" and f in c.frames[n:], 60)
            assert not any(f["event"] == "run:screen" for f in c.frames[n:])
            assert_contiguous([e for f in c.frames[n:] if f["event"].startswith("run:event")
                               for e in ([f["data"]] if f["event"] == "run:event"
                                         else f["data"]["events"])], mark - 4)
            # Nothing to replace (afterSeq = the end): no screen either.
            r = await c.request("run:attach", {"runId": run_id, "screen": True,
                                               "afterSeq": mark})
            assert r["data"]["screen"] is False
            # A second screen attach starts from the snapshot the first saved.
            n = len(c.frames)
            r = await c.request("run:attach", {"runId": run_id, "screen": True, "role": "viewer"})
            assert r["data"]["screen"] is True
            f = await c.wait(lambda f: f["event"] == "run:screen" and f in c.frames[n:], 60)
            assert f["data"]["seq"] == mark
            await c.wait(lambda f: f["event"] == "run:attached" and f in c.frames[n:], 60)
            # A run that is not a pty (a file session) gets its events.
            fid = h.create_session("file")
            for _ in range(100):
                if h.request("GET", f"/api/sessions/{fid}")[1]["lastSeq"] >= 1:
                    break
                await asyncio.sleep(0.05)
            n = len(c.frames)
            r = await c.request("run:attach", {"runId": fid, "screen": True})
            assert r["event"] == "ack" and r["data"]["screen"] is False, r
            assert r["data"]["toSeq"] >= 1
            await c.wait(lambda f: f["event"] == "run:attached" and f["data"]["runId"] == fid, 30)
            assert_contiguous(c.events(fid), 1)
            assert not any(f["event"] == "run:screen" for f in c.frames[n:])
            await a.close()
            await c.close()

        run(go())
    finally:
        h.close()


# ------------------------------------------------------------ slow clients


def small_buffer_socket(port):
    # A modest receive buffer so the flood surely exceeds what the kernel
    # buffers (a buffer below the loopback MSS would make TCP crawl instead).
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    return sock


def events_of(msg):
    if msg["event"] == "run:event":
        return [msg["data"]]
    if msg["event"] == "run:event:batch":
        return msg["data"]["events"]
    return []


@pytest.mark.parametrize("policy", ["resync", "disconnect"])
def test_client_that_stops_reading_while_catching_up_during_a_flood(policy):
    """The client attaches while a session floods (so it is catching up from
    the store) and stops reading. disconnect: error slow_client, then close,
    although it never went live. resync: bounded, then it gets everything."""
    bound = 65536
    h = Host("--client-queue-bytes", str(bound), "--slow-client", policy)
    try:
        run_id = h.create_session("pty", shell="/bin/sh")

        async def go():
            # The driver types, then detaches (it would be a slow client too).
            driver = await Client.connect(h)
            await driver.request("run:attach", {"runId": run_id})
            await asyncio.sleep(0.3)  # the prompt
            await driver.request("run:input", {"runId": run_id, "data":
                "for i in $(seq 1 120); do seq -f 'x%.0f' $((i*20000)) $((i*20000+19999)); "
                "sleep 0.05; done; echo end-$((6*7))\r"})
            await driver.request("run:detach", {"runId": run_id})
            # The flood goes on for several seconds (~20 MB, paced). Attach
            # without reading once the backlog is larger than what the
            # kernel's socket buffers can hold (so the client is still
            # catching up when the policy applies).
            for _ in range(300):
                if metric(h, "dispatch_event_bytes_appended_total") > 7e6:
                    break
                await asyncio.sleep(0.05)
            ws = await websockets.connect(h.ws_url, sock=small_buffer_socket(h.port),
                                          max_size=None, max_queue=1)
            await ws.send(json.dumps({"event": "client:hello", "data": {"key": h.key}, "id": 1}))
            await ws.send(json.dumps({"event": "run:attach", "data": {"runId": run_id},
                                      "id": 2}))
            # Not reading while the session writes everything.
            peak = 0
            end = time.time() + 120
            while time.time() < end:
                peak = max(peak, metric(h, "dispatch_ws_queued_bytes"))
                _, out = stored_output_tail(h, run_id)
                if b"end-42" in out:
                    break
                await asyncio.sleep(0.2)
            # Bounded: the configured bound plus at most one store page (512
            # KiB) or one event (the runtime coalesces output up to 1 MiB,
            # base64 on the wire).
            assert peak <= bound + (2 << 20), peak
            seqs, text, attached_before, error, closed = [], [], False, None, None
            while True:
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
                except websockets.ConnectionClosed as e:
                    closed = e
                    break
                if msg["event"] == "error":
                    error = msg["data"]
                if msg["event"] == "run:attached" and error is None:
                    attached_before = True
                for e in events_of(msg):
                    seqs.append(e["seq"])
                    if e["channel"] == "pty:stdout":
                        text.append(base64.b64decode(e["payload"]))
                if text and b"end-42" in b"".join(text[-3:]):
                    break
            assert seqs == list(range(1, len(seqs) + 1))
            if policy == "resync":
                assert closed is None and error is None
                assert b"\nx2419999\r\n" in b"".join(text)
                assert metric(h, 'dispatch_ws_slow_client_total{action="disconnect"}') == 0
                await ws.close()
            else:
                assert error is not None and error["code"] == "slow_client", (error, h.log()[-3000:])
                assert error["runId"] == run_id
                # Closed (with 1008 if the close frame made it before the
                # socket was shut).
                assert closed is not None
                assert closed.rcvd is None or closed.rcvd.code == 1008, closed
                # It was still catching up: run:attached never came.
                assert not attached_before
                assert metric(h, 'dispatch_ws_slow_client_total{action="disconnect"}') == 1
                assert "catching up" in h.log()
            await driver.close()

        run(go())
    finally:
        h.close()


def test_disconnect_policy_lets_a_slow_reader_catch_up_on_a_quiet_session():
    """Catching up is paced by the client: a long backlog to a client that
    reads late is not "slow" when the session produces nothing meanwhile."""
    bound = 65536
    h = Host("--client-queue-bytes", str(bound), "--slow-client", "disconnect")
    try:
        # The history is made with no client attached: under this tiny bound
        # a live reader on a loaded machine may itself be (rightly) too slow.
        run_id = h.create_session("pty", shell="/bin/sh", args=[
            "-c", "seq 1 100000; echo end-$((6*7)); exec sleep 600"])

        async def go():
            mark = await wait_output_http(h, run_id, b"end-42")
            ws = await websockets.connect(h.ws_url, sock=small_buffer_socket(h.port),
                                          max_size=None, max_queue=1)
            await ws.send(json.dumps({"event": "client:hello", "data": {"key": h.key}, "id": 1}))
            await ws.send(json.dumps({"event": "run:attach", "data": {"runId": run_id},
                                      "id": 2}))
            await asyncio.sleep(1.5)  # not reading: the host pauses the backlog
            assert metric(h, "dispatch_ws_queued_bytes") <= bound + (2 << 20)
            seqs = []
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert msg["event"] != "error", msg
                seqs += [e["seq"] for e in events_of(msg)]
                if msg["event"] == "run:attached":
                    break
            assert seqs == list(range(1, mark + 1))
            await ws.close()
            assert metric(h, 'dispatch_ws_slow_client_total{action="disconnect"}') == 0

        run(go())
    finally:
        h.close()
