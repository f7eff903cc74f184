"""Snapshots: a box's files and settings, saved. Boxes made from one share its layers."""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional

from .client import Client, default_client


class Snapshot:
    """A snapshot (or an image made by `upstream image build`) on an upstream server.

    >>> snap = sandbox.snapshot("prepared")
    >>> boxes = Sandbox.create_many(10, image=snap.name)
    """

    def __init__(self, info: Dict[str, Any], client: Optional[Client] = None):
        self._client = client or default_client()
        self.info = info

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def layers(self) -> List[str]:
        return list(self.info["layers"])

    def __repr__(self) -> str:
        return f"Snapshot(id={self.id!r}, name={self.name!r}, layers={len(self.layers)})"

    @classmethod
    def get(cls, ref: str, client: Optional[Client] = None) -> "Snapshot":
        c = client or default_client()
        return cls(c.json("GET", c.path("/v1/snapshots/{}", ref)), c)

    @classmethod
    def list(cls, kind: Optional[str] = None, client: Optional[Client] = None) -> List["Snapshot"]:
        c = client or default_client()
        return [cls(s, c) for s in c.json("GET", c.path("/v1/snapshots", kind=kind))["snapshots"]]

    def delete(self) -> None:
        """Removes it; refused (ConflictError) while a box made from it exists."""
        self._client.request("DELETE", self._client.path("/v1/snapshots/{}", self.id))

    def export(self, path: str) -> None:
        """Writes the snapshot to a .tar.zst file (replaced only once complete)."""
        conn, resp = self._client.stream("GET", self._client.path("/v1/snapshots/{}/export", self.id),
                                         accept="application/zstd")
        tmp = path + ".part"
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f)
            os.replace(tmp, path)
        finally:
            conn.close()
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def import_file(cls, path: str, name: Optional[str] = None, client: Optional[Client] = None) -> "Snapshot":
        """Imports a file written by export (every layer is checked against its digest)."""
        c = client or default_client()
        with open(path, "rb") as f:
            conn, resp = c.stream("PUT", c.path("/v1/snapshots/import", name=name), accept="application/json",
                                  raw_upload=f, content_type="application/zstd")
            try:
                import json
                return cls(json.loads(resp.read()), c)
            finally:
                conn.close()
