// Sandboxes ("boxes"): create one, run commands in it, read and write its files.
import { readFile, writeFile, rename, stat as fsStat } from "node:fs/promises";
import { Client, getDefaultClient, ndjson } from "./client.js";
import { NotFoundError, UpstreamError } from "./errors.js";
import { Snapshot } from "./snapshots.js";
import { inspect, option, size } from "./units.js";

function command(cmd) {
  if (typeof cmd === "string") return { shell: cmd };
  if (!Array.isArray(cmd) || cmd.length === 0 || !cmd.every((a) => typeof a === "string")) {
    throw new TypeError("a command is a shell string or a non-empty array of strings");
  }
  return { cmd: [...cmd] };
}

function execBody(cmd, opts = {}) {
  const body = command(cmd);
  if (opts.env) body.env = { ...opts.env };
  if (opts.cwd !== undefined) body.cwd = opts.cwd;
  if (opts.user !== undefined) body.user = opts.user;
  const timeout = option(opts, "timeout", "timeoutMs");
  if (timeout !== undefined) body.timeout_ms = timeout;
  return body;
}

function toResult(j, stdout = "", stderr = "") {
  const result = {
    exec: j.exec,
    exitCode: j.exit_code,
    stdout: j.stdout ?? stdout,
    stderr: j.stderr ?? stderr,
    durationMs: j.duration_ms ?? 0,
    cpuSeconds: j.cpu_seconds ?? 0,
    state: j.state,
    reason: j.reason ?? "",
    signal: j.signal ?? 0,
    timedOut: j.timed_out ?? false,
    oomKilled: j.oom_killed ?? false,
    stdoutTruncated: j.stdout_truncated ?? false,
    stderrTruncated: j.stderr_truncated ?? false,
    get ok() {
      return this.exitCode === 0;
    },
    raw: j,
  };
  // Readable when printed, and not among its fields.
  const text = function () {
    const short = (t) => JSON.stringify(t.length <= 40 ? t : `${t.slice(0, 37)}...`);
    const extra = (this.timedOut ? ", timedOut" : "") + (this.oomKilled ? ", oomKilled" : "");
    return `ExecResult(exec=${this.exec}, exitCode=${this.exitCode}, state=${this.state}, ${this.durationMs} ms${extra}, stdout=${short(this.stdout)}, stderr=${short(this.stderr)})`;
  };
  Object.defineProperty(result, "toString", { value: text });
  Object.defineProperty(result, inspect, { value: text });
  return result;
}

function toFileInfo(j) {
  return { ...j, mode: parseInt(j.mode, 8) };
}

export class ExecStream {
  constructor(box, res, events, first) {
    this.box = box;
    this.res = res;
    this.events = events;
    this.exec = first.exec;
    this.result = undefined;
  }

  toString() {
    return `ExecStream(exec=${this.exec}, box=${this.box.name}${this.result ? `, exitCode=${this.result.exitCode}` : ""})`;
  }
  [inspect]() {
    return this.toString();
  }

  async *[Symbol.asyncIterator]() {
    yield { type: "start", exec: this.exec };
    const out = [];
    const err = [];
    for await (const j of this.events) {
      if (j.type === "stdout" || j.type === "stderr") {
        // Text when the output is UTF-8; else base64 bytes (shown as text with U+FFFD).
        const bytes = j.data_b64 !== undefined ? Uint8Array.from(atob(j.data_b64), (ch) => ch.charCodeAt(0)) : new TextEncoder().encode(j.data);
        const data = j.data ?? new TextDecoder().decode(bytes);
        (j.type === "stdout" ? out : err).push(data);
        yield { type: j.type, data, bytes, exec: this.exec };
      } else if (j.type === "exit") {
        this.result = toResult(j, out.join(""), err.join(""));
        yield { type: "exit", exec: this.exec, result: this.result };
      }
    }
    if (!this.result) throw new UpstreamError("the stream was cut before the command ended", "internal");
  }

  async wait() {
    for await (const _ of this) {
    }
    return this.result;
  }

  async sendStdin(data, { eof = false } = {}) {
    const c = this.box.client;
    const raw = typeof data === "string" ? new TextEncoder().encode(data) : data;
    const path = c.path("/v1/boxes/{}/execs/{}/stdin", [this.box.id, this.exec], { eof: eof || undefined });
    const res = await c.fetch("POST", path, { raw });
    return res.json();
  }

  closeStdin() {
    return this.sendStdin(new Uint8Array(0), { eof: true });
  }
}

export class ExecHandle {
  constructor(box, exec) {
    this.box = box;
    this.exec = exec;
  }
  toString() {
    return `ExecHandle(exec=${this.exec}, box=${this.box.name})`;
  }
  [inspect]() {
    return this.toString();
  }
  status() {
    const c = this.box.client;
    return c.json("GET", c.path("/v1/boxes/{}/execs/{}", [this.box.id, this.exec]));
  }
  async running() {
    return (await this.status()).state === "running";
  }
  logs(stream = "stdout") {
    const c = this.box.client;
    return c.bytes("GET", c.path("/v1/boxes/{}/execs/{}/logs", [this.box.id, this.exec], { stream }));
  }
  kill(signal = "KILL") {
    return this.box.kill(this.exec, signal);
  }
  // Polls until the command ends (timeout and interval: milliseconds, or strings such as "30s").
  async wait(options = {}) {
    const timeoutMs = option(options, "timeout", "timeoutMs") ?? 300_000;
    const intervalMs = option(options, "interval", "intervalMs") ?? 50;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status();
      if (s.state !== "running") return s;
      if (Date.now() > deadline) throw new Error(`exec ${this.exec} still runs after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}

export class Files {
  constructor(box) {
    this.box = box;
  }
  toString() {
    return `Files(box=${this.box.name})`;
  }
  [inspect]() {
    return this.toString();
  }
  // A path of this box (private).
  #p(template, query) {
    return this.box.client.path(template, [this.box.id], query);
  }
  async write(path, data, { mode, mkdirs = false } = {}) {
    const raw = typeof data === "string" ? new TextEncoder().encode(data) : data;
    const q = { path, mode: mode === undefined ? undefined : mode.toString(8).padStart(4, "0"), mkdirs: mkdirs || undefined };
    const res = await this.box.client.fetch("PUT", this.#p("/v1/boxes/{}/files", q), { raw });
    return toFileInfo(await res.json());
  }
  read(path) {
    return this.box.client.bytes("GET", this.#p("/v1/boxes/{}/files", { path }));
  }
  async readText(path) {
    return new TextDecoder().decode(await this.read(path));
  }
  async list(path = ".") {
    const j = await this.box.client.json("GET", this.#p("/v1/boxes/{}/files/list", { path }));
    return j.entries.map(toFileInfo);
  }
  async stat(path, { follow = false } = {}) {
    return toFileInfo(await this.box.client.json("GET", this.#p("/v1/boxes/{}/files/stat", { path, follow: follow || undefined })));
  }
  async exists(path) {
    try {
      await this.stat(path);
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }
  async mkdir(path, { parents = true, mode = 0o755 } = {}) {
    const body = { path, parents, mode: mode.toString(8).padStart(4, "0") };
    return toFileInfo(await this.box.client.json("POST", this.#p("/v1/boxes/{}/files/mkdir"), body));
  }
  async remove(path, { recursive = false } = {}) {
    await this.box.client.json("DELETE", this.#p("/v1/boxes/{}/files", { path, recursive: recursive || undefined }));
  }
  async move(from, to, { overwrite = true } = {}) {
    return toFileInfo(await this.box.client.json("POST", this.#p("/v1/boxes/{}/files/move"), { from, to, overwrite }));
  }
  // A file or directory tree of the box as a tar archive, and the extraction of one into a directory.
  downloadTar(path) {
    return this.box.client.bytes("GET", this.#p("/v1/boxes/{}/files/archive", { path }));
  }
  async uploadTar(dir, tar) {
    const res = await this.box.client.fetch("PUT", this.#p("/v1/boxes/{}/files/archive", { path: dir }), { raw: tar, contentType: "application/x-tar" });
    return res.json();
  }
  // Copies a local file into the box, and a file of the box to a local path (atomically).
  async upload(localPath, remotePath) {
    const [data, st] = await Promise.all([readFile(localPath), fsStat(localPath)]);
    return this.write(remotePath, data, { mode: st.mode & 0o777 });
  }
  async download(remotePath, localPath) {
    const data = await this.read(remotePath);
    const tmp = `${localPath}.part`;
    await writeFile(tmp, data);
    await rename(tmp, localPath);
  }
}

// The egress fields of options, as the API names them.
function egressOf(options) {
  const out = {};
  if (options.allowDomains?.length) out.allow_domains = [...options.allowDomains];
  if (options.allowCidrs?.length) out.allow_cidrs = [...options.allowCidrs];
  if (options.denyCidrs?.length) out.deny_cidrs = [...options.denyCidrs];
  if (options.headers && Object.keys(options.headers).length) out.headers = options.headers;
  return out;
}

export class Sandbox {
  constructor(info, client) {
    this.client = client ?? getDefaultClient();
    this.info = info;
    this.files = new Files(this);
  }
  get id() {
    return this.info.id;
  }
  get name() {
    return this.info.name;
  }
  get state() {
    return this.info.state;
  }
  toString() {
    return `Sandbox(id=${this.id}, name=${this.name}, state=${this.state})`;
  }
  [inspect]() {
    return this.toString();
  }

  static async create(options = {}, client) {
    const c = client ?? options.client ?? getDefaultClient();
    const body = {};
    for (const k of ["name", "image", "user", "workdir", "network"]) if (options[k] !== undefined) body[k] = options[k];
    if (options.labels) body.labels = { ...options.labels };
    if (options.env) body.env = { ...options.env };
    const limits = {};
    for (const k of ["cpus", "pids"]) if (options[k] !== undefined) limits[k] = options[k];
    for (const k of ["memory", "disk"]) if (options[k] !== undefined) limits[k] = size(options[k], k);
    if (Object.keys(limits).length) body.limits = limits;
    const policy = {};
    const autoPause = option(options, "autoPause", "autoPauseMs");
    const autoStop = option(options, "autoStop", "autoStopMs");
    if (autoPause !== undefined) policy.auto_pause_ms = autoPause;
    if (autoStop !== undefined) policy.auto_stop_ms = autoStop;
    if (options.keepAlive !== undefined) policy.keep_alive = options.keepAlive;
    if (Object.keys(policy).length) body.policy = policy;
    const egress = egressOf(options);
    if (Object.keys(egress).length) body.egress = egress;
    return new Sandbox(await c.json("POST", "/v1/boxes", body), c);
  }

  // `count` boxes at once (named NAME-1..NAME-N with a name); from a snapshot they share its layers.
  static async createMany(count, options = {}, client) {
    const c = client ?? options.client ?? getDefaultClient();
    const body = { count };
    for (const k of ["name", "image"]) if (options[k] !== undefined) body[k] = options[k];
    if (options.labels) body.labels = { ...options.labels };
    if (options.env) body.env = { ...options.env };
    const j = await c.json("POST", "/v1/boxes", body);
    return j.boxes.map((b) => new Sandbox(b, c));
  }

  static async get(ref, client) {
    const c = client ?? getDefaultClient();
    return new Sandbox(await c.json("GET", c.path("/v1/boxes/{}", [ref])), c);
  }

  static async list({ labels, state, pageSize = 100 } = {}, client) {
    const c = client ?? getDefaultClient();
    const label = labels ? Object.entries(labels).map(([k, v]) => `${k}=${v}`) : undefined;
    const out = [];
    let after;
    for (;;) {
      const j = await c.json("GET", c.path("/v1/boxes", [], { label, state, limit: pageSize, after }));
      out.push(...j.boxes.map((b) => new Sandbox(b, c)));
      after = j.next;
      if (!after) return out;
    }
  }

  async refresh() {
    this.info = await this.client.json("GET", this.client.path("/v1/boxes/{}", [this.id]));
    return this;
  }
  // SIGTERM to the box's processes, SIGKILL after `grace` (milliseconds or a string such as "5s").
  async stop(options = {}) {
    const grace = option(options, "grace", "graceMs");
    this.info = await this.client.json("POST", this.client.path("/v1/boxes/{}/stop", [this.id]), grace === undefined ? {} : { grace_ms: grace });
  }
  async start() {
    this.info = await this.client.json("POST", this.client.path("/v1/boxes/{}/start", [this.id]), {});
  }
  async pause() {
    this.info = await this.client.json("POST", this.client.path("/v1/boxes/{}/pause", [this.id]), {});
  }
  // Changes the network mode ("none", "allow-all" or "custom") and the egress policy; a running
  // box gets the change at once. Headers stay as they were unless given ({} removes them).
  async setNetwork(mode, options = {}) {
    const body = { mode, ...egressOf({ ...options, headers: undefined }) };
    if (options.headers !== undefined) body.headers = options.headers;
    this.info = await this.client.json("POST", this.client.path("/v1/boxes/{}/network", [this.id]), body);
  }
  // The box's network counters: per destination, denied attempts with reasons, DNS queries.
  async traffic() {
    return this.client.json("GET", this.client.path("/v1/boxes/{}/traffic", [this.id]));
  }
  // A URL on the server's host forwarding HTTP and WebSocket traffic to `port` in the box, for
  // requests with the generated credentials (returned once: token, or username and password).
  async expose(port, options = {}) {
    return this.client.json("POST", this.client.path("/v1/boxes/{}/expose", [this.id]), { port, auth: options.auth ?? "bearer" });
  }
  async exposures() {
    return (await this.client.json("GET", this.client.path("/v1/boxes/{}/expose", [this.id]))).exposures;
  }
  async unexpose(exposure) {
    await this.client.json("DELETE", this.client.path("/v1/boxes/{}/expose/{}", [this.id, String(exposure)]));
  }
  // Packs a stopped box's files into the layer store and frees its working directory; start()
  // (or a file call) unpacks them.
  async archive() {
    this.info = await this.client.json("POST", this.client.path("/v1/boxes/{}/archive", [this.id]), {});
  }
  async resume() {
    this.info = await this.client.json("POST", this.client.path("/v1/boxes/{}/resume", [this.id]), {});
  }
  // Saves the box's files and settings (a running box is frozen only for the moment of capture).
  async snapshot({ name, labels } = {}) {
    const body = {};
    if (name !== undefined) body.name = name;
    if (labels) body.labels = { ...labels };
    return new Snapshot(await this.client.json("POST", this.client.path("/v1/boxes/{}/snapshot", [this.id]), body), this.client);
  }
  // Snapshots this box and starts `count` boxes from it.
  async fork({ count = 1, name, labels } = {}) {
    const body = { count };
    if (name !== undefined) body.name = name;
    if (labels) body.labels = { ...labels };
    const j = await this.client.json("POST", this.client.path("/v1/boxes/{}/fork", [this.id]), body);
    return j.boxes.map((b) => new Sandbox(b, this.client));
  }
  async delete({ force = true } = {}) {
    await this.client.json("DELETE", this.client.path("/v1/boxes/{}", [this.id], { force }));
  }
  async [Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose")]() {
    await this.delete();
  }

  async exec(cmd, opts = {}) {
    const body = execBody(cmd, opts);
    if (opts.stdin !== undefined) body.stdin = opts.stdin;
    return toResult(await this.client.json("POST", this.client.path("/v1/boxes/{}/execs", [this.id]), body));
  }

  async execStream(cmd, opts = {}) {
    const body = execBody(cmd, opts);
    body.stream = true;
    if (opts.stdin) body.stdin_stream = true;
    const res = await this.client.fetch("POST", this.client.path("/v1/boxes/{}/execs", [this.id]), {
      body,
      accept: "application/x-ndjson",
      stream: true,
    });
    const events = ndjson(res);
    const first = await events.next();
    if (first.done || first.value.type !== "start") {
      throw new UpstreamError("the stream ended before the command started", "internal");
    }
    return new ExecStream(this, res, events, first.value);
  }

  async execBackground(cmd, opts = {}) {
    const body = execBody(cmd, opts);
    body.background = true;
    const j = await this.client.json("POST", this.client.path("/v1/boxes/{}/execs", [this.id]), body);
    return new ExecHandle(this, j.exec);
  }

  async execs({ running = false, limit = 50 } = {}) {
    return (await this.client.json("GET", this.client.path("/v1/boxes/{}/execs", [this.id], { running: running || undefined, limit }))).execs;
  }

  async kill(exec, signal = "KILL") {
    return this.client.json("POST", this.client.path("/v1/boxes/{}/execs/{}/kill", [this.id, exec]), { signal });
  }
}

export { Client };
