"""Lookups shared by the HTTP routes."""

from __future__ import annotations

from typing import Any

from stormeye.core.errors import NotFound
from stormeye.workers.db import Database


def incident_or_404(database: Database, incident_id: str) -> dict[str, Any]:
    """The stored incident (``database.get_incident``), or a 404 that names the id."""
    inc = database.get_incident(incident_id)
    if inc is None:
        raise NotFound(f"no incident {incident_id!r}")
    return dict(inc)
