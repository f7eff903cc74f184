// The TypeScript/JavaScript SDK against a real server, whose URL comes in UPSTREAM_URL (the
// end-to-end suite starts one: tests/e2e/test_sdk_js.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { inspect } from "node:util";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sdk from "../src/index.js";

import {
  runPipeline,
  streamPipeline,
  sessions,
  session,
  deleteSession,
  Client,
  Sandbox,
  Snapshot,
  usage,
  NotFoundError,
  InvalidArgumentError,
  ConflictError,
  ServerError,
  UpstreamError,
} from "../src/index.js";

assert.ok(process.env.UPSTREAM_URL, "UPSTREAM_URL must name a running upstream server");
const client = new Client();

test("create a sandbox, run code, read results", async () => {
  const sb = await Sandbox.create({ labels: { sdk: "js" } });
  try {
    await sb.files.write("in.txt", "3 4\n");
    const r = await sb.exec("python3 -c 'a,b=map(int,open(\"in.txt\").read().split()); open(\"out.txt\",\"w\").write(str(a*b))'");
    assert.equal(r.exitCode, 0, r.stderr);
    assert.ok(r.ok);
    assert.equal(await sb.files.readText("out.txt"), "12");
  } finally {
    await sb.delete();
  }
  await assert.rejects(Sandbox.get(sb.id), NotFoundError);
});

test("exec details", async () => {
  const sb = await Sandbox.create({ env: { A: "1" } }, client);
  try {
    const r = await sb.exec(["sh", "-c", "echo $A $B; echo oops >&2; exit 4"], { env: { B: "2" } });
    assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.ok], [4, "1 2\n", "oops\n", false]);
    assert.equal((await sb.exec("cat", { stdin: "fed\n" })).stdout, "fed\n");
    assert.equal((await sb.exec("pwd", { cwd: "/tmp" })).stdout, "/tmp\n");
    assert.ok((await sb.exec("sleep 10", { timeout: 300 })).timedOut);
    assert.equal((await sb.execs({ limit: 10 })).length, 4);
  } finally {
    await sb.delete();
  }
});

test("streams, in order, with stdin", async () => {
  const sb = await Sandbox.create({}, client);
  try {
    const stream = await sb.execStream("for i in 1 2 3; do echo line$i; sleep 0.05; done; echo warn >&2");
    const events = [];
    for await (const ev of stream) events.push(ev);
    assert.equal(events[0].type, "start");
    assert.equal(events.at(-1).type, "exit");
    assert.equal(events.filter((e) => e.type === "stdout").map((e) => e.data).join(""), "line1\nline2\nline3\n");
    assert.deepEqual(events.filter((e) => e.type === "stderr").map((e) => e.data), ["warn\n"]);
    assert.equal(stream.result.exitCode, 0);

    const s = await sb.execStream("read a; echo got $a; read b; echo got $b", { stdin: true });
    await s.sendStdin("one\n");
    await s.sendStdin("two\n", { eof: true });
    const r = await s.wait();
    assert.equal(r.stdout, "got one\ngot two\n");
  } finally {
    await sb.delete();
  }
});

test("background execs", async () => {
  const sb = await Sandbox.create({}, client);
  try {
    const h = await sb.execBackground("echo started; sleep 300");
    assert.ok(await h.running());
    for (let i = 0; i < 200 && new TextDecoder().decode(await h.logs()) !== "started\n"; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await h.kill("TERM");
    const st = await h.wait({ timeout: "10s" });
    assert.notEqual(st.state, "running");
    assert.equal(new TextDecoder().decode(await h.logs()), "started\n");
  } finally {
    await sb.delete();
  }
});

test("files", async () => {
  const sb = await Sandbox.create({}, client);
  const dir = await mkdtemp(join(tmpdir(), "upstream-js-"));
  try {
    const info = await sb.files.write("notes/a.txt", "hello\n", { mkdirs: true, mode: 0o640 });
    assert.equal(info.path, "/home/user/notes/a.txt");
    assert.equal(info.mode, 0o640);
    assert.deepEqual((await sb.files.list("notes")).map((f) => f.name), ["a.txt"]);
    await sb.files.mkdir("/tmp/x/y");
    await sb.files.move("notes/a.txt", "/tmp/x/y/b.txt");
    assert.equal(await sb.files.exists("notes/a.txt"), false);
    assert.equal(await sb.files.readText("/tmp/x/y/b.txt"), "hello\n");
    const tar = await sb.files.downloadTar("/tmp/x");
    await sb.files.uploadTar("/srv/copy", tar);
    assert.equal(await sb.files.readText("/srv/copy/x/y/b.txt"), "hello\n");
    await sb.files.remove("/tmp/x", { recursive: true });
    assert.equal(await sb.files.exists("/tmp/x"), false);
    const bytes = new Uint8Array(200_000).map((_, i) => (i * 7) % 256);
    await writeFile(join(dir, "blob"), bytes);
    await sb.files.upload(join(dir, "blob"), "/tmp/blob");
    await sb.files.download("/tmp/blob", join(dir, "blob.back"));
    assert.deepEqual(new Uint8Array(await readFile(join(dir, "blob.back"))), bytes);
  } finally {
    await sb.delete();
  }
});

test("lifecycle and listing", async () => {
  const tag = `js-${Date.now()}`;
  const boxes = [];
  try {
    for (let i = 0; i < 3; i++) boxes.push(await Sandbox.create({ labels: { tag } }, client));
    const listed = await Sandbox.list({ labels: { tag }, pageSize: 2 }, client);
    assert.deepEqual(listed.map((b) => b.id).sort(), boxes.map((b) => b.id).sort());
    const b = boxes[0];
    await b.stop();
    assert.equal(b.state, "stopped");
    await assert.rejects(b.exec("true"), (e) => e instanceof ConflictError && e.code === "failed_precondition" && e.status === 409);
    await b.start();
    assert.equal((await b.exec("echo back")).stdout, "back\n");
    await b.pause();
    assert.equal(b.state, "paused");
    assert.equal((await Sandbox.get(b.id, client)).state, "paused");
    await b.resume();
    assert.equal(b.state, "running");
    await b.pause();
    assert.equal((await b.exec("echo woke")).stdout, "woke\n");
    await b.stop();
    await b.archive();
    assert.equal(b.state, "archived");
    await b.start();
    assert.equal((await b.exec("echo back")).stdout, "back\n");
    assert.equal((await Sandbox.get(b.id, client)).state, "running");
  } finally {
    for (const b of boxes) await b.delete();
  }
});

test("typed errors", async () => {
  await assert.rejects(Sandbox.create({ name: "bad name!" }, client), (e) => e instanceof InvalidArgumentError && e instanceof UpstreamError && /name/.test(e.message));
  await assert.rejects(Sandbox.get("nonexistent-box", client), NotFoundError);
  assert.throws(() => new Client({ url: "ftp://example.invalid" }), TypeError);
  await assert.rejects(Sandbox.list({}, new Client({ url: "http://127.0.0.1:1" })), (e) => e instanceof ServerError && e.code === "unavailable");
});

test("pipelines and sessions", async () => {
  const name = `js-${Date.now()}`;
  const doc = "```bash\necho turn $UPSTREAM_TURN\n```\n";
  const r1 = await runPipeline(doc, { session: name });
  assert.ok(r1.ok);
  assert.equal(r1.turn, 1);
  assert.match(r1.report, /turn 1/);
  const events = [];
  for await (const ev of streamPipeline(doc, { session: name })) events.push(ev);
  assert.equal(events.at(-1).type, "end");
  assert.equal(events.at(-1).result.turn, 2);
  assert.ok(events.some((e) => e.type === "step_end" && e.index === 1 && e.line.startsWith("Step 1:")));
  assert.deepEqual((await sessions()).filter((s) => s.name === name).map((s) => s.turns), [2]);
  assert.equal((await session(name)).turns.length, 2);
  await assert.rejects(runPipeline("---\nnope: 1\n---\n```bash\ntrue\n```\n"), (e) => e instanceof InvalidArgumentError && /document.md:2:1/.test(e.message));
  await deleteSession(name);
  await assert.rejects(session(name), NotFoundError);
});

test("snapshots, fan-out, fork, export and import", async () => {
  const base = await Sandbox.create({ env: { FROM: "base" }, autoPause: "10m", keepAlive: true }, client);
  assert.deepEqual(base.info.policy, { auto_pause_ms: 600000, auto_stop_ms: 86400000, auto_archive_ms: 604800000, keep_alive: true });
  const made = [base];
  const snaps = [];
  try {
    await base.files.write("/home/user/prepared.txt", "ready\n");
    const snap = await base.snapshot({ name: `jssnap-${Date.now()}` });
    snaps.push(snap);
    assert.equal(snap.layers.length, 1);
    assert.equal((await Snapshot.get(snap.name, client)).id, snap.id);
    assert.ok((await Snapshot.list({}, client)).some((s) => s.id === snap.id));
    const boxes = await Sandbox.createMany(2, { image: snap.name }, client);
    made.push(...boxes);
    for (const b of boxes) {
      assert.equal((await b.exec("cat /home/user/prepared.txt; echo $FROM")).stdout, "ready\nbase\n");
    }
    await assert.rejects(snap.delete(), (e) => e instanceof ConflictError);
    const forks = await base.fork({ count: 2 });
    made.push(...forks);
    assert.equal(forks.length, 2);
    const dir = await mkdtemp(join(tmpdir(), "upstream-js-snap-"));
    const file = join(dir, "s.tar.zst");
    await snap.export(file);
    const imported = await Snapshot.importFile(file, { name: `${snap.name}-imp` }, client);
    snaps.push(imported);
    assert.deepEqual(imported.layers, snap.layers);
    await writeFile(join(dir, "bad"), "not an export");
    await assert.rejects(Snapshot.importFile(join(dir, "bad"), { name: "bad-js" }, client), (e) => e instanceof InvalidArgumentError);
    await assert.rejects(Snapshot.get("no-such-snapshot-js", client), (e) => e instanceof NotFoundError);
  } finally {
    for (const b of made) await b.delete();
    for (const s of snaps.reverse()) await s.delete();
  }
});

test("usage report over a period", async () => {
  const tag = `jsuse-${Date.now()}`;
  const sb = await Sandbox.create({ labels: { team: tag } }, client);
  try {
    await sb.exec("head -c 20000000 /dev/zero | sha256sum");
    const rep = await usage({ by: "label:team", labels: { team: tag } }, client);
    assert.deepEqual(rep.groups.map((g) => g.key), [tag]);
    assert.equal(rep.groups[0].boxes, 1);
    assert.ok(rep.groups[0].cpu_seconds > 0);
    await assert.rejects(usage({ since: "yesterday" }, client), (e) => e instanceof InvalidArgumentError);
  } finally {
    await sb.delete();
  }
});

test("network mode at create and changed on a running box", async () => {
  const sb = await Sandbox.create({ network: "allow-all" }, client);
  try {
    assert.equal(sb.info.network, "allow-all");
    assert.match((await sb.exec("ip -o link")).stdout, /eth0/);
    await sb.setNetwork("none");
    assert.equal(sb.info.network, "none");
    assert.doesNotMatch((await sb.exec("ip -o link")).stdout, /eth0/);
    await assert.rejects(sb.setNetwork("bridge"), (e) => e instanceof InvalidArgumentError);
  } finally {
    await sb.delete();
  }
});

test("egress policy, traffic counters and exposed ports", async () => {
  const sb = await Sandbox.create({ network: "custom", allowDomains: ["example.com"], denyCidrs: ["198.51.100.0/24"],
    headers: { "api.example.com": { Authorization: "Bearer s3" } } }, client);
  try {
    assert.deepEqual(sb.info.egress.allow_domains, ["example.com"]);
    assert.deepEqual(sb.info.egress.headers, { "api.example.com": ["Authorization"] });
    assert.doesNotMatch(JSON.stringify(sb.info), /s3/);
    const t = await sb.traffic();
    assert.ok("destinations" in t && "denied" in t && "dns" in t);
    await sb.setNetwork("custom", { allowDomains: ["*.example.com"] });
    assert.deepEqual(sb.info.egress.allow_domains, ["*.example.com"]);
    assert.deepEqual(sb.info.egress.headers, { "api.example.com": ["Authorization"] });
    await assert.rejects(sb.setNetwork("custom", { allowCidrs: ["10.0.0.0/33"] }), (e) => e instanceof InvalidArgumentError);
    await sb.execBackground("python3 -m http.server 8124 --bind 127.0.0.1");
    await sb.exec("for i in $(seq 50); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8124))\" 2>/dev/null && break; sleep 0.1; done");
    const x = await sb.expose(8124);
    assert.equal(x.auth, "bearer");
    assert.equal((await fetch(x.url, { headers: { Authorization: `Bearer ${x.token}` } })).status, 200);
    assert.equal((await fetch(x.url)).status, 401);
    assert.deepEqual((await sb.exposures()).map((e) => e.id), [x.id]);
    await sb.unexpose(x.id);
    assert.deepEqual(await sb.exposures(), []);
  } finally {
    await sb.delete();
  }
});

test("durations and sizes: one convention, checked before anything is sent; readable when printed", async () => {
  const before = (await Sandbox.list({}, client)).length;
  for (const [opts, words] of [
    [{ memory: "lots" }, 'memory "lots" is not a size'],
    [{ memory: 1.5 }, "memory must be a whole number of bytes"],
    [{ autoPause: "30" }, 'autoPause "30" is not a duration'],
    [{ autoPause: "soon" }, 'autoPause "soon" is not a duration'],
    [{ autoPause: 1000, autoPauseMs: 1000 }, "not both"],
  ]) {
    await assert.rejects(Sandbox.create(opts, client), (e) => e instanceof TypeError && e.message.includes(words), JSON.stringify(opts));
  }
  assert.equal((await Sandbox.list({}, client)).length, before);
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on("warning", onWarning);
  const sb = await Sandbox.create({ memory: "64m", autoPause: "10m", autoStop: 7_200_000 }, client);
  try {
    assert.equal(sb.info.limits.memory, 64 * 1024 * 1024);
    assert.equal(sb.info.policy.auto_pause_ms, 600_000);
    assert.equal(sb.info.policy.auto_stop_ms, 7_200_000);
    const r = await sb.exec("sleep 10", { timeout: "300ms" });
    assert.ok(r.timedOut && r.durationMs < 5000);
    await assert.rejects(sb.exec("true", { timeout: "abc" }), /timeout "abc" is not a duration/);
    assert.deepEqual((await sb.execs()).map((e) => e.exec), [r.exec]);
    assert.match(String(r), new RegExp(`^ExecResult\\(exec=${r.exec}, exitCode=`));
    assert.ok(!Object.keys(r).includes("toString"));
    const h = await sb.execBackground("sleep 0.2");
    assert.equal(inspect(h), `ExecHandle(exec=${h.exec}, box=${sb.name})`);
    assert.notEqual((await h.wait({ timeout: "10s", interval: "20ms" })).state, "running");
    assert.equal(inspect(sb.files), `Files(box=${sb.name})`);
    assert.equal(inspect(sb), `Sandbox(id=${sb.id}, name=${sb.name}, state=running)`);
    await sb.stop({ graceMs: 500 });
    assert.equal(sb.state, "stopped");
    await new Promise((r) => setImmediate(r));
    assert.ok(warnings.some((w) => w.name === "DeprecationWarning" && w.message.includes("graceMs is deprecated")), String(warnings));
    await sb.start();
    await sb.stop({ grace: "1s" });
    assert.equal(sb.state, "stopped");
  } finally {
    process.off("warning", onWarning);
    await sb.delete();
  }
  assert.equal(inspect(client), `Client(url=${client.url}, apiKey=none)`);
  assert.equal(new Client({ timeout: "2m" }).timeoutMs, 120_000);
});

test("the README lists every call", async () => {
  const readme = (await readFile(new URL("../README.md", import.meta.url), "utf8")).replace(/```[\s\S]*?```/g, "");
  const spans = [...readme.matchAll(/`([^`]+)`/g)].map((m) => m[1]).join(" ");
  const named = (n) => new RegExp(`\\b${n}\\b`).test(spans);
  const missing = [];
  for (const [name, value] of Object.entries(sdk)) {
    if (typeof value !== "function" || value.prototype instanceof Error || value === Error) continue;
    if (!named(name)) missing.push(name);
    const own = (o) => Object.getOwnPropertyNames(o).filter((n) => !["constructor", "length", "name", "prototype", "toString"].includes(n));
    if (value.prototype) for (const m of [...own(value), ...own(value.prototype)]) if (!named(m)) missing.push(`${name}.${m}`);
  }
  assert.deepEqual(missing, []);
});
