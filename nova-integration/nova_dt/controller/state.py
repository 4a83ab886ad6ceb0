"""The controller's durable state: one record per DT server, with its unfinished job.

Kept in SQLite (``<state_dir>/controller.sqlite``): every ``put`` is one transaction, committed
with ``synchronous=FULL`` in rollback-journal mode, so after a crash or power loss a record is
either the old or the new version, never a torn one, and a committed step is never redone from
an older record. Records are JSON documents (``planner.Pair.to_dict``), so the schema is one table
and a format change needs no migration beyond a version field.
"""

import json
import os
import sqlite3
import threading

from nova_dt.controller import planner

FILE_NAME = 'controller.sqlite'
FORMAT_VERSION = 1


class StateStore(object):
    """Pairs by instance UUID, safe to use from several threads of one process."""

    def __init__(self, path):
        """Open (creating if needed) the database at ``path``; ':memory:' for tests."""
        if path != ':memory:':
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute('PRAGMA journal_mode=DELETE')
        self._db.execute('PRAGMA synchronous=FULL')
        self._db.execute('CREATE TABLE IF NOT EXISTS pairs ('
                         ' instance_uuid TEXT PRIMARY KEY,'
                         ' version INTEGER NOT NULL,'
                         ' record TEXT NOT NULL)')

    @classmethod
    def in_dir(cls, state_dir):
        return cls(os.path.join(state_dir, FILE_NAME))

    def get(self, instance_uuid):
        """The Pair of a server, or None."""
        with self._lock:
            row = self._db.execute('SELECT version, record FROM pairs WHERE instance_uuid = ?',
                                   (instance_uuid,)).fetchone()
        return self._load(row) if row else None

    def put(self, pair):
        """Write a pair durably (insert or replace)."""
        record = json.dumps(pair.to_dict(), sort_keys=True)
        with self._lock:
            with self._transaction():
                self._db.execute('INSERT OR REPLACE INTO pairs (instance_uuid, version, record) '
                                 'VALUES (?, ?, ?)', (pair.instance_uuid, FORMAT_VERSION, record))

    def delete(self, instance_uuid):
        with self._lock:
            with self._transaction():
                self._db.execute('DELETE FROM pairs WHERE instance_uuid = ?', (instance_uuid,))

    def all(self):
        """Every pair, by instance UUID."""
        with self._lock:
            rows = self._db.execute(
                'SELECT version, record FROM pairs ORDER BY instance_uuid').fetchall()
        return [self._load(row) for row in rows]

    def close(self):
        with self._lock:
            self._db.close()

    def _transaction(self):
        db = self._db

        class _Tx(object):
            def __enter__(self):
                db.execute('BEGIN IMMEDIATE')

            def __exit__(self, exc_type, exc, tb):
                db.execute('COMMIT' if exc_type is None else 'ROLLBACK')
                return False

        return _Tx()

    @staticmethod
    def _load(row):
        version, record = row
        if version != FORMAT_VERSION:
            raise ValueError('state record format %s is not %s' % (version, FORMAT_VERSION))
        return planner.Pair.from_dict(json.loads(record))
