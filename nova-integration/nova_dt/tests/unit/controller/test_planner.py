"""The controller's planner: events read, jobs planned, backups chosen - no I/O."""

import uuid

from nova import test

from nova_dt.controller import planner
from nova_dt.tests.unit.controller import fakes

U = '8f0b7e0e-1a43-4b6e-b4ab-6d3f3f1ea001'
DT = {'dt:enabled': 'true'}


def hosts(*views):
    return {h.host: h for h in views}


class TestReservationConsumer(test.NoDBTestCase):

    def test_deterministic_and_distinct(self):
        c = planner.reservation_consumer(U)
        self.assertEqual(c, planner.reservation_consumer(U))
        self.assertEqual(c, str(uuid.uuid5(planner.RESERVATION_NAMESPACE, U)))
        self.assertNotEqual(U, c)
        self.assertNotEqual(c, planner.reservation_consumer(U.replace('1', '2')))
        self.assertEqual(c, planner.Pair(U).reservation)


class TestEvents(test.NoDBTestCase):

    def test_create_end(self):
        e = planner.read_instance_event('instance.create.end', fakes.payload(U, 'h1', DT))
        self.assertEqual(('instance.create.end', U, 'h1', 'proj', 'user', DT), tuple(e))

    def test_events_the_controller_ignores(self):
        for event_type in ('instance.create.start', 'instance.update', 'instance.power_off.end',
                           'service.update', 'instance.delete'):
            self.assertIsNone(planner.read_instance_event(event_type, {'junk': 1}))
        self.assertIsNone(planner.read_failover_event('dt.pair.protect.end', {}))

    def test_no_flavor_reads_as_no_specs(self):
        p = fakes.payload(U, 'h1')
        del p['nova_object.data']['flavor']
        self.assertEqual({}, planner.read_instance_event('instance.delete.end', p).extra_specs)
        p['nova_object.data']['flavor'] = {'nova_object.data': {'extra_specs': None}}
        self.assertEqual({}, planner.read_instance_event('instance.delete.end', p).extra_specs)

    def test_bad_payloads(self):
        for p in ({}, {'nova_object.data': 'x'}, {'nova_object.data': {'uuid': 7}},
                  {'nova_object.data': {'uuid': ''}}):
            self.assertRaises(planner.BadEvent, planner.read_instance_event,
                              'instance.create.end', p)
        p = fakes.payload(U, 'h1')
        p['nova_object.data']['flavor']['nova_object.data']['extra_specs'] = ['x']
        self.assertRaises(planner.BadEvent, planner.read_instance_event,
                          'instance.create.end', p)
        p = fakes.failover_payload(U, 'h2', 'h1')
        del p['nova_object.data']['new_host']
        self.assertRaises(planner.BadEvent, planner.read_failover_event,
                          'dt.pair.failover.end', p)

    def test_failover_end(self):
        e = planner.read_failover_event('dt.pair.failover.end',
                                        fakes.failover_payload(U, 'h2', 'h1'))
        self.assertEqual((U, 'h2', 'h1'), tuple(e))


def create(host='h1', specs=DT):
    return planner.read_instance_event('instance.create.end', fakes.payload(U, host, specs))


def delete(phase='end'):
    return planner.read_instance_event('instance.delete.' + phase, fakes.payload(U, 'h1', DT))


def failover(new='h2', old='h1'):
    return planner.read_failover_event('dt.pair.failover.end',
                                       fakes.failover_payload(U, new, old))


def protected(primary='h1', backup='h2'):
    """A pair the controller protects: ``primary`` to ``backup``, no job."""
    pair = planner.plan_instance_event(create(primary), None)
    pair.job, pair.status, pair.backup_host, pair.backup_rp = (
        None, planner.PROTECTED, backup, backup and 'rp-' + backup)
    return pair


def agent(host, *views):
    """An agent's answer to the RPC status: (role, state) of U per view."""
    return {'host': host, 'version': '0.1', 'peers': [], 'protected_servers': [
        {'instance_uuid': U, 'role': role, 'state': state, 'peer_host': 'h1'}
        for role, state in views] + [
        {'instance_uuid': 'other', 'role': 'primary', 'state': 'protected'}]}


class TestPlans(test.NoDBTestCase):

    def test_create_of_dt_flavor_plans_protection(self):
        pair = planner.plan_instance_event(create(specs={'dt:enabled': 'yes',
                                                         'dt:peer_az': 'az2'}), None)
        self.assertEqual((U, 'h1', 'az2', 'proj', 'user', planner.PROTECTING),
                         (pair.instance_uuid, pair.primary_host, pair.peer_az, pair.project_id,
                          pair.user_id, pair.status))
        self.assertEqual(planner.JOB_STEPS[planner.PROTECT], pair.job.steps)
        self.assertEqual(planner.CHOOSE_BACKUP, pair.job.step)
        self.assertEqual(['h1'], pair.job.exclude)

    def test_create_of_other_flavors_is_ignored(self):
        for specs in ({}, {'dt:enabled': 'false'}, {'hw:cpu_policy': 'dedicated'}):
            self.assertIsNone(planner.plan_instance_event(create(specs=specs), None))

    def test_create_with_specs_the_agent_refuses(self):
        self.assertRaises(ValueError, planner.plan_instance_event,
                          create(specs={'dt:enabled': 'true', 'dt:epoch_ms': '5'}), None)

    def test_create_without_host_is_a_bad_event(self):
        self.assertRaises(planner.BadEvent, planner.plan_instance_event,
                          create(host=None), None)

    def test_repeated_create_changes_nothing(self):
        pair = planner.plan_instance_event(create(), None)
        self.assertIsNone(planner.plan_instance_event(create(), pair))

    def test_delete_plans_release_once(self):
        self.assertIsNone(planner.plan_instance_event(delete(), None))
        pair = planner.plan_instance_event(create(), None)
        pair = planner.plan_instance_event(delete('start'), pair)
        self.assertEqual(planner.RELEASING, pair.status)
        self.assertEqual(planner.JOB_STEPS[planner.RELEASE], pair.job.steps)
        self.assertIsNone(planner.plan_instance_event(delete('end'), pair))

    def test_failover_plans_reconciliation(self):
        pair = protected()
        pair.failover_claim = {'new_host': 'h3', 'old_host': 'h1', 'verdict': 'refused',
                               'reason': 'x'}
        pair = planner.plan_failover(failover(), pair)
        self.assertEqual(('h2', None, None, planner.FAILING_OVER, None),
                         (pair.primary_host, pair.backup_host, pair.backup_rp, pair.status,
                          pair.failover_claim))
        self.assertEqual(planner.JOB_STEPS[planner.FAILOVER], pair.job.steps)
        self.assertEqual(('h2', 'h1', ['h1', 'h2']),
                         (pair.job.new_host, pair.job.old_host, pair.job.exclude))
        self.assertIsNone(pair.job.migration_uuid)

    def test_pending_evacuation_sources(self):
        def record(source, status):
            return {'source_compute': source, 'status': status}
        self.assertEqual(['h1', 'h3', 'h4'], planner.pending_evacuation_sources([
            record('h1', 'done'), record('h1', 'completed'), record('h2', 'completed'),
            record('h3', 'accepted'), record('h4', 'pre-migrating'), record('h5', 'failed'),
            record(None, 'done')]))
        self.assertEqual([], planner.pending_evacuation_sources([]))

    def test_failover_records_the_evacuation_after_the_move_before_the_backup(self):
        steps = planner.JOB_STEPS[planner.FAILOVER]
        self.assertEqual(
            (planner.SET_INSTANCE_HOST, planner.BIND_PORTS, planner.MOVE_ALLOCATIONS,
             planner.RECORD_EVACUATION, planner.CHOOSE_BACKUP),
            steps[:5])

    def test_failover_without_peer_host_uses_recorded_primary(self):
        pair = planner.plan_failover(failover(old=None), protected())
        self.assertEqual('h1', pair.job.old_host)

    def test_retry_protection_only_without_backup(self):
        pair = planner.Pair(U, primary_host='h1', status=planner.NO_BACKUP)
        self.assertEqual(planner.CHOOSE_BACKUP, planner.plan_retry_protection(pair).job.step)
        self.assertIsNone(planner.plan_retry_protection(pair))
        self.assertIsNone(planner.plan_retry_protection(
            planner.Pair(U, primary_host='h1', status=planner.PROTECTED)))

    def test_records_round_trip(self):
        pair = planner.plan_failover(failover(), protected())
        pair.job.advance()
        pair.job.failures = 2
        pair.job.migration_uuid = 'm1'
        again = planner.Pair.from_dict(pair.to_dict())
        self.assertEqual(pair.to_dict(), again.to_dict())
        self.assertEqual(planner.BIND_PORTS, again.job.step)
        self.assertEqual('m1', again.job.migration_uuid)
        # A record written before jobs had a migration UUID.
        d = pair.to_dict()
        del d['job']['migration_uuid']
        self.assertIsNone(planner.Pair.from_dict(d).job.migration_uuid)
        # A failover not acted on, and a record written before those were recorded.
        planner.record_failover_claim(pair, failover('h3'), planner.CLAIM_UNVERIFIED, 'r')
        again = planner.Pair.from_dict(pair.to_dict())
        self.assertEqual({'new_host': 'h3', 'old_host': 'h1', 'verdict': 'unverified',
                          'reason': 'r'}, again.failover_claim)
        d = pair.to_dict()
        del d['failover_claim']
        self.assertIsNone(planner.Pair.from_dict(d).failover_claim)


class TestFailoverVerdict(test.NoDBTestCase):
    """Which failover events the controller acts on (security issue #11, item 6)."""

    def verdict(self, event, pair, status=None):
        return tuple(planner.failover_verdict(event, pair, status))

    def test_the_pairs_failover_is_verified_then_accepted(self):
        pair = protected()
        self.assertEqual((planner.VERIFY, None), self.verdict(failover(), pair))
        self.assertEqual((planner.VERIFY, None), self.verdict(failover(old=None), pair))
        for views in ([('primary', 'unprotected')],      # restored, not protected yet
                      [('primary', 'seeding')],          # protected again since
                      [('backup', 'failing-over'), ('primary', 'protected')]):
            self.assertEqual((planner.ACCEPT, None),
                             self.verdict(failover(), pair, agent('h2', *views)), views)

    def test_what_is_refused_before_asking(self):
        for event, pair, reason in (
                (failover(), None, 'the controller protects no such server'),
                (failover('h3'), protected(), "new host h3 is not the pair's backup host h2"),
                (failover(old='h3'), protected(),
                 "lost primary h3 is not the pair's primary host h1"),
                (failover(), protected(backup=None),
                 'the pair has no backup host (status protected); new host h2'),
                (failover(), planner.plan_instance_event(create(), None),
                 'the pair has no backup host (status protecting); new host h2')):
            self.assertEqual((planner.REFUSE, reason), self.verdict(event, pair))
            # What an agent says does not change it.
            self.assertEqual((planner.REFUSE, reason),
                             self.verdict(event, pair, agent('h2', ('primary', 'seeding'))))

    def test_what_the_agent_refuses(self):
        pair = protected()
        for status, reason in (
                (agent('h2', ('backup', 'protected')),
                 'the agent on h2 has the server as backup (protected), not as the primary'),
                (agent('h2', ('backup', 'degraded')), 'as backup (degraded)'),
                (agent('h2'), 'the agent on h2 does not have the server'),
                (agent('h3', ('primary', 'unprotected')),
                 "the status asked of h2 came from the agent on 'h3'"),
                ({'host': 'h2', 'protected_servers': 'x'}, 'has no protected_servers list'),
                ([], 'has no protected_servers list'),
                (None, None)):
            verdict = self.verdict(failover(), pair, status)
            if status is None:
                self.assertEqual(planner.VERIFY, verdict[0])
                continue
            self.assertEqual(planner.REFUSE, verdict[0], status)
            self.assertIn(reason, verdict[1])

    def test_redeliveries_and_deleted_servers_are_ignored(self):
        pair = planner.plan_failover(failover(), protected())
        self.assertEqual(planner.IGNORE, self.verdict(failover(), pair)[0])   # in progress
        pair.job = None
        self.assertEqual(planner.IGNORE, self.verdict(failover(), pair)[0])   # done
        pair = planner.plan_instance_event(delete(), protected())
        self.assertEqual(planner.IGNORE, self.verdict(failover(), pair)[0])
        # A failover back to h1 is a new one, and h1 is no backup of the pair (none yet).
        pair = planner.plan_failover(failover(), protected())
        self.assertEqual(planner.REFUSE, self.verdict(failover('h1', 'h2'), pair)[0])

    def test_claims(self):
        pair = protected()
        self.assertIsNone(planner.unverified_failover(pair))
        planner.record_failover_claim(pair, failover(), planner.CLAIM_UNVERIFIED, 'silent')
        self.assertEqual(failover(), planner.unverified_failover(pair))
        planner.record_failover_claim(pair, failover(), planner.CLAIM_REFUSED, 'no')
        self.assertIsNone(planner.unverified_failover(pair))
        self.assertEqual({'new_host': 'h2', 'old_host': 'h1', 'verdict': 'refused',
                          'reason': 'no'}, pair.failover_claim)


class TestChooseBackup(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.hosts = hosts(fakes.host('a1', 'az1'), fakes.host('a2', 'az1'),
                           fakes.host('b1', 'az2'), fakes.host('b2', 'az2'),
                           fakes.host('c1', 'az3'))
        self.room = {h.rp_uuid: planner.Candidate(h.rp_uuid, 1000)
                     for h in self.hosts.values()}

    def choose(self, primary='a1', peer_az=None, candidates=None, links=None, exclude=(),
               delay=lambda s: s):
        return planner.choose_backup(primary, peer_az, self.hosts,
                                     self.room if candidates is None else candidates,
                                     links, exclude, delay)

    def test_other_az_first_by_name(self):
        self.assertEqual(('b1', 'rp-b1', None), tuple(self.choose()))

    def test_peer_az(self):
        self.assertEqual('c1', self.choose(peer_az='az3').host)
        choice = self.choose(peer_az='az9')
        self.assertIsNone(choice.host)
        self.assertIn('availability zone az9', choice.reason)

    def test_peer_az_after_failover_means_any_other_zone(self):
        self.assertEqual('a2', self.choose(primary='c1', peer_az='az3', exclude=['a1']).host)
        self.assertTrue(planner.backup_zone_ok('az1', 'az3', 'az3'))
        self.assertFalse(planner.backup_zone_ok('az1', 'az2', 'az3'))
        self.assertTrue(planner.backup_zone_ok('az3', 'az2', 'az3'))
        self.assertFalse(planner.backup_zone_ok('az3', 'az3', 'az3'))

    def test_not_capable_disabled_and_excluded_hosts_are_skipped(self):
        self.hosts['b1'] = fakes.host('b1', 'az2', capable=False)
        self.hosts['b2'] = fakes.host('b2', 'az2', enabled=False)
        self.assertEqual('c1', self.choose().host)
        self.assertIsNone(self.choose(exclude=['c1']).host)

    def test_room_from_placement(self):
        self.room.pop('rp-b1')
        self.room.pop('rp-b2')
        self.assertEqual('c1', self.choose().host)
        choice = self.choose(candidates={})
        self.assertIsNone(choice.host)
        self.assertIn('has room', choice.reason)

    def test_rank_link_delay_then_free_ram_then_name(self):
        links = {'a1': {'c1': 1.0, 'b2': 2.0, 'a2': 0.1}}
        self.assertEqual('c1', self.choose(links=links).host)
        self.room['rp-b2'] = planner.Candidate('rp-b2', 5000)
        self.assertEqual('b2', self.choose().host)
        # Links from another host do not count.
        self.assertEqual('b2', self.choose(links={'b1': {'c1': 0.0}}).host)

    def test_unknown_primary(self):
        self.assertIn('not a compute host', self.choose(primary='zz').reason)

    def test_eligible_and_aggregates(self):
        eligible = planner.eligible_hosts('b1', None, self.hosts)
        self.assertEqual(['a1', 'a2', 'c1'], [h.host for h in eligible])
        self.assertEqual(['agg-az1', 'agg-az3'], planner.backup_aggregates(eligible))


class TestAllocations(test.NoDBTestCase):

    def test_moved_allocations(self):
        current = {'rp1': {'generation': 3, 'resources': {'VCPU': 2, 'MEMORY_MB': 512}},
                   'shared': {'resources': {'DISK_GB': 10}}}
        self.assertEqual({'rp2': {'resources': {'VCPU': 2, 'MEMORY_MB': 512}},
                          'shared': {'resources': {'DISK_GB': 10}}},
                         planner.moved_allocations(current, 'rp1', 'rp2'))
        self.assertEqual({'VCPU': 2, 'MEMORY_MB': 512},
                         planner.compute_resources(current, 'rp1'))
        self.assertEqual({}, planner.compute_resources(current, 'rp9'))

    def test_same_allocations(self):
        wanted = {'rp': {'resources': {'VCPU': 1}}}
        self.assertTrue(planner.same_allocations(
            {'rp': {'generation': 1, 'resources': {'VCPU': 1}}}, wanted))
        self.assertFalse(planner.same_allocations({}, wanted))
        self.assertFalse(planner.same_allocations({'rp': {'resources': {'VCPU': 2}}}, wanted))

    def test_backoff(self):
        self.assertEqual([1.0, 2.0, 4.0, 30.0],
                         [planner.backoff(n, 1.0) for n in (1, 2, 3, 9)])
