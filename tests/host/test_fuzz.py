"""Bad and random input thrown at the real dispatch-host: it never crashes,
never hangs, answers bad input with a clear error, and loses nothing.

One host (module fixture) serves every test but the few that may crash it
(those start their own). It holds a control pty session (/bin/sh) that the
fuzzers may attach to, detach from and resize but never type into or close,
and "victim" pty sessions running /bin/cat that they may do anything to.

* Targeted tables: hand-written nasty inputs with the exact answer the
  protocol promises (doc/protocol.md, DESIGN §5).
* Seeded random runs built from grammars: native /ws messages (event names,
  wrong-typed/missing/extra fields, huge and odd numbers, long strings,
  truncated JSON, deep nesting, non-objects, odd ids), raw WebSocket frames
  (opcodes, RSV bits, masking, fragmentation, lengths, invalid UTF-8),
  Socket.IO packets, well-formed HTTP requests (methods, paths, queries,
  headers, bodies) and mutated raw HTTP bytes.
  Each batch is checked: every /ws request with an id gets exactly one reply
  with that id, every malformed frame exactly one `bad_frame` error, every
  HTTP error is 4xx with a JSON {error, code} body (never 5xx, never a
  connection dropped without a response), then GET /health is 200, the
  process is alive and its stderr has no sanitizer report.
* Finally the control session is checked end to end (attach from 0 with a
  fresh client: seqs 1..N contiguous; `echo` comes back), every run's stored
  history is contiguous, SIGTERM exits 0 with a clean stderr, and a restart
  on the same data dir serves the same history.

Length: DISPATCH_FUZZ_SECONDS (default 4) seconds of random input in all,
split between the random tests. Seed: DISPATCH_FUZZ_SEED (printed at the
start and in every failure) replays a run. DISPATCH_FUZZ_ALL=1 also lets the
random runs generate the requests that libwebsockets refuses while parsing,
before the host sees them (see LWS_LEVEL); by default the random runs steer
around them, so that what they find is the host's. The defects this suite
found are fixed, and each has a targeted test below (its docstring gives
the reproducer).
"""
import asyncio
import base64
import collections
import http.client
import json
import os
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import urllib.parse

import pytest
import websockets

import host_fixture
from host_fixture import Host

# The fixture starts the binary with cwd = its temp dir: make a relative
# DISPATCH_HOST_BIN (as typed on a command line) absolute first.
host_fixture.BIN = os.path.abspath(host_fixture.BIN)

FUZZ_SECONDS = float(os.environ.get("DISPATCH_FUZZ_SECONDS") or 4)
SEED = int(os.environ.get("DISPATCH_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
# LWS_LEVEL: what libwebsockets refuses while parsing a request, before the
# host's callback (test_http_requests_lws_refuses_get_a_4xx_or_a_close):
# %00 in URLs and request lines past its header space. Unless
# DISPATCH_FUZZ_ALL=1 the random HTTP runs do not generate them.
FUZZ_ALL = os.environ.get("DISPATCH_FUZZ_ALL") == "1"
# Share of FUZZ_SECONDS per random test.
SHARE = {"ws": 0.35, "rawws": 0.1, "sio": 0.15, "http": 0.3, "rawhttp": 0.1}
REPLY_TIMEOUT = 30  # a reply slower than this (ASan, loaded machine) is a hang
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "UndefinedBehaviorSanitizer")

# The sentinel ids used to close a batch: far from the random ids.
SENTINEL_BASE = 7_000_000_000


# Python's json decodes nested arrays recursively: the host may store (and
# return) documents 1000 levels deep.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))

_terminal = None  # (pytest's terminal reporter, capture manager), set by the fixture


def say(msg):
    # To the terminal (not captured), so the seed of a passing run is
    # visible too; and to stdout, which pytest shows with a failure.
    print(msg)
    if _terminal is not None and _terminal[0] is not None:
        tr, capman = _terminal
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(msg)
        else:
            tr.write_line(msg)


def rng_for(name):
    return random.Random(f"{SEED}:{name}")


def short(b, n=300):
    r = repr(b)
    return r if len(r) <= n else r[:n] + f"...({len(b)} long)"


# ====================================================================== the host


class Fuzz:
    """The shared host, its sessions and the record of what was sent."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="dispatch-fuzz-")
        # Wrong keys are part of the input: keep the fuzzer's own address
        # from being rate limited.
        self.host = Host("--auth-fail-limit", "1000000", workdir=self.workdir)
        self.ws_dir = "fuzz-ws"
        os.makedirs(os.path.join(self.host.root, self.ws_dir), exist_ok=True)
        self.created = set()        # runs created by the HTTP fuzzer, to delete
        self.all_runs = set()       # every run ever created (their logs are checked at the end)
        self.control = self.create_pty("/bin/sh")
        self.victims = [self.create_pty("/bin/cat") for _ in range(2)]
        self.recent = collections.deque(maxlen=12)   # the last inputs, for a reproducer
        self.violations = []        # (kind, detail, recent inputs)
        self.stopped = False
        self._log_seen = 0
        self._sanitizer = []

    @property
    def key(self):
        return self.host.key

    @property
    def port(self):
        return self.host.port

    def create_pty(self, shell, run_id=None):
        body = {"kind": "pty", "workspace": self.ws_dir,
                "options": {"shell": shell, "cols": 80, "rows": 24}}
        if run_id:
            body["runId"] = run_id
        status, value, _ = self.host.request("POST", "/api/sessions", body)
        assert status == 201, (status, value, self.host.log()[-2000:])
        self.all_runs.add(value["runId"])
        return value["runId"]

    def note(self, what):
        self.recent.append(what)

    def violation(self, kind, detail):
        self.violations.append((kind, detail, list(self.recent)[-6:]))

    def assert_clean(self, what):
        if not self.violations:
            return
        by_kind = collections.OrderedDict()
        for kind, detail, recent in self.violations:
            by_kind.setdefault(kind, []).append((detail, recent))
        lines = [f"{what}: {len(self.violations)} violation(s) in {len(by_kind)} kind(s) "
                 f"(DISPATCH_FUZZ_SEED={SEED})"]
        for kind, items in by_kind.items():
            detail, recent = items[0]
            lines.append(f"- {kind} (x{len(items)}): {detail}")
            for r in recent:
                lines.append(f"    recent input: {r}")
        self.violations.clear()
        raise AssertionError("\n".join(lines))

    def sanitizer_lines(self):
        """Sanitizer lines in the host's stderr (read on from where the last
        call stopped: the log grows during a long run)."""
        self.host.stderr.flush()
        with open(self.host.stderr_path, "rb") as f:
            f.seek(self._log_seen)
            new = f.read()
        cut = new.rfind(b"\n") + 1
        self._log_seen += cut
        lines = new[:cut].decode(errors="replace").splitlines()
        self._sanitizer += [l for l in lines if any(m in l for m in SANITIZER_MARKERS)]
        return self._sanitizer

    def checkpoint(self, what=""):
        """The host is alive, answers /health, and reported no sanitizer error."""
        ctx = f"after {what} (DISPATCH_FUZZ_SEED={SEED}); recent inputs: {list(self.recent)[-6:]}"
        code = self.host.proc.poll()
        assert code is None, f"dispatch-host died (exit {code}) {ctx}\n{self.host.log()[-6000:]}"
        t0 = time.time()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REPLY_TIMEOUT)
            conn.request("GET", "/health")
            r = conn.getresponse()
            body = r.read()
            conn.close()
        except Exception as e:  # noqa: BLE001
            try:
                code = self.host.proc.wait(timeout=5)
            except Exception:  # noqa: BLE001
                code = None
            raise AssertionError(f"GET /health failed: {e!r}; the host's exit status: {code} {ctx}\n"
                                 f"{self.host.log()[-6000:]}")
        assert r.status == 200 and json.loads(body) == {"status": "ok"}, (r.status, body, ctx)
        assert time.time() - t0 < REPLY_TIMEOUT
        san = self.sanitizer_lines()
        assert not san, f"sanitizer report {ctx}:\n" + "\n".join(san[:20]) + "\n" + self.host.log()[-6000:]
        assert self.host.proc.poll() is None, ctx

    def restore_victims(self):
        """Victims closed or deleted by the fuzzers are replaced by live ones."""
        for i, v in enumerate(self.victims):
            status, s, _ = self.host.request("GET", f"/api/sessions/{v}")
            if status != 200 or not s.get("live"):
                self.victims[i] = self.create_pty("/bin/cat")
        for run in list(self.created):
            status, body, _ = self.host.request("DELETE", f"/api/sessions/{run}")
            if status not in (200, 404):
                self.violation("cleanup DELETE failed", f"DELETE /api/sessions/{run} -> {status} {body}")
            self.created.discard(run)


@pytest.fixture(scope="module")
def fz(request):
    global _terminal
    _terminal = (request.config.pluginmanager.get_plugin("terminalreporter"),
                 request.config.pluginmanager.get_plugin("capturemanager"))
    say(f"\n[fuzz] DISPATCH_FUZZ_SEED={SEED} DISPATCH_FUZZ_SECONDS={FUZZ_SECONDS:g}"
        f"{' DISPATCH_FUZZ_ALL=1' if FUZZ_ALL else ''} host={host_fixture.BIN}")
    f = Fuzz()
    yield f
    if not f.stopped:
        f.host.close()
    else:
        if not f.host.stderr.closed:
            f.host.stderr.close()
    shutil.rmtree(f.workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _leftover_violations(request):
    """Violations a test recorded but did not report (it failed earlier)
    are reported by its teardown, never by the next test."""
    yield
    f = request.node.funcargs.get("fz")
    if f is not None and f.violations:
        f.assert_clean(f"{request.node.name} (reported at teardown)")


def run(coro, timeout=600):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ====================================================================== JSON generation


class Raw(str):
    """JSON text emitted verbatim. ok: nlohmann (the host's parser) accepts
    it; value: what it parses to (for ids)."""

    def __new__(cls, text, ok, value=None, depth=0, jtype="scalar"):
        s = super().__new__(cls, text)
        s.ok = ok
        s.value = value
        s.depth = depth
        s.jtype = jtype
        return s


def is_obj(v):
    return isinstance(v, dict) or (isinstance(v, Raw) and v.jtype == "object")


RAW_OK = [Raw("-0", True, 0), Raw("1E2", True, 100.0), Raw("1.0", True, 1.0), Raw("0.0e0", True, 0.0),
          Raw("-1.5e-7", True, -1.5e-7), Raw("123456789012345678901234567890", True, 1.2e29),
          Raw("18446744073709551616", True, 1.8e19), Raw("-9223372036854775809", True, -9.2e18)]
RAW_BAD = [Raw("1e400", False), Raw("-1e400", False), Raw("NaN", False), Raw("Infinity", False),
           Raw("-", False), Raw("01", False), Raw("+1", False), Raw(".5", False), Raw("1.", False),
           Raw('"\\ud800"', False), Raw('"\\udc00x"', False), Raw('"\\x41"', False), Raw('"\x01"', False),
           Raw("'single'", False), Raw("tru", False), Raw("nul", False), Raw('"unterminated', False),
           Raw("[1,]", False), Raw('{"a":1,}', False), Raw("{1:2}", False), Raw("0x10", False)]
INTS = [0, 1, -1, 2, 7, 42, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -2**31, 2**32,
        2**53, 2**53 + 1, 2**63 - 1, -2**63, 2**63, 2**64 - 1, 2**64, 2**70, -2**70, 10**30]
FLOATS = [0.5, -0.0, 1.5, -2.25, 1e308, 5e-324, 3.0, 1e-10, 6.02e23]


def dump(v, rng=None):
    """JSON text of v (Raw verbatim); random but legal whitespace with rng."""
    sp = (lambda: rng.choice(["", "", "", " ", "\n", "\t", "\r\n "])) if rng else (lambda: "")
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(sp() + json.dumps(k) + sp() + ":" + sp() + dump(x, rng) + sp()
                              for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(sp() + dump(x, rng) + sp() for x in v) + "]"
    return json.dumps(v, ensure_ascii=bool(rng and rng.random() < 0.5))


def has_bad(v):
    if isinstance(v, Raw):
        return not v.ok
    if isinstance(v, dict):
        return any(has_bad(x) for x in v.values())
    if isinstance(v, list):
        return any(has_bad(x) for x in v)
    return False


def depth(v):
    if isinstance(v, Raw):
        return v.depth
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def rchar(rng):
    r = rng.random()
    if r < 0.55:
        return chr(rng.randrange(0x20, 0x7F))
    if r < 0.7:
        return chr(rng.randrange(0, 0x20))
    if r < 0.85:
        return chr(rng.randrange(0xA0, 0xD800))
    if r < 0.95:
        return chr(rng.randrange(0xE000, 0x10000))
    return chr(rng.randrange(0x10000, 0x110000))


def rstr(rng, maxlen=24, allow_long=True):
    r = rng.random()
    if r < 0.08:
        return ""
    if r < 0.13:
        return rng.choice(["/", "..", "../..", "a/b", "\x00", "a\x00b", "%00", "%2e%2e", "\\", "\"",
                           "${HOME}", "$(id)", "`id`", "\u202e", "\ufeff", "\U0001F600", "null",
                           "__proto__", "constructor", " ", "\r\n"])
    if allow_long and r < 0.18:
        n = rng.choice([129, 1000, 4096, 65536, 200_000])
        return rng.choice(["a", "\u00e9", "\U0001F600", "\x00", "[", "{"]) * n
    return "".join(rchar(rng) for _ in range(rng.randrange(1, maxlen)))


def rscalar(rng):
    r = rng.random()
    if r < 0.15:
        return None
    if r < 0.25:
        return rng.random() < 0.5
    if r < 0.45:
        return rng.choice(INTS)
    if r < 0.55:
        return rng.choice(FLOATS)
    if r < 0.62:
        return rng.choice(RAW_OK)
    if r < 0.66:
        return rng.choice(RAW_BAD)
    return rstr(rng)


def rvalue(rng, d=0, maxd=5):
    r = rng.random()
    if d < maxd and r < 0.15:
        return [rvalue(rng, d + 1, maxd) for _ in range(rng.randrange(0, 4))]
    if d < maxd and r < 0.3:
        return {rstr(rng, 8, False): rvalue(rng, d + 1, maxd) for _ in range(rng.randrange(0, 4))}
    if r < 0.33:
        # Deep nesting, as text (mixed arrays and objects).
        n = rng.choice([10, 60, 62, 63, 64, 65, 100, 1000])
        opens = [rng.random() < 0.5 for _ in range(n)]
        text = "".join("[" if a else '{"k":' for a in opens) + rng.choice(["1", '"x"', "null"]) + \
            "".join("]" if a else "}" for a in reversed(opens))
        return Raw(text, True, depth=n, jtype="array" if opens[0] else "object")
    return rscalar(rng)


def wrong_type(rng, not_this):
    """A value of a different JSON type than `not_this` ('string', 'int', 'bool', 'object')."""
    pool = {
        "string": lambda: rng.choice([5, -1, 2**70, 1.5, True, False, None, [], {}, ["x"], {"a": "b"},
                                      rng.choice(RAW_OK)]),
        "int": lambda: rng.choice([1.5, -0.5, "5", "", True, None, [], {}, [5], 2**70, -2**70, 1e308,
                                   Raw("1E2", True, 100.0), Raw("1.0", True, 1.0)]),
        "bool": lambda: rng.choice([0, 1, "true", "", None, [], {}, 1.0]),
        "object": lambda: rng.choice([[], [1], "x", 5, True, 1.5]),
    }
    return pool[not_this]()


# ====================================================================== native /ws frames


VALID_EVENTS = ["client:hello", "run:attach", "run:input", "run:resize", "run:detach", "run:close"]
ODD_EVENTS = ["run:attach ", "RUN:ATTACH", "run:", "run", ":", "x", "run:event", "ack", "error",
              "run:attached", "session:closed", "run:screen", "run:event:batch", "\u00fcn\u00efc\u00f6de",
              "e" * 64, "\U0001F600" * 16, "run:attach\x00", "42", "__proto__", "constructor",
              "message", "connect", "disconnect", " run:input"]


class Gen:
    """Random /ws and Socket.IO messages for one fuzz connection."""

    def __init__(self, fz, rng):
        self.fz = fz
        self.rng = rng

    def run_id(self, for_event):
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            run = rng.choice(self.fz.victims)
        elif r < 0.6:
            run = self.fz.control
        elif r < 0.68:
            run = "no-such-run-" + str(rng.randrange(100))
        elif r < 0.8:
            run = rng.choice(["", "a" * 128, "a" * 129, "a" * 100_000, "a/b", "../" + self.fz.control,
                              self.fz.control + "/", self.fz.control + "\x00", "a\x00b", "run id",
                              "\u00e9", "%2F", ".", "..", "-", ":", self.fz.control.upper(), "*"])
        elif r < 0.9:
            return wrong_type(rng, "string")
        else:
            run = rstr(rng, 40)
        # The control session is for attach/detach/resize only: never typed
        # into or closed.
        if run == self.fz.control and for_event in ("run:input", "run:close"):
            run = rng.choice(self.fz.victims)
        return run

    def field(self, plausible, typ, edge=()):
        """A field's value: plausible, an edge value, a wrong type, or MISSING."""
        r = self.rng.random()
        if r < 0.55:
            return plausible()
        if r < 0.7 and edge:
            return self.rng.choice(edge)
        if r < 0.85:
            return wrong_type(self.rng, typ)
        return MISSING

    def data_for(self, event):
        rng, fz = self.rng, self.fz
        d = {}
        put = lambda k, v: d.__setitem__(k, v) if v is not MISSING else None  # noqa: E731
        if event == "client:hello":
            put("clientId", self.field(lambda: rstr(rng, 30), "string"))
            put("key", self.field(lambda: rng.choice([fz.key, fz.key + "x", "wrong-key-wrong-key", ""]),
                                  "string"))
        elif event in ("run:attach", "run:input", "run:resize", "run:detach", "run:close") or rng.random() < 0.5:
            put("runId", self.field(lambda: self.run_id(event), "string",
                                    edge=[self.run_id(event) for _ in range(2)]))
            if event == "run:attach" or (event not in VALID_EVENTS and rng.random() < 0.3):
                put("afterSeq", self.field(lambda: rng.choice([0, 0, 1, 2, 3, 5, 10, 100]), "int",
                                           edge=[-1, 2**31, 2**53, 2**63 - 1, -2**63, 2**63, 2**64 - 1,
                                                 10**9, Raw("-0", True, 0), Raw("1e400", False)]))
                put("role", self.field(lambda: rng.choice(["viewer", "operator", "owner", "editor"]),
                                       "string", edge=["admin", "", "VIEWER", "viewer\x00"]))
                put("screen", self.field(lambda: rng.choice([True, False, "auto"]), "bool",
                                         edge=["yes", "AUTO", 1, 0]))
                put("scrollback", self.field(lambda: rng.choice([True, False]), "bool"))
            if event == "run:input":
                enc = self.field(lambda: rng.choice(["text", "bytes", "base64", "utf8", "utf-8"]), "string",
                                 edge=["BYTES", "", "hex", "latin1", "bytes\x00"])
                if enc in ("bytes", "base64") and rng.random() < 0.7:
                    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
                    text = base64.b64encode(raw).decode()
                    text = rng.choice([text, text.rstrip("="), text.replace("+", "-").replace("/", "_"),
                                       text + "=", "!!!", "QQ", "Q", "QQ=", "QQ==QQ==", "a b", "\u00e9",
                                       "====", text[:-1]])
                    put("data", text)
                else:
                    put("data", self.field(lambda: rstr(rng, 60), "string",
                                           edge=["", "x" * 65536, "\x00" * 10, "\x03", "\x04", "\x1a",
                                                 "\x1b[6n", "\x1b]0;title\x07"]))
                put("encoding", enc)
            if event == "run:resize":
                # (1 column with a wide character once crashed the screen
                # rebuild: test_ws_screen_attach_of_a_one_column_...)
                put("cols", self.field(lambda: rng.choice([1, 2, 80, 132, 2000, 10000]), "int",
                                       edge=[0, -1, 10001, 2**31, 2**63, 2**64 - 1, 65535, 65536]))
                put("rows", self.field(lambda: rng.choice([1, 2, 24, 50, 1000, 10000]), "int",
                                       edge=[0, -1, 10001, 2**31, 2**63, 2**64 - 1, 65535, 65536]))
        for _ in range(rng.choice([0, 0, 0, 1, 3])):  # extra fields
            d[rstr(rng, 10, False)] = rvalue(rng)
        return d

    def event(self):
        rng = self.rng
        r = rng.random()
        if r < 0.82:
            return rng.choice(VALID_EVENTS)
        if r < 0.95:
            return rng.choice(ODD_EVENTS)
        return rstr(rng, 20, False) or "x"

    def msg_id(self):
        """(json value or MISSING, numeric id or None, valid: True, False or
        "either" (the host may echo it or refuse the frame as bad_frame))."""
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            return MISSING, None, True
        if r < 0.2:
            return None, None, True
        if r < 0.8:
            v = rng.randrange(1, 1000)
            return v, v, True
        if r < 0.88:
            v = rng.choice([0, -1, -5, 2**31, 2**53 + 1, 2**63 - 1, -2**63])
            return v, v, True
        if r < 0.9:
            return Raw("-0", True, 0), 0, True
        v = rng.choice([1.5, "5", "", True, False, [], {}, [1], {"a": 1}, 2**63, 2**64 - 1, 2**64, 2**70,
                        -2**63 - 1,
                        Raw("1E2", True, 100.0), Raw("1.0", True, 1.0), rng.choice(RAW_BAD)])
        return v, None, False

    def fit(self, text, kind, mid):
        # Over 1 MiB closes the connection (message_too_large): that is a
        # test of its own, not part of a batch.
        if len(text.encode("utf-8", "surrogatepass")) >= (1 << 20) - 64:
            return self.native()
        return text, kind, mid

    def native(self):
        """(text, kind, id): kind 'valid' (exactly one reply when id is not
        None), 'malformed' (exactly one bad_frame error without id), 'either'
        (one of the two)."""
        rng = self.rng
        r = rng.random()
        if r < 0.75:
            event = self.event()
            data = self.data_for(event) if event in VALID_EVENTS or rng.random() < 0.5 else rvalue(rng)
            dr = rng.random()
            top = {"event": event}
            if dr < 0.85:
                top["data"] = data
            elif dr < 0.9:
                top["data"] = None
            elif dr < 0.95:
                top["data"] = wrong_type(rng, "object")
            idv, idn, id_ok = self.msg_id()
            if idv is not MISSING:
                top["id"] = idv
            if rng.random() < 0.15:  # also odd top-level members
                top[rstr(rng, 8, False) or "zz"] = rvalue(rng)
            items = list(top.items())
            rng.shuffle(items)
            top = dict(items)
            text = dump(top, rng)
            valid = (not has_bad(top) and depth(top) <= 64 and isinstance(top.get("event"), str)
                     and 0 < len(top["event"].encode()) <= 64 and bool(id_ok)
                     and (top.get("data") is None or is_obj(top.get("data"))))
            kind = ("either" if id_ok == "either" else "valid") if valid else "malformed"
            return self.fit(text, kind, idn if valid else None)
        if r < 0.82:  # truncated
            text = dump({"event": rng.choice(VALID_EVENTS), "data": self.data_for("run:attach"), "id": 1})
            return self.fit(text[:rng.randrange(0, len(text))], "malformed", None)
        if r < 0.87:  # deep nesting
            n = rng.choice([65, 66, 100, 1000, 100_000, 500_000])
            op = rng.choice(["[", "{\"a\":"])
            cl = "]" if op == "[" else "}"
            inner = rng.choice(["", "1", "null"])
            body = op * n + inner + cl * n if rng.random() < 0.5 else op * n
            text = rng.choice(['{"event":"run:attach","data":{"x":' + body + '},"id":3}', body])
            return self.fit(text, "malformed", None)
        if r < 0.93:  # JSON, not an object
            v = rng.choice([rscalar(rng), [rvalue(rng)], ["run:attach", {"runId": "x"}]])
            if isinstance(v, dict):
                v = [v]
            return self.fit(dump(v), "malformed", None)
        # random text
        text = "".join(rchar(rng) for _ in range(rng.randrange(0, 200)))
        try:
            j = json.loads(text)
            if isinstance(j, dict):
                return self.native()
        except Exception:  # noqa: BLE001
            pass
        return self.fit(text, "malformed", None)


MISSING = object()


class Conn:
    """A WebSocket client whose reader task (_reader, in the subclass) keeps
    what the host sends in self.items."""

    def __init__(self, fz, ws, tag):
        self.fz = fz
        self.ws = ws
        self.tag = tag
        self.items = []
        self.closed = None
        self.task = asyncio.ensure_future(self._reader())

    async def wait_for_item(self, pred, timeout, start):
        """The first of items[start:] that pred accepts, or None once the
        connection is closed or after timeout seconds."""
        end = time.time() + timeout
        while time.time() < end:
            for x in self.items[start:]:
                if pred(x):
                    return x
            if self.closed:
                return None
            await asyncio.sleep(0.005)
        return None

    async def close(self):
        """Closes the WebSocket and waits (5 s at most) for the reader task."""
        try:
            await self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            await asyncio.wait_for(self.task, 5)
        except Exception:  # noqa: BLE001
            pass


class NativeConn(Conn):
    """A /ws client (python3-websockets) that keeps and checks every frame."""

    @property
    def frames(self):
        return self.items

    @classmethod
    async def open(cls, fz, tag="ws", hello=True):
        ws = await websockets.connect(f"ws://127.0.0.1:{fz.port}/ws", max_size=None,
                                      ping_interval=None, close_timeout=3, open_timeout=REPLY_TIMEOUT)
        c = cls(fz, ws, tag)
        if hello:
            await c.ws.send(json.dumps({"event": "client:hello", "data": {"key": fz.key}, "id": 1}))
            f = await c.wait(lambda f: f.get("id") == 1, "hello ack")
            assert f and f["event"] == "ack", f
        return c

    async def _reader(self):
        try:
            async for msg in self.ws:
                if isinstance(msg, bytes):
                    self.fz.violation("binary frame from the host", short(msg))
                    continue
                try:
                    f = json.loads(msg)
                except Exception:  # noqa: BLE001
                    self.fz.violation("host frame is not JSON", short(msg))
                    continue
                check_server_frame(self.fz, f, msg)
                self.frames.append(f)
        except websockets.ConnectionClosed as e:
            self.closed = e
        except Exception as e:  # noqa: BLE001
            self.closed = e
        self.closed = self.closed or True

    async def wait(self, pred, what, timeout=REPLY_TIMEOUT, start=0):
        return await self.wait_for_item(pred, timeout, start)


def check_server_frame(fz, f, text):
    """Shape of one frame the host sent on /ws."""
    if not isinstance(f, dict) or not isinstance(f.get("event"), str):
        fz.violation("host frame without an event name", short(text))
        return
    ev = f["event"]
    data = f.get("data")
    if ev in ("ack", "error") and "id" in f and not isinstance(f["id"], int):
        fz.violation("reply id is not an integer", short(text))
    if ev == "error":
        if not (isinstance(data, dict) and isinstance(data.get("code"), str) and data["code"]
                and isinstance(data.get("message"), str)):
            fz.violation("error frame without {code, message}", short(text))
    elif ev == "run:event":
        if not (isinstance(data, dict) and isinstance(data.get("seq"), int) and data["seq"] >= 1):
            fz.violation("run:event without a seq", short(text))
    elif ev == "run:event:batch":
        if not (isinstance(data, dict) and isinstance(data.get("events"), list) and data["events"]):
            fz.violation("run:event:batch without events", short(text))
        else:
            seqs = [e.get("seq") for e in data["events"]]
            if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                fz.violation("a batch's seqs are not contiguous", short(seqs))
    elif ev not in ("ack", "run:attached", "run:screen", "session:closed"):
        fz.violation("unknown event from the host", short(text))


async def native_batch(fz, conn, msgs, sentinel):
    """Sends msgs [(text, kind, id)], then a sentinel request; checks the
    replies. Returns False if the connection closed."""
    start = len(conn.frames)
    expected = collections.Counter()
    either = collections.Counter()
    malformed = 0
    for text, kind, mid in msgs:
        fz.note(f"{conn.tag} text {short(text, 200)}")
        try:
            await conn.ws.send(text)
        except websockets.ConnectionClosed:
            fz.violation("the host closed the connection on a text message",
                         f"{short(text)} close={conn.closed!r}")
            return False
        if kind == "valid" and mid is not None:
            expected[mid] += 1
        elif kind == "either":
            either[mid] += 1
        elif kind == "malformed":
            malformed += 1
    try:
        await conn.ws.send(json.dumps({"event": "client:hello", "data": {}, "id": sentinel}))
    except websockets.ConnectionClosed:
        pass
    f = await conn.wait(lambda f: f.get("id") == sentinel, "sentinel", start=start)
    if f is None:
        fz.violation("no reply to a request (hang or dropped connection)",
                     f"sentinel {sentinel} after {len(msgs)} messages; closed={conn.closed!r}; "
                     f"last frames {short(conn.frames[-3:])}")
        return False
    got = conn.frames[start:conn.frames.index(f, start)]
    replies = collections.Counter(x["id"] for x in got if x.get("event") in ("ack", "error") and "id" in x)
    for mid, n in expected.items():
        if replies.get(mid, 0) != n:
            fz.violation("a request with an id did not get exactly one reply with that id",
                         f"id {mid}: sent {n}, replies {replies.get(mid, 0)}; "
                         f"reply ids {sorted(replies)[:20]}")
    refused = 0
    for mid, n in either.items():
        k = replies.get(mid, 0) - expected.get(mid, 0)
        if not 0 <= k <= n:
            fz.violation("a request with an id got more than one reply", f"id {mid}: sent {n}, replies {k}")
        refused += n - max(0, min(k, n))
    for mid in replies:
        if mid not in expected and mid not in either:
            fz.violation("a reply with an id that no request carried", f"id {mid}")
    bad = sum(1 for x in got if x.get("event") == "error" and "id" not in x
              and x.get("data", {}).get("code") == "bad_frame")
    if bad != malformed + refused:
        fz.violation("malformed frames did not each get one bad_frame error",
                     f"{malformed} malformed sent (+{refused} ids neither echoed nor refused), "
                     f"{bad} bad_frame errors")
    return True


# ---------------------------------------------------------------------- targeted /ws


def test_ws_targeted_messages(fz):
    """Hand-written bad messages: each gets its documented answer and the
    connection stays usable."""
    victim = fz.victims[0]
    ctl = fz.control
    cases = [
        # (frame text, expected: "bad_frame" | (event, code or None))
        ("{oops", "bad_frame"),
        ("", "bad_frame"),
        ("   ", "bad_frame"),
        ("null", "bad_frame"),
        ("[]", "bad_frame"),
        ('["run:attach", {"runId": "x"}]', "bad_frame"),
        ('"run:attach"', "bad_frame"),
        ("42", "bad_frame"),
        ("{}", "bad_frame"),
        ('{"data": {}}', "bad_frame"),
        ('{"event": 5, "id": 9}', "bad_frame"),
        ('{"event": "", "id": 9}', "bad_frame"),
        ('{"event": null, "id": 9}', "bad_frame"),
        ('{"event": ["run:attach"], "id": 9}', "bad_frame"),
        ('{"event": "run:attach", "data": [1, 2], "id": 9}', "bad_frame"),
        ('{"event": "run:attach", "data": "x", "id": 9}', "bad_frame"),
        ('{"event": "run:attach", "data": 5, "id": 9}', "bad_frame"),
        ('{"event": "client:hello", "id": "9"}', "bad_frame"),
        ('{"event": "client:hello", "id": 1.5}', "bad_frame"),
        ('{"event": "client:hello", "id": 1e2}', "bad_frame"),
        ('{"event": "client:hello", "id": true}', "bad_frame"),
        ('{"event": "client:hello", "id": [9]}', "bad_frame"),
        ('{"event": "client:hello", "id": {"n": 9}}', "bad_frame"),
        ('{"event": "client:hello", "id": 1e400}', "bad_frame"),
        ('{"event": "client:hello", "id": 18446744073709551616}', "bad_frame"),
        ('{"event": "run:attach", "data": {"runId": "x", "afterSeq": 1e400}, "id": 9}', "bad_frame"),
        ('{"event": "run:attach", "data": {"runId": "x", "afterSeq": NaN}, "id": 9}', "bad_frame"),
        ('{"event": "client:hello", "id": 9}garbage', "bad_frame"),
        ('{"event": "client:hello", "id": 9} {}', "bad_frame"),
        ('{"event": "\\ud800", "id": 9}', "bad_frame"),
        ('{"event": "client:hello", "data": {"clientId": "\\udc00"}, "id": 9}', "bad_frame"),
        ('{"event": "client:hello", "id": 9', "bad_frame"),
        ('{"event": "client:hello", "id": 9,}', "bad_frame"),
        ("[" * 65 + "]" * 65, "bad_frame"),
        ("[" * 100_000, "bad_frame"),
        ("{\"a\":" * 100_000, "bad_frame"),
        ('{"event":"run:attach","data":{"x":' + "[" * 70 + "]" * 70 + '},"id":9}', "bad_frame"),
        ('{"event":"run:attach","data":{"x":"' + "[" * 5000 + '"},"id":9}', ("error", "invalid_argument")),
        ('{"event": "' + "e" * 65 + '", "id": 9}', "bad_frame"),
        # Valid frames: one reply with the id.
        ('{"event": "client:hello", "data": null, "id": null}', None),
        ('{"event": "client:hello", "id": -0}', ("ack", None, 0)),
        ('{"event": "client:hello", "id": -7}', ("ack", None, -7)),
        ('{"event": "client:hello", "id": 9223372036854775807}', ("ack", None, 2**63 - 1)),
        ('{"event": "client:hello", "id": -9223372036854775808}', ("ack", None, -2**63)),
        ('{"event": "client:hello", "data": {"key": 5, "clientId": ["x"]}, "id": 9}', ("ack", None)),
        ('{"event": "client:hello", "data": {"key": "wrong-wrong-wrong"}, "id": 9}', ("ack", None)),
        ('{"event": "' + "e" * 64 + '", "id": 9}', ("error", "unknown_event")),
        ('{"event": "what:ever", "id": 9}', ("error", "unknown_event")),
        ('{"event": "run:event", "data": {}, "id": 9}', ("error", "unknown_event")),
        ('{"event": "ack", "id": 9}', ("error", "unknown_event")),
        ('{"event": "run:attach", "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": 5}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": null}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": ["a"]}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": ""}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": "a/b"}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": "../' + ctl + '"}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": "' + ctl + '\\u0000"}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": "' + "a" * 129 + '"}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": "' + "a" * 100_000 + '"}, "id": 9}', ("error", "invalid_argument")),
        ('{"event": "run:attach", "data": {"runId": "' + "a" * 128 + '"}, "id": 9}', ("error", "not_found")),
        ('{"event": "run:attach", "data": {"runId": "no-such-run"}, "id": 9}', ("error", "not_found")),
        ('{"event": "run:attach", "data": {"runId": "' + ctl.upper() + '"}, "id": 9}', ("error", "not_found")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": -1}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 1.5}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": "0"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": True}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 2**63 - 1}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": -2**63}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 2**63}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 2**64 - 1}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 2**70}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 10**9}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "role": "admin"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "role": 1}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "screen": "yes"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "screen": 1}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "scrollback": "no"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "x"}, "id": 9}), ("error", "not_attached")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 80, "rows": 24}, "id": 9}), ("error", "not_attached")),
        (json.dumps({"event": "run:close", "data": {"runId": victim}, "id": 9}), ("error", "not_attached")),
        (json.dumps({"event": "run:detach", "data": {"runId": victim}, "id": 9}), ("error", "not_attached")),
        (json.dumps({"event": "run:detach", "data": {"runId": 5}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": "a/b", "data": "x"}, "id": 9}), ("error", "invalid_argument")),
        # Attached to the victim (operator): input/resize errors.
        (json.dumps({"event": "run:attach", "data": {"runId": victim, "afterSeq": 0}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": 5}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": None}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": ["x"]}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "!!!", "encoding": "bytes"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "QQ=Q", "encoding": "bytes"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "\u00e9", "encoding": "bytes"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "x", "encoding": "hex"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "x", "encoding": "BYTES"}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "", "encoding": "text"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "", "encoding": "bytes"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "aGk=", "encoding": "bytes"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "aGk", "encoding": "bytes"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "_-8=", "encoding": "bytes"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "x", "encoding": 5}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 0, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 80}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 10001, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": -1, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 80.5, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": "80", "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 2**32 + 80, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 2**64 - 1, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 2**70, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": True, "rows": 24}, "id": 9}), ("error", "invalid_argument")),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 10000, "rows": 10000}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 1, "rows": 1}, "id": 9}), ("ack", None)),
        # A screen attach of a 10000x10000 terminal (the emulator caps it).
        (json.dumps({"event": "run:attach", "data": {"runId": victim, "afterSeq": 0, "screen": True, "scrollback": True}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:resize", "data": {"runId": victim, "cols": 80, "rows": 24}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:attach", "data": {"runId": victim, "afterSeq": 0, "role": "viewer"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:input", "data": {"runId": victim, "data": "x"}, "id": 9}), ("error", "forbidden")),
        (json.dumps({"event": "run:close", "data": {"runId": victim}, "id": 9}), ("error", "forbidden")),
        (json.dumps({"event": "run:detach", "data": {"runId": victim, "extra": [1, {"a": None}]}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 0, "screen": "auto", "role": "viewer"}, "id": 9}), ("ack", None)),
        (json.dumps({"event": "run:detach", "data": {"runId": ctl}, "id": 9}), ("ack", None)),
    ]

    async def go():
        c = await NativeConn.open(fz, "targeted")
        for text, want in cases:
            fz.note(f"targeted {short(text, 200)}")
            start = len(c.frames)
            await c.ws.send(text)
            # A sentinel marks the end of this message's replies.
            sentinel = SENTINEL_BASE + start
            await c.ws.send(json.dumps({"event": "client:hello", "id": sentinel}))
            end = await c.wait(lambda f: f.get("id") == sentinel, "sentinel", start=start)
            assert end is not None, (text[:300], c.closed, fz.host.log()[-3000:])
            got = [f for f in c.frames[start:c.frames.index(end, start)]
                   if f.get("event") in ("ack", "error")]
            if want is None:
                assert got == [], (text[:300], got)
            elif want == "bad_frame":
                assert len(got) == 1 and got[0]["event"] == "error" and "id" not in got[0] \
                    and got[0]["data"]["code"] == "bad_frame" and got[0]["data"]["message"], (text[:300], got)
            else:
                alts = want if isinstance(want, list) else [want]
                assert len(got) == 1, (text[:300], got)

                def matches(w):
                    ev, code = w[0], w[1]
                    rid = w[2] if len(w) > 2 else 9
                    return got[0]["event"] == ev and got[0].get("id") == rid and (
                        not code or (got[0]["data"]["code"] == code and got[0]["data"]["message"]))
                assert any(matches(w) for w in alts), (text[:300], got, want)
        await c.close()
        assert c.closed is not None
    run(go())
    fz.assert_clean("targeted /ws messages")
    fz.checkpoint("targeted /ws messages")


def test_ws_ids_beyond_int64_are_echoed_or_refused(fz):
    """An `id` in [2**63, 2**64) parses as an unsigned integer; it was
    wrapped to a negative int64, so the reply's id (-1 for
    18446744073709551615) matched no request. The contract (DESIGN §5): a
    request with an id gets exactly one reply with the same id; an id the
    host cannot echo is refused as bad_frame."""
    async def go():
        c = await NativeConn.open(fz, "ids")
        bad = []
        for rid in (2**63, 2**64 - 1):
            text = '{"event":"client:hello","id":%d}' % rid
            fz.note(f"ids {text}")
            start = len(c.frames)
            await c.ws.send(text)
            await c.ws.send(json.dumps({"event": "client:hello", "id": SENTINEL_BASE + start}))
            end = await c.wait(lambda f: f.get("id") == SENTINEL_BASE + start, "sentinel", start=start)
            assert end is not None
            got = [f for f in c.frames[start:c.frames.index(end, start)] if f["event"] in ("ack", "error")]
            ok = len(got) == 1 and (got[0].get("id") == rid or (
                "id" not in got[0] and got[0]["data"]["code"] == "bad_frame"))
            if not ok:
                bad.append((text, got))
        await c.close()
        assert not bad, f"replies with a wrong id: {bad}"
    run(go())
    fz.checkpoint("ids beyond int64")


@pytest.mark.parametrize("text", ["\u8980", "\U0001F600"], ids=["cjk", "emoji"])
def test_ws_screen_attach_of_a_one_column_terminal_with_a_wide_char(text):
    """Was a crash (any authenticated client): output with a
    double-width character written while the pty is 1 column wide, then
    run:attach {screen: true}: the screen rebuild (thread pool) wrote to
    address 0 inside libvterm: SIGSEGV (Release), 'AddressSanitizer: SEGV
    on unknown address 0x000000000000 ... libvterm.so.0+0x2250 ...
    vterm_input_write <- TerminalScreen::Impl::FeedText
    (lib/replay/terminal_screen.cc:809) <- ScreenProjection::Apply
    (projections.cc:242) <- ReplayEngine::Rebuild <- server.cc:1431'.
    The stored log stayed poisoned: every later screen attach of that run
    crashed the host again. Screens are now at least 2 columns (a resize to
    1 is skipped by the screen, doc/replay.md). Reproducer:
      POST /api/sessions {"kind":"pty","options":{"shell":"/bin/cat","cols":1,"rows":1}}
      /ws: client:hello; run:attach {runId}; run:input {runId, data: "\u8980\r"}
      another /ws client: run:attach {runId, screen: true}  -> the host died
    (or cols 80 and run:resize {cols: 1, rows: 1} before the input).
    Own host: this one may crash."""
    h = own_host()
    try:
        st, body, _ = h.request("POST", "/api/sessions", {"kind": "pty", "options": {
            "shell": "/bin/cat", "cols": 1, "rows": 1}})
        assert st == 201, body
        run_id = body["runId"]

        async def go():
            ws = await websockets.connect(h.ws_url, max_size=None, close_timeout=3)
            await ws.send(json.dumps({"event": "client:hello", "data": {"key": h.key}, "id": 1}))
            await ws.send(json.dumps({"event": "run:attach", "data": {"runId": run_id}, "id": 2}))
            await ws.send(json.dumps({"event": "run:input", "data": {"runId": run_id, "data": text + "\r"},
                                      "id": 3}))
            end = time.time() + REPLY_TIMEOUT
            seen = b""
            while time.time() < end and text.encode() not in seen:
                m = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                evs = [m["data"]] if m["event"] == "run:event" else \
                    m["data"]["events"] if m["event"] == "run:event:batch" else []
                seen += b"".join(base64.b64decode(e["payload"]) for e in evs if e["channel"] == "pty:stdout")
            await ws.close()
            ws2 = await websockets.connect(h.ws_url, max_size=None, close_timeout=3)
            await ws2.send(json.dumps({"event": "client:hello", "data": {"key": h.key}, "id": 1}))
            await ws2.send(json.dumps({"event": "run:attach", "data": {"runId": run_id, "screen": True}, "id": 2}))
            got = []
            try:
                while not any(f["event"] == "run:attached" for f in got):
                    got.append(json.loads(await asyncio.wait_for(ws2.recv(), REPLY_TIMEOUT)))
                await ws2.close()
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass
            return got
        got = run(go(), timeout=120)
        time.sleep(0.3)
        code = h.proc.poll()
        log = h.log()
        assert code is None, (f"a screen attach killed the host (exit {code}):\n" +
                              "\n".join(l[:250] for l in log.splitlines()
                                        if "#" in l[:8] or "ERROR" in l or "SUMMARY" in l)[:3000])
        screens = [f for f in got if f["event"] == "run:screen"]
        assert screens, got[-3:]
    finally:
        if h.proc.poll() is None:
            h.close()
        else:
            h.stderr.close()
            shutil.rmtree(h.dir, ignore_errors=True)


# ---------------------------------------------------------------------- random /ws


def test_ws_random_messages(fz):
    """Seeded random /ws messages from a grammar, several clients at once."""
    budget = FUZZ_SECONDS * SHARE["ws"]
    end = time.time() + budget
    stats = collections.Counter()

    async def worker(n):
        rng = rng_for(f"ws{n}")
        gen = Gen(fz, rng)
        conn = await NativeConn.open(fz, f"ws{n}")
        sentinel = SENTINEL_BASE + n * 1_000_000
        while time.time() < end:
            msgs = [gen.native() for _ in range(rng.randrange(1, 25))]
            stats["messages"] += len(msgs)
            stats["batches"] += 1
            sentinel += 1
            alive = await native_batch(fz, conn, msgs, sentinel)
            if alive and rng.random() < 0.08:
                # An input that closes the connection: a binary frame or a
                # message over the 1 MiB limit. The error comes first.
                kind = rng.choice(["binary", "binary", "toolarge"])
                if kind == "binary":
                    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
                    fz.note(f"{conn.tag} binary {short(payload)}")
                    await conn.ws.send(payload)
                    want, want_close = "bad_frame", 1003
                else:
                    fz.note(f"{conn.tag} text of 1 MiB + 1")
                    try:
                        await conn.ws.send("x" * ((1 << 20) + 1))
                    except websockets.ConnectionClosed:
                        pass
                    want, want_close = "message_too_large", 1009
                try:
                    await asyncio.wait_for(asyncio.shield(conn.task), REPLY_TIMEOUT)
                except asyncio.TimeoutError:
                    fz.violation("the host did not close the connection", f"after a {kind} message")
                errs = [f for f in conn.frames if f.get("event") == "error" and "id" not in f
                        and f["data"].get("code") == want]
                if kind == "binary" and not errs:
                    fz.violation("no error before the close", f"{kind}: want {want}")
                rcvd = getattr(conn.closed, "rcvd", None)
                if rcvd is not None and rcvd.code != want_close:
                    fz.violation("wrong close code", f"{kind}: {rcvd.code}, want {want_close}")
                if rcvd is None and kind == "binary":
                    # (The host once dropped the connection without a close frame.)
                    fz.violation("no close frame", f"{kind}: want close {want_close}")
                stats["closing inputs"] += 1
                alive = False
            if not alive:
                await conn.close()
                fz.checkpoint("a closed /ws connection")
                conn = await NativeConn.open(fz, f"ws{n}")
            fz.checkpoint("a /ws batch")
        await conn.close()

    async def go():
        await asyncio.gather(*(worker(n) for n in range(3)))
    run(go(), timeout=budget + 300)
    say(f"[fuzz] /ws: {dict(stats)} in {budget:.1f}s (DISPATCH_FUZZ_SEED={SEED})")
    fz.assert_clean("random /ws messages")
    fz.restore_victims()
    fz.checkpoint("random /ws messages")


# ====================================================================== raw WebSocket frames


class RawWS:
    """A WebSocket client over a plain socket, for frames no library sends."""

    def __init__(self, port, path="/ws", timeout=REPLY_TIMEOUT):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.s.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            b = self.s.recv(4096)
            if not b:
                raise ConnectionError(f"closed during the handshake: {self.buf!r}")
            self.buf += b
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])
        self.eof = False

    @staticmethod
    def frame(payload, opcode=1, fin=True, rsv=0, mask=True, length=None, lenform=None, key=None):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload) if length is None else length
        mbit = 0x80 if mask else 0
        if lenform is None:
            lenform = 7 if n < 126 else 16 if n < 65536 else 64
        if lenform == 7:
            hdr = bytes([b0, mbit | n])
        elif lenform == 16:
            hdr = bytes([b0, mbit | 126]) + struct.pack(">H", n)
        else:
            hdr = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
        if mask:
            k = key or os.urandom(4)
            kk = (k * (len(payload) // 4 + 1))[:len(payload)]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(kk, "big")).to_bytes(len(payload), "big") \
                if payload else b""
            hdr += k
        return hdr + payload

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def read(self, timeout=2.0, until=None):
        """Frames [(fin, opcode, payload)] until timeout, EOF or until(frame)."""
        frames = []
        end = time.time() + timeout
        while True:
            f = self._parse()
            if f is not None:
                frames.append(f)
                if until and until(f):
                    return frames
                continue
            if self.eof or time.time() >= end:
                return frames
            self.s.settimeout(max(0.005, end - time.time()))
            try:
                b = self.s.recv(65536)
            except socket.timeout:
                return frames
            except OSError:
                self.eof = "reset"
                return frames
            if not b:
                self.eof = True
                return frames
            self.buf += b

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin, op, masked, n, i = b[0] >> 7, b[0] & 15, b[1] >> 7, b[1] & 127, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack(">Q", b[2:10])[0], 10
        if masked:
            i += 4
        if len(b) < i + n:
            return None
        self.buf = b[i + n:]
        return (fin, op, b[i:i + n], masked, b[0] & 0x70)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def check_raw_server_frames(fz, frames, what, sio=False):
    for fin, op, payload, masked, rsv in frames:
        if masked or rsv or op not in (0, 1, 2, 8, 9, 10):
            fz.violation("malformed frame from the host", f"{what}: op={op} masked={masked} rsv={rsv}")
        if op == 1 and sio:
            try:
                check_sio_packet(fz, payload.decode())
            except UnicodeDecodeError:
                fz.violation("host text frame is not UTF-8", f"{what}: {short(payload)}")
        elif op == 1:
            try:
                f = json.loads(payload)
            except Exception:  # noqa: BLE001
                fz.violation("host frame is not JSON", f"{what}: {short(payload)}")
                continue
            check_server_frame(fz, f, payload)
        if op == 8 and len(payload) >= 2:
            code = struct.unpack(">H", payload[:2])[0]
            if code < 1000 or code in (1004, 1005, 1006) or 1016 <= code < 3000:
                fz.violation("invalid close code from the host", f"{what}: {code}")


HELLO = lambda fz, i=1: json.dumps({"event": "client:hello", "data": {"key": fz.key}, "id": i}).encode()  # noqa: E731


def raw_hello(fz, w):
    w.send(w.frame(HELLO(fz)))
    got = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 1 and b'"id":1' in f[2])
    assert got and b'"ack"' in got[-1][2], got


@pytest.mark.parametrize("case", [
    "binary", "binary_before_hello", "text_too_large", "fragments_too_large",
])
def test_ws_host_closes_with_its_close_code(fz, case):
    """When the host ends a connection (binary frame: 1003, message over
    1 MiB: 1009, doc/protocol.md) it sends the error, then a close frame
    with the code. It used to drop the TCP connection without one, so
    clients saw 1006 (abnormal closure). Reproducer: after client:hello,
    send the masked binary frame 82 81 MASK ('x' ^ mask): the host writes
    {"event":"error","data":{"code":"bad_frame",...}}, then 88 02 03 eb."""
    w = RawWS(fz.port)
    try:
        if case != "binary_before_hello":
            raw_hello(fz, w)
        if case.startswith("binary"):
            w.send(w.frame(b"x", opcode=2))
            want_code, want_close = "bad_frame", 1003
        elif case == "text_too_large":
            w.send(w.frame(b"x" * ((1 << 20) + 1)))
            want_code, want_close = "message_too_large", 1009
        else:
            w.send(w.frame(b"[" + b" " * 600_000, fin=False))
            w.send(w.frame(b" " * 600_000, opcode=0))
            want_code, want_close = "message_too_large", 1009
        frames = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 8)
        check_raw_server_frames(fz, frames, case)
        texts = [json.loads(p) for _, op, p, _, _ in frames if op == 1]
        assert any(t["event"] == "error" and t["data"]["code"] == want_code for t in texts), texts
        closes = [p for _, op, p, _, _ in frames if op == 8]
        assert closes, f"{case}: no close frame (want {want_close}); eof={w.eof}; frames={frames}"
        assert struct.unpack(">H", closes[0][:2])[0] == want_close, closes
    finally:
        w.close()
    fz.assert_clean(case)
    fz.checkpoint(case)


def test_ws_raw_framing(fz):
    """Frames that no WebSocket library sends: the host answers what is
    valid, fails the connection on protocol errors, and stays up."""
    hello = HELLO(fz, 5)
    F = RawWS.frame
    # (name, frames, expectation): "reply" = the hello (id 5) is acked and the
    # connection stays open; "pong:<payload>" = a pong with that payload;
    # "error" = a bad_frame error, connection open; "fail" = closed (with
    # or without a close frame), anything else sent is well-formed.
    cases = [
        ("fragmented message", [F(hello[:7], fin=False), F(hello[7:20], opcode=0, fin=False),
                                F(hello[20:], opcode=0)], "reply"),
        ("ping inside a fragmented message", [F(hello[:7], fin=False), F(b"pp", opcode=9),
                                              F(hello[7:], opcode=0)], "reply"),
        ("empty fragments", [F(b"", fin=False), F(hello, opcode=0, fin=False), F(b"", opcode=0)], "reply"),
        ("non-minimal 16-bit length", [F(hello, lenform=16)], "reply"),
        ("non-minimal 64-bit length", [F(hello, lenform=64)], "reply"),
        ("ping", [F(b"ping-data", opcode=9)], "pong:ping-data"),
        ("empty ping", [F(b"", opcode=9)], "pong:"),
        ("125-byte ping", [F(b"p" * 125, opcode=9)], "pong:" + "p" * 125),
        ("unsolicited pong", [F(b"x", opcode=10), F(hello)], "reply"),
        ("invalid UTF-8 text", [F(b'{"event":"\xff\xfe","id":5}')], "error_or_1007"),
        ("invalid UTF-8 in a string", [F(b'{"event":"client:hello","data":{"clientId":"\xc3\x28"},"id":5}')],
         "error_or_1007"),
        ("overlong UTF-8", [F(b'{"event":"client:hello","data":{"clientId":"\xc0\xaf"},"id":5}')], "error_or_1007"),
        ("UTF-8 surrogate", [F(b'{"event":"client:hello","data":{"clientId":"\xed\xa0\x80"},"id":5}')],
         "error_or_1007"),
        ("UTF-8 split across fragments", [F(b'{"event":"client:hello","data":{"clientId":"\xc3', fin=False),
                                          F(b'\xa9"},"id":5}', opcode=0)], "reply"),
        ("126-byte ping", [F(b"p" * 126, opcode=9)], "fail"),
        ("fragmented ping", [F(b"p", opcode=9, fin=False)], "fail"),
        ("fragmented close", [F(b"\x03\xe8", opcode=8, fin=False)], "fail"),
        ("RSV1", [F(hello, rsv=4)], "fail"),
        ("RSV2", [F(hello, rsv=2)], "fail"),
        ("RSV3", [F(hello, rsv=1)], "fail"),
        ("opcode 3", [F(b"x", opcode=3)], "fail"),
        ("opcode 7", [F(b"x", opcode=7)], "fail"),
        ("opcode 11", [F(b"x", opcode=11)], "fail"),
        ("opcode 15", [F(b"x", opcode=15)], "fail"),
        ("continuation first", [F(b"x", opcode=0)], "fail"),
        ("text inside a fragmented message", [F(hello[:5], fin=False), F(hello)], "fail"),
        ("binary inside a fragmented message", [F(hello[:5], fin=False), F(b"x", opcode=2)], "fail"),
        ("length 2**63-1, no payload", [F(b"", length=2**63 - 1)], "any"),
        ("length 2**64-1", [F(b"", length=2**64 - 1)], "any"),
        ("length says more than sent", [F(b"abc", length=1000)], "any"),
        ("random bytes", [bytes(random.Random(SEED).randrange(256) for _ in range(300))], "any"),
        ("NUL bytes", [b"\x00" * 64], "any"),
        ("close 1000", [F(b"\x03\xe8bye", opcode=8)], "close"),
        ("close without code", [F(b"", opcode=8)], "close"),
        ("close code 999", [F(b"\x03\xe7", opcode=8)], "close"),
        ("close code 1005", [F(b"\x03\xed", opcode=8)], "close"),
        ("close code 5000", [F(b"\x13\x88", opcode=8)], "close"),
        ("close with 1 byte", [F(b"x", opcode=8)], "close"),
        ("close, invalid UTF-8 reason", [F(b"\x03\xe8\xff\xfe", opcode=8)], "close"),
        ("frames after close", [F(b"\x03\xe8", opcode=8), F(hello), F(b"p", opcode=9)], "close"),
    ]
    for name, frames, want in cases:
        fz.note(f"rawws {name}: {short(b''.join(frames), 200)}")
        w = RawWS(fz.port)
        try:
            raw_hello(fz, w)
            for fr in frames:
                w.send(fr)
            if want in ("reply", "error_or_1007"):
                got = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 1 and (b'"id":5' in f[2] or b"bad_frame" in f[2]))
            elif want.startswith("pong:"):
                got = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 10)
            elif want in ("fail", "close"):
                got = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 8)
                got += w.read(0.05)
            else:
                got = w.read(0.3)
            check_raw_server_frames(fz, got, name)
            texts = [json.loads(p) for _, op, p, _, _ in got if op == 1]
            ops = [op for _, op, _, _, _ in got]
            ctx = f"{name}: frames {got[:5]} eof={w.eof}"
            if want == "reply":
                assert any(t.get("id") == 5 and t["event"] == "ack" for t in texts), ctx
            elif want == "error_or_1007":
                ok = any(t["event"] == "error" and t["data"]["code"] == "bad_frame" for t in texts) or (
                    8 in ops and struct.unpack(">H", got[ops.index(8)][2][:2])[0] == 1007)
                assert ok, ctx
            elif want.startswith("pong:"):
                pongs = [p for _, op, p, _, _ in got if op == 10]
                assert pongs and pongs[0] == want[5:].encode(), ctx
            elif want == "fail":
                # Failed: a close frame with a protocol error code, or the
                # connection dropped; never a reply.
                if 8 in ops:
                    code = struct.unpack(">H", got[ops.index(8)][2][:2])[0]
                    assert code in (1002, 1003, 1007, 1008, 1009), ctx
                else:
                    assert w.eof, ctx
            elif want == "close":
                # The close handshake: answered with a close frame (or a
                # dropped connection for a malformed close), then the end.
                assert 8 in ops or w.eof, ctx
                w.read(REPLY_TIMEOUT)
                assert w.eof, ctx
            if want in ("reply", "error_or_1007") and 8 not in ops:
                # Still usable.
                w.send(w.frame(HELLO(fz, 6)))
                more = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 1 and b'"id":6' in f[2])
                assert more and b'"ack"' in more[-1][2], (name, more)
        finally:
            w.close()
        fz.checkpoint(f"raw frame case {name}")
    fz.assert_clean("raw WebSocket framing")


def test_ws_random_raw_frames(fz):
    """Seeded random frame sequences over raw sockets: valid messages mixed
    with protocol errors. Until the first protocol error every ping gets
    its pong and every request its reply; after it, anything the host still
    sends is well-formed; the host never goes down."""
    budget = FUZZ_SECONDS * SHARE["rawws"]
    rng = rng_for("rawws")
    gen = Gen(fz, rng)
    end = time.time() + budget
    stats = collections.Counter()
    while time.time() < end:
        path = rng.choice(["/ws", "/ws", "/ws", "/socket.io/?EIO=4&transport=websocket"])
        w = RawWS(fz.port, path)
        try:
            native = path == "/ws"
            if native:
                raw_hello(fz, w)
            else:
                w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 1 and f[2].startswith(b"0{"))
            poisoned = False
            pings, ids = [], []
            out = []
            for i in range(rng.randrange(1, 20)):
                r = rng.random()
                key = bytes(rng.randrange(256) for _ in range(4))
                if r < 0.35 and native:
                    text, kind, mid = gen.native()
                    payload = text.encode("utf-8", "surrogatepass")
                    if rng.random() < 0.3 and len(payload) > 2:
                        cut = sorted(rng.sample(range(1, len(payload)), min(2, len(payload) - 1)))
                        parts = [payload[:cut[0]], payload[cut[0]:cut[-1]], payload[cut[-1]:]]
                        parts = [p for p in parts if p] or [b""]
                        for j, p in enumerate(parts):
                            out.append(RawWS.frame(p, opcode=1 if j == 0 else 0, fin=j == len(parts) - 1, key=key))
                            if rng.random() < 0.3 and j < len(parts) - 1:
                                pp = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
                                out.append(RawWS.frame(pp, opcode=9, key=key))
                                if not poisoned:
                                    pings.append(pp)
                    else:
                        out.append(RawWS.frame(payload, key=key))
                    if kind == "valid" and mid is not None and not poisoned:
                        ids.append(mid)
                elif r < 0.5:
                    pp = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 126)))
                    out.append(RawWS.frame(pp, opcode=9, key=key))
                    if not poisoned:
                        pings.append(pp)
                elif r < 0.55:
                    out.append(RawWS.frame(b"", opcode=10, key=key))
                elif r < 0.62 and not native:
                    pkt = sio_packet(gen, rng, fz)[0].encode("utf-8", "surrogatepass")
                    out.append(RawWS.frame(pkt, key=key))
                else:
                    # A protocol violation or raw noise.
                    poisoned = True
                    v = rng.randrange(9)
                    pl = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
                    if v == 0:
                        out.append(RawWS.frame(pl, opcode=rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), key=key))
                    elif v == 1:
                        out.append(RawWS.frame(pl, rsv=rng.randrange(1, 8), key=key))
                    elif v == 2:
                        out.append(RawWS.frame(pl, opcode=rng.choice([8, 9, 10]), fin=rng.random() < 0.5, key=key))
                    elif v == 3:
                        out.append(RawWS.frame(pl, opcode=0, key=key))
                    elif v == 4:
                        out.append(RawWS.frame(pl, opcode=2, key=key))
                    elif v == 5:
                        out.append(RawWS.frame(pl, length=rng.choice([len(pl) + 1, 2**16, 2**31, 2**63 - 1]), key=key))
                    elif v == 6:
                        out.append(RawWS.frame(b'{"event":"' + pl + b'","id":1}', key=key))
                    elif v == 7:
                        out.append(RawWS.frame(pl, fin=False, key=key))
                    else:
                        out.append(pl)
            data = b"".join(out)
            fz.note(f"rawws {path} {short(data, 400)}")
            # Sent in random slices: the host reassembles frames across reads.
            pos = 0
            while pos < len(data):
                n = rng.choice([1, 2, 7, 100, 4096, len(data)])
                if not w.send(data[pos:pos + n]):
                    break
                pos += n
            stats["connections"] += 1
            stats["poisoned"] += poisoned
            if not poisoned and native:
                w.send(RawWS.frame(json.dumps({"event": "client:hello", "id": SENTINEL_BASE}).encode()))
                got = w.read(REPLY_TIMEOUT, until=lambda f: f[1] == 1 and str(SENTINEL_BASE).encode() in f[2])
                if pings:
                    got += w.read(0.2)  # a pong may come after later replies
                check_raw_server_frames(fz, got, "random raw frames")
                texts = [json.loads(p) for _, op, p, _, _ in got if op == 1]
                rids = collections.Counter(t["id"] for t in texts if t["event"] in ("ack", "error") and "id" in t)
                if rids.get(SENTINEL_BASE) != 1:
                    fz.violation("no reply to a request over raw frames (hang)", f"eof={w.eof}")
                for mid, n in collections.Counter(ids).items():
                    if rids.get(mid, 0) != n:
                        fz.violation("a request with an id did not get exactly one reply with that id",
                                     f"raw frames, id {mid}: sent {n}, got {rids.get(mid, 0)}")
                pongs = [p for _, op, p, _, _ in got if op == 10]
                # lws answers pings that arrive close together with one pong
                # (RFC 6455 5.5.3 allows that), so: pongs carry the payloads
                # of pings sent, in order, and there is one at least.
                it = iter(pings)
                if not all(any(p == q for q in it) for p in pongs) or (pings and not pongs):
                    fz.violation("pings not answered by pongs with their payloads, in order",
                                 f"sent {short(pings)}, got {short(pongs)}")
            else:
                got = w.read(rng.choice([0.05, 0.3]))
                check_raw_server_frames(fz, got, "random raw frames", sio=not native)
        finally:
            w.close()
        fz.checkpoint("random raw frames")
    say(f"[fuzz] raw frames: {dict(stats)} in {budget:.1f}s (DISPATCH_FUZZ_SEED={SEED})")
    fz.assert_clean("random raw WebSocket frames")
    fz.checkpoint("random raw frames")


# ====================================================================== Socket.IO


def sio_closes(text):
    """Whether the host ends the connection on this packet: Engine.IO close
    ('1…') or a Socket.IO disconnect of the default namespace ('41…')."""
    if text.startswith("1"):
        return True
    if not text.startswith("41"):
        return False
    p = text[2:]
    return not p.startswith("/") or p.split(",", 1)[0] == "/"


def sio_packet(gen, rng, fz):
    text, kind, aid = sio_packet_raw(gen, rng, fz)
    # Random text may be any Engine.IO packet: classify by what the host
    # does with it.
    if sio_closes(text):
        kind = "close"
    elif text.startswith("2"):
        kind = "ping"
    elif kind in ("close", "ping"):
        kind = "free"
    return text, kind, aid


def sio_packet_raw(gen, rng, fz):
    """(text, kind, ack id): kind 'event' (valid, connected: an ack 43<id>
    when it has an id), 'ping' (a '3' back), 'malformed' (a bad_frame error
    event), 'free' (any well-formed answer or none), 'close'."""
    r = rng.random()
    if r < 0.5:
        event = gen.event()
        data = gen.data_for(event) if event in VALID_EVENTS else rvalue(rng)
        arr = [event]
        rr = rng.random()
        if rr < 0.85:
            arr.append(data)
        elif rr < 0.9:
            arr.append(None)
        if rng.random() < 0.1:
            arr.append(rvalue(rng))  # extra arguments are ignored
        idv = None if rng.random() < 0.25 else rng.choice([rng.randrange(0, 1000), 0, 10**14, 999999999999999])
        nsp = "" if rng.random() < 0.9 else "/,"
        text = "42" + nsp + ("" if idv is None else str(idv)) + dump(arr, rng)
        valid = (not has_bad(arr) and depth(arr) <= 64 and isinstance(event, str)
                 and 0 < len(event.encode()) <= 64 and (len(arr) < 2 or arr[1] is None or is_obj(arr[1])))
        if len(text.encode("utf-8", "surrogatepass")) >= (1 << 20) - 64:
            return sio_packet_raw(gen, rng, fz)
        return text, "event" if valid else "malformed", idv if valid else None
    if r < 0.6:
        return rng.choice(["2", "2probe", "2" + rstr(rng, 10, False)]), "ping", None
    if r < 0.65:
        return rng.choice(["3", "3probe", "6", "6x", "43", "431[]", "4312[{}]", "43" + rstr(rng, 10, False)]), "free", None
    if r < 0.8:
        return rng.choice([
            "4", "", "42", "42[]", "42{}", "42x", "42[5]", '42["x",5]', '42["x","y"]', "42[" * 100,
            '42[""]', "42null", '42"run:attach"', "45", "46", '451-["x",{"_placeholder":true,"num":0}]',
            '461-["x"]', "4/admin,", '4/admin,2["x"]', '42/x,["client:hello"]', '421234567890123456["client:hello"]',
            '42["client:hello"', '40{"key":', "40[" * 100, "40{oops", "42" + "[" * 70 + "]" * 70,
            '42["' + "e" * 65 + '"]', '42["client:hello",' + dump(rng.choice(RAW_BAD)) + "]",
        ]), "malformed", None
    if r < 0.9:
        return rng.choice([
            "0", "0{}", "5", "7", "8", "9", "x", "44", "47", "48", "49", "4a", "\x00", "40" + rstr(rng, 10, False),
            '40{"key":"' + fz.key + '"}', "40", '40{"key":5}', '40{"token":"' + fz.key + '"}', "40null",
            "".join(rchar(rng) for _ in range(rng.randrange(0, 40))),
        ]), "free", None
    if r < 0.93:
        return rng.choice(["1", "41", "1x", "41/,"]), "close", None
    return "4" + rng.choice("0123456789") + rstr(rng, 30), "free", None


def check_sio_packet(fz, p):
    """Shape of one Socket.IO/Engine.IO packet the host sent."""
    if p in ("2", "3") or p.startswith("0{"):
        return
    m = re.match(r"^4([0-6])(\d*)(.*)$", p, re.S)
    if not m:
        fz.violation("malformed Socket.IO packet from the host", short(p))
        return
    typ, num, rest = m.groups()
    try:
        body = json.loads(rest) if rest else None
    except Exception:  # noqa: BLE001
        fz.violation("Socket.IO packet from the host with bad JSON", short(p))
        return
    if typ == "2":
        if not (isinstance(body, list) and body and isinstance(body[0], str)):
            fz.violation("Socket.IO event from the host is not [name, ...]", short(p))
        elif body[0] == "error" and not (len(body) > 1 and isinstance(body[1], dict)
                                         and isinstance(body[1].get("code"), str)
                                         and isinstance(body[1].get("message"), str)):
            fz.violation("Socket.IO error event without {code, message}", short(p))
        elif body[0] == "error" and "id" in body[1]:
            fz.violation("Socket.IO error event with an id", short(p))
    elif typ == "3":
        if not (num and isinstance(body, list) and len(body) == 1):
            fz.violation("Socket.IO ack from the host is not 43<id>[data]", short(p))
        elif isinstance(body[0], dict) and "error" in body[0]:
            e = body[0]["error"]
            if not (isinstance(e, dict) and isinstance(e.get("code"), str) and isinstance(e.get("message"), str)):
                fz.violation("Socket.IO error ack without {code, message}", short(p))


class SioConn(Conn):
    """A Socket.IO (Engine.IO v4, websocket transport) client that keeps
    every packet and answers the host's pings."""

    @property
    def packets(self):
        return self.items

    @classmethod
    async def open(cls, fz, tag="sio", connect=True):
        ws = await websockets.connect(f"ws://127.0.0.1:{fz.port}/socket.io/?EIO=4&transport=websocket",
                                      max_size=None, ping_interval=None, close_timeout=3,
                                      open_timeout=REPLY_TIMEOUT)
        c = cls(fz, ws, tag)
        opened = await c.wait(lambda p: p.startswith("0{"), start=0)
        assert opened, c.packets
        o = json.loads(opened[1:])
        assert isinstance(o["sid"], str) and o["upgrades"] == [] and o["pingInterval"] > 0, o
        if connect:
            await c.ws.send("40" + json.dumps({"key": fz.key}))
            ok = await c.wait(lambda p: p.startswith("40"))
            assert ok and json.loads(ok[2:])["sid"], c.packets
        return c

    async def _reader(self):
        try:
            async for msg in self.ws:
                if isinstance(msg, bytes):
                    self.fz.violation("binary frame from the host (socket.io)", short(msg))
                    continue
                self.check(msg)
                self.packets.append(msg)
                if msg == "2":  # the host's heartbeat
                    asyncio.ensure_future(self._pong())
        except websockets.ConnectionClosed as e:
            self.closed = e
        except Exception as e:  # noqa: BLE001
            self.closed = e
        self.closed = self.closed or True

    async def _pong(self):
        try:
            await self.ws.send("3")
        except Exception:  # noqa: BLE001
            pass

    def check(self, p):
        check_sio_packet(self.fz, p)

    async def wait(self, pred, timeout=REPLY_TIMEOUT, start=None):
        start = len(self.packets) if start is None else start
        return await self.wait_for_item(pred, timeout, start)


def test_socketio_targeted(fz):
    """Socket.IO: auth, connect, events with and without ack ids, and bad
    packets, each with its documented answer."""
    async def go():
        c = await SioConn.open(fz, "sio-targeted", connect=False)
        # Events before the namespace connect: refused, not fatal; one with
        # an ack id gets its error as the ack (emitWithAck would otherwise
        # wait forever), one without as an error event.
        await c.ws.send('421["client:hello",{}]')
        p = await c.wait(lambda p: p.startswith("42") or p.startswith("43"))
        assert p and p.startswith("431[") and json.loads(p[3:])[0]["error"]["code"] == "unauthorized", \
            (p, c.packets)
        await c.ws.send('42["client:hello",{}]')
        p = await c.wait(lambda p: p.startswith("42"))
        assert p and json.loads(p[2:])[1]["code"] == "unauthorized", (p, c.packets)
        for bad_auth in ['40{"key":5}', "40[1]", '40{"key":"wrong-wrong-wrong"}', "40", "40null"]:
            await c.ws.send(bad_auth)
            p = await c.wait(lambda p: p.startswith("44"))
            assert p and json.loads(p[2:])["message"] == "unauthorized", (bad_auth, c.packets)
        await c.ws.send('40{"token":"' + fz.key + '"}')
        assert await c.wait(lambda p: p.startswith("40{"))
        cases = [
            # (packet, expected): "3" | ("ack", id, code or None) | "bad_frame" | None
            ("2", "3"),
            ("2probe", "3"),
            ("3", None),
            ("6", None),
            ("431[]", None),
            ('42["client:hello",{}]', None),
            ('4207["client:hello",{}]', ("ack", 7, None)),
            ('42999999999999999["client:hello"]', ("ack", 999999999999999, None)),
            ('42/,5["client:hello",{}]', ("ack", 5, None)),
            ('425["client:hello",null]', ("ack", 5, None)),
            ('425["client:hello",{},"extra",1]', ("ack", 5, None)),
            ('425["what:ever",{}]', ("ack", 5, "unknown_event")),
            ('425["run:attach",{}]', ("ack", 5, "invalid_argument")),
            ('425["run:attach",{"runId":"a/b"}]', ("ack", 5, "invalid_argument")),
            ('425["run:attach",{"runId":"no-such-run"}]', ("ack", 5, "not_found")),
            ('425["run:input",{"runId":"%s","data":"x"}]' % fz.victims[0], ("ack", 5, "not_attached")),
            ("4", "bad_frame"),
            ("", "bad_frame"),
            ("42", "bad_frame"),
            ("42[]", "bad_frame"),
            ("42{}", "bad_frame"),
            ("42[5]", "bad_frame"),
            ('42["x",5]', "bad_frame"),
            ('42[""]', "bad_frame"),
            ("42null", "bad_frame"),
            ('42["client:hello"', "bad_frame"),
            ('421234567890123456["client:hello"]', "bad_frame"),
            ('42/admin,["client:hello"]', "bad_frame"),
            ("42" + "[" * 65 + "]" * 65, "bad_frame"),
            ("42" + "[" * 200_000, "bad_frame"),
            ('42["' + "e" * 65 + '"]', "bad_frame"),
            ('42["client:hello",1e400]', "bad_frame"),
            ('451-["x",{"_placeholder":true,"num":0}]', "bad_frame"),
            ('461-[{"_placeholder":true,"num":0}]', "bad_frame"),
        ]
        for pkt, want in cases:
            fz.note(f"sio targeted {short(pkt, 200)}")
            start = len(c.packets)
            await c.ws.send(pkt)
            await c.ws.send('42%d["client:hello",{}]' % SENTINEL_BASE)
            end = await c.wait(lambda p: p.startswith("43%d[" % SENTINEL_BASE), start=start)
            assert end is not None, (pkt[:200], c.closed, c.packets[-3:])
            got = c.packets[start:c.packets.index(end, start)]
            got = [p for p in got if p != "2"]  # the host's own heartbeat
            ctx = (pkt[:200], got)
            if want is None:
                assert got == [], ctx
            elif want == "3":
                assert got == ["3"], ctx
            elif want == "bad_frame":
                assert len(got) == 1 and got[0].startswith('42["error"') and \
                    json.loads(got[0][2:])[1]["code"] == "bad_frame", ctx
            else:
                _, aid, code = want
                assert len(got) == 1 and got[0].startswith(f"43{aid}["), ctx
                body = json.loads(got[0][len(f"43{aid}"):])[0]
                if code:
                    assert body["error"]["code"] == code, ctx
                else:
                    assert "error" not in body, ctx
        # Disconnect: the host closes the connection.
        await c.ws.send("41")
        await asyncio.wait_for(asyncio.shield(c.task), REPLY_TIMEOUT)
        assert c.closed
    run(go())
    fz.assert_clean("targeted Socket.IO")
    fz.checkpoint("targeted Socket.IO")


def test_socketio_upgrade_refusals(fz):
    """Upgrades the Socket.IO endpoint refuses get a JSON 4xx."""
    for path in ["/socket.io/", "/socket.io/?EIO=3&transport=websocket", "/socket.io/?EIO=4&transport=polling",
                 "/socket.io/?EIO=4", "/socket.io/?transport=websocket", "/socket.io/?EIO=&transport=",
                 "/socket.io/?EIO=4&transport=websocket&authKey=wrong-wrong-wrong", "/elsewhere", "/ws/x",
                 "/socket.io/x?EIO=4&transport=websocket"]:
        fz.note(f"upgrade {path}")
        s = socket.create_connection(("127.0.0.1", fz.port), timeout=REPLY_TIMEOUT)
        try:
            s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            data = read_all(s, REPLY_TIMEOUT)
        finally:
            s.close()
        status, headers, body = parse_http_response(data)
        assert status is not None and 400 <= status < 500, (path, data[:300])
        j = json.loads(body)
        assert isinstance(j.get("error"), str) and isinstance(j.get("code"), str), (path, body)
    fz.checkpoint("socket.io upgrade refusals")


def test_socketio_random_packets(fz):
    """Seeded random Socket.IO packets. Valid events with an ack id get
    exactly one ack with that id, pings a pong, malformed packets a
    bad_frame error; the host stays up."""
    budget = FUZZ_SECONDS * SHARE["sio"]
    end = time.time() + budget
    stats = collections.Counter()

    async def worker(n):
        rng = rng_for(f"sio{n}")
        gen = Gen(fz, rng)
        conn = await SioConn.open(fz, f"sio{n}")
        sentinel = SENTINEL_BASE + n * 1_000_000
        while time.time() < end:
            pkts = [sio_packet(gen, rng, fz) for _ in range(rng.randrange(1, 20))]
            stats["packets"] += len(pkts)
            start = len(conn.packets)
            expected, pings, malformed, free, closing = collections.Counter(), 0, 0, 0, False
            for text, kind, aid in pkts:
                fz.note(f"{conn.tag} {short(text, 200)}")
                try:
                    await conn.ws.send(text)
                except websockets.ConnectionClosed:
                    if not closing:
                        fz.violation("the host closed a Socket.IO connection", f"{conn.closed!r}")
                    break
                if kind == "close":
                    closing = True
                    break
                if kind == "event" and aid is not None:
                    expected[aid] += 1
                elif kind == "ping":
                    pings += 1
                elif kind == "malformed":
                    malformed += 1
                else:
                    free += 1
            if closing:
                try:
                    await asyncio.wait_for(asyncio.shield(conn.task), REPLY_TIMEOUT)
                except asyncio.TimeoutError:
                    fz.violation("the host did not close on a Socket.IO disconnect", short(pkts[-1][0]))
                await conn.close()
                conn = await SioConn.open(fz, f"sio{n}")
                continue
            sentinel += 1
            try:
                await conn.ws.send('42%d["client:hello",{}]' % sentinel)
            except websockets.ConnectionClosed:
                pass
            last = await conn.wait(lambda p: p.startswith("43%d[" % sentinel), start=start)
            if last is None:
                fz.violation("no ack to a Socket.IO request (hang or dropped connection)",
                             f"closed={conn.closed!r} last={short(conn.packets[-3:])}")
                await conn.close()
                conn = await SioConn.open(fz, f"sio{n}")
                continue
            got = conn.packets[start:conn.packets.index(last, start)]
            acks = collections.Counter(int(m.group(1)) for p in got for m in [re.match(r"^43(\d+)\[", p)] if m)
            for aid, k in expected.items():
                if acks.get(aid, 0) != k:
                    fz.violation("a Socket.IO event with an ack id did not get exactly one ack",
                                 f"id {aid}: sent {k}, acks {acks.get(aid, 0)}")
            pongs = sum(1 for p in got if p == "3")
            if pongs != pings:
                fz.violation("Socket.IO pings not each answered by one pong", f"{pings} pings, {pongs} pongs")
            bad = sum(1 for p in got if p.startswith('42["error"') and '"bad_frame"' in p)
            if not (malformed <= bad <= malformed + free):
                fz.violation("malformed Socket.IO packets did not each get one bad_frame error",
                             f"{malformed} malformed (+{free} free), {bad} bad_frame errors")
            fz.checkpoint("a Socket.IO batch")
        await conn.close()

    async def go():
        await asyncio.gather(*(worker(n) for n in range(2)))
    run(go(), timeout=budget + 300)
    say(f"[fuzz] socket.io: {dict(stats)} in {budget:.1f}s (DISPATCH_FUZZ_SEED={SEED})")
    fz.assert_clean("random Socket.IO packets")
    fz.restore_victims()
    fz.checkpoint("random Socket.IO packets")


# ====================================================================== HTTP


def read_all(s, timeout):
    """Everything until EOF or a complete response (by Content-Length)."""
    s.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while time.time() < end:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not b:
            break
        data += b
        status, headers, body = parse_http_response(data)
        if status is not None and "content-length" in headers and len(body) >= int(headers["content-length"]):
            break
    return data


def parse_http_response(data):
    """(status, headers, body) of the first response in data, or (None, {}, b"")."""
    if b"\r\n\r\n" not in data:
        return None, {}, b""
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    m = re.match(rb"^HTTP/1\.[01] (\d{3}) ", lines[0] + b" ")
    if not m:
        return None, {}, b""
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode(errors="replace")] = v.strip().decode(errors="replace")
    return int(m.group(1)), headers, body


def http_call(fz, method, path, body=None, headers=None, key="default", timeout=REPLY_TIMEOUT):
    """A well-formed request; (status, headers, body bytes) or raises."""
    conn = http.client.HTTPConnection("127.0.0.1", fz.port, timeout=timeout)
    try:
        h = dict(headers or {})
        conn.putrequest(method, path, skip_host="Host" in h, skip_accept_encoding=True)
        if key == "default":
            key = fz.key
        if key is not None:
            h.setdefault("Authorization", "Bearer " + key)
        if body is not None:
            h.setdefault("Content-Length", str(len(body)))
        for k, v in h.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def check_http_reply(fz, method, path, status, headers, body, what):
    """A reply to a well-formed request: no 5xx; errors are 4xx JSON {error, code}."""
    ctx = f"{method} {short(path, 200)} -> {status} {short(body, 300)}"
    if status >= 500:
        fz.violation("HTTP 5xx for a client's request", ctx)
        return
    if status >= 400:
        if method == "HEAD":
            return
        if not headers.get("content-type", "").startswith("application/json"):
            fz.violation("HTTP error without a JSON body", ctx)
            return
        try:
            j = json.loads(body)
        except Exception:  # noqa: BLE001
            fz.violation("HTTP error body is not JSON", ctx)
            return
        if not (isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"]
                and isinstance(j.get("code"), str) and j["code"]):
            fz.violation("HTTP error body is not {error, code}", ctx)
        return
    if status not in (200, 201):
        fz.violation("unexpected HTTP status", ctx)
    if method != "HEAD" and headers.get("content-type", "").startswith("application/json"):
        try:
            json.loads(body)
        except RecursionError:
            pass
        except Exception:  # noqa: BLE001
            fz.violation("HTTP 2xx body is not JSON", ctx)


def test_http_targeted(fz):
    """Hand-written bad requests, each with its documented 4xx answer."""
    ctl = fz.control
    os.makedirs(os.path.join(fz.host.root, "proj"), exist_ok=True)
    open(os.path.join(fz.host.root, "a-file"), "w").close()
    if not os.path.lexists(os.path.join(fz.host.root, "link-out")):
        os.symlink("/", os.path.join(fz.host.root, "link-out"))
    J = lambda v: json.dumps(v).encode()  # noqa: E731
    cases = [
        # (method, path, body, want status(es), want code or None, key)
        ("GET", "/api/sessions", None, 200, None, "default"),
        ("GET", "/api/sessions", None, 401, "unauthorized", None),
        ("GET", "/api/sessions", None, 401, "unauthorized", "wrong-key-wrong-key"),
        ("GET", "/api/sessions?authKey=", None, 401, "unauthorized", None),
        ("GET", "/api/sessions", None, 401, "unauthorized", ""),
        ("GET", "/api/nothing", None, 404, "not_found", "default"),
        ("GET", "/api/sessions/" + ctl + "/nothing", None, 404, "not_found", "default"),
        ("GET", "/api/sessions/a%2Fb", None, (400, 404), None, "default"),
        ("GET", "/api/sessions/" + "a" * 129, None, 400, "invalid_argument", "default"),
        ("GET", "/api/sessions/" + "a" * 3000, None, 400, "invalid_argument", "default"),
        ("GET", "/api/sessions/no-such-run", None, 404, "not_found", "default"),
        ("GET", "/api/sessions/%C3%A9", None, 400, "invalid_argument", "default"),
        ("GET", "/api/sessions/..", None, (400, 404), None, "default"),
        ("GET", "/api/sessions/%2e%2e/%2e%2e/health", None, (200, 400, 404), None, "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=-1", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=abc", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=1e3", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=99999999999999999999", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=999999999999999999", None, 200, None, "default"),
        ("GET", f"/api/sessions/{ctl}/history?limit=0", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?limit=-5", None, 400, "invalid_argument", "default"),
        ("GET", f"/api/sessions/{ctl}/history?limit=999999999999", None, 200, None, "default"),
        ("GET", f"/api/sessions/{ctl}/history?afterSeq=0&afterSeq=x", None, (200, 400), None, "default"),
        ("GET", "/api/sessions/no-such-run/history", None, 404, "not_found", "default"),
        ("POST", f"/api/sessions/{ctl}/history", b"{}", 405, "method_not_allowed", "default"),
        ("PUT", "/api/sessions", b"{}", 405, "method_not_allowed", "default"),
        ("PATCH", f"/api/sessions/{ctl}", b"{}", 405, "method_not_allowed", "default"),
        ("POST", "/health", b"{}", 405, "method_not_allowed", "default"),
        ("DELETE", "/metrics", None, 405, "method_not_allowed", "default"),
        ("DELETE", "/api/sessions/no-such-run", None, 404, "not_found", "default"),
        # POST /api/sessions: wrong types, missing fields, escapes.
        ("POST", "/api/sessions", b"{not json", 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", b"\xff\xfe{}", 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", b'{"kind":"pty"}garbage', 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", b'{"kind":"pty","cols":1e400}', 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J([]), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J("pty"), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J(None), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J(5), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": 5}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": None}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": ["pty"]}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": ""}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "no-such-kind"}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": 5}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": ["x"]}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": ".."}), 403, "forbidden", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "/etc"}), 403, "forbidden", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "link-out"}), 403, "forbidden", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "proj/../../"}), 403, "forbidden", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": fz.host.root + "-evil"}), (403, 404), None, "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "a-file"}), (400, 403), None, "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "proj\u0000/../.."}), (400, 403), None, "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": ""}), (400, 403), None, "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "x" * 5000}), (400, 403, 404), None, "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "workspace": "nope"}), 404, "not_found", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": []}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": "x"}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"shell": 5}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"shell": "/bin/sh\u0000x"}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"shell": "/nonexistent"}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"shell": "no-such-shell"}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"args": "x"}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"args": [1]}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"env": []}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"env": {"A=B": "x"}}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"env": {"A": 5}}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"env": {"A": "x\u0000y"}}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"cols": 0}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"cols": 10001}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"cols": "80"}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"rows": 2**70}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"rows": 2**64 - 1}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "options": {"rows": 1.5}}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "runId": 5}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "runId": ""}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "runId": "a/b"}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "runId": "a" * 129}), 400, "invalid_argument", "default"),
        ("POST", "/api/sessions", J({"kind": "pty", "runId": "a\u0000b"}), 400, "invalid_argument", "default"),
        # Re-using a live run's id never touches its log.
        ("POST", "/api/sessions", J({"kind": "pty", "runId": ctl, "options": {"shell": "/bin/cat"}}), 409, "conflict", "default"),
        ("POST", "/api/sessions", J({"kind": "file", "runId": ctl}), 409, "conflict", "default"),
        # Workspaces.
        ("POST", "/api/workspaces", J([]), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": 5}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "name": 5}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "id": 5}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "id": "a/b"}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "id": ""}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "id": "a" * 129}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "status": "sleepy"}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "status": 1}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "metadata": []}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": "proj", "metadata": "x"}), 400, "invalid_argument", "default"),
        ("POST", "/api/workspaces", J({"path": ".."}), 403, "forbidden", "default"),
        ("POST", "/api/workspaces", J({"path": "link-out"}), 403, "forbidden", "default"),
        ("POST", "/api/workspaces", J({"path": "a-file"}), (400, 403), None, "default"),
        ("POST", "/api/workspaces", J({"path": "nope"}), 404, "not_found", "default"),
        ("GET", "/api/workspaces/a%2Fb", None, (400, 404), None, "default"),
        ("GET", "/api/workspaces/" + "w" * 200, None, 400, "invalid_argument", "default"),
        ("GET", "/api/workspaces/no-such-ws", None, 404, "not_found", "default"),
        ("PUT", "/api/workspaces/no-such-ws", J({"name": "x"}), 404, "not_found", "default"),
        ("PUT", "/api/workspaces/no-such-ws", J([]), 400, "invalid_argument", "default"),
        ("DELETE", "/api/workspaces/no-such-ws", None, 404, "not_found", "default"),
        ("GET", "/api/workspaces/a/b", None, 404, "not_found", "default"),
        # Settings.
        ("PUT", "/api/settings/ui", J([1, 2]), 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/ui", J("x"), 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/ui", J(None), 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/ui", b"{oops", 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/ui", b'{"a":1e400}', 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/ui", b'{"a":"\\ud800"}', 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/ui", b'{"a":"\xff"}', 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/bad%20name", J({"a": 1}), 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/" + "c" * 65, J({"a": 1}), 400, "invalid_argument", "default"),
        ("PUT", "/api/settings/a%2Fb", J({"a": 1}), (400, 404), None, "default"),
        ("PUT", "/api/settings/x/y", J({"a": 1}), 404, "not_found", "default"),
        ("GET", "/api/settings/no-such-category", None, 404, "not_found", "default"),
        ("POST", "/api/settings", J({}), 405, "method_not_allowed", "default"),
        ("DELETE", "/api/settings/ui", None, 405, "method_not_allowed", "default"),
    ]
    failures = []
    for method, path, body, want, code, key in cases:
        fz.note(f"http targeted {method} {short(path, 100)} {short(body, 200)}")
        try:
            status, headers, data = http_call(fz, method, path, body, key=key,
                                              headers={"Content-Type": "application/json"} if body is not None else None)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{method} {path[:100]} {short(body, 100)}: no response ({e!r})")
            fz.checkpoint(f"http targeted {method} {path[:100]}")
            continue
        wants = want if isinstance(want, tuple) else (want,)
        check_http_reply(fz, method, path, status, headers, data, "targeted")
        if status not in wants:
            failures.append(f"{method} {path[:100]} {short(body, 100)}: {status} {short(data, 200)}, want {want}")
        elif code is not None and json.loads(data).get("code") != code:
            failures.append(f"{method} {path[:100]} {short(body, 100)}: {short(data, 200)}, want code {code}")
    assert not failures, "\n".join(failures)
    fz.assert_clean("targeted HTTP")
    # The control session is untouched by the conflicting creates.
    status, s, _ = fz.host.request("GET", f"/api/sessions/{ctl}")
    assert status == 200 and s["live"] and s["kind"] == "pty", s
    fz.checkpoint("targeted HTTP")


def test_http_directory_as_shell_is_refused(fz):
    """{"kind":"pty","options":{"shell":"/"}} was accepted (201) because a
    directory passes the executable check
    (access X_OK); the session then fails at exec. /etc/passwd (not
    executable) is refused with 400: a directory should be too."""
    fz.note("POST /api/sessions shell=/")
    status, headers, data = http_call(fz, "POST", "/api/sessions",
                                      json.dumps({"kind": "pty", "options": {"shell": "/"}}).encode(),
                                      headers={"Content-Type": "application/json"})
    if status == 201:
        fz.created.add(json.loads(data)["runId"])
    assert status == 400 and json.loads(data)["code"] == "invalid_argument", (status, data)
    fz.checkpoint("directory as shell")


def test_http_run_id_of_a_deleted_session_is_not_reused(fz):
    """A deleted session's events stay: creating a session with its run id
    again must not start a second seq 1 in the same log."""
    run_id = f"fz-reuse-{SEED}"
    body = json.dumps({"kind": "pty", "runId": run_id, "workspace": fz.ws_dir,
                       "options": {"shell": "/bin/true"}}).encode()
    fz.note(f"POST /api/sessions {body!r} twice, DELETE between")
    status, _, data = http_call(fz, "POST", "/api/sessions", body, headers={"Content-Type": "application/json"})
    assert status == 201, data
    fz.all_runs.add(run_id)
    deadline = time.time() + REPLY_TIMEOUT
    while time.time() < deadline and fz.host.request("GET", f"/api/sessions/{run_id}")[1].get("live"):
        time.sleep(0.05)
    status, _, data = http_call(fz, "DELETE", f"/api/sessions/{run_id}")
    assert status == 200, data
    status, _, data = http_call(fz, "POST", "/api/sessions", body, headers={"Content-Type": "application/json"})
    if status == 201:
        fz.created.add(run_id)
        time.sleep(0.5)
    assert status == 409 and json.loads(data)["code"] == "conflict" or status == 201, (status, data)
    st, hist, _ = fz.host.request("GET", f"/api/sessions/{run_id}/history?afterSeq=0&limit=10000")
    seqs = [e["seq"] for e in hist["events"]]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    fz.checkpoint("run id reuse")


def own_host():
    return Host("--auth-fail-limit", "1000000")


@pytest.mark.parametrize("where", ["settings", "session-options", "workspace-metadata", "top-level-array"])
def test_http_deeply_nested_body_is_refused_not_a_crash(where):
    """Was a crash: HTTP bodies had no nesting limit (the /ws parser stops
    at 64 levels, HTTP bodies now at 256). nlohmann parses 100k nested
    arrays iteratively, but Dump() and copies recurse: PUT /api/settings/x with
    {"a":[[[...]]]} 100000 deep (200 kB, under --max-body), or the same in
    POST /api/sessions "options" or POST /api/workspaces "metadata",
    overflows the stack: SIGSEGV (Release, from ~65k levels) /
    'AddressSanitizer: stack-overflow ... serializer.hpp' (ASan). Now a 400.
    Own host: this one may crash."""
    h = own_host()
    try:
        os.makedirs(os.path.join(h.root, "p"), exist_ok=True)
        n = 100_000
        deep = b"[" * n + b"]" * n
        method, path, body = {
            "settings": ("PUT", "/api/settings/x", b'{"a":' + deep + b"}"),
            "session-options": ("POST", "/api/sessions", b'{"kind":"pty","options":{"a":' + deep + b"}}"),
            "workspace-metadata": ("POST", "/api/workspaces", b'{"path":"p","metadata":{"a":' + deep + b"}}"),
            "top-level-array": ("PUT", "/api/settings/x", deep),
        }[where]
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=REPLY_TIMEOUT)
        err = None
        try:
            conn.request(method, path, body, {"Authorization": "Bearer " + h.key,
                                               "Content-Type": "application/json"})
            r = conn.getresponse()
            status, data = r.status, r.read()
        except Exception as e:  # noqa: BLE001
            status, data, err = None, b"", e
        finally:
            conn.close()
        time.sleep(0.3)
        code = h.proc.poll()
        log = h.log()
        assert code is None, (f"{method} {path} with a body nested {n} deep killed the host "
                              f"(exit {code}, client saw {err!r}):\n" +
                              "\n".join(l[:300] for l in log.splitlines() if "ERROR" in l or "SUMMARY" in l)[:3000])
        assert status is not None and 400 <= status < 500, (status, data[:300], err)
        j = json.loads(data)
        assert isinstance(j["error"], str) and isinstance(j["code"], str)
        assert h.request("GET", "/health", key=None)[0] == 200
        assert h.request("GET", "/api/settings")[0] == 200
    finally:
        if h.proc.poll() is None:
            h.close()
        else:
            h.stderr.close()
            shutil.rmtree(h.dir, ignore_errors=True)


ONE_RESPONSE_CASES = {
    "GET with a body": b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "HEAD with a body": b"HEAD /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "OPTIONS with a body": b"OPTIONS /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\n"
                           b"Content-Length: 2\r\n\r\n{}",
    "POST with Content-Length 0": b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\n"
                                  b"Content-Length: 0\r\n\r\n",
    "PUT with Content-Length 0": b"PUT /api/settings/fuzz-empty HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\n"
                                 b"Content-Length: 0\r\n\r\n",
    "DELETE with Content-Length 0": b"DELETE /api/workspaces/no-such-ws HTTP/1.1\r\nHost: x\r\n"
                                    b"Authorization: Bearer {K}\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(ONE_RESPONSE_CASES))
def test_http_one_request_gets_one_response(fz, case):
    """A request the host answered at once (no body expected:
    GET/HEAD/OPTIONS, or Content-Length: 0) but that carried a
    Content-Length header was answered twice: lws still reports
    LWS_CALLBACK_HTTP_BODY_COMPLETION and OnHttpBodyDone responds again,
    writing a second header block into the stream. Reproducer:
    'GET /health HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 5\\r\\n\\r\\nhello'
    -> 'HTTP/1.1 200 OK ...content-length: 15\\r\\n\\r\\nHTTP/1.1 200 OK
    ...\\r\\n\\r\\n{"status":"ok"}' (the first response's 15 body bytes
    are the second status line). The same for 'POST /api/sessions' with
    'Content-Length: 0' (what curl -d '' and many clients send): two
    400 header blocks. A client reads garbage and the connection is out of
    step."""
    data = ONE_RESPONSE_CASES[case].replace(b"{K}", fz.key.encode())
    fz.note(f"raw http {data!r}")
    s = socket.create_connection(("127.0.0.1", fz.port), timeout=REPLY_TIMEOUT)
    try:
        s.sendall(data)
        got = read_until_quiet(s, 0.3)
    finally:
        s.close()
    responses, rest, _ = split_responses(got)
    head = case.startswith("HEAD")
    if head:
        # HEAD: headers only; exactly one header block.
        assert got.count(b"HTTP/1.") == 1, f"{case}: {got!r}"
    else:
        assert len(responses) == 1 and rest == b"", f"{case}: not exactly one response: {got!r}"
        status, headers, body = responses[0]
        assert body.startswith(b"{"), f"{case}: {got!r}"
        assert isinstance(json.loads(body), dict), f"{case}: {got!r}"
    fz.checkpoint(case)


def test_http_half_closed_client_gets_the_whole_response(fz):
    """A client that shuts its write side after sending a request with a
    body (shutdown(SHUT_WR), `nc -N`, some proxies) got the response
    headers but not the body: the host wrote the headers at once and the
    body from the writable callback, and lws closes the connection on the
    read EOF in between. A small body now goes out with the headers. Reproducer: send
    'PUT /api/settings/x HTTP/1.1\\r\\nAuthorization: Bearer KEY\\r\\n
    Content-Length: 7\\r\\n\\r\\n{"a":1}', then shutdown(SHUT_WR): the reply
    is 'HTTP/1.1 200 OK ... content-length: 7\\r\\n\\r\\n' and EOF (19 of 20
    tries here; GET requests are not affected)."""
    req = (b"PUT /api/settings/fuzz-half HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fz.key.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
    fz.note(f"raw http half-closed {req!r}")
    bad = 0
    for _ in range(10):
        out = raw_http(fz, req, half_close=True)
        if len(out["responses"]) != 1 or out["responses"][0][2] != b'{"a":1}':
            bad += 1
            last = out["raw"]
    assert bad == 0, f"{bad} of 10 responses truncated, e.g. {last!r}"
    fz.checkpoint("half-closed client")


def read_until_quiet(s, quiet):
    s.settimeout(quiet)
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except (socket.timeout, OSError):
            return data
        if not b:
            return data
        data += b


def test_http_post_without_content_length_closes_after_its_answer(fz):
    """A POST, PUT or PATCH without Content-Length: lws then expects a body
    of its own default length (100 MiB) and read the next request on the
    connection as that body (it got no answer). The answer now says
    `connection: close` and the connection ends after it."""
    K = fz.key.encode()
    req = (b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + K + b"\r\n\r\n")
    fz.note(f"raw http {short(req, 200)}")
    outcome = raw_http(fz, req)
    assert outcome["ended"], "neither answered nor closed"
    assert len(outcome["responses"]) == 1, outcome["raw"][:400]
    status, headers, body = outcome["responses"][0]
    assert 400 <= status < 500 and headers.get("connection") == "close", (status, headers, body[:200])
    fz.checkpoint("POST without Content-Length")


def test_http_content_length_longer_than_lws_reads_is_a_400(fz):
    """lws reads Content-Length into 32 bytes and ignores a longer header;
    the host must not wait for a body lws will never deliver (a GET with
    34 digits of Content-Length hung)."""
    req = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 32 + b"10\r\n\r\n0123456789"
    fz.note(f"raw http {short(req, 200)}")
    outcome = raw_http(fz, req)
    assert outcome["ended"], "neither answered nor closed"
    assert outcome["responses"] and outcome["responses"][0][0] == 400, outcome["raw"][:400]
    fz.checkpoint("34-digit Content-Length")


LWS_LEVEL_CASES = {
    # Refused by libwebsockets while it parses the request, before the
    # host's callback sees it (doc/protocol.md): no JSON error is possible
    # there, so what is asserted is what the host still guarantees.
    "uri-20k": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-20k": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "nul-in-path": b"GET /he%00alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-query": b"GET /health?a=%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-at-end": b"GET /api/sessions/%00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\n\r\n",
    "trace-method": b"TRACE /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown-method": b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", list(LWS_LEVEL_CASES))
def test_http_requests_lws_refuses_get_a_4xx_or_a_close(fz, case):
    """What libwebsockets refuses while parsing, before the host sees the
    request: a URI or header line past its header space ('Ran out of header
    data space': closed), %00 in the path or query (closed; at the end of a
    path lws cuts it there, so /api/sessions/%00 is the session list), TRACE
    and unknown methods (its own 'HTTP/1.0 403' HTML page). The host cannot
    answer these with its JSON error; it must still never answer with a 5xx,
    never hang, and keep serving."""
    req = LWS_LEVEL_CASES[case].replace(b"{K}", fz.key.encode())
    fz.note(f"raw http {short(req, 200)}")
    outcome = raw_http(fz, req)
    assert outcome["ended"], f"{case}: neither answered nor closed within {REPLY_TIMEOUT}s"
    for status, headers, body in outcome["responses"]:
        if case == "nul-at-end":
            assert status == 200 and "sessions" in json.loads(body), (status, body[:200])
        else:
            assert 400 <= status < 500, (case, status, body[:200])
    assert fz.host.request("GET", "/health", key=None)[0] == 200
    fz.checkpoint(case)


def test_http_negative_content_length_is_a_400(fz):
    """'Content-Length: -1' was read by strtoull as 18446744073709551615:
    413 'body of 18446744073709551615 bytes refused'. Now 400 bad
    Content-Length, as any other malformed length."""
    K = fz.key.encode()
    req = (b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + K +
           b"\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}")
    fz.note(f"raw http {short(req, 200)}")
    s = socket.create_connection(("127.0.0.1", fz.port), timeout=REPLY_TIMEOUT)
    try:
        s.sendall(req)
        data = read_all(s, 5)
    finally:
        s.close()
    status, headers, body = parse_http_response(data)
    assert status == 400, data[:300]
    assert headers.get("content-type", "").startswith("application/json"), data[:400]
    j = json.loads(body[:int(headers["content-length"])])
    assert j["code"] == "invalid_argument" and isinstance(j["error"], str), j
    fz.checkpoint("negative content-length")


RAW_HTTP_CASES = [
    # (name, bytes): malformed or odd HTTP; the host answers (never 5xx) or
    # closes, within the timeout, and stays up.
    ("bad content-length", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: abc\r\n\r\n{}"),
    ("content-length with sign", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: +2\r\n\r\n{}"),
    ("content-length with spaces", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length:  2 \r\n\r\n{}"),
    ("two content-lengths", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"),
    ("huge content-length", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: 99999999999999999999999\r\n\r\n{}"),
    ("content-length over max-body", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: 1048577\r\n\r\n{}"),
    ("short body", b"PUT /api/settings/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: 100\r\n\r\n{}"),
    ("chunked", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    ("chunked garbage", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + b"x" * 70000),
    ("chunked and content-length", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"),
    ("transfer-encoding gzip", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nTransfer-Encoding: gzip\r\n\r\n{}"),
    ("no version", b"GET /health\r\n\r\n"),
    ("HTTP/0.9", b"GET /health HTTP/0.9\r\n\r\n"),
    ("HTTP/9.9", b"GET /health HTTP/9.9\r\n\r\n"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("lowercase method", b"get /health HTTP/1.1\r\n\r\n"),
    ("absolute URI", b"GET http://x/health HTTP/1.1\r\n\r\n"),
    ("asterisk", b"OPTIONS * HTTP/1.1\r\n\r\n"),
    ("no slash", b"GET health HTTP/1.1\r\n\r\n"),
    ("bad percent", b"GET /%zz HTTP/1.1\r\n\r\n"),
    ("lone percent", b"GET /% HTTP/1.1\r\n\r\n"),
    ("%FF", b"GET /api/sessions/%FF HTTP/1.1\r\nAuthorization: Bearer {K}\r\n\r\n"),
    ("dot segments", b"GET /api/../health HTTP/1.1\r\n\r\n"),
    ("encoded dot segments", b"GET /api/sessions/%2e%2e/%2e%2e/metrics HTTP/1.1\r\nAuthorization: Bearer {K}\r\n\r\n"),
    ("LF only", b"GET /health HTTP/1.1\nHost: x\n\n"),
    ("CR only", b"GET /health HTTP/1.1\rHost: x\r\r"),
    ("header without colon", b"GET /health HTTP/1.1\r\nbad header line\r\n\r\n"),
    ("header with space before colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("obs-fold", b"GET /health HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"),
    ("NUL in header", b"GET /health HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"),
    ("control chars", b"GET /health HTTP/1.1\r\nX-A: \x01\x02\x7f\r\n\r\n"),
    ("many headers", b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"\r\n"),
    ("two hosts", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("two authorizations", b"GET /api/sessions HTTP/1.1\r\nAuthorization: Bearer {K}\r\nAuthorization: Bearer wrong\r\n\r\n"),
    ("bearer with spaces", b"GET /api/sessions HTTP/1.1\r\nAuthorization: Bearer   {K}  \r\n\r\n"),
    ("basic auth", b"GET /api/sessions HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n"),
    ("bearer only", b"GET /api/sessions HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n"),
    ("expect 100-continue", b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {K}\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"),
    ("upgrade h2c", b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
    ("websocket upgrade without key", b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    ("websocket upgrade bad version", b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n"),
    ("websocket upgrade POST", b"POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"),
    ("websocket upgrade bad origin", b"GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    ("pipelined", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("CONNECT", b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("TLS hello on plain port", bytes.fromhex("16030100a5010000a10303") + bytes(random.Random(2).randrange(256) for _ in range(160))),
    ("random bytes", bytes(random.Random(1).randrange(256) for _ in range(2000))),
    ("only CRLFs", b"\r\n" * 100),
    ("empty", b""),
]


@pytest.mark.parametrize("name,data", RAW_HTTP_CASES, ids=[c[0] for c in RAW_HTTP_CASES])
def test_http_raw_malformed(fz, name, data):
    """Malformed HTTP bytes: a 4xx (JSON when it is the host's answer) or a
    closed connection, within the timeout; never a 5xx; the host stays up."""
    data = data.replace(b"{K}", fz.key.encode())
    fz.note(f"raw http {name}: {short(data, 200)}")
    outcome = raw_http(fz, data)
    assert outcome["ended"], f"{name}: the host neither answered nor closed within {REPLY_TIMEOUT}s"
    assert not outcome["truncated"] or not outcome["truncated"].startswith(b"HTTP/"), \
        f"{name}: a truncated response: {outcome['raw'][:500]!r}"
    for status, headers, body in outcome["responses"]:
        assert status < 500, (name, status, body[:200])
        if status >= 400 and headers.get("server") == "dispatch-host" and \
                headers.get("content-type", "").startswith("application/json"):
            j = json.loads(body)
            assert isinstance(j["error"], str) and isinstance(j["code"], str), (name, body)
    fz.checkpoint(f"raw http {name}")


def raw_http(fz, data, timeout=REPLY_TIMEOUT, half_close=False):
    """Sends data and reads what comes back: the responses, then (after a
    half-close) the end of the connection. {"ended", "responses",
    "truncated", "raw"}. Without half_close the write side is shut only
    after the responses (or 0.3 s of silence)."""
    s = socket.create_connection(("127.0.0.1", fz.port), timeout=timeout)
    buf = b""
    ended = False
    try:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        shut = half_close
        end = time.time() + timeout
        quiet_until = time.time() + 0.3
        while time.time() < end:
            if not shut and time.time() >= quiet_until:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                shut = True
            s.settimeout(max(0.01, (quiet_until if not shut else end) - time.time()))
            try:
                b = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                ended = True
                break
            if not b:
                ended = True
                break
            buf += b
            if not shut:
                _, rest, complete = split_responses(buf)
                # Complete responses so far: wait a little for pipelined ones.
                quiet_until = time.time() + (0.15 if complete and not rest else 0.3)
    finally:
        s.close()
    responses, rest, _ = split_responses(buf)
    return {"ended": ended, "responses": responses, "truncated": rest, "raw": buf}


def split_responses(buf):
    """([(status, headers, body)], leftover bytes, last one complete)."""
    responses = []
    rest = buf
    while rest:
        status, headers, body = parse_http_response(rest)
        if status is None:
            return responses, rest, False
        n = int(headers.get("content-length", "0") or 0)
        if len(body) < n:
            return responses, rest, False
        responses.append((status, headers, body[:n]))
        rest = body[n:]
    return responses, b"", True


# ---------------------------------------------------------------------- random HTTP


SEGMENTS = ["api", "sessions", "workspaces", "settings", "history", "health", "live", "ready", "metrics",
            "status", "ws", "socket.io", "", ".", "..", "%2e%2e", "%2E", "%2F", "%5C", "%20", "%25",
            "~", "*", "x;y=1", "a,b", "%C3%A9", "%F0%9F%98%80", "%FF", "%C0%AF", "no-such-run", "ui",
            "x" * 129, "x" * 2000, "-", "_", ":", "null", "undefined", "0", "-1", "index.html"]


def gen_path(rng, fz):
    ids = [fz.control] + fz.victims + sorted(fz.created)[:3] + ["no-such-run", "ws-nope"]
    shapes = [["api", "sessions"], ["api", "sessions", "RUN"], ["api", "sessions", "RUN", "history"],
              ["api", "workspaces"], ["api", "workspaces", "WID"], ["api", "settings"],
              ["api", "settings", "CAT"], ["health"], ["health", "status"], ["metrics"], ["live"],
              ["ready"], ["api"], []]
    segs = list(rng.choice(shapes))
    segs = [rng.choice(ids) if s == "RUN" else rng.choice(["ws-nope", "fuzz", "w" * 129, "a.b:c"]) if s == "WID"
            else rng.choice(["ui", "fuzz", "x" * 64, "x" * 65, "a.b:c-d_e", "UI"]) if s == "CAT" else s
            for s in segs]
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        op = rng.randrange(3)
        seg = rng.choice(SEGMENTS)
        if not FUZZ_ALL:
            seg = seg.replace("%00", "")
        if op == 0 or not segs:
            segs.insert(rng.randrange(len(segs) + 1), seg)
        elif op == 1:
            segs[rng.randrange(len(segs))] = seg
        else:
            segs.pop(rng.randrange(len(segs)))
    if FUZZ_ALL and rng.random() < 0.03:
        segs.append(rng.choice(["%00", "a%00b"]))  # LWS_LEVEL: lws closes the connection
    path = "/" + "/".join(segs)
    if rng.random() < 0.05:
        path = path.replace("/", rng.choice(["//", "/./"]), 1)
    if rng.random() < 0.05:
        path += "/"
    q = []
    for _ in range(rng.choice([0, 0, 0, 1, 2, 3])):
        k = rng.choice(["afterSeq", "limit", "authKey", "EIO", "transport", "x", "", "afterSeq"])
        v = rng.choice(["0", "1", "-1", "10000", "10001", "999999999999999999", "99999999999999999999", "1e3",
                        "", "abc", "0x10", " 1", "%00" if FUZZ_ALL else "%20", fz.key, "wrong-key-wrong", "%FF",
                        str(rng.randrange(100))])
        q.append(urllib.parse.quote(k, safe="") + ("=" + v if rng.random() < 0.9 else ""))
    if q:
        path += "?" + "&".join(q)
    if len(path) > 4000 and not FUZZ_ALL:
        path = path[:4000]  # LWS_LEVEL: past lws' header space the connection is closed
    return path


def gen_body(rng, fz, method, path):
    """(body bytes or None, content-type or None)."""
    parts = path.split("?")[0].strip("/").split("/")
    r = rng.random()
    if method in ("GET", "HEAD", "OPTIONS") and rng.random() < 0.8:
        return None, None  # (mostly; a body there was once answered twice)
    if r < 0.1:
        return None, None
    if r < 0.2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))), rng.choice(
            ["application/json", "text/plain", "application/octet-stream", None])
    if r < 0.3:
        return dump(rvalue(rng)).encode("utf-8", "surrogatepass"), "application/json"
    ws = rng.choice([fz.ws_dir, ".", "proj", "..", "/etc", "link-out", "nope", "a-file", "", fz.host.root,
                     fz.host.root + "-evil", "proj/../..", "x" * 5000, 5, None, []])
    if parts[:2] == ["api", "sessions"]:
        kind = rng.choice(["pty", "pty", "pty", "file", "claude", "", "PTY", "nope", 5, None, ["pty"]])
        opts = {}
        for k, vals in [("shell", ["/bin/cat", "/bin/true", "/bin/sh", "cat", "/", "/nonexistent", "", 5, None,
                                   "/bin/cat\x00x", []]),
                        ("args", [[], ["-u"], ["x"] * 50, "x", [1], None]),
                        ("env", [{}, {"A": "b"}, {"A=B": "x"}, {"": "x"}, {"A": 5}, [], {"PATH": ""}]),
                        ("cols", [80, 1, 10000, 0, -1, 10001, 2**70, 1.5, "80", None]),
                        ("rows", [24, 1, 10000, 0, -1, 10001, 2**64 - 1, 1.5, "24", None]),
                        ("bin", ["/nonexistent", 5]), ("model", ["x", 5]), (rstr(rng, 8, False), [rvalue(rng)])]:
            if rng.random() < 0.35:
                opts[k] = rng.choice(vals)
        body = {"kind": kind}
        if rng.random() < 0.7:
            body["workspace"] = ws
        if rng.random() < 0.8:
            body["options"] = opts if rng.random() < 0.9 else wrong_type(rng, "object")
        if rng.random() < 0.2:
            body["runId"] = rng.choice([fz.control, fz.victims[0], "", "a/b", "a" * 129, 5,
                                        "fz-" + str(rng.randrange(10**6))])
        if rng.random() < 0.1:
            body[rstr(rng, 8, False)] = rvalue(rng)
        if body.get("options", {}) and isinstance(body.get("options"), dict) and \
                body["options"].get("shell") == "/bin/sh" and body.get("kind") == "pty":
            body["options"]["shell"] = "/bin/cat"
    elif parts[:2] == ["api", "workspaces"]:
        body = {}
        for k, vals in [("path", [ws]), ("name", ["n", "", "x" * 5000, 5, None, "\u00e9\U0001F600"]),
                        ("id", ["fuzz-" + str(rng.randrange(1000)), "", "a/b", "w" * 129, 5, None]),
                        ("metadata", [{}, {"a": rvalue(rng)}, [], "x", None]),
                        ("status", ["active", "archived", "error", "sleepy", "", 1, None]),
                        ("lastAccessed", [True, False, None, 1, "now"])]:
            if rng.random() < 0.5:
                body[k] = rng.choice(vals)
    elif parts[:2] == ["api", "settings"]:
        body = rvalue(rng, maxd=6) if rng.random() < 0.3 else {
            rstr(rng, 10, False): rvalue(rng, maxd=6) for _ in range(rng.randrange(0, 6))}
        if rng.random() < 0.02:
            # 100k levels once overflowed the host's stack (a crash); now a 400.
            body = {"a": Raw("[" * 100_000 + "]" * 100_000, True, depth=100_000, jtype="array")}
    else:
        body = rvalue(rng)
    return dump(body).encode("utf-8", "surrogatepass"), rng.choice(["application/json"] * 4 + [None, "text/plain"])


def test_http_random_requests(fz):
    """Seeded random well-formed HTTP requests (http.client): every one is
    answered, never with a 5xx, errors as JSON {error, code}; a settings
    document that was stored reads back identical."""
    budget = FUZZ_SECONDS * SHARE["http"]
    rng = rng_for("http")
    os.makedirs(os.path.join(fz.host.root, "proj"), exist_ok=True)
    end = time.time() + budget
    stats = collections.Counter()
    n = 0
    while time.time() < end:
        n += 1
        method = rng.choice(["GET"] * 5 + ["POST"] * 3 + ["PUT"] * 3 + ["DELETE", "PATCH", "HEAD", "OPTIONS"])
        path = gen_path(rng, fz)
        body, ctype = gen_body(rng, fz, method, path)
        if method == "DELETE" and fz.control in path:
            method, body = "GET", None  # the control session stays
        headers = {}
        if ctype:
            headers["Content-Type"] = ctype
        kr = rng.random()
        key = "default"
        if kr < 0.05:
            key = None
        elif kr < 0.1:
            key = rng.choice(["wrong-key-wrong-key", "", fz.key + "x", fz.key[:-1], "\u00e9"])
        elif kr < 0.13:
            headers["Authorization"] = rng.choice(["Basic " + fz.key, "bearer " + fz.key, "Bearer  " + fz.key,
                                                   "Bearer", fz.key, "Bearer " + fz.key + " extra"])
        for _ in range(rng.choice([0, 0, 1, 3])):
            name = rng.choice(["X-Fuzz", "Accept", "Accept-Encoding", "Connection", "Origin", "Cookie",
                               "Range", "If-None-Match", "X-Forwarded-For", "Expect", "Host",
                               "Content-Encoding", "Accept-Language"])
            value = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(rng.randrange(0, 60)))
            if name == "Expect":
                value = "100-continue"
            headers[name] = value
        if "Authorization" in headers and not headers["Authorization"].isascii():
            headers["Authorization"] = "Bearer x"
        if key is not None and key != "default" and not key.isascii():
            key = "nonascii"
        fz.note(f"http {method} {short(path, 200)} {short(headers, 100)} body={short(body, 200)}")
        try:
            status, rh, data = http_call(fz, method, path, body, headers=headers, key=key)
        except http.client.InvalidURL:
            continue
        except Exception as e:  # noqa: BLE001
            fz.violation("no HTTP response to a well-formed request", f"{method} {short(path, 200)}: {e!r}")
            fz.checkpoint("a dropped HTTP request")
            continue
        stats[status // 100 * 100] += 1
        check_http_reply(fz, method, path, status, rh, data, "random")
        p = path.split("?")[0]
        if method == "POST" and status == 201:
            try:
                j = json.loads(data)
            except Exception:  # noqa: BLE001
                j = {}
            if "runId" in j:
                fz.created.add(j["runId"])
                fz.all_runs.add(j["runId"])
        if method == "PUT" and status == 200 and "/api/settings/" in p and "?" not in path:
            # What was stored reads back identical.
            st2, _, data2 = http_call(fz, "GET", path)
            if st2 != 200 or data2 != data:
                fz.violation("a stored settings document reads back different",
                             f"PUT {short(path)} -> {short(data)}; GET -> {st2} {short(data2)}")
        if n % 25 == 0:
            fz.restore_victims()
        if n % 5 == 0:
            fz.checkpoint("HTTP requests")
    say(f"[fuzz] http: {n} requests {dict(stats)} in {budget:.1f}s (DISPATCH_FUZZ_SEED={SEED})")
    fz.assert_clean("random HTTP requests")
    fz.restore_victims()
    fz.checkpoint("random HTTP requests")


def test_http_random_raw_mutations(fz):
    """Seeded random byte mutations of valid requests over raw sockets: the
    host answers or closes within the timeout, never 5xx, stays up."""
    budget = FUZZ_SECONDS * SHARE["rawhttp"]
    rng = rng_for("rawhttp")
    K = fz.key.encode()
    templates = [
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + K + b"\r\n\r\n",
        b"GET /api/sessions/" + fz.control.encode() + b"/history?afterSeq=0&limit=5 HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + K + b"\r\n\r\n",
        b"PUT /api/settings/fuzz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + K +
        b"\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
        b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + K +
        b"\r\nContent-Length: 16\r\n\r\n{\"path\":\"proj\"}\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ]
    tokens = [b"\r\n", b"\n", b"\r", b" ", b":", b"\x00", b"%", b"%00" if FUZZ_ALL else b"%20", b"/", b"..",
              b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n", b"\xff", b"HTTP/1.1",
              b"GET ", b"POST ", b"9" * 30, b"-1", b"Connection: close\r\n", b"Upgrade: websocket\r\n"]
    end = time.time() + budget
    stats = collections.Counter()
    while time.time() < end:
        data = bytearray(rng.choice(templates))
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(5)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.choice(tokens)
            elif op == 2 and data:
                del data[pos:pos + rng.randrange(1, 10)]
            elif op == 3:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
            else:
                a = rng.randrange(len(data) + 1)
                data[pos:pos] = data[a:a + rng.randrange(1, 40)]
        data = bytes(data)
        if not FUZZ_ALL and (len(data) > 7000 or b"%00" in data):
            continue
        fz.note(f"raw http mutation {short(data, 300)}")
        outcome = raw_http(fz, data)
        stats["requests"] += 1
        if not outcome["ended"]:
            fz.violation("the host neither answered nor closed (raw HTTP)", short(data, 300))
        if outcome["truncated"].startswith(b"HTTP/"):
            fz.violation("a truncated HTTP response (raw)", f"{short(data, 300)} -> {short(outcome['raw'], 300)}")
        for status, headers, body in outcome["responses"]:
            stats[status // 100 * 100] += 1
            if status >= 500:
                fz.violation("HTTP 5xx for a client's request (raw)", f"{short(data, 300)} -> {status} {short(body)}")
        fz.checkpoint("raw HTTP mutations")
    say(f"[fuzz] raw http: {dict(stats)} in {budget:.1f}s (DISPATCH_FUZZ_SEED={SEED})")
    fz.assert_clean("random raw HTTP")
    fz.checkpoint("random raw HTTP")


def test_stalled_clients_do_not_block_the_host(fz):
    """Half-sent requests and frames held open: everyone else is served."""
    socks = []
    try:
        for data in [b"GET /health HTTP/1.1\r\nHost: x\r\n",                    # headers never end
                     b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fz.key.encode() +
                     b"\r\nContent-Length: 1000\r\n\r\n{\"path\":",             # body never ends
                     b"GE"]:
            s = socket.create_connection(("127.0.0.1", fz.port), timeout=REPLY_TIMEOUT)
            s.sendall(data)
            socks.append(s)
        w = RawWS(fz.port)
        raw_hello(fz, w)
        w.send(RawWS.frame(b'{"event":"client:hello","id":1}')[:5])          # a frame never ends
        socks.append(w.s)
        w2 = RawWS(fz.port)
        raw_hello(fz, w2)
        w2.send(RawWS.frame(b'{"event":"client:hello"', fin=False))           # a message never ends
        socks.append(w2.s)
        for _ in range(3):
            t0 = time.time()
            fz.checkpoint("stalled clients")
            assert time.time() - t0 < 5
            st, _, _ = http_call(fz, "GET", "/api/sessions")
            assert st == 200

        async def go():
            c = await NativeConn.open(fz, "beside-stalled")
            r = await c.wait(lambda f: f.get("id") == 1, "hello")
            assert r and r["event"] == "ack"
            await c.close()
        run(go())
    finally:
        for s in socks:
            s.close()
    fz.checkpoint("stalled clients closed")


# ====================================================================== the end: nothing lost


def test_zz_control_session_intact_history_contiguous_and_clean_exit(fz):
    """After everything: the control pty session works end to end, every
    run's stored history is contiguous from seq 1, SIGTERM exits 0 with no
    sanitizer report, and a restart serves the same history."""
    fz.checkpoint("the end of the fuzz runs")
    ctl = fz.control
    seen = []

    async def go():
        c = await NativeConn.open(fz, "control")
        r = await c.ws.send(json.dumps({"event": "run:resize", "data": {"runId": ctl, "cols": 80, "rows": 24},
                                        "id": 2}))
        r = await c.wait(lambda f: f.get("id") == 2, "resize")
        assert r and r["event"] == "error" and r["data"]["code"] == "not_attached", r
        await c.ws.send(json.dumps({"event": "run:attach", "data": {"runId": ctl, "afterSeq": 0}, "id": 3}))
        ack = await c.wait(lambda f: f.get("id") == 3, "attach")
        assert ack and ack["event"] == "ack" and ack["data"]["fromSeq"] == 1, ack
        att = await c.wait(lambda f: f["event"] == "run:attached", "run:attached")
        assert att and att["data"]["toSeq"] == ack["data"]["toSeq"], att
        await c.ws.send(json.dumps({"event": "run:resize", "data": {"runId": ctl, "cols": 80, "rows": 24},
                                    "id": 4}))
        assert (await c.wait(lambda f: f.get("id") == 4, "resize"))["event"] == "ack"
        await c.ws.send(json.dumps({"event": "run:input", "data": {"runId": ctl,
                                    "data": "echo fuzz-$((6*7))-ok\r"}, "id": 5}))
        r = await c.wait(lambda f: f.get("id") == 5, "input")
        assert r and r["event"] == "ack", r

        def events():
            out = []
            for f in c.frames:
                if f["event"] == "run:event" and f["data"]["runId"] == ctl:
                    out.append(f["data"])
                elif f["event"] == "run:event:batch" and f["data"]["runId"] == ctl:
                    out.extend(f["data"]["events"])
            return out

        def output():
            return b"".join(base64.b64decode(e["payload"]) for e in events() if e["channel"] == "pty:stdout")
        deadline = time.time() + REPLY_TIMEOUT
        while time.time() < deadline and b"fuzz-42-ok\r\n" not in output():
            await asyncio.sleep(0.02)
        assert b"fuzz-42-ok\r\n" in output(), output()[-500:]
        await asyncio.sleep(0.3)  # the prompt, if still on its way
        evs = events()
        seqs = [e["seq"] for e in evs]
        assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate in the control session: {seqs}"
        assert evs[0]["channel"] == "system:status" and evs[0]["type"] == "created", evs[0]
        seen.extend(evs)
        await c.close()
    run(go())

    # Every run's stored history: contiguous from seq 1 to lastSeq.
    status, lst, _ = fz.host.request("GET", "/api/sessions")
    assert status == 200, lst
    runs = {s["runId"]: s for s in lst["sessions"]}
    assert ctl in runs and runs[ctl]["live"], runs.get(ctl)
    histories = {}
    for run_id in sorted(set(runs) | fz.all_runs):
        after, events = 0, []
        while True:
            st, page, _ = fz.host.request("GET", f"/api/sessions/{run_id}/history?afterSeq={after}&limit=10000")
            assert st == 200, (run_id, st, page)
            events.extend(page["events"])
            if not page["hasMore"]:
                break
            after = page["nextAfterSeq"]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: stored seqs not contiguous: {seqs[:50]}"
        assert not seqs or seqs[-1] == page["lastSeq"], (run_id, seqs[-1:], page["lastSeq"])
        histories[run_id] = events
    stored = {e["seq"]: e for e in histories[ctl]}
    for e in seen:
        assert stored[e["seq"]] == e, ("stored event differs from the one delivered", e, stored.get(e["seq"]))

    # SIGTERM: exit 0, no sanitizer report.
    code = fz.host.stop()
    fz.stopped = True
    log = fz.host.log()
    san = [l for l in log.splitlines() if any(m in l for m in SANITIZER_MARKERS)]
    assert not san, "\n".join(san[:30]) + "\n" + log[-6000:]
    assert code == 0, f"exit code {code}\n{log[-4000:]}"

    # Restart on the same data dir: the same history, the catalog readable.
    h2 = Host("--auth-fail-limit", "1000000", workdir=fz.workdir)
    try:
        for run_id, events in histories.items():
            st, page, _ = h2.request("GET", f"/api/sessions/{run_id}/history?afterSeq=0&limit=10000")
            assert st == 200, (run_id, st)
            got = page["events"]
            assert got[:len(events)] == events[:len(got)] and len(got) >= min(len(events), 10000), run_id
        for path in ["/api/sessions", "/api/workspaces", "/api/settings", "/health/status", "/metrics"]:
            st, _, _ = h2.request("GET", path)
            assert st == 200, (path, st)
        assert h2.stop() == 0
        log2 = h2.log()
        assert not [l for l in log2.splitlines() if any(m in l for m in SANITIZER_MARKERS)], log2[-4000:]
    finally:
        if h2.proc.poll() is None:
            h2.proc.kill()
            h2.proc.wait()
        if not h2.stderr.closed:
            h2.stderr.close()
