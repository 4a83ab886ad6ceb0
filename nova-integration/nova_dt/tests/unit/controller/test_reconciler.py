"""The reconciler on fakes: each job's effects, idempotency, retries, and resuming after a crash."""

import copy
import os

import fixtures
from oslo_utils import uuidutils

from nova import test

from nova_dt import exception as dt_exception
from nova_dt.controller import clients
from nova_dt.controller import planner
from nova_dt.controller import reconciler
from nova_dt.controller import state
from nova_dt.tests.unit.controller import fakes

U = '8f0b7e0e-1a43-4b6e-b4ab-6d3f3f1ea001'
V = '8f0b7e0e-1a43-4b6e-b4ab-6d3f3f1ea002'
DT = {'dt:enabled': 'true'}
INVENTORY = {'VCPU': 8, 'MEMORY_MB': 8192, 'DISK_GB': 100}


class ReconcilerTestCase(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.state_dir = self.useFixture(fixtures.TempDir()).path
        self.placement = fakes.FakePlacement()
        self.compute = fakes.FakeCompute()
        self.network = fakes.FakeNetwork()
        self.agents = fakes.FakeAgents()
        self.sleeps = []
        for name, az in (('a1', 'az1'), ('a2', 'az1'), ('b1', 'az2'), ('b2', 'az2')):
            self.add_host(name, az)
        self.rec = self.make_reconciler()

    def add_host(self, name, az, inventory=INVENTORY, **kwargs):
        view = fakes.host(name, az, **kwargs)
        self.compute.host_views[name] = view
        self.placement.add_provider(view.rp_uuid, inventory, aggregates=view.aggregates)
        return view

    def make_reconciler(self, **kwargs):
        kwargs.setdefault('step_attempts', 3)
        return reconciler.Reconciler(
            state.StateStore.in_dir(self.state_dir), self.placement, self.compute,
            self.network, self.agents, retry_interval=0.5, sleep=self.sleeps.append, **kwargs)

    def boot(self, uuid=U, host='a1', resources=fakes.FLAVOR):
        """A server Nova placed on ``host``: its allocation, record and port."""
        self.placement.set_allocations(uuid, {'rp-' + host: dict(resources)}, 'proj', 'user')
        self.compute.instances[uuid] = {'host': host, 'node': host + '-node', 'az': None}
        self.network.add_port('port-' + uuid, uuid, host)

    def create(self, uuid=U, host='a1', specs=DT):
        return self.rec.handle_nova_notification('instance.create.end',
                                                 fakes.payload(uuid, host, specs))

    def failover(self, new='b1', old='a1', uuid=U, genuine=True):
        """An agent's dt.pair.failover.end; ``genuine``: the agent on ``new`` took the server
        over first (else the event is all there is)."""
        if genuine:
            self.agents.fail_over(uuid, new)
        return self.rec.handle_agent_notification('dt.pair.failover.end',
                                                  fakes.failover_payload(uuid, new, old))

    def claim_of(self, uuid=U):
        return self.placement.usages(planner.reservation_consumer(uuid))

    def record(self, uuid=U):
        return self.rec.store.get(uuid)


class TestProtect(ReconcilerTestCase):

    def test_dt_server_gets_a_claimed_backup_in_another_az(self):
        self.boot()
        pair = self.create()
        self.assertEqual(('b1', 'rp-b1', planner.PROTECTED, None),
                         (pair.backup_host, pair.backup_rp, pair.status, pair.job))
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.claim_of())
        consumer = self.placement.consumers[planner.reservation_consumer(U)]
        self.assertEqual(('proj', 'user'), (consumer['project_id'], consumer['user_id']))
        self.assertEqual([('protect', 'a1', U, 'b1')], self.agents.casts)
        self.assertEqual(pair.to_dict(), self.record().to_dict())
        # Placement was asked for hosts of the other zone's aggregate only, not disabled ones.
        self.assertEqual((fakes.FLAVOR, ['agg-az2'], ['COMPUTE_STATUS_DISABLED']),
                         self.placement.last_candidates_query)

    def test_other_flavors_are_left_alone(self):
        self.boot()
        for specs in ({}, {'dt:enabled': 'false'}, {'dt:enabled': 'true', 'dt:epoch_ms': '1'}):
            self.assertIsNone(self.create(specs=specs))
        self.assertEqual([], self.rec.store.all())
        self.assertEqual({}, self.claim_of())
        self.assertEqual([], self.agents.casts)

    def test_redelivered_create_is_a_no_op(self):
        self.boot()
        self.create()
        self.create()
        self.assertEqual(1, self.placement.calls['put_allocations'])
        self.assertEqual(1, len(self.agents.casts))

    def test_peer_az_and_link_ranking(self):
        self.add_host('c1', 'az3')
        self.add_host('c2', 'az3')
        self.rec = self.make_reconciler(links=lambda: {'a1': {'c2': 1, 'c1': 5}},
                                        link_delay=lambda s: s)
        self.boot()
        self.assertEqual('c2', self.create(specs=dict(DT, **{'dt:peer_az': 'az3'})).backup_host)

    def test_failing_step_is_retried_with_backoff(self):
        self.boot()
        self.placement.fail('put_allocations', times=2)
        pair = self.create()
        self.assertEqual(planner.PROTECTED, pair.status)
        self.assertEqual(3, self.placement.calls['put_allocations'])
        self.assertEqual([0.5, 1.0], self.sleeps)

    def test_step_failing_every_try_waits_for_resume(self):
        self.boot()
        self.agents.fail('protect', times=3)
        pair = self.create()
        self.assertEqual((planner.PROTECTING, planner.CAST_PROTECT, 1),
                         (pair.status, pair.job.step, pair.job.failures))
        self.assertIn('injected protect failure', self.record().reason)
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.claim_of())
        self.rec.resume()
        self.assertEqual((planner.PROTECTED, None, None),
                         (self.record().status, self.record().job, self.record().reason))
        self.assertEqual([('protect', 'a1', U, 'b1')], self.agents.casts)
        self.assertEqual(1, self.placement.calls['put_allocations'])

    def test_generation_conflict_is_retried(self):
        self.boot()
        self.placement.fail('put_allocations',
                            exc=clients.PlacementConflict('generation', concurrent=True))
        self.assertEqual(planner.PROTECTED, self.create().status)
        self.assertEqual('b1', self.record().backup_host)

    def test_refused_claim_chooses_another_host(self):
        self.boot()
        self.placement.fail('put_allocations',
                            exc=clients.PlacementConflict('no room', concurrent=False))
        pair = self.create()
        self.assertEqual(('b2', planner.PROTECTED), (pair.backup_host, pair.status))
        self.assertEqual({'rp-b2': fakes.FLAVOR}, self.claim_of())

    def test_claims_count_against_room(self):
        small = {'VCPU': 2, 'MEMORY_MB': 2048, 'DISK_GB': 20}
        for h in ('b1', 'b2'):
            self.placement.providers['rp-' + h]['inventory'] = dict(small)
        self.boot(U)
        self.boot(V, host='a2')
        self.assertEqual('b1', self.create(U).backup_host)
        self.assertEqual('b2', self.create(V, host='a2').backup_host)
        W = U.replace('001', '003')
        self.boot(W)
        pair = self.create(W)
        self.assertEqual((planner.NO_BACKUP, None), (pair.status, pair.backup_host))
        self.assertIn('has room', pair.reason)
        self.assertEqual({}, self.claim_of(W))

    def test_server_without_backup_is_protected_once_room_exists(self):
        self.compute.host_views['b1'] = fakes.host('b1', 'az2', enabled=False)
        self.compute.host_views['b2'] = fakes.host('b2', 'az2', capable=False)
        self.boot()
        pair = self.create()
        self.assertEqual(planner.NO_BACKUP, pair.status)
        self.assertIn('no enabled DT-capable compute host', pair.reason)
        self.assertEqual([], self.agents.casts)
        self.rec.resume()
        self.assertEqual(planner.NO_BACKUP, self.record().status)
        self.compute.host_views['b1'] = fakes.host('b1', 'az2')
        self.rec.resume()
        self.assertEqual((planner.PROTECTED, 'b1'),
                         (self.record().status, self.record().backup_host))
        self.assertEqual([('protect', 'a1', U, 'b1')], self.agents.casts)

    def test_server_without_allocation_is_retried(self):
        self.compute.instances[U] = {'host': 'a1', 'node': 'a1-node', 'az': None}
        pair = self.create()
        self.assertEqual(planner.CHOOSE_BACKUP, pair.job.step)
        self.assertIn('no allocation on its primary host a1', pair.reason)


class TestRelease(ReconcilerTestCase):

    def test_server_deleted_while_its_job_waited_is_released(self):
        self.boot()
        self.agents.fail('protect', times=3)
        self.create()
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.claim_of())
        # Deleted, and the delete notification was lost.
        del self.compute.instances[U]
        self.rec.resume()
        self.assertIsNone(self.record())
        self.assertEqual({}, self.claim_of())
        self.assertEqual([('unprotect', 'a1', U)], self.agents.casts)

    def test_protected_server_deleted_without_notification_is_released(self):
        self.boot()
        self.create()
        del self.compute.instances[U]
        self.rec.resume()
        self.assertIsNone(self.record())
        self.assertEqual({}, self.claim_of())

    def test_failover_of_deleted_server_is_released(self):
        self.boot()
        self.create()
        del self.compute.instances[U]
        self.failover()
        self.assertIsNone(self.record())
        self.assertEqual({}, self.claim_of())
        self.assertEqual(('unprotect', 'b1', U), self.agents.casts[-1])

    def test_delete_releases_claim_unprotects_and_forgets(self):
        self.boot()
        self.create()
        self.assertIsNone(self.rec.handle_nova_notification(
            'instance.delete.start', fakes.payload(U, 'a1', DT)))
        self.assertEqual({}, self.claim_of())
        self.assertEqual(('unprotect', 'a1', U), self.agents.casts[-1])
        self.assertIsNone(self.record())
        # delete.end (and any redelivery) finds nothing to do.
        self.rec.handle_nova_notification('instance.delete.end', fakes.payload(U, 'a1', DT))
        self.assertEqual(2, len(self.agents.casts))

    def test_not_found_on_the_agent_is_fine(self):
        self.boot()
        self.create()
        self.agents.fail('unprotect', exc=dt_exception.ServerNotFound('gone'))
        self.rec.handle_nova_notification('instance.delete.end', fakes.payload(U, 'a1', DT))
        self.assertIsNone(self.record())
        self.assertEqual(1, self.agents.calls['unprotect'])

    def test_delete_of_unknown_server_is_ignored(self):
        self.assertIsNone(self.rec.handle_nova_notification(
            'instance.delete.end', fakes.payload(U, 'a1', {})))
        self.assertEqual(0, self.placement.calls['delete_allocations'])


class FailoverTestCase(ReconcilerTestCase):
    """U booted on a1 and protected to b1."""

    EVACUATION = {'instance_uuid': U, 'migration_type': 'evacuation', 'status': 'done',
                  'source_compute': 'a1', 'source_node': 'a1-node',
                  'dest_compute': 'b1', 'dest_node': 'b1-node'}

    def setUp(self):
        super().setUp()
        self.boot()
        self.create()

    def assert_reconciled(self, new_backup='a2'):
        self.assertEqual({'host': 'b1', 'node': 'b1-node', 'az': 'az2'},
                         self.compute.instances[U])
        self.assertEqual('b1', self.network.port_table['port-' + U]['binding:host_id'])
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.placement.usages(U))
        self.assertEqual(fakes.FLAVOR, self.placement.used('rp-b1'))
        self.assertEqual({}, dict(+self.placement.used('rp-a1')))
        # The record Nova's evacuate leaves, for a1's nova-compute when it comes back.
        self.assertEqual([self.EVACUATION], self.compute.records(U))
        pair = self.record()
        self.assertEqual(('b1', new_backup, None),
                         (pair.primary_host, pair.backup_host, pair.job))
        if new_backup:
            self.assertEqual({'rp-' + new_backup: fakes.FLAVOR}, self.claim_of())
            self.assertEqual(('protect', 'b1', U, new_backup), self.agents.casts[-1])
            self.assertEqual(planner.PROTECTED, pair.status)


class TestFailover(FailoverTestCase):

    def test_failover_reconciles_nova_neutron_placement_and_reprotects(self):
        self.failover()
        # The lost primary a1 is never the new backup; a2 is the other az1 host.
        self.assert_reconciled('a2')
        self.assertEqual(2, len(self.agents.casts))

    def test_failover_reconciles_once_its_agent_confirmed(self):
        self.failover()
        self.assertEqual(['b1'], self.agents.status_calls)
        self.assertIsNone(self.record().failover_claim)
        self.assertIn('Server %s failed over from a1 to b1 (confirmed by its agent)' % U,
                      self.stdlog.logger.output)

    def test_repeated_failover_event_is_a_no_op(self):
        self.failover()
        calls = dict(self.placement.calls)
        self.rec.handle_agent_notification('dt.pair.failover.end',
                                           fakes.failover_payload(U, 'b1', 'a1'))
        self.assertEqual(calls, dict(self.placement.calls))
        self.assertEqual(1, self.compute.calls['set_instance_host'])
        self.assertEqual(1, self.compute.calls['create_evacuation'])
        self.assertEqual(1, len(self.compute.migrations))
        # Neither asked again nor refused: a redelivery.
        self.assertEqual(['b1'], self.agents.status_calls)
        self.assertIsNone(self.record().failover_claim)
        self.assertNotIn('not acting on', self.stdlog.logger.output)

    def test_no_new_backup(self):
        self.compute.host_views['a2'] = fakes.host('a2', 'az1', enabled=False)
        self.failover()
        self.assert_reconciled(None)
        pair = self.record()
        self.assertEqual(planner.NO_BACKUP, pair.status)
        self.assertIn('no enabled DT-capable compute host in an availability zone other '
                      'than az2', pair.reason)
        self.assertEqual({}, self.claim_of())

    def test_each_step_retried(self):
        for target, method in ((self.compute, 'set_instance_host'),
                               (self.network, 'bind_port'),
                               (self.placement, 'post_allocations'),
                               (self.compute, 'create_evacuation'),
                               (self.placement, 'allocation_candidates'),
                               (self.agents, 'protect')):
            target.fail(method, times=2)
        self.failover()
        self.assert_reconciled('a2')
        self.assertEqual(12, len(self.sleeps))
        self.assertEqual(3, self.compute.calls['create_evacuation'])

    def test_move_conflict_is_retried_until_resume(self):
        self.placement.fail('post_allocations', times=3,
                            exc=clients.PlacementConflict('generation', concurrent=True))
        pair = self.failover()
        self.assertEqual((planner.FAILING_OVER, planner.MOVE_ALLOCATIONS),
                         (pair.status, pair.job.step))
        self.rec.resume()
        self.assert_reconciled('a2')

    def test_evacuation_record_follows_the_allocation_move(self):
        # No record while the server's allocation is still on the lost primary: a1's
        # nova-compute would remove it from under the move.
        self.placement.fail('post_allocations', times=3)
        pair = self.failover()
        self.assertEqual(planner.MOVE_ALLOCATIONS, pair.job.step)
        self.assertEqual({'rp-a1': fakes.FLAVOR}, self.placement.usages(U))
        self.assertEqual({}, self.compute.migrations)
        # The record is written once the allocation is on b1, where a1's clean-up finds
        # nothing of it; its failures keep the job there.
        self.compute.fail('create_evacuation', times=3)
        self.rec.resume()
        pair = self.record()
        self.assertEqual((planner.FAILING_OVER, planner.RECORD_EVACUATION),
                         (pair.status, pair.job.step))
        self.assertIn('injected create_evacuation failure', pair.reason)
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.placement.usages(U))
        self.assertEqual({}, self.compute.migrations)
        migration_uuid = pair.job.migration_uuid
        self.assertTrue(uuidutils.is_uuid_like(migration_uuid))
        self.rec.resume()
        self.assert_reconciled('a2')
        self.assertEqual([migration_uuid], list(self.compute.migrations))

    def test_lost_primary_is_no_backup_until_its_compute_cleaned_up(self):
        self.compute.host_views['a2'] = fakes.host('a2', 'az1', enabled=False)
        self.failover()
        self.assertEqual(planner.NO_BACKUP, self.record().status)
        # a1's nova-compute reports again (it never stopped: the agents lost each other), but
        # it has not started since, so it would destroy a backup guest of the server there.
        self.rec.resume()
        pair = self.record()
        self.assertEqual((planner.NO_BACKUP, None), (pair.status, pair.backup_host))
        self.assertIn("left out until their nova-compute has started and removed the "
                      "server's stale guest: a1", pair.reason)
        # It restarts: _destroy_evacuated_instances completes the record.
        (migration,) = self.compute.migrations.values()
        migration['status'] = 'completed'
        self.rec.resume()
        pair = self.record()
        self.assertEqual((planner.PROTECTED, 'a1'), (pair.status, pair.backup_host))
        self.assertEqual({'rp-a1': fakes.FLAVOR}, self.claim_of())

    def test_failover_to_a_backup_with_a_pending_record_closes_it(self):
        self.failover()
        # The controller never chooses a host with a pending record of the server as its
        # backup; a pair recorded so anyway (e.g. by an earlier version) and failed over to it:
        # a1's nova-compute must then keep the server.
        pair = self.record()
        self.placement.delete_allocations(pair.reservation)
        pair.backup_host, pair.backup_rp = 'a1', 'rp-a1'
        self.placement.set_allocations(pair.reservation, {'rp-a1': fakes.FLAVOR})
        self.rec.store.put(pair)
        self.agents.run('a1', U, 'backup', 'protected', 'b1')
        self.failover(new='a1', old='b1')
        self.assertEqual({'host': 'a1', 'node': 'a1-node', 'az': 'az1'},
                         self.compute.instances[U])
        self.assertEqual({'rp-a1': fakes.FLAVOR}, self.placement.usages(U))
        first, second = self.compute.records(U)
        # a1's nova-compute must neither destroy the server nor take rp-a1 out of its
        # allocation when it starts; b1's must remove its guest.
        self.assertEqual(dict(self.EVACUATION, status='completed'), first)
        self.assertEqual(dict(self.EVACUATION, source_compute='b1', source_node='b1-node',
                              dest_compute='a1', dest_node='a1-node'), second)
        # b1, with its record pending, is no backup: b2 is.
        pair = self.record()
        self.assertEqual((planner.PROTECTED, 'a1', 'b2'),
                         (pair.status, pair.primary_host, pair.backup_host))

    def test_server_deleted_before_its_evacuation_record_is_released(self):
        self.compute.fail('create_evacuation', exc=clients.ServerGone('deleted'))
        self.assertIsNone(self.failover())
        self.assertIsNone(self.record())
        self.assertEqual({}, self.compute.migrations)
        self.assertEqual({}, self.claim_of())
        self.assertEqual(('unprotect', 'b1', U), self.agents.casts[-1])

    def test_no_evacuation_record_without_a_lost_primary_in_nova(self):
        # A pair whose primary Nova no longer has a compute node for (e.g. removed from Nova
        # since), with its allocation already on b2: nothing to tell, the failover goes on.
        self.boot(V, host='b2')
        self.compute.instances[V] = {'host': 'gone', 'node': 'gone-node', 'az': None}
        self.rec.store.put(planner.Pair(V, primary_host='gone', backup_host='b2',
                                        backup_rp='rp-b2', status=planner.PROTECTED))
        self.agents.run('b2', V, 'backup', 'protected', 'gone')
        self.failover(new='b2', old='gone', uuid=V)
        self.assertEqual({'host': 'b2', 'node': 'b2-node', 'az': 'az2'},
                         self.compute.instances[V])
        self.assertEqual([], self.compute.records(V))
        self.assertEqual(0, self.compute.calls['create_evacuation'])
        self.assertEqual(planner.PROTECTED, self.record(V).status)


class TestFailoverVerification(FailoverTestCase):
    """A dt.pair.failover.end is acted on only for a pair the controller knows, to that pair's
    backup, once the new host's agent said it runs the server as the primary. Anything else
    leaves Nova, Neutron, Placement and the agents as they are, and is logged (and recorded in
    the pair) with the reason."""

    WRITES = ((('compute', 'set_instance_host'), ('compute', 'create_evacuation'),
               ('compute', 'complete_evacuation'), ('network', 'bind_port'),
               ('placement', 'put_allocations'), ('placement', 'post_allocations'),
               ('placement', 'delete_allocations'), ('agents', 'protect'),
               ('agents', 'unprotect')))

    def setUp(self):
        super().setUp()
        # A server the controller does not know (no DT flavor, or protected by hand).
        self.boot(V, host='a2')

    def world(self):
        """Everything a failover would change, and how often each write was called."""
        return copy.deepcopy((
            self.compute.instances, self.compute.migrations, self.network.port_table,
            self.placement.consumers, self.agents.casts,
            [getattr(self, target).calls[method] for target, method in self.WRITES]))

    def assert_refused(self, before, reason, uuid=U, new='b1'):
        self.assertEqual(before, self.world())
        self.assertIn('Server %s: not acting on its failover to %s' % (uuid, new),
                      self.stdlog.logger.output)
        self.assertIn(reason, self.stdlog.logger.output)

    def assert_claim(self, verdict, reason, new='b1', old='a1'):
        """The pair is as it was, with the event not acted on recorded."""
        pair = self.record()
        self.assertEqual(('a1', 'b1', 'rp-b1', planner.PROTECTED, None),
                         (pair.primary_host, pair.backup_host, pair.backup_rp, pair.status,
                          pair.job))
        self.assertEqual({'new_host': new, 'old_host': old, 'verdict': verdict},
                         {k: v for k, v in pair.failover_claim.items() if k != 'reason'})
        self.assertIn(reason, pair.failover_claim['reason'])

    def test_unknown_server_is_refused(self):
        # Even an agent that says it runs the server does not make the controller move a
        # server it does not protect.
        self.agents.run('b2', V, 'primary', 'unprotected', 'a2')
        before = self.world()
        self.assertIsNone(self.failover(new='b2', old='a2', uuid=V, genuine=False))
        self.assert_refused(before, 'the controller protects no such server', V, 'b2')
        self.assertIsNone(self.record(V))
        self.assertEqual([], self.agents.status_calls)

    def test_new_host_not_the_backup_is_refused(self):
        self.agents.run('b2', U, 'primary', 'unprotected', 'a1')  # b2's agent lies
        before = self.world()
        self.failover(new='b2', genuine=False)
        reason = "new host b2 is not the pair's backup host b1"
        self.assert_refused(before, reason, new='b2')
        self.assert_claim(planner.CLAIM_REFUSED, reason, new='b2')
        self.assertEqual([], self.agents.status_calls)

    def test_lost_primary_not_the_pairs_primary_is_refused(self):
        before = self.world()
        self.failover(old='a2', genuine=False)
        reason = "lost primary a2 is not the pair's primary host a1"
        self.assert_refused(before, reason)
        self.assert_claim(planner.CLAIM_REFUSED, reason, old='a2')
        self.assertEqual([], self.agents.status_calls)

    def test_pair_without_backup_is_refused(self):
        self.compute.host_views['a2'] = fakes.host('a2', 'az1', enabled=False)
        self.failover()
        self.assertEqual(planner.NO_BACKUP, self.record().status)  # b1 now, no backup
        before = self.world()
        self.failover(new='a1', old='b1', genuine=False)
        self.assert_refused(before, 'the pair has no backup host (status no_backup); new host '
                            'a1', new='a1')

    def test_agent_that_has_the_server_as_backup_refuses_it(self):
        # A forged event for the right hosts: b1's agent still backs up a1, which runs.
        before = self.world()
        self.failover(genuine=False)
        reason = 'the agent on b1 has the server as backup (protected), not as the primary'
        self.assert_refused(before, reason)
        self.assert_claim(planner.CLAIM_REFUSED, reason)
        self.assertEqual(['b1'], self.agents.status_calls)

    def test_agent_without_the_server_refuses_it(self):
        del self.agents.servers['b1'][U]
        before = self.world()
        self.failover(genuine=False)
        reason = 'the agent on b1 does not have the server'
        self.assert_refused(before, reason)
        self.assert_claim(planner.CLAIM_REFUSED, reason)

    def test_answers_that_prove_nothing_are_refusals(self):
        real_status = self.agents.status
        for answer, reason in (
                ({'host': 'b1'}, 'the status of the agent on b1 has no protected_servers list'),
                (['not', 'a', 'status'], 'has no protected_servers list'),
                # Answered on b1's queue by another agent, with the server as primary.
                (dict(real_status('b2'), host='b2', protected_servers=[
                    {'instance_uuid': U, 'role': 'primary', 'state': 'unprotected'}]),
                 "the status asked of b1 came from the agent on 'b2'")):
            self.agents.status = lambda host, answer=answer: answer
            before = self.world()
            self.failover(genuine=False)
            self.assert_refused(before, reason)
            self.assert_claim(planner.CLAIM_REFUSED, reason)

    def test_agent_not_answering_leaves_it_to_the_next_resume(self):
        self.agents.fail_over(U, 'b1')
        self.agents.fail('status', exc=RuntimeError('Timed out waiting for a reply'))
        before = self.world()
        self.failover(genuine=False)
        reason = ('the agent on b1 did not answer whether the server runs there (asked again '
                  'at the next resume): Timed out waiting for a reply')
        self.assert_refused(before, reason)
        self.assert_claim(planner.CLAIM_UNVERIFIED, reason)
        # Still silent at the first resume: still nothing done.
        self.agents.fail('status', exc=RuntimeError('Timed out again'))
        self.rec.resume()
        self.assertEqual(before, self.world())
        self.assert_claim(planner.CLAIM_UNVERIFIED, 'Timed out again')
        # It answers: the failover is reconciled.
        self.rec.resume()
        self.assert_reconciled('a2')
        self.assertIsNone(self.record().failover_claim)
        self.assertEqual((3, ['b1']), (self.agents.calls['status'], self.agents.status_calls))

    def test_unverified_failover_refused_at_resume_stays_untouched(self):
        self.agents.fail('status')
        before = self.world()
        self.failover(genuine=False)
        self.rec.resume()   # b1's agent answers now: it backs the server up
        reason = 'the agent on b1 has the server as backup (protected), not as the primary'
        self.assert_refused(before, reason)
        self.assert_claim(planner.CLAIM_REFUSED, reason)
        self.rec.resume()   # a refusal is not asked again
        self.assertEqual(2, self.agents.calls['status'])

    def test_genuine_failover_after_a_forged_one(self):
        self.failover(new='b2', genuine=False)
        self.failover(genuine=False)
        self.assertEqual(planner.CLAIM_REFUSED, self.record().failover_claim['verdict'])
        self.failover()
        self.assert_reconciled('a2')
        self.assertIsNone(self.record().failover_claim)

    def test_forged_event_for_a_failed_over_pair(self):
        self.failover()
        # Replayed with the hosts swapped: a1 is not the new pair's backup (a2 is).
        before = self.world()
        self.failover(new='a1', old='b1', genuine=False)
        self.assert_refused(before, "new host a1 is not the pair's backup host a2", new='a1')
        self.assert_reconciled('a2')


class TestResume(ReconcilerTestCase):
    """A controller that dies in a job and restarts (new Reconciler, same state dir)."""

    def restart(self):
        self.rec.store.close()
        self.rec = self.make_reconciler()
        self.rec.resume()

    def test_crash_after_claim_before_record(self):
        self.boot()
        self.placement.crash_after('put_allocations')
        self.assertRaises(fakes.Crash, self.create)
        self.assertEqual(planner.CLAIM_BACKUP, self.record().job.step)
        self.restart()
        self.assertEqual(planner.PROTECTED, self.record().status)
        self.assertEqual(1, self.placement.calls['put_allocations'])  # not claimed twice
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.claim_of())
        self.assertEqual([('protect', 'a1', U, 'b1')], self.agents.casts)

    def test_crash_after_cast_before_record_casts_again_once(self):
        self.boot()
        self.agents.crash_after('protect')
        self.assertRaises(fakes.Crash, self.create)
        self.restart()
        self.assertEqual(2, len(self.agents.casts))
        self.restart()
        self.assertEqual(2, len(self.agents.casts))
        self.assertEqual(planner.PROTECTED, self.record().status)

    def test_crash_in_every_failover_step(self):
        self.boot()
        self.create()
        for target, method in ((self.compute, 'set_instance_host'),
                               (self.network, 'bind_port'),
                               (self.placement, 'post_allocations'),
                               (self.compute, 'create_evacuation'),
                               (self.placement, 'put_allocations'),
                               (self.agents, 'protect')):
            target.crash_after(method)
        self.assertRaises(fakes.Crash, self.failover)
        # Each restart resumes the job and dies in the next step, until none is left.
        for restarts in range(1, 10):
            try:
                self.restart()
                break
            except fakes.Crash:
                pass
        self.assertEqual(6, restarts)
        pair = self.record()
        self.assertEqual((planner.PROTECTED, 'b1', 'a2', None),
                         (pair.status, pair.primary_host, pair.backup_host, pair.job))
        self.assertEqual(1, self.compute.calls['set_instance_host'])
        self.assertEqual(1, self.network.calls['bind_port'])
        self.assertEqual(1, self.placement.calls['post_allocations'])
        self.assertEqual(1, self.compute.calls['create_evacuation'])
        self.assertEqual(1, len(self.compute.migrations))
        self.assertEqual({'rp-b1': fakes.FLAVOR}, self.placement.usages(U))
        self.assertEqual({'rp-a2': fakes.FLAVOR}, self.claim_of())

    def test_evacuation_record_completed_before_the_restart_is_kept(self):
        self.boot()
        self.create()
        self.compute.crash_after('create_evacuation')
        self.assertRaises(fakes.Crash, self.failover)
        self.assertEqual(planner.RECORD_EVACUATION, self.record().job.step)
        # a1 came back meanwhile: its nova-compute destroyed the guest and completed the record.
        (migration,) = self.compute.migrations.values()
        migration['status'] = 'completed'
        self.restart()
        self.assertEqual(planner.PROTECTED, self.record().status)
        self.assertEqual(1, self.compute.calls['create_evacuation'])
        self.assertEqual([migration], list(self.compute.migrations.values()))

    def test_state_survives_in_the_state_dir(self):
        self.boot()
        self.agents.fail('protect', times=3)
        self.create()
        self.assertTrue(os.path.exists(os.path.join(self.state_dir, state.FILE_NAME)))
        self.restart()
        self.assertEqual(planner.PROTECTED, self.record().status)
