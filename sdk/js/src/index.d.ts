// Type declarations of @upstream/sdk.

export const DEFAULT_URL: string;

/** A duration: milliseconds, or a string with a unit as the CLI takes it ("500ms", "30s", "2m", "1h"). */
export type Duration = number | string;
/** A size: bytes, or a string with a unit ("512m", "1g"; k, m, g, t are powers of 1024). */
export type Size = number | string;

export interface ClientOptions {
  /** Server URL; default $UPSTREAM_URL, else http://127.0.0.1:8420. */
  url?: string;
  /** API key; default $UPSTREAM_API_KEY. */
  apiKey?: string;
  /** Per-request timeout of non-streamed calls (default "5m"; 0: none). */
  timeout?: Duration;
  /** @deprecated use timeout */
  timeoutMs?: number;
}

export class Client {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly apiKey?: string;
  path(template: string, parts?: unknown[], query?: Record<string, unknown>): string;
  fetch(method: string, path: string, options?: { body?: unknown; raw?: BodyInit; contentType?: string; accept?: string; stream?: boolean }): Promise<Response>;
  json<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  bytes(method: string, path: string, options?: object): Promise<Uint8Array>;
}

export type Command = string | string[];

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Killed past it (the result's timedOut is set). */
  timeout?: Duration;
  /** @deprecated use timeout */
  timeoutMs?: number;
}

export interface ExecResult {
  exec: number;
  exitCode: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  cpuSeconds: number;
  state: "running" | "exited" | "failed" | "lost";
  reason: string;
  signal: number;
  timedOut: boolean;
  oomKilled: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  readonly ok: boolean;
  raw: Record<string, unknown>;
}

export type ExecEvent =
  | { type: "start"; exec: number }
  | { type: "stdout" | "stderr"; exec: number; data: string; bytes: Uint8Array }
  | { type: "exit"; exec: number; result: ExecResult };

export class ExecStream implements AsyncIterable<ExecEvent> {
  readonly exec: number;
  result?: ExecResult;
  [Symbol.asyncIterator](): AsyncIterator<ExecEvent>;
  wait(): Promise<ExecResult>;
  sendStdin(data: string | Uint8Array, options?: { eof?: boolean }): Promise<{ exec: number; written: number; eof: boolean }>;
  closeStdin(): Promise<{ exec: number; written: number; eof: boolean }>;
}

export interface ExecStatus {
  box_id: string;
  exec: number;
  argv: string[];
  state: "running" | "exited" | "failed" | "lost";
  exit_code: number | null;
  [key: string]: unknown;
}

export class ExecHandle {
  readonly exec: number;
  status(): Promise<ExecStatus>;
  running(): Promise<boolean>;
  logs(stream?: "stdout" | "stderr"): Promise<Uint8Array>;
  kill(signal?: string | number): Promise<unknown>;
  wait(options?: { timeout?: Duration; interval?: Duration; /** @deprecated */ timeoutMs?: number; /** @deprecated */ intervalMs?: number }): Promise<ExecStatus>;
}

export interface FileInfo {
  name: string;
  path: string;
  type: "file" | "dir" | "symlink" | "fifo" | "socket" | "char" | "block";
  mode: number;
  size: number;
  mtime: string;
  uid: number;
  gid: number;
  target?: string;
}

export class Files {
  write(path: string, data: string | Uint8Array, options?: { mode?: number; mkdirs?: boolean }): Promise<FileInfo>;
  read(path: string): Promise<Uint8Array>;
  readText(path: string): Promise<string>;
  list(path?: string): Promise<FileInfo[]>;
  stat(path: string, options?: { follow?: boolean }): Promise<FileInfo>;
  exists(path: string): Promise<boolean>;
  mkdir(path: string, options?: { parents?: boolean; mode?: number }): Promise<FileInfo>;
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  move(from: string, to: string, options?: { overwrite?: boolean }): Promise<FileInfo>;
  downloadTar(path: string): Promise<Uint8Array>;
  uploadTar(dir: string, tar: Uint8Array): Promise<{ path: string; bytes: number }>;
  upload(localPath: string, remotePath: string): Promise<FileInfo>;
  download(remotePath: string, localPath: string): Promise<void>;
}

export interface SandboxOptions {
  name?: string;
  image?: string;
  labels?: Record<string, string>;
  env?: Record<string, string>;
  cpus?: number;
  memory?: Size;
  pids?: number;
  disk?: Size;
  user?: string;
  workdir?: string;
  /** Idle policy, applied by the server: pause after this long idle (0: never; default "30m"). */
  autoPause?: Duration;
  /** Stop after this long paused (0: never; default "24h"). */
  autoStop?: Duration;
  /** @deprecated use autoPause */
  autoPauseMs?: number;
  /** @deprecated use autoStop */
  autoStopMs?: number;
  /** Never pause for being idle. */
  keepAlive?: boolean;
  network?: "none" | "allow-all" | "custom";
  /** custom: names the box may reach over HTTP(S) and resolve ("pypi.org", "*.example.com"). */
  allowDomains?: string[];
  /** custom: IPv4 ranges the box may reach on any port. */
  allowCidrs?: string[];
  /** IPv4 ranges never reached, whatever else allows them. */
  denyCidrs?: string[];
  /** Host pattern -> headers the host proxy adds to the box's HTTPS requests (never in the box). */
  headers?: Record<string, Record<string, string>>;
  client?: Client;
}

export interface Exposure {
  id: string;
  box_id: string;
  port: number;
  host_port: number;
  url: string;
  auth: "bearer" | "basic";
  /** At creation only. */
  token?: string;
  username?: string;
  password?: string;
  [key: string]: unknown;
}

export interface BoxInfo {
  id: string;
  name: string;
  state: "creating" | "starting" | "running" | "paused" | "stopping" | "stopped" | "archived" | "removing";
  labels: Record<string, string>;
  [key: string]: unknown;
}

export class Sandbox {
  readonly client: Client;
  info: BoxInfo;
  readonly files: Files;
  readonly id: string;
  readonly name: string;
  readonly state: BoxInfo["state"];
  static create(options?: SandboxOptions, client?: Client): Promise<Sandbox>;
  static get(ref: string, client?: Client): Promise<Sandbox>;
  /** `count` boxes at once (named NAME-1..NAME-N with a name); from a snapshot they share its layers. */
  static createMany(count: number, options?: { name?: string; image?: string; labels?: Record<string, string>; env?: Record<string, string>; client?: Client }, client?: Client): Promise<Sandbox[]>;
  static list(options?: { labels?: Record<string, string>; state?: string; pageSize?: number }, client?: Client): Promise<Sandbox[]>;
  refresh(): Promise<this>;
  stop(options?: { grace?: Duration; /** @deprecated use grace */ graceMs?: number }): Promise<void>;
  start(): Promise<void>;
  /** Freezes every process (memory kept, no CPU used); an exec or file call resumes the box. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Packs a stopped box's files into the layer store; start() (or a file call) unpacks them. */
  setNetwork(mode: "none" | "allow-all" | "custom", options?: { allowDomains?: string[]; allowCidrs?: string[]; denyCidrs?: string[]; headers?: Record<string, Record<string, string>> }): Promise<void>;
  /** Network counters: per destination, denied attempts with their reasons, DNS queries. */
  traffic(): Promise<Record<string, unknown>>;
  /** A URL on the server's host for `port` in the box, protected by generated credentials. */
  expose(port: number, options?: { auth?: "bearer" | "basic" }): Promise<Exposure>;
  exposures(): Promise<Exposure[]>;
  unexpose(exposure: string | number): Promise<void>;
  archive(): Promise<void>;
  delete(options?: { force?: boolean }): Promise<void>;
  /** Saves the box's files and settings (a running box is frozen only for the moment of capture). */
  snapshot(options?: { name?: string; labels?: Record<string, string> }): Promise<Snapshot>;
  /** Snapshots this box and starts `count` boxes from it. */
  fork(options?: { count?: number; name?: string; labels?: Record<string, string> }): Promise<Sandbox[]>;
  exec(cmd: Command, options?: ExecOptions & { stdin?: string }): Promise<ExecResult>;
  execStream(cmd: Command, options?: ExecOptions & { stdin?: boolean }): Promise<ExecStream>;
  execBackground(cmd: Command, options?: ExecOptions): Promise<ExecHandle>;
  execs(options?: { running?: boolean; limit?: number }): Promise<ExecStatus[]>;
  kill(exec: number, signal?: string | number): Promise<unknown>;
}

export interface SnapshotInfo {
  id: string;
  name: string;
  kind: "snapshot" | "image";
  base_image: string;
  /** Layer digests (SHA-256), top first. */
  layers: string[];
  bytes: number;
  total_bytes: number;
  created_at: string;
  labels: Record<string, string>;
  ephemeral: boolean;
  source_box: string | null;
  parent: string | null;
  [key: string]: unknown;
}

export class Snapshot {
  readonly client: Client;
  info: SnapshotInfo;
  readonly id: string;
  readonly name: string;
  readonly layers: string[];
  static get(ref: string, client?: Client): Promise<Snapshot>;
  static list(options?: { kind?: "snapshot" | "image" }, client?: Client): Promise<Snapshot[]>;
  /** Imports a file written by export; every layer is checked against its digest. */
  static importFile(path: string, options?: { name?: string }, client?: Client): Promise<Snapshot>;
  /** Refused (ConflictError) while a box made from it exists. */
  delete(): Promise<void>;
  /** Writes the snapshot to a .tar.zst file (replaced only once complete). */
  export(path: string): Promise<void>;
}

export interface PipelineResult {
  exitCode: number;
  status: "succeeded" | "failed" | "invalid_document" | "interrupted" | "error";
  /** The document with every step's result written back. */
  report: string;
  progress: string;
  errors: string;
  runId: string | null;
  session: string | null;
  turn: number | null;
  readonly ok: boolean;
  raw: Record<string, unknown>;
}

export interface PipelineOptions {
  session?: string;
  name?: string;
  verbose?: boolean;
  client?: Client;
}

export type PipelineEvent =
  | { type: "progress" | "error"; line: string }
  | { type: "step_start"; index: number; name: string; lang: string; line?: string }
  | { type: "output"; index: number; stream: "stdout" | "stderr"; data: string }
  | { type: "step_end"; index: number; name: string; status: string; exit_code?: number | null; signal?: number; duration_ms?: number; allowed_to_fail?: boolean; line: string }
  | { type: "summary"; status: string; steps: number; succeeded: number; failed: { index: number; name: string }[]; duration_ms: number; run_id: string; session: string | null; turn: number; line: string }
  | { type: "end"; result: PipelineResult };

export function runPipeline(document: string, options?: PipelineOptions, client?: Client): Promise<PipelineResult>;
export function streamPipeline(document: string, options?: PipelineOptions, client?: Client): AsyncGenerator<PipelineEvent>;
export function sessions(client?: Client): Promise<Array<{ name: string; box_id: string; turns: number; last_status: string; updated_at: string }>>;
export function session(name: string, client?: Client): Promise<{ name: string; box_id: string; cwd: string; env: Record<string, string>; turns: object[] }>;
export function deleteSession(name: string, client?: Client): Promise<void>;

export class UpstreamError extends Error {
  readonly code: string;
  readonly status: number;
}
export class InvalidArgumentError extends UpstreamError {}
export class AuthenticationError extends UpstreamError {}
export class NotFoundError extends UpstreamError {}
export class ConflictError extends UpstreamError {}
export class PayloadTooLargeError extends UpstreamError {}
export class RateLimitError extends UpstreamError {}
export class ServerError extends UpstreamError {}

export interface UsageGroup {
  key: string;
  boxes: number;
  snapshots: number;
  cpu_seconds: number;
  running_seconds: number;
  core_running_seconds: number;
  box_storage_gb_months: number;
  snapshot_storage_gb_months: number;
  memory_peak_bytes: number;
  cost?: number;
  wall_clock_cost?: number;
}
export interface UsageReport {
  since: string;
  until: string;
  groups: UsageGroup[];
  total: UsageGroup;
  prices?: { currency: string; cpu_core_hour?: number; storage_gb_month?: number; wall_core_hour?: number };
}
export function usage(
  opts?: { since?: string; until?: string; by?: string; labels?: Record<string, string> },
  client?: Client,
): Promise<UsageReport>;

/** Milliseconds of a Duration; a TypeError naming `what` for anything else. */
export function durationMs(value: Duration, what: string): number;
/** A Size checked as the API takes it; a TypeError naming `what` for anything else. */
export function size(value: Size, what: string): number | string;
