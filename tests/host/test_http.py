"""HTTP API of the real dispatch-host: auth, errors, workspaces, settings,
health, metrics, limits, start-up checks and shutdown. Driven with urllib
and curl against the binary on 127.0.0.1."""
import json
import os
import re
import subprocess

import pytest

from host_fixture import Host, run_host_cmd, KEY


def test_open_endpoints_need_no_key(host):
    for path, expect in [("/health", "ok"), ("/live", "alive"), ("/ready", "ready")]:
        status, body, _ = host.request("GET", path, key=None)
        assert status == 200 and body["status"] == expect


def test_everything_else_needs_the_key(host):
    for path in ["/api/sessions", "/api/workspaces", "/api/settings", "/metrics",
                 "/health/status", "/nope"]:
        status, body, hdrs = host.request("GET", path, key=None)
        assert status == 401, path
        assert body["code"] == "unauthorized" and body["error"]
        assert hdrs.get("WWW-Authenticate") == "Bearer"


def test_wrong_key_is_401_and_right_key_via_bearer_or_query(host):
    status, body, _ = host.request("GET", "/api/sessions", key="wrong-key-wrong-key")
    assert status == 401 and body["code"] == "unauthorized"
    status, body, _ = host.request("GET", "/api/sessions")
    assert status == 200 and body == {"sessions": []}
    status, body, _ = host.request("GET", "/api/sessions?authKey=" + host.key, key=None)
    assert status == 200


def test_repeated_failures_from_one_address_are_rate_limited():
    h = Host("--auth-fail-limit", "3", "--auth-fail-window", "60")
    try:
        for _ in range(3):
            status, _, _ = h.request("GET", "/api/sessions", key="bad-bad-bad-bad-bad")
            assert status == 401
        status, body, hdrs = h.request("GET", "/api/sessions", key="bad-bad-bad-bad-bad")
        assert status == 429 and body["code"] == "rate_limited"
        assert int(hdrs["Retry-After"]) > 0
        # Even the right key is refused while blocked; open endpoints still work.
        status, _, _ = h.request("GET", "/api/sessions")
        assert status == 429
        status, _, _ = h.request("GET", "/health", key=None)
        assert status == 200
    finally:
        h.close()


def test_unknown_route_is_404_json(host):
    status, body, _ = host.request("GET", "/api/nothing-here")
    assert status == 404 and body["code"] == "not_found"
    status, body, _ = host.request("GET", "/api/sessions/abc/unknown")
    assert status == 404


def test_malformed_json_is_400(host):
    status, body, _ = host.request("POST", "/api/workspaces", raw=b"{not json",
                                   headers={"Content-Type": "application/json"})
    assert status == 400 and body["code"] == "invalid_argument"


def test_oversized_body_is_413(host):
    big = "x" * (2 << 20)
    p = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
                        "-H", "Authorization: Bearer " + host.key,
                        "-H", "Content-Type: application/json",
                        "--data-binary", "@-", host.url + "/api/workspaces"],
                       input=big.encode(), capture_output=True, timeout=20)
    out = p.stdout.decode().rsplit("\n", 1)
    assert out[1] == "413", p.stdout[:200]
    assert json.loads(out[0])["code"] == "payload_too_large"
    # The server is still fine.
    assert host.request("GET", "/health", key=None)[0] == 200


def test_workspaces_crud_and_confinement(host):
    os.makedirs(os.path.join(host.root, "proj"))
    status, w, _ = host.request("POST", "/api/workspaces",
                                {"name": "Project", "path": "proj", "metadata": {"a": 1}})
    assert status == 201, w
    assert w["path"] == os.path.realpath(os.path.join(host.root, "proj"))
    assert w["status"] == "active" and w["metadata"] == {"a": 1}
    wid = w["id"]
    status, got, _ = host.request("GET", "/api/workspaces/" + wid)
    assert status == 200 and got["name"] == "Project"
    status, lst, _ = host.request("GET", "/api/workspaces")
    assert [x["id"] for x in lst["workspaces"]] == [wid]
    before = got["lastAccessed"]
    status, upd, _ = host.request("PUT", "/api/workspaces/" + wid,
                                  {"status": "archived", "metadata": {"b": 2}, "lastAccessed": True})
    assert status == 200 and upd["status"] == "archived" and upd["metadata"] == {"b": 2}
    assert upd["lastAccessed"] >= before
    status, body, _ = host.request("PUT", "/api/workspaces/" + wid, {"status": "sleepy"})
    assert status == 400
    status, body, _ = host.request("POST", "/api/workspaces", {"id": wid, "path": "proj"})
    assert status == 409 and body["code"] == "conflict"
    status, body, _ = host.request("DELETE", "/api/workspaces/" + wid)
    assert status == 200
    status, body, _ = host.request("GET", "/api/workspaces/" + wid)
    assert status == 404 and body["code"] == "not_found"


@pytest.mark.parametrize("escape", ["..", "../..", "/etc", "proj/../../", "link-out",
                                    "/tmp/../etc"])
def test_workspace_path_escape_is_refused(host, escape):
    os.makedirs(os.path.join(host.root, "proj"), exist_ok=True)
    os.symlink("/", os.path.join(host.root, "link-out"))
    status, body, _ = host.request("POST", "/api/workspaces", {"path": escape})
    assert status == 403, (escape, body)
    assert body["code"] == "forbidden"


def test_sibling_with_common_prefix_is_outside(host):
    sibling = host.root + "-evil"
    os.makedirs(sibling)
    status, body, _ = host.request("POST", "/api/workspaces", {"path": sibling})
    assert status == 403


def test_missing_workspace_path_is_404(host):
    status, body, _ = host.request("POST", "/api/workspaces", {"path": "does-not-exist"})
    assert status == 404


def test_settings_roundtrip(host):
    status, body, _ = host.request("GET", "/api/settings/ui")
    assert status == 404
    status, body, _ = host.request("PUT", "/api/settings/ui", {"theme": "dark", "size": 14})
    assert status == 200 and body == {"theme": "dark", "size": 14}
    status, body, _ = host.request("GET", "/api/settings/ui")
    assert status == 200 and body == {"theme": "dark", "size": 14}
    status, body, _ = host.request("GET", "/api/settings")
    assert body == {"settings": {"ui": {"theme": "dark", "size": 14}}}
    status, body, _ = host.request("PUT", "/api/settings/ui", [1, 2])
    assert status == 400
    status, body, _ = host.request("PUT", "/api/settings/bad%20name", {"a": 1})
    assert status in (400, 404)


def test_health_status_and_metrics(host):
    status, body, _ = host.request("GET", "/health/status")
    assert status == 200
    assert body["status"] == "ok" and body["version"]
    assert body["store"]["ok"] is True and "uptimeSeconds" in body and "sessions" in body
    status, text, hdrs = host.request("GET", "/metrics")
    assert status == 200 and hdrs["Content-Type"].startswith("text/plain")
    names = set()
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) dispatch_\w+ ", line), line
            continue
        m = re.match(r'^(dispatch_\w+)(\{[^}]*\})? (-?[0-9.e+]+|\+Inf)$', line)
        assert m, line
        names.add(m.group(1))
    for want in ["dispatch_events_appended_total", "dispatch_ws_clients",
                 "dispatch_store_commit_latency_seconds_bucket",
                 "dispatch_ws_slow_client_total", "dispatch_store_subscribers",
                 "dispatch_http_responses_total"]:
        assert want in names, want


def test_help_documents_every_flag():
    code, out, _ = run_host_cmd("serve", "--help")
    assert code == 0
    for flag in ["--listen", "DISPATCH_LISTEN", "--data", "DISPATCH_DATA", "--key", "DISPATCH_KEY",
                 "--workspaces-root", "DISPATCH_WORKSPACES_ROOT", "--allow-origin", "--no-auth"]:
        assert flag in out, flag
    code2, out2, _ = run_host_cmd("--help")
    assert code2 == 0


@pytest.mark.parametrize("key", ["", "changeme", "password", "short-key", "aaaaaaaaaaaaaaaaaaaa"])
def test_weak_or_empty_keys_are_refused_at_start(tmp_path, key):
    code, out, err = run_host_cmd("serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path),
                                  "--key", key)
    assert code == 2 and "refusing to start" in err, err
    code, out, err = run_host_cmd("serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path),
                                  env={"DISPATCH_KEY": key})
    assert code == 2, err


def test_no_auth_only_on_loopback(tmp_path):
    code, out, err = run_host_cmd("serve", "--listen", "0.0.0.0:0", "--data", str(tmp_path),
                                  "--no-auth")
    assert code == 2 and "loopback" in err
    h = Host("--no-auth", key=None)
    try:
        assert not any("generated key" in l for l in h.stdout_lines)
        status, body, _ = h.request("GET", "/api/sessions", key=None)
        assert status == 200
    finally:
        h.close()


def test_generated_key_is_printed_once_and_works():
    h = Host(key=None)
    try:
        printed = [l for l in h.stdout_lines if "generated key" in l]
        assert len(printed) == 1 and len(h.key) >= 32
        assert h.key not in h.log()  # not in the log
        assert h.request("GET", "/api/sessions")[0] == 200
        assert h.request("GET", "/api/sessions", key=KEY)[0] == 401
    finally:
        h.close()


def test_environment_configures_the_server(tmp_path):
    root = tmp_path / "wsroot"
    root.mkdir()
    h = Host(key=None, env={"DISPATCH_KEY": "env-key-0123456789abcdef",
                            "DISPATCH_WORKSPACES_ROOT": str(root)}, root_flag=False)
    try:
        h.key = "env-key-0123456789abcdef"
        assert h.request("GET", "/api/sessions")[0] == 200
        (root / "p").mkdir()
        status, w, _ = h.request("POST", "/api/workspaces", {"path": "p"})
        assert status == 201 and w["path"] == str(root / "p")
    finally:
        h.close()


def test_bad_flags_are_clear_errors(tmp_path):
    code, _, err = run_host_cmd("serve", "--listen", "127.0.0.1:notaport")
    assert code == 2 and "--listen" in err
    code, _, err = run_host_cmd("serve", "--frobnicate")
    assert code == 2 and "unknown option" in err


def test_sigterm_exits_zero_and_ready_flips(host):
    assert host.stop() == 0
    assert "stopped cleanly" in host.log()


def test_tls_serves_https_and_wss(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    h = Host("--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert any("https://127.0.0.1" in l for l in h.stdout_lines)
        base = f"https://127.0.0.1:{h.port}"
        p = subprocess.run(["curl", "-sk", "-H", "Authorization: Bearer " + h.key,
                            base + "/api/sessions"], capture_output=True, timeout=20)
        assert json.loads(p.stdout) == {"sessions": []}
        # Errors written before routing (413) are well-formed over TLS too.
        p = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                            "-X", "POST", "-H", "Authorization: Bearer " + h.key,
                            "--data-binary", "@-", base + "/api/workspaces"],
                           input=b"x" * (2 << 20), capture_output=True, timeout=20)
        assert p.stdout.decode() == "413 1.1", p.stdout
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{h.port}/health"], capture_output=True, timeout=20)
        assert p.stdout.decode() != "200"  # plain HTTP is not served on a TLS port

        import asyncio
        import ssl
        import websockets

        async def go():
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            async with websockets.connect(f"wss://127.0.0.1:{h.port}/ws", ssl=ctx) as ws:
                await ws.send(json.dumps({"event": "client:hello", "data": {"key": h.key}, "id": 1}))
                reply = json.loads(await ws.recv())
                assert reply["event"] == "ack" and reply["data"]["authenticated"] is True
        asyncio.run(go())
    finally:
        h.close()


def test_the_host_is_its_stores_only_writer(host, tmp_path):
    # The host opens its store exclusively: a writer in another process (import) is
    # refused with a clear message, a reader (sessions) is served; the journal's
    # counters are in /metrics.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out, err = run_host_cmd("import", str(empty), "--data", host.data)
    assert code != 0 and "held exclusively" in err, (code, out, err)
    code, out, err = run_host_cmd("sessions", "--data", host.data)
    assert code == 0, err
    status, text, _ = host.request("GET", "/metrics")
    assert status == 200
    assert "dispatch_store_journal_appends_total" in text
    assert "dispatch_store_journal_copies_total" in text
