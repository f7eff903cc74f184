// Markdown pipelines: run a document as a turn (as `upstream run` does) and read sessions.
import { getDefaultClient, ndjson } from "./client.js";

function toResult(j) {
  return {
    exitCode: j.exit_code,
    status: j.status,
    report: j.report,
    progress: j.progress,
    errors: j.errors,
    runId: j.run_id,
    session: j.session,
    turn: j.turn,
    get ok() {
      return this.exitCode === 0;
    },
    raw: j,
  };
}

function body(document, { session, name, verbose } = {}) {
  const b = { document };
  if (session !== undefined) b.session = session;
  if (name !== undefined) b.name = name;
  if (verbose) b.verbose = true;
  return b;
}

export async function runPipeline(document, options = {}, client) {
  const c = client ?? options.client ?? getDefaultClient();
  return toResult(await c.json("POST", "/v1/pipelines", body(document, options)));
}

export async function* streamPipeline(document, options = {}, client) {
  const c = client ?? options.client ?? getDefaultClient();
  const res = await c.fetch("POST", "/v1/pipelines", { body: { ...body(document, options), stream: true }, accept: "application/x-ndjson", stream: true });
  for await (const ev of ndjson(res)) yield ev.type === "end" ? { type: "end", result: toResult(ev) } : ev;
}

export async function sessions(client) {
  return (await (client ?? getDefaultClient()).json("GET", "/v1/sessions")).sessions;
}

export async function session(name, client) {
  const c = client ?? getDefaultClient();
  return c.json("GET", c.path("/v1/sessions/{}", [name]));
}

export async function deleteSession(name, client) {
  const c = client ?? getDefaultClient();
  await c.json("DELETE", c.path("/v1/sessions/{}", [name]));
}
