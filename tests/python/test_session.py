"""SessionManager and Session from Python: real ptys, driven with expect."""

import os
import re
import threading
import time

import pytest

import dispatch

from conftest import PYTHON


def test_python_repl_in_a_pty_driven_with_expect(manager, store):
    with manager.create("pty", argv=[PYTHON, "-q"], env={"PYTHONSTARTUP": None}) as s:
        s.expect(">>> ", timeout=20)
        s.sendline("6 * 7 + 100")
        m = s.expect(rb"(\d+)\r?\n>>> ")
        assert m.group(1) == b"142"
        assert b"6 * 7 + 100" in s.before            # the echo came first
        s.sendline("print('done', sum(range(10)))")
        assert s.expect(re.compile(r"done (\d+)")).group(1) == b"45"
        s.sendline("exit()")
        assert s.wait(10) == 0
        run_id = s.run_id
    # The whole conversation is in the store, in order.
    events = list(store.read(run_id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].channel == "system:status" and events[0].type == "created"
    assert events[-1].channel == "system:status" and events[-1].type == "closed"
    assert events[-1].json()["exitCode"] == 0
    typed = b"".join(e.payload for e in events if e.channel == "pty:stdin")
    assert typed == b"6 * 7 + 100\rprint('done', sum(range(10)))\rexit()\r"
    output = b"".join(e.payload for e in events if e.channel == "pty:stdout")
    assert b"142" in output and b"done 45" in output
    # The catalog follows the closed event (written in the background).
    deadline = time.monotonic() + 10
    while store.session(run_id).status != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.session(run_id).status == "stopped"


def test_echo_hello_and_events(manager):
    with manager.create("pty", argv=["/bin/sh"], env={"PS1": "$ "}) as s:
        s.expect_exact("$ ")
        s.sendline("echo hello")
        s.expect(rb"hello\r\n")
        s.sendline("exit 7")
        assert s.wait(10) == 7
        assert s.returncode == 7 and s.ended
        assert s.exit_info["exitCode"] == 7
        kinds = [(e.channel, e.type) for e in s.events()]
        assert ("pty:stdin", "input") in kinds and ("pty:stdout", "chunk") in kinds


def test_expect_timeout_carries_the_tail(manager):
    with manager.create("pty", argv=["/bin/sh"], env={"PS1": "prompt> "}) as s:
        s.expect("prompt> ")
        s.sendline("echo something-else")
        t0 = time.monotonic()
        with pytest.raises(dispatch.Timeout) as info:
            s.expect("never-printed", timeout=0.5)
        assert 0.45 <= time.monotonic() - t0 < 5
        assert b"something-else" in info.value.tail
        assert isinstance(info.value, TimeoutError)
        # The output was not consumed by the failed expect.
        assert s.expect("something-else").group(0) == b"something-else"


def test_expect_raises_closed_when_the_session_ends_first(manager):
    s = manager.create("pty", argv=["/bin/sh", "-c", "echo bye; exit 0"])
    with pytest.raises(dispatch.Closed) as info:
        s.expect("not-there", timeout=10)
    assert b"bye" in info.value.tail
    assert s.wait(5) == 0
    with pytest.raises(dispatch.Closed):
        s.send("more input")


def test_close_kills_and_reports_the_signal(manager):
    s = manager.create("pty", argv=["/bin/sleep", "100"])
    assert s.info()["status"] == "running"
    assert s.info()["description"]["pid"] > 0
    rc = s.close(timeout=10)
    assert rc is not None and rc < 0                 # -SIGHUP (or -SIGKILL)
    assert s.info() is None
    assert s.close() == rc                           # idempotent


def test_resize_is_recorded(manager):
    with manager.create("pty", argv=["/bin/sh"], env={"PS1": "$ "}) as s:
        s.expect_exact("$ ")
        s.resize(120, 40)
        s.sendline("stty size")
        s.expect(rb"40 120")
        dims = [e.json() for e in s.events() if e.channel == "pty:resize"]
        assert dims[-1] == {"cols": 120, "rows": 40}


def test_workspace_is_the_cwd_and_is_confined(manager, workspace, tmp_path):
    (workspace / "proj").mkdir()
    with manager.create("pty", "proj", argv=["/bin/sh", "-c", "pwd"]) as s:
        s.expect(re.escape(os.path.realpath(workspace / "proj")))
    with pytest.raises(dispatch.InvalidArgument):
        manager.create("pty", str(tmp_path), argv=["/bin/true"])       # outside the root
    with pytest.raises(dispatch.InvalidArgument):
        manager.create("pty", "../", argv=["/bin/true"])
    with pytest.raises(dispatch.NotFound):
        manager.create("pty", "missing-dir", argv=["/bin/true"])


def test_create_errors(manager):
    with pytest.raises(dispatch.InvalidArgument):
        manager.create("no-such-kind")
    with pytest.raises(dispatch.InvalidArgument):
        manager.create("pty", args="not a list")
    with pytest.raises(dispatch.InvalidArgument):
        manager.create("pty", run_id="bad id with spaces", argv=["/bin/true"])
    s = manager.create("pty", run_id="fixed-id", argv=["/bin/sleep", "5"])
    assert s.run_id == "fixed-id"
    with pytest.raises(dispatch.Conflict):
        manager.create("pty", run_id="fixed-id", argv=["/bin/true"])
    s.close(force=True)


def test_expect_releases_the_gil(manager):
    # While the main thread waits in expect(), another Python thread runs.
    counter = {"n": 0}
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter["n"] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        with manager.create("pty", argv=["/bin/sh", "-c", "sleep 0.5; echo late"]) as s:
            before = counter["n"]
            s.expect("late", timeout=10)
            assert counter["n"] - before > 1000
    finally:
        stop.set()
        t.join()


def test_manager_close_ends_sessions(store, workspace):
    m = dispatch.SessionManager(store, workspace)
    s = m.create("pty", argv=["/bin/sleep", "100"])
    m.close()
    assert m.closed
    assert s.wait(10) < 0                            # closed by the shutdown
    with pytest.raises(dispatch.Closed):
        s.send("x")
    with pytest.raises(dispatch.Closed):
        m.create("pty", argv=["/bin/true"])
    m.close()                                        # idempotent


def test_many_sessions_at_once(manager):
    sessions = [manager.create("pty", argv=["/bin/sh", "-c", f"echo n={i}; exit {i}"])
                for i in range(8)]
    for i, s in enumerate(sessions):
        s.expect(f"n={i}")
        assert s.wait(10) == i
    assert manager.errors() == []
