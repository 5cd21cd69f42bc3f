"""Commands that only read a deployment's database never give an empty one a schema.

An empty PostgreSQL database (a fresh schema) named by STRONGROOM_DATABASE_URL:
``status`` reports a vault that is not initialised, the readers (``audit
export``, ``alerts ls``, ``alerts outbox``) refuse it naming the
remedy, and afterwards the database still holds no table. Only ``init`` and
``db upgrade`` create or change a schema (tests/cli/test_db_upgrade_cli.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from strongroom.store.db import Store

from cli_fixtures import make_runner
from testsupport import need_service, pg_schema


def test_readers_leave_an_empty_postgresql_database_empty(tmp_path: Path) -> None:
    with pg_schema(need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        env.update(STRONGROOM_HOME=str(tmp_path / "home"), STRONGROOM_DATABASE_URL=url)
        run = make_runner(env)
        status = json.loads(run("status", "--json").stdout)
        assert status["initialized"] is False and status["sealed"] is True
        for args in (("audit", "export"), ("alerts", "ls"), ("alerts", "outbox")):
            refused = run(*args, ok=False)
            assert refused.returncode != 0, args
            assert "no strongroom schema" in refused.stderr, (args, refused.stderr)
            assert "strongroom init" in refused.stderr, args
        store = Store.open(url, schema="unchecked")
        try:
            assert store.schema_state().new
            assert store.table_names() == []
        finally:
            store.close()
    assert not (tmp_path / "home").exists()
