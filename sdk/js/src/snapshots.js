// Snapshots: a box's files and settings, saved. Boxes made from one share its layers.
import { readFile, writeFile, rename } from "node:fs/promises";
import { getDefaultClient } from "./client.js";
import { inspect } from "./units.js";

export class Snapshot {
  constructor(info, client) {
    this.client = client ?? getDefaultClient();
    this.info = info;
  }
  get id() {
    return this.info.id;
  }
  get name() {
    return this.info.name;
  }
  get layers() {
    return [...this.info.layers];
  }
  toString() {
    return `Snapshot(id=${this.id}, name=${this.name}, layers=${this.info.layers.length})`;
  }
  [inspect]() {
    return this.toString();
  }

  static async get(ref, client) {
    const c = client ?? getDefaultClient();
    return new Snapshot(await c.json("GET", c.path("/v1/snapshots/{}", [ref])), c);
  }

  static async list({ kind } = {}, client) {
    const c = client ?? getDefaultClient();
    const j = await c.json("GET", c.path("/v1/snapshots", [], { kind }));
    return j.snapshots.map((s) => new Snapshot(s, c));
  }

  // Refused (ConflictError) while a box made from it exists.
  async delete() {
    await this.client.json("DELETE", this.client.path("/v1/snapshots/{}", [this.id]));
  }

  // Writes the snapshot to a .tar.zst file (replaced only once complete).
  async export(path) {
    const data = await this.client.bytes("GET", this.client.path("/v1/snapshots/{}/export", [this.id]));
    const tmp = `${path}.part`;
    await writeFile(tmp, data);
    await rename(tmp, path);
  }

  // Imports a file written by export; every layer is checked against its digest.
  static async importFile(path, { name } = {}, client) {
    const c = client ?? getDefaultClient();
    const data = await readFile(path);
    const res = await c.fetch("PUT", c.path("/v1/snapshots/import", [], { name }), { raw: data, contentType: "application/zstd" });
    return new Snapshot(await res.json(), c);
  }
}

// Metered usage over a period, grouped by tenant, box, snapshot, all, or label:KEY; with a cost
// estimate when the server's configuration has prices. A tenant's key sees its own only.
export async function usage({ since = "30d", until = "now", by = "tenant", labels = {} } = {}, client) {
  const c = client ?? getDefaultClient();
  const label = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  return c.json("GET", c.path("/v1/usage", [], { since, until, by, label: label.length ? label : undefined }));
}
