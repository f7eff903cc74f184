"""Writes docs/openapi.json, the API's description (the server embeds it; tests check responses
against it and that this script still produces it): python3 scripts/gen_openapi.py > docs/openapi.json"""
import json
def ref(n): return {"$ref": "#/components/schemas/" + n}
def jbody(schema, required=True): return {"required": required, "content": {"application/json": {"schema": schema}}}
def resp(desc, schema=None, ctype="application/json"):
    r = {"description": desc}
    if schema is not None: r["content"] = {ctype: {"schema": schema}}
    return r
ERR = {"400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthenticated"},
       "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
       "415": {"$ref": "#/components/responses/UnsupportedMediaType"}, "421": {"$ref": "#/components/responses/Misdirected"}}
def errs(*extra):
    e = dict(ERR)
    for c in extra: e[c] = {"$ref": "#/components/responses/Error" + c}
    return e
BOX = {"name": "box", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Box id or name"}
SNAP = {"name": "snapshot", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Snapshot id, id prefix or name"}
SESSION = {"name": "session", "in": "path", "required": True, "schema": {"type": "string"}}
SESSION_TENANT = {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"}, "description": "For the installation's keys: the tenant whose session this is (a tenant's key names its own sessions without it)"}
EXEC = {"name": "exec", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
PATH = {"name": "path", "in": "query", "required": True, "schema": {"type": "string"}, "description": "Path inside the box (relative: from its workdir)"}
USER = {"name": "user", "in": "query", "required": False, "schema": {"type": "string"}, "description": "Act as this user (default: the box's)"}
def q(name, typ="string", desc=None, **kw):
    p = {"name": name, "in": "query", "required": False, "schema": dict({"type": typ}, **kw)}
    if desc: p["description"] = desc
    return p
ts = {"type": "string", "description": "ISO 8601 UTC time; empty when it did not happen"}
schemas = {
 "Error": {"type": "object", "required": ["code", "message"], "additionalProperties": False,
   "properties": {"code": {"type": "string", "enum": ["invalid_argument", "bad_request", "unauthenticated", "permission_denied", "cross_origin", "misdirected_request", "unsupported_media_type", "not_found", "method_not_allowed", "already_exists", "failed_precondition", "payload_too_large", "resource_exhausted", "unavailable", "timeout", "internal"]},
                  "message": {"type": "string"}}},
 "UsageGroup": {"type": "object", "additionalProperties": False, "required": ["key", "boxes", "snapshots", "cpu_seconds", "running_seconds", "core_running_seconds", "box_storage_gb_months", "snapshot_storage_gb_months", "memory_peak_bytes"],
   "properties": {"key": {"type": "string", "description": "The tenant, box, snapshot or label value (empty: none)"}, "boxes": {"type": "integer"}, "snapshots": {"type": "integer"},
                  "cpu_seconds": {"type": "number", "description": "Active CPU"}, "running_seconds": {"type": "number", "description": "Wall-clock time boxes were running"},
                  "core_running_seconds": {"type": "number", "description": "Running time times CPUs (the limit, else the host's): what per-wall-clock billing charges"},
                  "box_storage_gb_months": {"type": "number"}, "snapshot_storage_gb_months": {"type": "number"}, "memory_peak_bytes": {"type": "integer"},
                  "cost": {"type": "number", "description": "CPU used x cpu_core_hour + storage x storage_gb_month"}, "wall_clock_cost": {"type": "number", "description": "core_running_seconds x wall_core_hour + storage, for comparison"}}},
 "UsageReport": {"type": "object", "additionalProperties": False, "required": ["since", "until", "groups", "total"],
   "properties": {"since": {"type": "string"}, "until": {"type": "string"}, "groups": {"type": "array", "items": ref("UsageGroup")}, "total": ref("UsageGroup"),
                  "prices": {"type": "object", "additionalProperties": False, "properties": {"currency": {"type": "string"}, "cpu_core_hour": {"type": "number"}, "storage_gb_month": {"type": "number"}, "wall_core_hour": {"type": "number"}}}}},
 "Limits": {"type": "object", "additionalProperties": False, "properties": {
   "cpus": {"type": "number", "exclusiveMinimum": 0}, "memory": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}], "description": "bytes (as the server always writes it), or a size such as \"512m\""},
   "pids": {"type": "integer", "minimum": 0}, "disk": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}}},
 "BoxCreate": {"type": "object", "additionalProperties": False, "properties": {
   "name": {"type": "string", "description": "With count: the boxes are named NAME-1..NAME-N"}, "image": {"type": "string", "description": "host (default), dir:PATH, tar:PATH, or the name of a snapshot or image"},
   "count": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Create this many boxes (the reply is then a BoxesCreated); from a snapshot they share its layers"},
   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
   "env": {"type": "object", "additionalProperties": {"type": "string"}},
   "limits": ref("Limits"), "user": {"type": "string"}, "workdir": {"type": "string"}, "network": {"type": "string", "enum": ["none", "allow-all", "custom"], "description": "none: loopback only; allow-all: the internet through the host's NAT, never private ranges, the host or other boxes; custom: only the egress policy's domains and CIDRs"},
   "egress": ref("Egress"),
   "policy": ref("Policy")}},
 "Egress": {"type": "object", "additionalProperties": False, "description": "Egress policy (network custom) and headers the host proxy adds to the box's HTTPS requests (any mode with a network)", "properties": {
   "allow_domains": {"type": "array", "items": {"type": "string"}, "description": "Names reachable over HTTP(S) and resolvable: exact, or *.example.com for every name below"},
   "allow_cidrs": {"type": "array", "items": {"type": "string"}, "description": "IPv4 ranges reachable on any port (private ranges stay closed unless the operator opened them)"},
   "deny_cidrs": {"type": "array", "items": {"type": "string"}, "description": "IPv4 ranges never reachable; wins over everything"},
   "headers": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}}, "description": "Host pattern -> header name -> value; the values never enter the box and are never shown"}}},
 "EgressShown": {"type": "object", "properties": {
   "allow_domains": {"type": "array", "items": {"type": "string"}}, "allow_cidrs": {"type": "array", "items": {"type": "string"}},
   "deny_cidrs": {"type": "array", "items": {"type": "string"}},
   "headers": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}, "description": "Host pattern -> header names (values are never shown)"}}},
 "Exposure": {"type": "object", "required": ["id", "box_id", "port", "host_port", "url", "auth", "created_at"], "properties": {
   "id": {"type": "string"}, "box_id": {"type": "string"}, "box_name": {"type": "string"}, "port": {"type": "integer"}, "host_port": {"type": "integer"},
   "url": {"type": "string"}, "auth": {"type": "string", "enum": ["bearer", "basic"]}, "created_at": {"type": "string"},
   "username": {"type": "string"}, "token": {"type": "string", "description": "At creation only"}, "password": {"type": "string", "description": "At creation only"}}},
 "Traffic": {"type": "object", "required": ["box_id", "destinations", "denied", "dns"], "properties": {
   "box_id": {"type": "string"}, "network": {"type": "string"},
   "destinations": {"type": "object", "additionalProperties": {"type": "object", "properties": {"connections": {"type": "integer"}, "requests": {"type": "integer"}, "bytes_out": {"type": "integer"}, "bytes_in": {"type": "integer"}, "last_at": {"type": "string"}}}},
   "denied": {"type": "array", "items": {"type": "object", "properties": {"destination": {"type": "string"}, "reason": {"type": "string"}, "count": {"type": "integer"}, "last_at": {"type": "string"}}}},
   "dns": {"type": "object", "properties": {"queries": {"type": "integer"}, "refused": {"type": "integer"}}}}},
 "Policy": {"type": "object", "additionalProperties": False, "description": "Idle policies, applied by the server: idle means no exec or file call and no CPU use above 2% of a core", "properties": {
   "auto_pause_ms": {"type": "integer", "minimum": 0, "description": "Pause after this long idle (default 30 minutes; 0: never)"},
   "auto_stop_ms": {"type": "integer", "minimum": 0, "description": "Stop after this long paused (default 24 hours; 0: never)"},
   "auto_archive_ms": {"type": "integer", "minimum": 0, "description": "Archive after this long stopped (default 7 days; 0: never)"},
   "keep_alive": {"type": "boolean", "description": "Never pause for being idle"}}},
 "Box": {"type": "object", "required": ["id", "name", "state", "image", "labels", "env", "limits", "user", "workdir", "network", "created_at"],
   "properties": {"id": {"type": "string"}, "name": {"type": "string"},
     "state": {"type": "string", "enum": ["creating", "starting", "running", "paused", "stopping", "stopped", "archived", "removing"]},
     "state_reason": {"type": "string"}, "image": {"type": "string"},
     "labels": {"type": "object", "additionalProperties": {"type": "string"}},
     "env": {"type": "object", "additionalProperties": {"type": "string"}},
     "limits": ref("Limits"),
     "user": {"type": "string"}, "workdir": {"type": "string"}, "network": {"type": "string", "enum": ["none", "allow-all", "custom"]},
     "egress": ref("EgressShown"),
     "policy": ref("Policy"), "last_active_at": ts,
     "created_at": ts, "started_at": ts, "stopped_at": ts, "init_pid": {"type": "integer"}, "host_uid_base": {"type": "integer"},
     "address": {"type": "string", "description": "The box's IPv4 address (a running box with a network)"},
     "usage": {"type": "object", "properties": {"cpu_seconds": {"type": "number"}, "memory_bytes": {"type": "integer"}, "memory_peak_bytes": {"type": "integer"}, "pids": {"type": "integer"}, "oom_kills": {"type": "integer"}, "disk_bytes": {"type": "integer"}, "running_seconds": {"type": "number"}, "snapshots": {"type": "integer"}, "snapshot_bytes": {"type": "integer"}}},
     "events": {"type": "array", "items": {"type": "object", "required": ["at", "state", "reason"], "properties": {"at": {"type": "string"}, "state": {"type": "string"}, "reason": {"type": "string"}}}}}},
 "BoxesCreated": {"type": "object", "required": ["boxes"], "additionalProperties": False, "properties": {"boxes": {"type": "array", "items": ref("Box")}}},
 "Snapshot": {"type": "object", "required": ["id", "name", "kind", "base_image", "layers", "bytes", "total_bytes", "created_at", "labels", "env", "limits", "user", "workdir", "ephemeral", "source_box", "parent"], "additionalProperties": False,
   "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string", "enum": ["snapshot", "image"]},
     "base_image": {"type": "string", "description": "The image under its layers: host, dir:PATH or tar:PATH"},
     "layers": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "description": "Layer digests (SHA-256), top first"},
     "bytes": {"type": "integer", "description": "Bytes of its own (top) layer"}, "total_bytes": {"type": "integer", "description": "Bytes of all its layers"},
     "created_at": ts, "labels": {"type": "object", "additionalProperties": {"type": "string"}},
     "env": {"type": "object", "additionalProperties": {"type": "string"}}, "limits": ref("Limits"), "user": {"type": "string"}, "workdir": {"type": "string"},
     "ephemeral": {"type": "boolean", "description": "Made by a fork: removed with the last box made from it"},
     "source_box": {"type": ["string", "null"]}, "parent": {"type": ["string", "null"], "description": "The snapshot the source box was made from"},
     "frozen_ms": {"type": "number", "description": "In the reply to a snapshot only: how long the box was frozen for the capture (0 when it was not running)"}}},
 "BoxList": {"type": "object", "required": ["boxes", "next"], "additionalProperties": False, "properties": {
   "boxes": {"type": "array", "items": ref("Box")}, "next": {"type": ["string", "null"], "description": "Pass as `after` for the next page; null on the last"}}},
 "ExecCreate": {"type": "object", "additionalProperties": False, "properties": {
   "cmd": {"type": "array", "items": {"type": "string"}, "description": "The command and its arguments (or give `shell`)"},
   "shell": {"type": "string", "description": "A command line, run by bash -c"},
   "env": {"type": "object", "additionalProperties": {"type": "string"}}, "cwd": {"type": "string"}, "user": {"type": "string"},
   "timeout_ms": {"type": "integer", "minimum": 0}, "background": {"type": "boolean"},
   "stdin": {"type": "string", "description": "Data for the command's stdin (then EOF)"},
   "stdin_stream": {"type": "boolean", "description": "Streamed execs: stdin comes from POST .../execs/{exec}/stdin"},
   "stream": {"type": "boolean", "description": "Stream events as NDJSON (or SSE when Accept: text/event-stream)"}}},
 "Exec": {"type": "object", "required": ["box_id", "exec", "argv", "state", "exit_code", "started_at"], "properties": {
   "box_id": {"type": "string"}, "exec": {"type": "integer"}, "argv": {"type": "array", "items": {"type": "string"}},
   "user": {"type": "string"}, "cwd": {"type": "string"}, "background": {"type": "boolean"}, "tty": {"type": "boolean"},
   "state": {"type": "string", "enum": ["running", "exited", "failed", "lost"]}, "pid": {"type": "integer"},
   "started_at": ts, "ended_at": ts, "exit_code": {"type": ["integer", "null"]}, "signal": {"type": "integer"}, "reason": {"type": "string"},
   "timed_out": {"type": "boolean"}, "oom_killed": {"type": "boolean"}, "cpu_seconds": {"type": "number"}, "max_rss_bytes": {"type": "integer"},
   "stdout_bytes": {"type": "integer"}, "stderr_bytes": {"type": "integer"}, "duration_ms": {"type": "integer"},
   "stdout_tail": {"type": "string"}, "stderr_tail": {"type": "string"}}},
 "ExecResult": {"allOf": [ref("Exec"), {"type": "object", "required": ["stdout", "stderr", "stdout_truncated", "stderr_truncated"], "properties": {
   "stdout": {"type": "string"}, "stderr": {"type": "string"}, "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"}}}]},
 "ExecEvent": {"description": "One line of an NDJSON stream (or the data of one SSE event, whose event name is the type)", "oneOf": [
   {"type": "object", "required": ["type", "exec", "box_id"], "properties": {"type": {"const": "start"}, "exec": {"type": "integer"}, "box_id": {"type": "string"}, "pid": {"type": "integer"}}},
   {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["stdout", "stderr"]}, "data": {"type": "string", "description": "The output, when it is UTF-8 text"}, "data_b64": {"type": "string", "description": "The output bytes in base64, when they are not UTF-8"}}, "oneOf": [{"required": ["data"]}, {"required": ["data_b64"]}]},
   {"allOf": [ref("Exec"), {"type": "object", "required": ["type"], "properties": {"type": {"const": "exit"}}}]}]},
 "PipelineRun": {"type": "object", "additionalProperties": False, "required": ["document"], "properties": {
   "document": {"type": "string", "description": "The markdown document (steps are fenced bash/sh, python/python3, node/js blocks)"},
   "name": {"type": "string", "description": "Its file name, shown in progress and errors (default document.md)"},
   "session": {"type": "string", "description": "Run as the next turn of this session (overrides the document's front matter)"},
   "stream": {"type": "boolean", "description": "Stream progress as NDJSON events (also with Accept: application/x-ndjson)"},
   "verbose": {"type": "boolean", "description": "Also stream each step's output"},
   "network": {"type": "string", "enum": ["none", "allow-all", "custom"], "description": "The box's network (over the front matter's `network:`); a session's box keeps it"},
   "egress": {"allOf": [ref("Egress")], "description": "For network custom: allow_domains, allow_cidrs, deny_cidrs (no headers)"}}},
 "PipelineResult": {"type": "object", "required": ["exit_code", "status", "report", "progress", "errors", "run_id", "session", "turn"], "properties": {
   "type": {"const": "end"},
   "exit_code": {"type": "integer", "description": "As `upstream run`: 0 succeeded, 1 a step failed, 2 invalid document, 125 error, 130/143 interrupted"},
   "status": {"type": "string", "enum": ["succeeded", "failed", "invalid_document", "interrupted", "error"]},
   "report": {"type": "string", "description": "The document with every step's result written back"},
   "progress": {"type": "string"}, "errors": {"type": "string"},
   "run_id": {"type": ["string", "null"]}, "session": {"type": ["string", "null"]}, "turn": {"type": ["integer", "null"]}, "box_id": {"type": "string"}}},
 "PipelineEvent": {"description": "One line of the stream. An event with a `line` carries the human line `upstream run` shows for it (printing every line is the plain view)", "oneOf": [
   {"type": "object", "required": ["type", "line"], "properties": {"type": {"enum": ["progress", "error"]}, "line": {"type": "string"}}},
   {"type": "object", "required": ["type", "index", "name", "lang"], "properties": {"type": {"const": "step_start"}, "index": {"type": "integer", "description": "1-based, in document order"}, "name": {"type": "string"}, "lang": {"type": "string"}, "line": {"type": "string", "description": "With verbose only"}}},
   {"type": "object", "required": ["type", "index", "stream", "data"], "properties": {"type": {"const": "output"}, "index": {"type": "integer"}, "stream": {"enum": ["stdout", "stderr"]}, "data": {"type": "string", "description": "The step's output as it came (verbose only)"}}},
   {"type": "object", "required": ["type", "index", "name", "status", "line"], "properties": {"type": {"const": "step_end"}, "index": {"type": "integer"}, "name": {"type": "string"},
     "status": {"enum": ["ok", "failed", "timed out", "interrupted", "skipped"]}, "exit_code": {"type": ["integer", "null"]}, "signal": {"type": "integer"}, "duration_ms": {"type": "integer"}, "allowed_to_fail": {"type": "boolean"}, "line": {"type": "string"}}},
   {"type": "object", "required": ["type", "status", "steps", "succeeded", "failed", "duration_ms", "run_id", "turn", "line"], "properties": {"type": {"const": "summary"},
     "status": {"enum": ["succeeded", "failed", "interrupted"]}, "steps": {"type": "integer"}, "succeeded": {"type": "integer"},
     "failed": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "name": {"type": "string"}}}},
     "duration_ms": {"type": "integer"}, "run_id": {"type": "string"}, "session": {"type": ["string", "null"]}, "turn": {"type": "integer"}, "line": {"type": "string"}}},
   ref("PipelineResult")]},
 "ExecList": {"type": "object", "required": ["execs"], "properties": {"execs": {"type": "array", "items": ref("Exec")}}},
 "FileInfo": {"type": "object", "required": ["name", "path", "type", "mode", "size", "mtime", "uid", "gid"], "properties": {
   "name": {"type": "string"}, "path": {"type": "string"}, "type": {"type": "string", "enum": ["file", "dir", "symlink", "fifo", "socket", "char", "block"]},
   "mode": {"type": "string", "pattern": "^[0-7]{4}$"}, "size": {"type": "integer"}, "mtime": {"type": "string"}, "uid": {"type": "integer"}, "gid": {"type": "integer"},
   "target": {"type": "string"}, "written": {"type": "integer"}}},
}
ok = lambda s: resp("OK", s)
paths = {
 "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": ok({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}, "version": {"type": "string"}}})}}},
 "/metrics": {"get": {"summary": "Prometheus metrics", "description": "Installation-wide counts: for an operator key (or a server without keys)", "responses": {"200": resp("Text exposition format", {"type": "string"}, "text/plain"), "401": {"$ref": "#/components/responses/Unauthenticated"}, "403": {"$ref": "#/components/responses/Forbidden"}}}},
 "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": ok({"type": "object"})}}},
 "/v1/usage": {"get": {"summary": "Metered usage over a period, grouped; a tenant's key sees its own boxes and snapshots only. Costs appear when the server's configuration has prices",
   "parameters": [q("since", desc="Start: 24h, 7d, 2026-12-01 or 2026-12-01T10:00:00Z (default 30d)"), q("until", desc="End, in the same forms (default now)"),
                  q("by", desc="tenant (default), box, snapshot, all, or label:KEY"), q("label", desc="Only what carries this label (key=value; repeatable)")],
   "responses": dict({"200": ok(ref("UsageReport"))}, **ERR)}},
 "/v1/info": {"get": {"summary": "The server and the caller's tenant", "responses": {"200": ok({"type": "object", "required": ["version", "tenant", "auth"], "properties": {"version": {"type": "string"}, "storage": {"type": "string"}, "cgroups": {"type": "string"}, "proc_view": {"type": "string"}, "kernel": {"type": "string"}, "tenant": {"type": "string"}, "auth": {"type": "boolean"}}}), "401": {"$ref": "#/components/responses/Unauthenticated"}}}},
 "/v1/boxes": {
   "post": {"summary": "Create a box and start it (or `count` boxes)", "requestBody": jbody(ref("BoxCreate"), False), "responses": dict({"201": resp("Created: a Box, or a BoxesCreated when `count` was given", {"oneOf": [ref("Box"), ref("BoxesCreated")]})}, **errs("409", "429"))},
   "get": {"summary": "List boxes", "parameters": [q("label", desc="key=value; repeatable, all must match"), q("state"), q("limit", "integer", minimum=1, maximum=1000), q("after", desc="The `next` of the previous page")],
           "responses": dict({"200": ok(ref("BoxList"))}, **errs())}},
 "/v1/boxes/{box}": {"parameters": [BOX],
   "get": {"summary": "A box, with its usage and state history", "responses": dict({"200": ok(ref("Box"))}, **errs())},
   "delete": {"summary": "Remove a box and everything in it", "parameters": [q("force", "boolean", "Remove it even if running")], "responses": dict({"200": ok({"type": "object", "required": ["id", "removed"], "properties": {"id": {"type": "string"}, "removed": {"type": "boolean"}}})}, **errs("409"))}},
 "/v1/boxes/{box}/snapshot": {"parameters": [BOX], "post": {"summary": "Snapshot the box (a running box is frozen for the moment of capture)", "requestBody": jbody({"type": "object", "additionalProperties": False, "properties": {"name": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "kind": {"type": "string", "enum": ["snapshot", "image"]}}}, False), "responses": dict({"201": resp("Created", ref("Snapshot"))}, **errs("409"))}},
 "/v1/boxes/{box}/fork": {"parameters": [BOX], "post": {"summary": "Snapshot the box and start `count` boxes from it", "requestBody": jbody({"type": "object", "additionalProperties": False, "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 1000}, "name": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "env": {"type": "object", "additionalProperties": {"type": "string"}}, "limits": ref("Limits"), "user": {"type": "string"}, "workdir": {"type": "string"}}}, False), "responses": dict({"201": resp("Created", ref("BoxesCreated"))}, **errs("409", "429"))}},
 "/v1/snapshots": {"get": {"summary": "List snapshots and images", "parameters": [q("kind", enum=["snapshot", "image"])], "responses": dict({"200": ok({"type": "object", "required": ["snapshots"], "additionalProperties": False, "properties": {"snapshots": {"type": "array", "items": ref("Snapshot")}}})}, **errs())}},
 "/v1/snapshots/import": {"put": {"summary": "Import a snapshot export (.tar.zst); every layer is checked against its digest", "parameters": [q("name", desc="Name it this (default: the exported name)"), q("base", desc="Put it on this base image instead of the one the export names (checked as any image the caller names)")], "requestBody": {"required": True, "content": {"application/zstd": {"schema": {"type": "string", "format": "binary"}}}}, "responses": dict({"201": resp("Created", ref("Snapshot"))}, **errs("409", "413"))}},
 "/v1/snapshots/{snapshot}": {"parameters": [SNAP],
   "get": {"summary": "A snapshot", "responses": dict({"200": ok(ref("Snapshot"))}, **errs())},
   "delete": {"summary": "Remove a snapshot (refused while a box made from it exists)", "responses": dict({"200": ok({"type": "object", "required": ["id", "removed"], "properties": {"id": {"type": "string"}, "removed": {"type": "boolean"}}})}, **errs("409"))}},
 "/v1/snapshots/{snapshot}/export": {"parameters": [SNAP], "get": {"summary": "The snapshot as a .tar.zst stream (a manifest, then its layers)", "responses": dict({"200": resp("A zstd-compressed tar archive", {"type": "string", "format": "binary"}, "application/zstd")}, **errs())}},
 "/v1/images": {"get": {"summary": "List images (snapshots built with `upstream image build`)", "responses": dict({"200": ok({"type": "object", "required": ["images"], "additionalProperties": False, "properties": {"images": {"type": "array", "items": ref("Snapshot")}}})}, **errs())}},
 "/v1/images/{snapshot}": {"parameters": [SNAP],
   "get": {"summary": "An image", "responses": dict({"200": ok(ref("Snapshot"))}, **errs())},
   "delete": {"summary": "Remove an image (refused while a box uses it)", "responses": dict({"200": ok({"type": "object", "required": ["id", "removed"], "properties": {"id": {"type": "string"}, "removed": {"type": "boolean"}}})}, **errs("409"))}},
 "/v1/boxes/{box}/network": {"parameters": [BOX], "post": {"summary": "Change the box's network mode; a running or paused box gets or loses its network at once", "requestBody": jbody({"type": "object", "additionalProperties": False, "required": ["mode"], "properties": {"mode": {"type": "string", "enum": ["none", "allow-all", "custom"]}, "allow_domains": {"type": "array", "items": {"type": "string"}}, "allow_cidrs": {"type": "array", "items": {"type": "string"}}, "deny_cidrs": {"type": "array", "items": {"type": "string"}}, "headers": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}}, "description": "Absent: the box's headers stay"}}}), "responses": dict({"200": ok(ref("Box"))}, **errs("409"))}},
 "/v1/boxes/{box}/traffic": {"parameters": [BOX], "get": {"summary": "The box's network counters: per destination, denied attempts with their reasons, DNS queries", "responses": dict({"200": ok(ref("Traffic"))}, **errs())}},
 "/v1/boxes/{box}/expose": {"parameters": [BOX],
   "post": {"summary": "Expose a port of the box at a URL on the host, for requests with generated credentials (HTTP and WebSocket)", "requestBody": jbody({"type": "object", "additionalProperties": False, "required": ["port"], "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}, "auth": {"type": "string", "enum": ["bearer", "basic"]}}}), "responses": dict({"201": ok(ref("Exposure"))}, **errs("409"))},
   "get": {"summary": "The box's exposed ports (without credentials)", "responses": dict({"200": ok({"type": "object", "required": ["exposures"], "properties": {"exposures": {"type": "array", "items": ref("Exposure")}}})}, **errs())}},
 "/v1/boxes/{box}/expose/{exposure}": {"parameters": [BOX, {"name": "exposure", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Exposure id, or the port in the box"}],
   "delete": {"summary": "Revoke an exposure: its URL stops answering", "responses": dict({"200": ok({"type": "object", "properties": {"removed": {"type": "string"}}})}, **errs())}},
 "/v1/boxes/{box}/pause": {"parameters": [BOX], "post": {"summary": "Pause: every process frozen, memory kept, no CPU used; execs and file calls resume it", "requestBody": jbody({"type": "object", "additionalProperties": False}, False), "responses": dict({"200": ok(ref("Box"))}, **errs("409"))}},
 "/v1/boxes/{box}/archive": {"parameters": [BOX], "post": {"summary": "Archive a stopped box: its files packed into the layer store, its working directory freed; start (or a file call) unpacks them", "requestBody": jbody({"type": "object", "additionalProperties": False}, False), "responses": dict({"200": ok(ref("Box"))}, **errs("409"))}},
 "/v1/boxes/{box}/resume": {"parameters": [BOX], "post": {"summary": "Resume a paused box where it was", "requestBody": jbody({"type": "object", "additionalProperties": False}, False), "responses": dict({"200": ok(ref("Box"))}, **errs("409"))}},
 "/v1/boxes/{box}/stop": {"parameters": [BOX], "post": {"summary": "Stop: processes end, files stay", "requestBody": jbody({"type": "object", "additionalProperties": False, "properties": {"grace_ms": {"type": "integer", "minimum": 0}}}, False), "responses": dict({"200": ok(ref("Box"))}, **errs("409"))}},
 "/v1/boxes/{box}/start": {"parameters": [BOX], "post": {"summary": "Start a stopped box", "requestBody": jbody({"type": "object", "additionalProperties": False}, False), "responses": dict({"200": ok(ref("Box"))}, **errs("409"))}},
 "/v1/boxes/{box}/execs": {"parameters": [BOX],
   "post": {"summary": "Run a command: wait for its result, stream it, or start it in the background", "requestBody": jbody(ref("ExecCreate")),
            "responses": dict({"200": {"description": "The result (or, when streamed, the events)", "content": {"application/json": {"schema": ref("ExecResult")}, "application/x-ndjson": {"schema": ref("ExecEvent")}, "text/event-stream": {"schema": {"type": "string"}}}},
                               "202": resp("Started in the background", ref("Exec"))}, **errs("409", "429"))},
   "get": {"summary": "Exec history of the box", "parameters": [q("running", "boolean"), q("limit", "integer", minimum=0, maximum=10000)], "responses": dict({"200": ok(ref("ExecList"))}, **errs())}},
 "/v1/boxes/{box}/processes": {"parameters": [BOX], "get": {"summary": "Processes per exec, for execs running or that left processes behind", "responses": dict({"200": ok({"type": "object", "required": ["execs"], "properties": {"execs": {"type": "array", "items": {"type": "object", "required": ["exec", "running", "processes"], "properties": {"exec": {"type": "integer"}, "running": {"type": "boolean"}, "processes": {"type": "integer"}}}}}})}, **errs())}},
 "/v1/boxes/{box}/execs/{exec}": {"parameters": [BOX, EXEC], "get": {"summary": "One exec: status, result, output tails", "responses": dict({"200": ok(ref("Exec"))}, **errs())}},
 "/v1/boxes/{box}/execs/{exec}/logs": {"parameters": [BOX, EXEC], "get": {"summary": "An exec's whole output", "parameters": [q("stream", enum=["stdout", "stderr"]), q("offset", "integer", "Skip this many bytes", minimum=0)], "responses": dict({"200": resp("Raw bytes", {"type": "string", "format": "binary"}, "application/octet-stream")}, **errs())}},
 "/v1/boxes/{box}/execs/{exec}/kill": {"parameters": [BOX, EXEC], "post": {"summary": "Signal an exec's process tree", "requestBody": jbody({"type": "object", "additionalProperties": False, "properties": {"signal": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}, False), "responses": dict({"200": ok({"type": "object", "required": ["box_id", "exec", "signal"], "properties": {"box_id": {"type": "string"}, "exec": {"type": "integer"}, "signal": {"type": "integer"}}})}, **errs("409"))}},
 "/v1/boxes/{box}/execs/{exec}/stdin": {"parameters": [BOX, EXEC], "post": {"summary": "Send bytes to a streamed exec's stdin", "parameters": [q("eof", "boolean", "Close stdin after these bytes")], "requestBody": {"required": False, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}, "responses": dict({"200": ok({"type": "object", "required": ["exec", "written", "eof"], "properties": {"box_id": {"type": "string"}, "exec": {"type": "integer"}, "written": {"type": "integer"}, "eof": {"type": "boolean"}}})}, **errs("409"))}},
 "/v1/pipelines": {"post": {"summary": "Run a markdown document as a turn (`upstream run`) and get its report", "requestBody": jbody(ref("PipelineRun")),
   "responses": dict({"200": {"description": "The result (or, when streamed, progress events ending with the result)", "content": {"application/json": {"schema": ref("PipelineResult")}, "application/x-ndjson": {"schema": ref("PipelineEvent")}}}}, **errs("409"))}},
 "/v1/sessions": {"get": {"summary": "Sessions of `upstream run` turns", "responses": dict({"200": ok({"type": "object", "required": ["sessions"], "properties": {"sessions": {"type": "array", "items": {"type": "object", "required": ["name", "turns"], "properties": {"name": {"type": "string", "description": "As its tenant named it"}, "tenant": {"type": ["string", "null"], "description": "Only in the installation's view: the session's tenant (null: the operator's)"}, "box_id": {"type": "string"}, "turns": {"type": "integer"}, "last_status": {"type": "string"}, "updated_at": {"type": "string"}}}}}})}, **errs())}},
 "/v1/sessions/{session}": {"parameters": [SESSION, SESSION_TENANT],
   "get": {"summary": "A session: its box, where it left off, its turns", "responses": dict({"200": ok({"type": "object", "required": ["name", "box_id", "turns"], "properties": {"name": {"type": "string"}, "box_id": {"type": "string"}, "cwd": {"type": "string"}, "env": {"type": "object"}, "turns": {"type": "array", "items": {"type": "object"}}}})}, **errs())},
   "delete": {"summary": "Remove a session: its box and its context", "responses": dict({"200": ok({"type": "object", "required": ["name", "removed"], "properties": {"name": {"type": "string"}, "removed": {"type": "boolean"}}})}, **errs())}},
 "/v1/sessions/{session}/context": {"parameters": [SESSION, SESSION_TENANT], "get": {"summary": "The context manifest the next turn sees (context.json)", "responses": dict({"200": ok({"type": "object"})}, **errs())}},
 "/v1/sessions/{session}/export": {"parameters": [SESSION, SESSION_TENANT], "get": {"summary": "Every turn's results and artifacts as a tar archive", "responses": dict({"200": resp("A tar archive", {"type": "string", "format": "binary"}, "application/x-tar")}, **errs())}},
 "/v1/boxes/{box}/files": {"parameters": [BOX, PATH, USER],
   "get": {"summary": "Download a file", "responses": dict({"200": resp("Its bytes", {"type": "string", "format": "binary"}, "application/octet-stream")}, **errs())},
   "put": {"summary": "Write a file (the body is its bytes)", "parameters": [q("mode", desc="Octal, e.g. 0644"), q("mkdirs", "boolean", "Create missing parent directories")], "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}, "responses": dict({"200": ok(ref("FileInfo"))}, **errs("413"))},
   "delete": {"summary": "Remove a file or directory", "parameters": [q("recursive", "boolean")], "responses": dict({"200": ok({"type": "object", "required": ["path", "removed"], "properties": {"path": {"type": "string"}, "removed": {"type": "boolean"}}})}, **errs())}},
 "/v1/boxes/{box}/files/list": {"parameters": [BOX, PATH, USER], "get": {"summary": "List a directory", "responses": dict({"200": ok({"type": "object", "required": ["path", "entries"], "properties": {"path": {"type": "string"}, "entries": {"type": "array", "items": ref("FileInfo")}}})}, **errs())}},
 "/v1/boxes/{box}/files/stat": {"parameters": [BOX, PATH, USER, q("follow", "boolean")], "get": {"summary": "Stat a path", "responses": dict({"200": ok(ref("FileInfo"))}, **errs())}},
 "/v1/boxes/{box}/files/mkdir": {"parameters": [BOX, USER], "post": {"summary": "Make a directory", "requestBody": jbody({"type": "object", "required": ["path"], "additionalProperties": False, "properties": {"path": {"type": "string"}, "parents": {"type": "boolean"}, "mode": {"type": "string"}}}), "responses": dict({"200": ok(ref("FileInfo"))}, **errs())}},
 "/v1/boxes/{box}/files/move": {"parameters": [BOX, USER], "post": {"summary": "Move or rename", "requestBody": jbody({"type": "object", "required": ["from", "to"], "additionalProperties": False, "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "overwrite": {"type": "boolean"}}}), "responses": dict({"200": ok(ref("FileInfo"))}, **errs())}},
 "/v1/boxes/{box}/files/archive": {"parameters": [BOX, PATH, USER],
   "get": {"summary": "Download a file or directory tree as tar", "responses": dict({"200": resp("A tar archive", {"type": "string", "format": "binary"}, "application/x-tar")}, **errs())},
   "put": {"summary": "Extract a tar archive into a directory", "requestBody": {"required": True, "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}, "responses": dict({"200": ok({"type": "object", "required": ["path", "bytes"], "properties": {"path": {"type": "string"}, "bytes": {"type": "integer"}}})}, **errs("413"))}},
}
def er(d): return {"description": d, "content": {"application/json": {"schema": ref("Error")}}}
doc = {"openapi": "3.1.0",
 "info": {"title": "upstream", "version": "0.1.0", "description": "Sandboxes for AI agents that remember: boxes, execs and files over HTTP. Every error is a JSON object with `code` and `message`."},
 "servers": [{"url": "http://127.0.0.1:8420"}],
 "security": [{"bearer": []}],
 "paths": paths,
 "components": {"schemas": schemas,
   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key from `upstream keys create` (a tenant's, or --operator). Not needed while no key exists (the server then listens on loopback only)."}},
   "responses": {"BadRequest": er("The request is malformed; nothing was changed"), "Unauthenticated": er("No valid API key"), "NotFound": er("No such box, exec, file, snapshot or route (another tenant's are not found either)"),
                 "Forbidden": er("Not for this caller: a tenant naming a host path or another's image, a limit over its ceiling, a page of another site (Origin)"),
                 "UnsupportedMediaType": er("A JSON body without Content-Type: application/json, or raw bytes sent as a form"),
                 "Misdirected": er("The Host names no name this server answers to (DNS rebinding)"),
                 "Error409": er("The object is in the wrong state, or a name is taken"), "Error413": er("The body is over the size limit"), "Error429": er("A tenant limit was reached")}}}
print(json.dumps(doc, indent=1))
