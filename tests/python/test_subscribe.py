"""Subscriptions from Python: ordering, hand-over, errors in callbacks, threads."""

import logging
import threading
import time

import pytest

import dispatch
from dispatch import NewEvent


def ev(payload=b"x"):
    return NewEvent("pty:stdout", "chunk", payload)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_backlog_then_live_in_order_exactly_once(store):
    store.append("s", [ev(b"%d" % i) for i in range(1, 101)])
    seen, caught = [], []
    sub = store.subscribe("s", 40, lambda e: seen.append((e.seq, e.payload)),
                          on_caught_up=caught.append)
    assert sub.wait_caught_up(10)
    assert caught == [100]
    for i in range(101, 301):                       # live, one by one
        store.append("s", ev(b"%d" % i))
    wait_for(lambda: len(seen) >= 260)
    time.sleep(0.05)
    assert seen == [(i, b"%d" % i) for i in range(41, 301)]
    assert sub.cursor == 300 and sub.caught_up
    sub.close()
    assert sub.closed
    store.append("s", ev())
    time.sleep(0.05)
    assert len(seen) == 260                         # nothing after close()


def test_callback_that_raises_does_not_stop_delivery(store, caplog):
    seen = []

    def callback(e):
        seen.append(e.seq)
        if e.seq % 3 == 0:
            raise RuntimeError(f"bad event {e.seq}")

    with caplog.at_level(logging.ERROR, logger="dispatch"):
        sub = store.subscribe("err", 0, callback)
        store.append("err", [ev() for _ in range(10)])
        wait_for(lambda: len(seen) == 10)
        store.append("err", ev())
        wait_for(lambda: len(seen) == 11)
    assert seen == list(range(1, 12))
    assert sub.error_count == 3
    assert [str(e) for e in sub.errors] == ["bad event 3", "bad event 6", "bad event 9"]
    assert all(isinstance(e, RuntimeError) for e in sub.errors)
    assert sum("bad event" in r.getMessage() for r in caplog.records) == 3
    assert sub.error is None                        # the subscription itself is fine
    # The store is fine too.
    assert store.append("err", ev()).last_seq == 12
    sub.close()


def test_close_from_inside_the_callback(store):
    seen = []
    holder = {}
    assigned = threading.Event()

    def callback(e):
        seen.append(e.seq)
        if e.seq == 5:
            # Delivery starts before subscribe() returns: wait until the handle is known.
            assert assigned.wait(10)
            holder["sub"].close()

    store.append("inside", [ev() for _ in range(20)])
    holder["sub"] = store.subscribe("inside", 0, callback)
    assigned.set()
    wait_for(lambda: holder["sub"].closed)
    time.sleep(0.1)
    assert seen == [1, 2, 3, 4, 5]


def test_store_close_ends_subscription_with_closed(store_path):
    s = dispatch.EventStore(store_path)
    errors, ended = [], threading.Event()

    def on_error(exc):
        errors.append(exc)
        ended.set()

    sub = s.subscribe("x", 0, lambda e: None, on_error=on_error)
    s.append("x", ev())
    s.close()
    assert ended.wait(10)
    assert isinstance(errors[0], dispatch.Closed)
    assert isinstance(sub.error, dispatch.Closed)
    sub.close()


def test_subscribe_all_by_position(store):
    seen = []
    sub = store.subscribe_all(0, lambda e: seen.append((e.run_id, e.seq)))
    store.append("a", ev())
    store.append("b", ev())
    store.append("a", ev())
    wait_for(lambda: len(seen) == 3)
    assert seen == [("a", 1), ("b", 1), ("a", 2)]
    sub.close()


def test_two_threads_append_while_a_third_subscribes(store):
    n = 2000
    seen = []
    done = threading.Event()

    def on_event(e):
        seen.append((e.seq, e.payload))
        if len(seen) == 2 * n:
            done.set()

    def writer(name):
        for i in range(n):
            store.append("shared", NewEvent("pty:stdout", "chunk", f"{name}{i}".encode()))

    subscriber_ready = threading.Event()
    holder = {}

    def subscriber():
        holder["sub"] = store.subscribe("shared", 0, on_event)
        subscriber_ready.set()

    t3 = threading.Thread(target=subscriber)
    t3.start()
    writers = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for t in writers:
        t.start()
    for t in writers + [t3]:
        t.join(60)
    assert subscriber_ready.is_set()
    assert done.wait(30), f"only {len(seen)} events delivered"
    holder["sub"].close()
    # Every event exactly once, in seq order with no gap, and each writer's
    # events in the order that writer appended them.
    assert [s for s, _ in seen] == list(range(1, 2 * n + 1))
    for name in ("a", "b"):
        mine = [p for _, p in seen if p.startswith(name.encode())]
        assert mine == [f"{name}{i}".encode() for i in range(n)]
    assert [e.payload for e in store.read("shared")] == [p for _, p in seen]


def test_callbacks_run_while_main_thread_holds_no_lock(store):
    # The callback needs the GIL: a blocking call on the main thread (append,
    # wait_caught_up) must release it, or this deadlocks.
    seen = []
    sub = store.subscribe("gil", 0, lambda e: seen.append(e.seq))
    for _ in range(50):
        store.append("gil", ev())
    store.flush()
    wait_for(lambda: len(seen) == 50)
    sub.close()


def test_bad_callback_argument(store):
    with pytest.raises(TypeError):
        store.subscribe("x", 0, "not callable")


def test_raising_callbacks_do_not_harm_a_running_session(manager, store, caplog):
    # Callbacks that raise (an Exception, SystemExit, from on_caught_up too) on a live
    # session's run: each is reported, delivery goes on, the session and runtime carry on.
    seen = []

    def callback(e):
        seen.append(e.seq)
        if e.seq == 1:
            raise SystemExit(3)
        raise ValueError(f"event {e.seq}")

    def on_caught_up(seq):
        raise KeyError("caught up")

    with caplog.at_level(logging.ERROR, logger="dispatch"):
        with manager.create("pty", argv=["/bin/sh"], env={"PS1": "$ "}) as s:
            sub = store.subscribe(s.run_id, 0, callback, on_caught_up=on_caught_up)
            assert sub.wait_caught_up(10)
            s.expect_exact("$ ")
            s.sendline("echo still-alive")
            s.expect("still-alive\r\n")
            s.sendline("exit 0")
            assert s.wait(10) == 0
        manager.wait_idle(s.run_id)
        wait_for(lambda: len(seen) == store.last_seq(s.run_id))
        # The callback appends before it raises; the error is counted once it
        # has returned, so the last one may still be on its way.
        wait_for(lambda: sub.error_count >= len(seen) + 1)
    assert seen == list(range(1, store.last_seq(s.run_id) + 1))
    kinds = [type(x) for x in sub.errors]
    assert kinds.count(SystemExit) == 1 and KeyError in kinds
    assert sub.error_count == len(seen) + 1
    assert "subscription callback raised" in caplog.text
    assert manager.errors() == []
    # The runtime still runs sessions.
    with manager.create("pty", argv=["/bin/sh", "-c", "echo again"]) as s2:
        s2.expect("again")
    sub.close()
