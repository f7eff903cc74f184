// The HTTP transport over fetch (Node 20's built-in): JSON in and out, typed errors, streams.
import { ServerError, errorFor } from "./errors.js";
import { inspect, option } from "./units.js";

export const DEFAULT_URL = "http://127.0.0.1:8420";

export class Client {
  constructor(options = {}) {
    const env = globalThis.process?.env ?? {};
    this.url = (options.url ?? env.UPSTREAM_URL ?? DEFAULT_URL).replace(/\/+$/, "");
    if (!/^https?:\/\//.test(this.url)) {
      throw new TypeError(`unsupported URL ${JSON.stringify(this.url)}: use http://HOST:PORT`);
    }
    this.apiKey = options.apiKey ?? env.UPSTREAM_API_KEY;
    // Milliseconds per non-streamed request (or a string such as "5m"); 0: no limit.
    this.timeoutMs = option(options, "timeout", "timeoutMs") ?? 300_000;
  }

  toString() {
    return `Client(url=${this.url}, apiKey=${this.apiKey ? "set" : "none"})`;
  }
  [inspect]() {
    return this.toString();
  }

  path(template, parts = [], query = {}) {
    let i = 0;
    let p = template.replace(/\{\}/g, () => encodeURIComponent(String(parts[i++])));
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === false) continue;
      for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
    }
    const qs = q.toString();
    return qs ? `${p}?${qs}` : p;
  }

  headers(contentType, accept = "application/json") {
    const h = { Accept: accept, "User-Agent": "upstream-js/0.1.0" };
    if (contentType) h["Content-Type"] = contentType;
    if (this.apiKey) h.Authorization = `Bearer ${this.apiKey}`;
    return h;
  }

  async fetch(method, path, { body, raw, contentType, accept, stream = false } = {}) {
    let data;
    let ctype;
    if (raw !== undefined) {
      data = raw;
      ctype = contentType ?? "application/octet-stream";
    } else if (body !== undefined) {
      data = JSON.stringify(body);
      ctype = "application/json";
    }
    const init = { method, headers: this.headers(ctype, accept), body: data };
    if (!stream && this.timeoutMs) init.signal = AbortSignal.timeout(this.timeoutMs);
    let res;
    try {
      res = await fetch(this.url + path, init);
    } catch (e) {
      throw new ServerError(`cannot reach upstream at ${this.url}: ${e.cause?.message ?? e.message}`, "unavailable");
    }
    if (res.status >= 400) {
      const text = await res.text();
      let code = "internal";
      let message = text.slice(0, 500) || `HTTP ${res.status}`;
      try {
        const j = JSON.parse(text);
        code = j.code ?? code;
        message = j.message ?? message;
      } catch {}
      throw errorFor(res.status, code, message);
    }
    return res;
  }

  async json(method, path, body) {
    const res = await this.fetch(method, path, { body });
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  async bytes(method, path, options) {
    const res = await this.fetch(method, path, options);
    return new Uint8Array(await res.arrayBuffer());
  }
}

// Splits a streamed body into lines (NDJSON) as they arrive.
export async function* ndjson(res) {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) yield JSON.parse(line);
    }
  }
  buf += decoder.decode();
  if (buf.trim()) yield JSON.parse(buf);
}

let defaultClient;
export function getDefaultClient() {
  defaultClient ??= new Client();
  return defaultClient;
}
