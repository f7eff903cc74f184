"""Checks HTTP responses against the OpenAPI document the server publishes (docs/openapi.json)."""

import json
import re

import jsonschema

from upstream_e2e import REPO

SPEC = json.loads((REPO / "docs" / "openapi.json").read_text())
_ROUTES = []
for template, item in SPEC["paths"].items():
    rx = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
    _ROUTES.append((re.compile(rx), template, item))


def _resolve(obj):
    while isinstance(obj, dict) and "$ref" in obj:
        node = SPEC
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def operation(method, path):
    path = path.split("?", 1)[0]
    for rx, template, item in _ROUTES:
        if rx.match(path) and method.lower() in item:
            return template, item[method.lower()]
    return None, None


def check(method, path, status, content_type, body):
    """Raises AssertionError if the response is not one the document describes."""
    ctype = (content_type or "").split(";")[0].strip()
    if status >= 400:
        # Every error, on any route (also unknown ones), is the documented Error object.
        assert ctype == "application/json", f"{method} {path} {status}: error with content type {ctype!r}"
        schema = {"$ref": "#/components/schemas/Error", "components": SPEC["components"]}
        jsonschema.Draft202012Validator(schema).validate(json.loads(body))
        return
    template, op = operation(method, path)
    assert op is not None, f"{method} {path} is not in the OpenAPI document"
    responses = op["responses"]
    spec = responses.get(str(status))
    assert spec is not None, f"{method} {template}: status {status} is not documented (documented: {sorted(responses)})"
    spec = _resolve(spec)
    content = spec.get("content", {})
    if not content:
        return
    assert ctype in content, f"{method} {template} {status}: content type {ctype!r} is not documented ({sorted(content)})"
    if ctype != "application/json":
        return
    schema = dict(content[ctype]["schema"])
    schema["components"] = SPEC["components"]
    jsonschema.Draft202012Validator(schema).validate(json.loads(body))
