"""Bring a database to a schema revision with the Alembic scripts shipped inside the package.

Every ``vetgateway run`` (and every other command that touches the database) starts by upgrading
to the head revision, and almost always the database is there already. Importing Alembic costs
about half a second on a small box (it pulls in Mako and, through it, Pygments), a fifth of the
time from start to the first listener, and a restarted gateway answers no lab until it listens.
So ``upgrade`` first compares the database's revision with the newest shipped script, read from
the scripts' own ``revision`` and ``down_revision`` lines, and imports Alembic only when there is
something to do (or anything about the scripts is unusual).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from vetgateway.store.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*['\"](\w+)['\"]\s*$", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"^down_revision(?:\s*:[^=]*)?=\s*(?:['\"](\w+)['\"]|None)\s*$", re.MULTILINE
)


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    if revision == "head" and _at_shipped_head(db):
        return
    from alembic import command

    config = _config()
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(db: Database, revision: str = "base") -> None:
    from alembic import command

    config = _config()
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


@lru_cache(maxsize=1)
def shipped_head() -> str | None:
    """The head revision of the shipped scripts, read without Alembic; None when the scripts
    are not one plain chain (a branch, a merge, a line written another way): Alembic decides."""
    revisions: dict[str, str | None] = {}
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(revision) != 1 or len(down) != 1 or revision[0] in revisions:
            return None
        revisions[revision[0]] = down[0] or None
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else None


def _at_shipped_head(db: Database) -> bool:
    """Whether the database records exactly the shipped head (one ``alembic_version`` row)."""
    head = shipped_head()
    if head is None:
        return False
    with db.engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return False
        found = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    return [tuple(row) for row in found] == [(head,)]
