// Interop of dispatch-host with real JavaScript clients: socket.io-client v4
// (transports: ['websocket']) at /socket.io/ and `ws` at /ws. Starts the real
// binary (DISPATCH_HOST_BIN) on 127.0.0.1 with a temp data dir; exits 0 when
// every check passed, 1 otherwise.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const BIN = process.env.DISPATCH_HOST_BIN;
const KEY = 'interop-key-0123456789abcdef';

function startHost() {
  const dir = mkdtempSync(join(tmpdir(), 'dispatch-interop-'));
  mkdirSync(join(dir, 'root'));
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data', join(dir, 'data'),
    '--key', KEY, '--workspaces-root', join(dir, 'root'), '--ping-interval', '500'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('host did not start: ' + stderr)), 10000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, dir, port: Number(m[1]), log: () => stderr });
      }
    });
    child.on('exit', (code) => reject(new Error('host exited ' + code + ': ' + stderr)));
  });
}

async function api(host, method, path, body) {
  const r = await fetch(`http://127.0.0.1:${host.port}${path}`, {
    method, headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

function connectSio(host, opts = {}) {
  return io(`http://127.0.0.1:${host.port}`, {
    transports: ['websocket'], reconnection: false, timeout: 15000, ...opts,
  });
}

function once(emitter, name, ms = 15000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timeout waiting for ' + name)), ms);
    emitter.once(name, (...a) => { clearTimeout(t); resolve(a.length > 1 ? a : a[0]); });
  });
}

function emitAck(sock, name, data, ms = 15000) {
  return sock.timeout(ms).emitWithAck(name, data);
}

function decode(ev) {
  if (ev.encoding === 'bytes') return Buffer.from(ev.payload, 'base64').toString('latin1');
  if (ev.encoding === 'json') return JSON.stringify(ev.payload);
  return ev.payload;
}

// Collects run:event / run:event:batch of one run into `events`.
function collect(sock, runId, events) {
  sock.on('run:event', (e) => { if (e.runId === runId) events.push(e); });
  sock.on('run:event:batch', (b) => { if (b.runId === runId) events.push(...b.events); });
}

async function waitFor(pred, ms = 30000, what = 'condition') {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('timeout waiting for ' + what);
}

const checks = [];
function check(name, fn) { checks.push({ name, fn }); }

check('socket.io: wrong key gives connect_error', async (host) => {
  const s = connectSio(host, { auth: { key: 'not-the-key-xxxxxxxxxxxx' } });
  const err = await once(s, 'connect_error');
  assert.match(String(err.message), /unauthorized/);
  s.close();
});

check('socket.io: connect with auth.key, hello with ack, heartbeat keeps it open', async (host) => {
  const s = connectSio(host, { auth: { key: KEY } });
  await once(s, 'connect');
  assert.ok(s.id);
  const ack = await emitAck(s, 'client:hello', { clientId: 'js-1' });
  assert.equal(ack.authenticated, true);
  assert.equal(ack.clientId, 'js-1');
  // ping interval is 500 ms: the client answers pings, the connection stays.
  await new Promise((r) => setTimeout(r, 1600));
  assert.equal(s.connected, true);
  const err = await emitAck(s, 'run:attach', { runId: 'no-such-run' });
  assert.equal(err.error.code, 'not_found');
  const bad = await emitAck(s, 'run:frobnicate', {});
  assert.equal(bad.error.code, 'unknown_event');
  s.close();
});

check('socket.io: key in the query string works too', async (host) => {
  const s = connectSio(host, { query: { authKey: KEY } });
  await once(s, 'connect');
  s.close();
});

check('socket.io: create pty, attach, type echo, see output, viewer refused', async (host) => {
  const created = await api(host, 'POST', '/api/sessions', { kind: 'pty', options: { shell: '/bin/sh', cols: 80, rows: 24 } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const runId = created.body.runId;
  const s = connectSio(host, { auth: { key: KEY } });
  await once(s, 'connect');
  const events = [];
  collect(s, runId, events);
  const attached = once(s, 'run:attached');
  const ack = await emitAck(s, 'run:attach', { runId, afterSeq: 0 });
  assert.equal(ack.runId, runId);
  const marker = await attached;
  assert.equal(marker.runId, runId);
  assert.equal(marker.fromSeq, 1);
  const inAck = await emitAck(s, 'run:input', { runId, data: 'echo hi-from-js\r' });
  assert.equal(inAck.runId, runId);
  await waitFor(() => events.some((e) => e.channel === 'pty:stdout' && /hi-from-js\r?\n/.test(decode(e).replace(/echo hi-from-js/g, ''))), 30000, 'pty output');
  // seqs are contiguous from 1
  events.forEach((e, i) => assert.equal(e.seq, i + 1));
  // A viewer cannot type.
  const v = connectSio(host, { auth: { key: KEY } });
  await once(v, 'connect');
  await emitAck(v, 'run:attach', { runId, afterSeq: 0, role: 'viewer' });
  const refused = await emitAck(v, 'run:input', { runId, data: 'x' });
  assert.equal(refused.error.code, 'forbidden');
  const refused2 = await emitAck(v, 'run:resize', { runId, cols: 100, rows: 40 });
  assert.equal(refused2.error.code, 'forbidden');
  v.close();
  const closed = once(s, 'session:closed', 30000);
  await emitAck(s, 'run:close', { runId });
  assert.equal((await closed).runId, runId);
  s.close();
});

check('socket.io: attach with a screen: run:screen, then the events after its seq, then live', async (host) => {
  const created = await api(host, 'POST', '/api/sessions', { kind: 'pty', options: { shell: '/bin/sh', cols: 80, rows: 24 } });
  const runId = created.body.runId;
  const s = connectSio(host, { auth: { key: KEY } });
  await once(s, 'connect');
  const all = [];
  collect(s, runId, all);
  await emitAck(s, 'run:attach', { runId });
  await emitAck(s, 'run:input', { runId, data: "seq 1 3000; printf '\\033[31mred-%d\\033[0m\\n' $((6*7))\r" });
  await waitFor(() => all.some((e) => e.channel === 'pty:stdout' && decode(e).includes('red-42')), 30000, 'history');
  await new Promise((r) => setTimeout(r, 300));  // the prompt
  const last = all[all.length - 1].seq;

  const b = connectSio(host, { auth: { key: KEY } });
  await once(b, 'connect');
  const order = [];
  const tail = [];
  let screen = null;
  b.on('run:screen', (d) => { order.push('screen'); screen = d; });
  b.on('run:event', (e) => { order.push('event'); tail.push(e); });
  b.on('run:event:batch', (x) => { order.push('event'); tail.push(...x.events); });
  const attached = once(b, 'run:attached');
  const ack = await emitAck(b, 'run:attach', { runId, screen: true, role: 'viewer' });
  assert.equal(ack.screen, true);
  const marker = await attached;
  assert.equal(order[0], 'screen');
  assert.equal(screen.runId, runId);
  assert.equal(screen.encoding, 'text');
  assert.deepEqual([screen.cols, screen.rows], [80, 24]);
  assert.ok(screen.data.includes('red-42') && screen.data.includes('\x1b[') && screen.data.includes('3000'));
  assert.ok(!screen.data.includes('\n1\r\n'), 'the screen is not the history');
  assert.ok(screen.seq <= marker.toSeq && marker.toSeq >= last);
  // Live: contiguous after the screen's seq.
  await emitAck(s, 'run:input', { runId, data: 'echo live-$((5+5))\r' });
  await waitFor(() => tail.some((e) => e.channel === 'pty:stdout' && decode(e).includes('live-10')), 30000, 'live output');
  tail.forEach((e, i) => assert.equal(e.seq, screen.seq + 1 + i));
  b.close();
  s.close();
});

check('ws: native frames, hello, ack ids, attach with afterSeq (pty)', async (host) => {
  const created = await api(host, 'POST', '/api/sessions', { kind: 'pty', options: { shell: '/bin/sh' } });
  assert.equal(created.status, 201);
  const runId = created.body.runId;
  const ws = new WebSocket(`ws://127.0.0.1:${host.port}/ws`);
  await once(ws, 'open');
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  ws.send(JSON.stringify({ event: 'client:hello', data: { clientId: 'js-ws', key: KEY }, id: 7 }));
  await waitFor(() => frames.some((f) => f.event === 'ack' && f.id === 7), 15000, 'hello ack');
  ws.send(JSON.stringify({ event: 'run:attach', data: { runId, afterSeq: 0 }, id: 8 }));
  await waitFor(() => frames.some((f) => f.event === 'run:attached'), 15000, 'attached');
  ws.send(JSON.stringify({ event: 'run:input', data: { runId, data: Buffer.from('echo via-ws\r').toString('base64'), encoding: 'bytes' }, id: 9 }));
  const evs = () => frames.flatMap((f) => f.event === 'run:event' ? [f.data] : f.event === 'run:event:batch' ? f.data.events : []);
  await waitFor(() => evs().some((e) => /via-ws\r?\n/.test(decode(e).replace(/echo via-ws/g, ''))), 30000, 'output');
  evs().forEach((e, i) => assert.equal(e.seq, i + 1));
  ws.close();
  await api(host, 'DELETE', '/api/sessions/' + runId);
});

check('ws: bad Origin refused, good key header accepted', async (host) => {
  const bad = new WebSocket(`ws://127.0.0.1:${host.port}/ws`, { origin: 'https://evil.example', headers: { Authorization: 'Bearer ' + KEY } });
  const res = await new Promise((resolve) => {
    bad.on('unexpected-response', (req, r) => resolve(r.statusCode));
    bad.on('open', () => resolve('open'));
    bad.on('error', () => {});
  });
  assert.equal(res, 403);
  const good = new WebSocket(`ws://127.0.0.1:${host.port}/ws`, { headers: { Authorization: 'Bearer ' + KEY } });
  await once(good, 'open');
  good.close();
});

let failed = 0;
const host = await startHost();
try {
  for (const c of checks) {
    try {
      await c.fn(host);
      console.log('ok   ' + c.name);
    } catch (e) {
      failed++;
      console.log('FAIL ' + c.name + ': ' + (e && e.stack ? e.stack : e));
    }
  }
} finally {
  host.child.kill('SIGTERM');
  const code = await new Promise((r) => host.child.on('exit', (c) => r(c)));
  if (code !== 0) { failed++; console.log('FAIL host exit code ' + code); }
  if (failed) console.log(host.log());
  rmSync(host.dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
