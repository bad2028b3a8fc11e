"""SQLite backend whose connections cannot write.

The file is opened with ``mode=ro``: SQLite refuses every write at the file
level, which no statement in the session can switch off (unlike
``PRAGMA query_only``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        name = str(params["database"])
        if not name.startswith("file:"):
            name = f"file:{Path(name).resolve()}?mode=ro"
        elif "mode=" not in name:
            name += ("&" if "?" in name else "?") + "mode=ro"
        params["database"] = name
        params["uri"] = True
        # init_command would try PRAGMA journal_mode, a write; read-only needs none.
        self.init_commands = []
        self.transaction_mode = None
        return params

    def _start_transaction_under_autocommit(self):
        self.cursor().execute("BEGIN")


__all__ = ["DatabaseWrapper", "sqlite3"]
