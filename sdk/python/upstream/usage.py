"""Metered usage over a period: CPU used, time running, storage kept, and a cost estimate when the
server's configuration has prices. A tenant's key sees its own boxes and snapshots only."""

from __future__ import annotations

from typing import Any, Dict, Optional

from .client import Client, default_client


def usage(since: str = "30d", until: str = "now", by: str = "tenant", labels: Optional[Dict[str, str]] = None,
          client: Optional[Client] = None) -> Dict[str, Any]:
    """Totals grouped by tenant, box, snapshot, all, or label:KEY.

    since/until: "24h", "7d", "2026-12-01" or "2026-12-01T10:00:00Z".
    Returns {"since", "until", "groups": [...], "total": {...}, "prices"?}; each group has cpu_seconds,
    running_seconds, core_running_seconds, box_storage_gb_months, snapshot_storage_gb_months, and
    cost / wall_clock_cost when priced.
    """
    c = client or default_client()
    label = [f"{k}={v}" for k, v in (labels or {}).items()] or None
    return c.json("GET", c.path("/v1/usage", since=since, until=until, by=by, label=label))
