"""An on-call rota file for paging tests: primary Ada paged by webhook, backup Tom by email,
both on call from an hour ago to an hour from now (clinic "main", UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

CRITICAL_K = (("K", "Potassium", "8.1", "mEq/L", "3.5-5.8", "HH"),)
"""A feline potassium beyond the shipped critical high (7.5 mmol/L)."""


def write_oncall(path: Path, webhook: str, email: str) -> Path:
    now = datetime.now(UTC)
    starts = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ends = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(
        f"""
[[clinics]]
code = "main"
name = "Main Street Clinic"
timezone = "UTC"

[[veterinarians]]
key = "ada"
name = "Dr Ada Okafor"
contacts = [{{ kind = "webhook", address = "{webhook}", priority = 0 }}]

[[veterinarians]]
key = "tom"
name = "Dr Tom Price"
contacts = [{{ kind = "email", address = "{email}", priority = 0 }}]

[[on_call]]
clinic = "main"
veterinarian = "ada"
level = "primary"
starts = {starts}
ends = {ends}

[[on_call]]
clinic = "main"
veterinarian = "tom"
level = "backup"
starts = {starts}
ends = {ends}
"""
    )
    return path
