"""The schema is brought up to date by whichever process opens the database first; others
that open it at the same moment (a standby control plane started beside the first, or a CLI
beside the server) wait for that and find it done, instead of creating the tables again."""

import subprocess
import sys

from sqlalchemy import inspect

from vpool.store.db import Store


def test_processes_opening_a_new_database_at_once_all_get_the_schema(database_url):
    opening = [subprocess.Popen([sys.executable, "-c", "import sys; from vpool.store.db import Store; "
                                 "Store(sys.argv[1]).close()", database_url],
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for proc in opening:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-600:]
    store = Store(database_url)
    try:
        assert {"tasks", "vms", "hosts", "alembic_version"} <= set(inspect(store.engine).get_table_names())
    finally:
        store.close()
