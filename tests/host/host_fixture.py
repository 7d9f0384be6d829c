"""Starts the real dispatch-host binary on 127.0.0.1 with a temp data dir.

Used by the host tests (pytest). The binary comes from $DISPATCH_HOST_BIN
(ctest sets it). Each Host runs in its own temp directory holding the data
dir and the workspaces root; stop() sends SIGTERM and returns the exit code.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

BIN = os.environ.get("DISPATCH_HOST_BIN", "build/host/dispatch-host")
KEY = "test-key-0123456789abcdef"


class Host:
    def __init__(self, *args, key=KEY, env=None, workdir=None, root_flag=True):
        self.dir = workdir or tempfile.mkdtemp(prefix="dispatch-host-test-")
        self.own_dir = workdir is None
        self.root = os.path.join(self.dir, "root")
        os.makedirs(self.root, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.key = key
        cmd = [BIN, "serve", "--listen", "127.0.0.1:0", "--data", self.data]
        if root_flag:
            cmd += ["--workspaces-root", self.root]
        if key is not None:
            cmd += ["--key", key]
        cmd += list(args)
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith("DISPATCH_") and k != "DISPATCH_HOST_BIN":
                del full_env[k]
        full_env.update(env or {})
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=full_env, cwd=self.dir)
        self.stdout_lines = []
        self.port = None
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            self.stdout_lines.append(line)
            m = re.search(r"generated key .*: (\S+)", line)
            if m:
                self.key = m.group(1)
            m = re.search(r"listening on https?://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("dispatch-host did not start: " + self.log())
        # Keep draining stdout so the child never blocks on a full pipe.
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line.decode(errors="replace"))

    def log(self):
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def request(self, method, path, body=None, key="default", headers=None, raw=None):
        """Returns (status, parsed JSON or text, headers)."""
        h = dict(headers or {})
        if key == "default":
            key = self.key
        if key is not None:
            h["Authorization"] = "Bearer " + key
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, text, hdrs = r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            status, text, hdrs = e.code, e.read().decode(), e.headers
        ctype = hdrs.get("Content-Type", "")
        value = json.loads(text) if ctype.startswith("application/json") and text else text
        return status, value, hdrs

    def create_session(self, kind="pty", workspace=None, **options):
        body = {"kind": kind, "options": options}
        if workspace is not None:
            body["workspace"] = workspace
        status, value, _ = self.request("POST", "/api/sessions", body)
        assert status == 201, (status, value, self.log())
        return value["runId"]

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError("dispatch-host did not stop on signal: " + self.log())
        return code

    def close(self):
        """Stops the host gracefully (so sanitizers report at exit) and fails
        if a sanitizer reported anything."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log = self.log()
        if not self.stderr.closed:
            self.stderr.close()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert marker not in log, log[-4000:]


def run_host_cmd(*args, env=None, timeout=10):
    """Runs dispatch-host with args to completion; returns (code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    full_env.update(env or {})
    p = subprocess.run([BIN] + list(args), capture_output=True, env=full_env, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()
