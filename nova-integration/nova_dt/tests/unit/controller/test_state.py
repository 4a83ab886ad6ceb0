"""The controller's state store: durable, atomic per record, shared between threads."""

import os
import sqlite3
import threading

import fixtures

from nova import test

from nova_dt.controller import planner
from nova_dt.controller import state


def pair(uuid, **kwargs):
    return planner.Pair(uuid, primary_host='h1', job=planner.Job(planner.PROTECT), **kwargs)


class TestStateStore(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.dir = os.path.join(self.useFixture(fixtures.TempDir()).path, 'sub', 'state')
        self.store = state.StateStore.in_dir(self.dir)

    def test_put_get_replace_delete(self):
        self.assertIsNone(self.store.get('u1'))
        self.store.put(pair('u1'))
        self.store.put(pair('u2', backup_host='h2'))
        self.assertEqual('h2', self.store.get('u2').backup_host)
        p = self.store.get('u1')
        p.job.advance()
        p.backup_host = 'h3'
        self.store.put(p)
        self.assertEqual(p.to_dict(), self.store.get('u1').to_dict())
        self.assertEqual(['u1', 'u2'], [x.instance_uuid for x in self.store.all()])
        self.store.delete('u1')
        self.store.delete('u1')
        self.assertEqual(['u2'], [x.instance_uuid for x in self.store.all()])

    def test_survives_reopening(self):
        self.store.put(pair('u1', status=planner.NO_BACKUP, reason='none'))
        self.store.close()
        again = state.StateStore.in_dir(self.dir)
        self.assertEqual('none', again.get('u1').reason)
        self.assertEqual(planner.CHOOSE_BACKUP, again.get('u1').job.step)

    def test_a_failed_write_leaves_the_old_record(self):
        self.store.put(pair('u1', backup_host='h2'))
        bad = pair('u1', backup_host=object())   # not JSON: fails before the transaction
        self.assertRaises(TypeError, self.store.put, bad)
        self.assertEqual('h2', self.store.get('u1').backup_host)

    def test_committed_for_other_connections(self):
        self.store.put(pair('u1'))
        other = sqlite3.connect(os.path.join(self.dir, state.FILE_NAME))
        self.assertEqual(1, other.execute('SELECT COUNT(*) FROM pairs').fetchone()[0])
        other.close()

    def test_unknown_format_is_refused(self):
        self.store.put(pair('u1'))
        self.store._db.execute('UPDATE pairs SET version = 99')
        self.assertRaises(ValueError, self.store.get, 'u1')

    def test_threads(self):
        def writer(n):
            for i in range(20):
                self.store.put(pair('u%d-%d' % (n, i)))
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(80, len(self.store.all()))
