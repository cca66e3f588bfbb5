"""The compliance rules database of the contract_review example: building it and reading it.

`compliance.sql` (schema and rules as INSERTs) is the source; `compliance.db` is built from it
by `build_db` and committed, so the compliance_checker only ever opens it read-only. After
editing the SQL, rebuild with:

    python -m examples.contract_review.compliance
"""

from __future__ import annotations

import re
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
SQL_PATH = HERE / "compliance.sql"
DB_PATH = HERE / "compliance.db"
_COLUMNS = "id, category, pattern, absent_pattern, severity, description, guidance"


@dataclass(frozen=True)
class Rule:
    """One row of the `rules` table, with its regexes compiled (case-insensitive)."""

    id: str
    category: str
    pattern: re.Pattern[str]
    absent_pattern: re.Pattern[str] | None
    severity: str
    description: str
    guidance: str

    def match(self, text: str) -> re.Match[str] | None:
        """Where the rule fires in a (whitespace-normalised) clause, or None."""
        if self.absent_pattern is not None and self.absent_pattern.search(text):
            return None
        return self.pattern.search(text)


def build_db(path: str | Path, sql_path: str | Path = SQL_PATH) -> Path:
    """Create (or replace) the SQLite database at `path` from the SQL script."""
    path = Path(path)
    script = Path(sql_path).read_text(encoding="utf-8")
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.executescript(script)
        connection.commit()
        connection.execute("VACUUM")
    finally:
        connection.close()
    return path


def read_rows(path: str | Path = DB_PATH) -> list[tuple[str, ...]]:
    """Every rule row, ordered by id, from a database opened read-only."""
    connection = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)
    try:
        return connection.execute(f"SELECT {_COLUMNS} FROM rules ORDER BY id").fetchall()
    finally:
        connection.close()


def load_rules(path: str | Path = DB_PATH) -> list[Rule]:
    """The rules of the database at `path`, ordered by id."""
    return [
        Rule(
            id=rule_id,
            category=category,
            pattern=re.compile(pattern, re.I),
            absent_pattern=re.compile(absent, re.I) if absent else None,
            severity=severity,
            description=description,
            guidance=guidance,
        )
        for rule_id, category, pattern, absent, severity, description, guidance in read_rows(path)
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DB_PATH
    build_db(target)
    print(f"{target}: {len(read_rows(target))} rules")
