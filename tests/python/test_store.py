"""EventStore from Python: appends, reads, round trips, conflicts, catalog."""

import os
import threading

import pytest

import dispatch
from dispatch import NewEvent


def ev(payload=b"x", channel="pty:stdout", type="chunk", **kw):
    return NewEvent(channel, type, payload, **kw)


def test_arbitrary_bytes_round_trip_byte_exact(store):
    payloads = [
        bytes(range(256)),                      # every byte value, NUL included
        b"",                                    # empty
        b"\x00\x00\x00",
        b"\xff\xfe invalid utf-8 \xc3\x28 \xed\xa0\x80",
        "héllo wörld ✓".encode("utf-8"),
        os.urandom(1 << 20),                    # 1 MiB of noise
    ]
    r = store.append("bytes-run", [ev(p) for p in payloads])
    assert r.seqs == [1, 2, 3, 4, 5, 6]
    assert r.first_seq == 1 and r.last_seq == 6 and r.written == 6 and r.duplicates == 0
    got = list(store.read("bytes-run"))
    assert [e.payload for e in got] == payloads
    assert all(type(e.payload) is bytes for e in got)
    assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6]
    assert all(e.encoding == "bytes" and e.run_id == "bytes-run" for e in got)
    # And again after reopening the file.
    store.close()
    with dispatch.EventStore(store.path) as again:
        assert [e.payload for e in again.read("bytes-run")] == payloads


def test_payload_types_choose_the_encoding(store):
    store.append("enc", [
        NewEvent("a:b", "t", b"raw"),
        NewEvent("a:b", "t", "text ✓"),
        NewEvent("a:b", "t", {"k": [1, 2, None], "s": "ü"}),
        NewEvent("a:b", "t", '{"already": "json"}', encoding="json"),
        NewEvent("a:b", "t", "as bytes", encoding="bytes"),
        NewEvent("a:b", "t", [1, 2, 3]),
    ])
    e = list(store.read("enc"))
    assert [x.encoding for x in e] == ["bytes", "text", "json", "json", "bytes", "json"]
    assert e[1].text() == "text ✓" and e[1].payload == "text ✓".encode()
    assert e[2].json() == {"k": [1, 2, None], "s": "ü"}
    assert e[3].json() == {"already": "json"}
    assert e[4].payload == b"as bytes"
    assert e[5].json() == [1, 2, 3]
    assert e[0].id is None


def test_new_event_validation(store):
    with pytest.raises(dispatch.InvalidArgument):
        NewEvent("a:b", "t", b"x", encoding="utf16")
    with pytest.raises(dispatch.InvalidArgument):
        NewEvent("a:b", "t", {"a": 1}, encoding="bytes")
    with pytest.raises(TypeError):
        NewEvent("a:b", "t", object())          # not JSON-serialisable
    with pytest.raises(dispatch.InvalidArgument):
        store.append("r", NewEvent("a:b", "t", "{not json", encoding="json"))
    with pytest.raises(dispatch.InvalidArgument):
        store.append("r", NewEvent("bad channel!", "t", b""))
    with pytest.raises(dispatch.InvalidArgument):
        store.append("r", [])
    with pytest.raises(TypeError):
        store.append("r", ["not an event"])
    assert store.last_seq("r") == 0             # nothing was written by any of these


def test_fields_timestamps_ids_and_positions(store):
    store.append("one", ev(b"a", id="k1", ts_us=1_700_000_000_000_000))
    store.append("two", ev(b"b"))
    store.append("one", ev(b"c"))
    a, c = list(store.read("one"))
    assert a.id == "k1" and a.ts_us == 1_700_000_000_000_000
    assert a.timestamp == pytest.approx(1_700_000_000.0)
    assert c.ts_us > a.ts_us and c.id is None
    every = list(store.read_all())
    assert [(e.run_id, e.payload) for e in every] == [("one", b"a"), ("two", b"b"), ("one", b"c")]
    positions = [e.position for e in every]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert store.last_position() == positions[-1]
    assert [e.payload for e in store.read_all(after_position=positions[0])] == [b"b", b"c"]
    with pytest.raises(AttributeError):
        a.seq = 5                                # events are immutable
    assert a == list(store.read("one"))[0] and a != c
    assert "seq=1" in repr(a) and "id='k1'" in repr(a)
    # An append reports where its events landed: contiguous positions from first_position.
    r = store.append("two", [ev(b"d"), ev(b"e"), ev(b"f")])
    got = {(e.seq): e.position for e in store.read("two", after_seq=1)}
    assert got == {r.first_seq + k: r.first_position + k for k in range(3)}
    assert store.append("one", ev(b"a", id="k1")).first_position == 0      # a duplicate only


def test_idempotent_ids_do_not_duplicate(store):
    r1 = store.append("idem", [ev(b"1", id="a"), ev(b"2", id="b")])
    r2 = store.append("idem", [ev(b"1", id="a"), ev(b"3", id="c")])
    assert r1.seqs == [1, 2]
    assert r2.seqs == [1, 3] and r2.written == 1 and r2.duplicates == 1
    assert [e.payload for e in store.read("idem")] == [b"1", b"2", b"3"]


def test_conflict_on_expected_seq_writes_nothing(store):
    store.append("c", [ev(), ev()])
    with pytest.raises(dispatch.Conflict) as info:
        store.append("c", ev(b"late"), expected_seq=1)
    assert info.value.actual_last_seq == 2
    assert info.value.code == "conflict"
    assert store.last_seq("c") == 2
    assert store.append("c", ev(b"ok"), expected_seq=2).seqs == [3]
    with pytest.raises(dispatch.Conflict):
        store.append("c", ev(), expected_seq=0)     # 0 = the run must be empty
    assert store.append("fresh", ev(), expected_seq=0).seqs == [1]


def test_conflict_between_racing_writers(store):
    # Many threads all try to extend the run from the same seq: exactly one
    # wins each round; the others get Conflict with the real last seq.
    wins, conflicts = [], []
    barrier = threading.Barrier(6)

    def writer(i):
        barrier.wait()
        try:
            wins.append(store.append("race", ev(str(i).encode()), expected_seq=0))
        except dispatch.Conflict as e:
            conflicts.append(e.actual_last_seq)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and conflicts == [1] * 5
    assert store.last_seq("race") == 1


def test_read_cursor_and_limit(store):
    store.append("r", [ev(str(i).encode()) for i in range(1, 21)])
    assert [e.seq for e in store.read("r", after_seq=15)] == [16, 17, 18, 19, 20]
    assert [e.seq for e in store.read("r", after_seq=3, limit=4)] == [4, 5, 6, 7]
    assert list(store.read("r", limit=0)) == []
    assert list(store.read("r", after_seq=20)) == []
    assert list(store.read("no-such-run")) == []
    # Small chunks: the iterator fetches repeatedly and still yields each once.
    assert [e.seq for e in store.read("r", chunk_size=3)] == list(range(1, 21))
    assert [e.seq for e in store.read("r", after_seq=2, limit=7, chunk_size=2)] == list(range(3, 10))
    with pytest.raises(dispatch.InvalidArgument):
        store.read("r", limit=-1)


def test_iterate_a_100k_event_run(store):
    n = 100_000
    batch = [ev(b"%06d|" % i + b"." * 80) for i in range(n)]
    for i in range(0, n, 25_000):
        store.append("big", batch[i:i + 25_000])
    assert store.last_seq("big") == n
    count = 0
    for e in store.read("big"):
        count += 1
        assert e.seq == count
        assert e.payload[:7] == b"%06d|" % (count - 1)
    assert count == n
    assert store.run("big").event_count == n
    # From the middle, and as a list.
    tail = list(store.read("big", after_seq=n - 10))
    assert [e.seq for e in tail] == list(range(n - 9, n + 1))


def test_retention_raises_truncated_with_earliest_seq(store):
    store.append("t", [ev(str(i).encode()) for i in range(10)])
    assert store.truncate_before("t", 6) == 5
    with pytest.raises(dispatch.Truncated) as info:
        store.read("t")
    assert info.value.earliest_seq == 6
    assert [e.seq for e in store.read("t", after_seq=info.value.earliest_seq - 1)] == [6, 7, 8, 9, 10]
    with pytest.raises(dispatch.Truncated) as info:
        store.subscribe("t", 0, lambda e: None)
    assert info.value.earliest_seq == 6
    assert store.run("t").first_seq == 6
    seen = []
    sub = store.subscribe("t", 5, lambda e: seen.append(e.seq))
    assert sub.wait_caught_up(10) and seen == [6, 7, 8, 9, 10]
    sub.close()
    # The refused subscription left nothing behind that close() would wait for.
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() hangs after a refused subscribe"


def test_runs_and_run_info(store):
    store.append("b-run", [ev(b"12345"), ev(b"678")])
    store.append("a-run", ev())
    runs = store.runs()
    assert [r.run_id for r in runs] == ["a-run", "b-run"]
    info = store.run("b-run")
    assert info.last_seq == 2 and info.event_count == 2 and info.payload_bytes == 8
    with pytest.raises(dispatch.NotFound):
        store.run("never")


def test_catalog_sessions_workspaces_settings(store, tmp_path):
    assert store.sessions() == [] and store.workspaces() == [] and store.settings() == {}
    w = store.create_workspace("w1", "Project", str(tmp_path), metadata={"color": "red"})
    assert (w.id, w.name, w.path, w.status, w.metadata) == ("w1", "Project", str(tmp_path), "active", {"color": "red"})
    with pytest.raises(dispatch.Conflict):
        store.create_workspace("w1", "again", "/")
    w = store.update_workspace("w1", name="Renamed", status="archived")
    assert w.name == "Renamed" and w.status == "archived" and w.metadata == {"color": "red"}
    with pytest.raises(dispatch.NotFound):
        store.update_workspace("nope", name="x")
    with pytest.raises(dispatch.InvalidArgument):
        store.update_workspace("w1", status="sleeping")
    assert [x.id for x in store.workspaces()] == ["w1"]
    store.delete_workspace("w1")
    with pytest.raises(dispatch.NotFound):
        store.workspace("w1")

    store.put_settings("editor", {"tabs": 4, "theme": "dark"})
    store.put_settings("ui", [1, 2])
    assert store.get_settings("editor") == {"tabs": 4, "theme": "dark"}
    assert store.settings() == {"editor": {"tabs": 4, "theme": "dark"}, "ui": [1, 2]}
    with pytest.raises(dispatch.NotFound):
        store.get_settings("missing")

    store.put_session("s1", "pty", workspace="/tmp", status="running", meta={"a": 1})
    s = store.session("s1")
    assert (s.run_id, s.kind, s.status, s.workspace, s.meta) == ("s1", "pty", "running", "/tmp", {"a": 1})
    assert [x.run_id for x in store.sessions()] == ["s1"]
    with pytest.raises(dispatch.InvalidArgument):
        store.put_session("s2", "pty", status="weird")
    store.delete_session("s1")
    with pytest.raises(dispatch.NotFound):
        store.session("s1")


def test_catalog_layouts(store):
    assert store.layouts("client-1") == []
    store.put_layout("client-1", "w1", {"panes": [{"run": "pty-1", "size": 0.5}], "tab": 2})
    store.put_layout("client-1", "w2", [1, 2, 3])
    store.put_layout("client-2", "w1", {"panes": []})
    got = store.layout("client-1", "w1")
    assert (got.client_id, got.workspace_id) == ("client-1", "w1")
    assert got.layout == {"panes": [{"run": "pty-1", "size": 0.5}], "tab": 2}
    assert got.updated_us > 0
    assert sorted(l.workspace_id for l in store.layouts("client-1")) == ["w1", "w2"]
    store.put_layout("client-1", "w1", {"tab": 3})           # replaces
    assert store.layout("client-1", "w1").layout == {"tab": 3}
    store.delete_layout("client-1", "w1")
    with pytest.raises(dispatch.NotFound):
        store.layout("client-1", "w1")
    assert [l.workspace_id for l in store.layouts("client-1")] == ["w2"]
    assert store.layout("client-2", "w1").layout == {"panes": []}
    with pytest.raises(TypeError):
        store.put_layout("client-1", "w3", object())           # not JSON-serialisable


def test_error_mapping(tmp_path, store):
    # Each library status code arrives as its exception class, with the code.
    cases = [
        (lambda: store.run("missing"), dispatch.NotFound, "not_found"),
        (lambda: store.append("bad run id", ev()), dispatch.InvalidArgument, "invalid_argument"),
        (lambda: store.last_seq("x" * 200), dispatch.InvalidArgument, "invalid_argument"),
    ]
    store.append("c", ev())
    cases.append((lambda: store.append("c", ev(), expected_seq=5), dispatch.Conflict, "conflict"))
    for call, cls, code in cases:
        with pytest.raises(cls) as info:
            call()
        assert isinstance(info.value, dispatch.Error)
        assert info.value.code == code
        assert str(info.value)                      # a readable message

    # Python-side bases, so generic handlers work too.
    assert issubclass(dispatch.NotFound, LookupError)
    assert issubclass(dispatch.InvalidArgument, ValueError)
    assert issubclass(dispatch.Timeout, TimeoutError)
    for cls in (dispatch.Conflict, dispatch.Truncated, dispatch.Closed, dispatch.Busy,
                dispatch.ReadOnly, dispatch.Corruption):
        assert issubclass(cls, dispatch.Error)
    assert dispatch.Conflict.__module__ == "dispatch"

    # Read-only stores refuse writes.
    ro = dispatch.EventStore(store.path, read_only=True)
    assert [e.seq for e in ro.read("c")] == [1]
    with pytest.raises(dispatch.ReadOnly):
        ro.append("c", ev())
    ro.close()

    # Not a database.
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(dispatch.Error) as info:
        dispatch.EventStore(str(junk))
    assert info.value.code in ("corruption", "io_error")

    with pytest.raises(dispatch.InvalidArgument):
        dispatch.EventStore(str(tmp_path / "x.db"), durability="sometimes")

    # Closed: every call after close().
    store.close()
    store.close()                                   # idempotent
    for call in (lambda: store.append("c", ev()), lambda: store.read("c"),
                 lambda: store.last_seq("c"), lambda: store.subscribe("c", 0, print)):
        with pytest.raises(dispatch.Closed):
            call()


def test_context_manager_closes(store_path):
    with dispatch.EventStore(store_path) as s:
        s.append("r", ev())
    with pytest.raises(dispatch.Closed):
        s.append("r", ev())
    with dispatch.EventStore(store_path) as s:
        assert s.last_seq("r") == 1


def test_iterator_outlives_closed_store_object(store_path):
    s = dispatch.EventStore(store_path)
    s.append("r", [ev() for _ in range(10)])
    it = s.read("r", chunk_size=4)
    first = next(it)
    assert first.seq == 1
    del s                       # the iterator keeps the store alive
    assert [e.seq for e in it] == list(range(2, 11))


def test_memory_store(tmp_path):
    with dispatch.EventStore(":memory:") as s:
        s.append("m", [ev(b"a"), ev(b"b")])
        assert [e.payload for e in s.read("m")] == [b"a", b"b"]


def test_exclusive_store_keeps_writers_out_and_journals_small_appends(tmp_path):
    path = str(tmp_path / "x.db")
    with dispatch.EventStore(path, exclusive=True) as store:
        with pytest.raises(dispatch.Busy, match="held exclusively"):
            dispatch.EventStore(path)
        for i in range(1, 21):
            assert store.append("r", NewEvent("pty:stdout", "chunk", b"%d" % i)).last_seq == i
        assert store.stats()["journal_appends"] == 19
        # Every read of this store sees them; another reader once copied (flush).
        assert [e.payload for e in store.read("r")] == [b"%d" % i for i in range(1, 21)]
        store.append("r", NewEvent("pty:stdout", "chunk", b"21"))
        store.flush()
        with dispatch.EventStore(path, read_only=True) as reader:
            assert reader.last_seq("r") == 21
    with dispatch.EventStore(path) as store:  # closed: plain writers are welcome again
        assert store.last_seq("r") == 21
