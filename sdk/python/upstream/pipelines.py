"""Markdown pipelines: run a document as a turn (as `upstream run` does) and read sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from .client import Client, default_client, iter_ndjson


@dataclass
class PipelineResult:
    exit_code: int
    status: str  # succeeded | failed | interrupted | error
    report: str  # the document with every step's result written back
    progress: str
    errors: str
    run_id: Optional[str]
    session: Optional[str]
    turn: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def __repr__(self) -> str:
        where = f", session={self.session!r}, turn={self.turn}" if self.session else ""
        return (f"PipelineResult(status={self.status!r}, exit_code={self.exit_code}, run_id={self.run_id!r}"
                f"{where}, report=<{len(self.report)} characters>)")

    @classmethod
    def from_json(cls, j: Dict[str, Any]) -> "PipelineResult":
        return cls(j["exit_code"], j["status"], j["report"], j["progress"], j["errors"], j.get("run_id"),
                   j.get("session"), j.get("turn"), j)


def run_pipeline(document: str, *, session: Optional[str] = None, name: Optional[str] = None,
                 client: Optional[Client] = None) -> PipelineResult:
    """Runs a markdown document and returns its result and written-back report."""
    c = client or default_client()
    body: Dict[str, Any] = {"document": document}
    if session is not None:
        body["session"] = session
    if name is not None:
        body["name"] = name
    return PipelineResult.from_json(c.json("POST", "/v1/pipelines", body))


def stream_pipeline(document: str, *, session: Optional[str] = None, name: Optional[str] = None,
                    verbose: bool = False, client: Optional[Client] = None) -> Iterator[Dict[str, Any]]:
    """Runs a document, yielding its events as they come: step_start {index, name}, output
    {index, stream, data} (verbose), step_end {index, status, exit_code, duration_ms}, progress and
    error lines, summary; each event with a "line" carries the human line `upstream run` shows.
    Finally {"type": "end", ...} with the result."""
    c = client or default_client()
    body: Dict[str, Any] = {"document": document, "stream": True, "verbose": verbose}
    if session is not None:
        body["session"] = session
    if name is not None:
        body["name"] = name
    conn, resp = c.stream("POST", "/v1/pipelines", body, timeout=None)
    try:
        yield from iter_ndjson(resp)
    finally:
        conn.close()


def sessions(client: Optional[Client] = None) -> List[Dict[str, Any]]:
    return (client or default_client()).json("GET", "/v1/sessions")["sessions"]


def session(name: str, client: Optional[Client] = None) -> Dict[str, Any]:
    c = client or default_client()
    return c.json("GET", c.path("/v1/sessions/{}", name))


def delete_session(name: str, client: Optional[Client] = None) -> None:
    c = client or default_client()
    c.request("DELETE", c.path("/v1/sessions/{}", name))
