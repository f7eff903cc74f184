// upstream: sandboxes for AI agents that remember. A client of the upstream HTTP API.
export { Client, DEFAULT_URL } from "./client.js";
export { Sandbox, ExecStream, ExecHandle, Files } from "./sandbox.js";
export { Snapshot, usage } from "./snapshots.js";
export { durationMs, size } from "./units.js";
export { runPipeline, streamPipeline, sessions, session, deleteSession } from "./pipelines.js";
export {
  UpstreamError,
  InvalidArgumentError,
  AuthenticationError,
  NotFoundError,
  ConflictError,
  PayloadTooLargeError,
  RateLimitError,
  ServerError,
} from "./errors.js";
