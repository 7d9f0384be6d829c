"""Replay from Python: screens of real pty sessions (now and in the past), session status,
asciicast and JSON Lines recordings, errors, and the GIL released while rebuilding."""

import io
import json
import os
import select
import shutil
import subprocess
import threading
import time
import tty

import pytest

import dispatch
from dispatch import NewEvent

# A program that paints in three stages, each waiting for a line of input:
# a cleared screen with one line; then a title, a word and an X placed with
# tput; then the alternate screen.
STAGED = r"""
printf '\033[2J\033[Hfirst line\r\n'
read a
printf '\033]0;my title\007second'
tput cup 4 9; printf X
read b
tput smcup; printf 'in the alt screen'
read c
tput rmcup; printf 'back'
read d
exit 3
"""


def pty_stdout(store, run_id, up_to=None):
    return b"".join(e.payload for e in store.read(run_id)
                    if e.channel == "pty:stdout" and (up_to is None or e.seq <= up_to))


def run_in_pty(argv, timeout=60):
    """Runs argv with a raw pty as its controlling terminal; returns (exit code, output)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        p = subprocess.Popen(["setsid", "-c"] + argv, stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:         # EIO: the last writer closed the pty
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(master)
    return p.wait(timeout), out


def test_screen_of_a_real_pty_session_now_and_in_the_past(manager, store):
    with manager.create("pty", argv=["/bin/sh", "-c", STAGED], cols=60, rows=20,
                        env={"TERM": "xterm-256color"}) as s:
        s.expect("first line")
        first = s.screen()
        assert first.size == (60, 20) and (first.cols, first.rows) == (60, 20)
        assert first.lines[0] == "first line"
        assert first.lines[1:] == [""] * 19 and len(first.lines) == 20
        assert first.cursor == (1, 0)
        assert first.title == "" and not first.alt_screen
        assert first.seq == store.last_seq(s.run_id)

        s.sendline("go")                     # echoed by the tty on row 1
        s.expect("X")
        second = s.screen()
        assert second.lines[0] == "first line"
        assert second.lines[1] == "go"
        assert second.lines[2] == "second"
        assert second.lines[4] == " " * 9 + "X"
        assert second.cursor == (4, 10)
        assert second.title == "my title"
        assert second.seq > first.seq
        cell = second.cell(4, 9)
        assert cell["char"] == "X" and cell["width"] == 1 and cell["fg"] is None
        assert second.cell(4, 8)["char"] == ""
        with pytest.raises(IndexError):
            second.cell(20, 0)

        s.sendline("")
        s.expect("in the alt screen")
        alt = s.screen()
        assert alt.alt_screen
        assert alt.lines[5] == "in the alt screen"      # cursor kept: after the echoed Enter
        assert "first line" not in alt.text

        s.sendline("")
        s.expect("back")
        back = s.screen()
        assert not back.alt_screen
        assert back.lines[0] == "first line" and back.lines[2] == "second"

        s.sendline("")
        assert s.wait(10) == 3
        run_id = s.run_id

    # Time travel: the screen at a past seq is the one seen then, and differs from now.
    past = dispatch.screen(store, run_id, first.seq)
    assert past.seq == first.seq
    assert past.lines == first.lines and past.cursor == first.cursor
    latest = dispatch.screen(store, run_id)
    assert latest.seq == store.last_seq(run_id)
    assert latest.lines != past.lines
    assert dispatch.screen(store, run_id, second.seq).lines == second.lines
    at_alt = dispatch.screen(store, run_id, alt.seq)
    assert at_alt.alt_screen and at_alt.lines == alt.lines
    # Past the end is the latest state; seq 0 is a blank screen of the default size.
    assert dispatch.screen(store, run_id, 10**12).lines == latest.lines
    blank = dispatch.screen(store, run_id, 0, cols=30, rows=5)
    assert blank.seq == 0 and blank.lines == [""] * 5 and blank.cursor == (0, 0)

    # The screen is what a terminal emulator makes of exactly the recorded bytes: its
    # repaint, fed to a fresh screen, gives the same screen.
    text = pty_stdout(store, run_id, past.seq).decode()
    assert "first line" in text
    repainted = dispatch.NewEvent("pty:stdout", "chunk", past.repaint())
    store.append("repaint-check", [
        NewEvent("system:status", "created", {"kind": "pty", "cols": 60, "rows": 20}),
        repainted])
    again = dispatch.screen(store, "repaint-check")
    assert again.lines == past.lines and again.cursor == past.cursor


def test_session_status_at_each_point(manager, store):
    with manager.create("pty", argv=["/bin/sh", "-c", "read x; exit 5"]) as s:
        s.sendline("")
        assert s.wait(10) == 5
    manager.wait_idle(s.run_id)
    st = dispatch.session_status(store, s.run_id)
    assert st["status"] == "closed" and st["exit_code"] == 5 and st["kind"] == "pty"
    assert st["seq"] == st["last_seq"] == store.last_seq(s.run_id)
    assert st["event_count"] == len(list(store.read(s.run_id)))
    assert st["input_events"] == 1
    assert st["ended_us"] >= st["started_us"] > 0
    early = dispatch.session_status(store, s.run_id, at_seq=2)
    assert early["status"] in ("created", "started") and early["exit_code"] is None
    assert early["seq"] == 2


def test_resize_and_scrollback(store):
    evs = [NewEvent("system:status", "created", {"kind": "pty", "cols": 20, "rows": 3})]
    evs += [NewEvent("pty:stdout", "chunk", b"line %d\r\n" % i) for i in range(10)]
    evs.append(NewEvent("pty:resize", "dimensions", {"cols": 40, "rows": 6}))
    store.append("t", evs)
    sc = dispatch.screen(store, "t", at_seq=11)
    assert sc.size == (20, 3)
    assert sc.lines == ["line 8", "line 9", ""]
    assert sc.scrollback == ["line %d" % i for i in range(8)]
    assert dispatch.screen(store, "t", at_seq=11, scrollback=3).scrollback == ["line 5", "line 6", "line 7"]
    assert dispatch.screen(store, "t").size == (40, 6)


def test_export_asciicast_of_a_real_session(manager, store, tmp_path):
    with manager.create("pty", argv=["/bin/sh", "-c",
                                     r"printf 'h\303\251llo \342\224\200\n'; ls -l --color=always /; read x"],
                        cols=100, rows=30) as s:
        s.expect("h\u00e9llo")
        s.resize(120, 40)
        s.sendline("bye")
        assert s.wait(10) == 0
    manager.wait_idle(s.run_id)
    path = tmp_path / "run.cast"
    stats = dispatch.export_asciicast(store, s.run_id, path, include_input=True, title="demo")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (100, 30)
    assert header["title"] == "demo" and header["env"]["TERM"] == "xterm-256color"
    events = [json.loads(line) for line in lines[1:]]
    times = [e[0] for e in events]
    assert times == sorted(times) and times[0] >= 0
    out = "".join(e[2] for e in events if e[1] == "o")
    assert out.encode("utf-8") == pty_stdout(store, s.run_id)
    assert ["r", "120x40"] in [e[1:] for e in events]
    assert "".join(e[2] for e in events if e[1] == "i") == "bye\r"
    assert stats["output_events"] == sum(1 for e in events if e[1] == "o")
    assert stats["resize_events"] == 1 and stats["input_events"] == 1
    assert stats["invalid_utf8_bytes"] == 0

    # The same through a file object; without input by default.
    buf = io.BytesIO()
    dispatch.export_asciicast(store, s.run_id, buf)
    assert b'"i"' not in buf.getvalue()
    assert buf.getvalue().splitlines()[1:] == [
        l.encode() for l in lines[1:] if json.loads(l)[1] != "i"]

    # asciinema plays it back: `asciinema cat` (which wants a terminal) prints the
    # recorded output.
    if shutil.which("asciinema") and shutil.which("setsid"):
        code, played = run_in_pty(["asciinema", "cat", str(path)])
        assert code == 0, played
        assert played == pty_stdout(store, s.run_id)


def test_jsonl_export_import_round_trip(store, tmp_path):
    payloads = [bytes(range(256)), b"", b"\x00\xff\xfe", "h\u00e9llo", {"a": [1, 2, None]}]
    store.append("j", [NewEvent("system:status", "created", {"kind": "pty"})] +
                 [NewEvent("note:x", "t", p, id=f"id-{i}") for i, p in enumerate(payloads)])
    store.put_session("j", "pty", workspace="/w", status="stopped", meta={"m": 1})
    path = str(tmp_path / "j.jsonl")
    assert dispatch.export_jsonl(store, "j", path) == 6
    with dispatch.EventStore(str(tmp_path / "other.db")) as other:
        got = dispatch.import_jsonl(other, path)
        assert got == {"runs": ["j"], "events": 6, "sessions": 1, "renumbered": []}
        a, b = list(store.read("j")), list(other.read("j"))
        key = lambda e: (e.seq, e.ts_us, e.channel, e.type, e.payload, e.encoding, e.id)
        assert [key(e) for e in a] == [key(e) for e in b]
        assert other.session("j").meta == {"m": 1}
        # The run exists now: a second import is refused and writes nothing.
        with pytest.raises(dispatch.Conflict):
            dispatch.import_jsonl(other, path)
        assert other.last_seq("j") == 6

    # File objects both ways; a malformed line names its number.
    buf = io.BytesIO()
    dispatch.export_jsonl(store, "j", buf)
    assert buf.getvalue() == open(path, "rb").read()
    with dispatch.EventStore(":memory:") as mem:
        assert dispatch.import_jsonl(mem, io.BytesIO(buf.getvalue()))["events"] == 6
        bad = buf.getvalue().replace(b"\n", b"\n{not json\n", 2)
        with pytest.raises(dispatch.InvalidArgument, match="line"):
            dispatch.import_jsonl(mem, io.BytesIO(bad.replace(b'"runId":"j"', b'"runId":"k"')))


def test_replay_errors(store, tmp_path):
    store.append("r", NewEvent("pty:stdout", "chunk", b"x"))
    with pytest.raises(dispatch.NotFound):
        dispatch.screen(store, "missing")
    with pytest.raises(dispatch.NotFound):
        dispatch.session_status(store, "missing")
    with pytest.raises(dispatch.NotFound):
        dispatch.export_asciicast(store, "missing", tmp_path / "m.cast")
    assert not (tmp_path / "m.cast").exists()      # a failed export leaves no file
    with pytest.raises(dispatch.NotFound):
        dispatch.export_jsonl(store, "missing", tmp_path / "m.jsonl")
    for bad in (lambda: dispatch.screen(store, "bad id"),
                lambda: dispatch.screen(store, "r", -1),
                lambda: dispatch.screen(store, "r", cols=0),
                lambda: dispatch.screen(store, "r", rows=100000)):
        with pytest.raises(dispatch.InvalidArgument):
            bad()
    with pytest.raises(dispatch.Error) as info:
        dispatch.export_asciicast(store, "r", tmp_path / "no-such-dir" / "x.cast")
    assert info.value.code == "io_error" and "no-such-dir" in str(info.value)
    with pytest.raises(dispatch.Error) as info:
        dispatch.import_jsonl(store, tmp_path / "absent.jsonl")
    assert info.value.code == "io_error"
    with pytest.raises(TypeError):
        dispatch.screen("not a store", "r")
    with pytest.raises(TypeError, match="path must be"):
        dispatch.export_jsonl(store, "r", 42)
    with pytest.raises(TypeError, match="path must be"):
        dispatch.import_jsonl(store, None)

    # Retention removed the start and no snapshot covers it.
    store.append("r", [NewEvent("pty:stdout", "chunk", b"y") for _ in range(5)])
    store.truncate_before("r", 4)
    with pytest.raises(dispatch.Truncated) as info:
        dispatch.screen(store, "r")
    assert info.value.earliest_seq == 4

    store.close()
    with pytest.raises(dispatch.Closed):
        dispatch.screen(store, "r")
    with pytest.raises(dispatch.Closed):
        dispatch.export_jsonl(store, "r", io.BytesIO())


def test_screen_rebuild_releases_the_gil(store):
    # A run long enough that rebuilding its screen takes a while; another Python thread
    # must keep running meanwhile (the longest pause it sees is far below the rebuild time).
    line = b"\x1b[1;32m" + b"x" * 60 + b"\x1b[0m\r\n"
    for _ in range(3):
        store.append("big", [NewEvent("pty:stdout", "chunk", line) for _ in range(10000)])
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.0005)

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.02)
        start = time.monotonic()
        sc = dispatch.screen(store, "big", use_snapshots=False)
        end = time.monotonic()
    finally:
        stop.set()
        t.join()
    assert sc.seq == 30000 and sc.lines[-2] == "x" * 60
    during = [x for x in ticks if start <= x <= end]
    gaps = [b - a for a, b in zip([start] + during, during + [end])]
    assert end - start > 0.05, "rebuild too fast to tell"
    assert max(gaps) < (end - start) / 2, (max(gaps), end - start)


def test_damaged_recordings_and_random_output_never_crash(store):
    # Random terminal output (any bytes, split anywhere) gives a screen; a JSON Lines
    # export damaged at random places imports or fails with a dispatch.Error, never
    # worse.
    import random
    rng = random.Random(6)
    store.append("noise", [NewEvent("pty:stdout", "chunk",
                                    bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
                           for _ in range(200)])
    sc = dispatch.screen(store, "noise", cols=40, rows=10)
    assert len(sc.lines) == sc.rows and 0 <= sc.cursor[0] < sc.rows and 0 <= sc.cursor[1] <= sc.cols
    assert sc.repaint()
    buf = io.BytesIO()
    store.append("short", [NewEvent("pty:stdout", "chunk", b"%d" % i) for i in range(20)])
    dispatch.export_jsonl(store, "short", buf)
    good = buf.getvalue()
    outcomes = set()
    for i in range(150):
        data = bytearray(good.replace(b'"runId":"short"', b'"runId":"s%d"' % i))
        for _ in range(rng.randrange(1, 3)):
            at = rng.randrange(len(data))
            if rng.random() < 0.5:      # often still valid: another base64 character
                data[at] = rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
            else:
                data[at:at + rng.randrange(1, 8)] = bytes(
                    rng.randrange(256) for _ in range(rng.randrange(0, 8)))
        try:
            got = dispatch.import_jsonl(store, io.BytesIO(bytes(data)))
            outcomes.add("ok")
            assert got["events"] == sum(store.run(r).event_count for r in got["runs"])
        except dispatch.Error as e:
            outcomes.add(type(e).__name__)
            assert str(e)
    assert "InvalidArgument" in outcomes and "ok" in outcomes, outcomes
