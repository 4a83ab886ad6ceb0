"""nova-dt in Nova's functional harness: DT flavors, pair placement, backup claims, failover."""

from nova import context as nova_context
from nova import objects
from nova.tests.functional.api import client as api_client

from nova_dt.controller import planner
from nova_dt.tests.functional import base


class TestDTFlavor(base.DTFunctionalTestCase):

    HOSTS = {'host1': 'az1', 'host2': 'az2'}

    def test_bad_extra_specs_refused_by_the_api(self):
        flavor = self._create_flavor(memory_mb=1024, vcpu=1, disk=5, ephemeral=0)
        self.admin_api.microversion = '2.86'
        for specs, message in (({'dt:enabled': 'maybe'}, 'not a valid boolean-like value'),
                               ({'dt:epoch_ms': '5'}, "less than the min value of '10'"),
                               ({'dt:max_failover_ms': '+100'}, 'not a plain decimal integer'),
                               ({'dt:peer_az': 'a:b'}, 'not a valid availability zone'),
                               ({'dt:enable': 'true'},
                                "'dt:enable' does not appear to be a valid extra spec")):
            exc = self.assertRaises(api_client.OpenStackApiException,
                                    self.admin_api.post_extra_spec, flavor,
                                    {'extra_specs': specs})
            self.assertEqual(400, exc.response.status_code, specs)
            self.assertIn(message, exc.response.text, specs)
        self.assertEqual({}, self.admin_api.get_extra_specs(flavor))
        good = {'dt:enabled': 'true', 'dt:epoch_ms': '100', 'dt:peer_az': 'az2',
                'dt:max_failover_ms': '5000'}
        self.admin_api.post_extra_spec(flavor, {'extra_specs': good})
        self.assertEqual(good, self.admin_api.get_extra_specs(flavor))

    def test_non_dt_server_unaffected(self):
        flavor = self._create_flavor(memory_mb=1024, vcpu=1, disk=5, ephemeral=0,
                                     extra_spec={'hw:watchdog_action': 'disabled'})
        server = self.boot(flavor)
        self.feed_nova_notifications()
        self.assertIsNone(self.pair(server))
        self.assertEqual([], self.controller.store.all())
        self.assertEqual({}, self.allocations(self.reservation(server)))
        self.assertEqual([], self.agents.casts)
        self._delete_server(server)
        self.feed_nova_notifications()
        self.assertEqual([], self.agents.casts)


class TestDTPairs(base.DTFunctionalTestCase):
    """host1 and host3 in az1, host2 in az2; DT flavors pin the backup to az2 (dt:peer_az)."""

    def setUp(self):
        super().setUp()
        self.flavor_id = self.create_dt_flavor(**{'dt:peer_az': 'az2'})
        self.flavor = self.admin_api.get_flavor(self.flavor_id)
        self.resources = self.flavor_resources(self.flavor)

    def boot_protected(self):
        server = self.boot(self.flavor_id, port=self.neutron.port_1['id'])
        self.feed_nova_notifications('instance.create.end')
        return server

    def test_create_places_primary_and_claims_backup_in_other_az(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        self.assertEqual('az1', self.HOSTS[primary])
        self.assertEqual('az1', self.admin_api.get_server(server['id'])[
            'OS-EXT-AZ:availability_zone'])
        pair = self.pair(server)
        self.assertEqual((primary, 'host2', planner.PROTECTED, None),
                         (pair.primary_host, pair.backup_host, pair.status, pair.job))
        self.assertNotEqual(self.HOSTS[pair.primary_host], self.HOSTS[pair.backup_host])
        # The backup's resources are held in Placement by the reservation consumer.
        self.assertEqual({self.rp('host2'): self.resources},
                         self.allocations(self.reservation(server)))
        self.assertEqual(self.resources, self.usages('host2'))
        self.assertEqual({self.rp(primary): self.resources}, self.allocations(server['id']))
        self.assertEqual([('protect', primary, server['id'], 'host2')], self.agents.casts)
        # A redelivered notification changes nothing.
        self.feed_nova_notifications('instance.create.end')
        self.assertEqual(1, len(self.agents.casts))
        self.assertEqual(self.resources, self.usages('host2'))

    def test_backup_claims_count_for_the_scheduler(self):
        # Each fake host has (8192 - 512 reserved) MB * 1.5 (the harness's allocation ratio)
        # = 11520 MB in Placement: room for one 6144 MB server or backup, not two.
        flavor = self.create_dt_flavor(memory_mb=6144, **{'dt:peer_az': 'az2'})
        first = self.boot(flavor)
        self.feed_nova_notifications('instance.create.end')
        self.assertEqual('host2', self.pair(first).backup_host)
        # host3 (or host1) could take a second primary, but its only partner, host2, is full
        # with the first server's backup claim: DTPairFilter finds no partner.
        second = self.boot(flavor, expected_state='ERROR')
        self.assertIn('No valid host', self.admin_api.get_server(second['id'])['fault'][
            'message'])
        self._delete_server(second)
        # Deleting the first server releases its claim; a new DT server fits again.
        self._delete_server(first)
        self.feed_nova_notifications('instance.delete.end')
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}, self.usages('host2'))
        self.notifier.reset()
        third = self.boot(flavor)
        self.feed_nova_notifications('instance.create.end')
        self.assertEqual(planner.PROTECTED, self.pair(third).status)

    def test_delete_releases_claim_and_unprotects(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        self._delete_server(server)
        self.feed_nova_notifications('instance.delete.start')
        self.feed_nova_notifications('instance.delete.end')
        self.assertIsNone(self.pair(server))
        self.assertEqual({}, self.allocations(self.reservation(server)))
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}, self.usages('host2'))
        self.assertEqual(('unprotect', primary, server['id']), self.agents.casts[-1])
        self.assertEqual(2, len(self.agents.casts))

    def test_lost_delete_notification_is_caught_by_resume(self):
        server = self.boot_protected()
        self._delete_server(server)
        self.controller.resume()   # Nova's database says the server is gone
        self.assertIsNone(self.pair(server))
        self.assertEqual({}, self.allocations(self.reservation(server)))
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}, self.usages('host2'))

    def failover(self, server, primary, new='host2', force_down=True, genuine=True):
        """What happens when ``primary`` dies: the backup's agent restores the server on
        ``new`` and says so; Nova's view of the dead host is that its nova-compute is down
        (forced down here, as an operator or a host monitor does). Not ``genuine``: only the
        event, nothing happened on the agents (the controller asks ``new``'s agent, a fake)."""
        if force_down:
            service = self.admin_api.get_services(binary='nova-compute', host=primary)[0]
            self.admin_api.put_service_force_down(service['id'], True)
        if genuine:
            self.agents.fail_over(server['id'], new)
        self.feed_agent_notification('dt.pair.failover.end', {
            'instance_uuid': server['id'], 'host': new, 'role': 'primary',
            'state': 'running', 'reason': '', 'peer_host': primary, 'committed_epoch': 7,
            'duration_ms': 640, 'new_host': new})

    def migrations(self, server):
        """(source, dest, status) of the server's migration records, oldest first."""
        return [(m['source_compute'], m['dest_compute'], m['status'])
                for m in sorted(self.admin_api.api_get('/os-migrations').body['migrations'],
                                key=lambda m: m['id'])
                if m['instance_uuid'] == server['id']]

    def test_failover_reconciles_nova_neutron_placement_and_reprotects(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        other = 'host3' if primary == 'host1' else 'host1'
        self.failover(server, primary)

        shown = self.admin_api.get_server(server['id'])
        self.assertEqual('host2', shown['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('host2', shown['OS-EXT-SRV-ATTR:hypervisor_hostname'])
        self.assertEqual('az2', shown['OS-EXT-AZ:availability_zone'])
        self.assertEqual('ACTIVE', shown['status'])
        # The port is bound to the new primary.
        port = self.neutron.show_port(self.neutron.port_1['id'])['port']
        self.assertEqual('host2', port['binding:host_id'])
        # The server's allocation moved to host2, where the claim held the room; the lost
        # primary is free; the new backup (the other az1 host) is claimed.
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))
        self.assertEqual(self.resources, self.usages('host2'))
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}, self.usages(primary))
        self.assertEqual({self.rp(other): self.resources},
                         self.allocations(self.reservation(server)))
        pair = self.pair(server)
        self.assertEqual(('host2', other, planner.PROTECTED, None),
                         (pair.primary_host, pair.backup_host, pair.status, pair.job))
        self.assertEqual(('protect', 'host2', server['id'], other), self.agents.casts[-1])

        # The event again (redelivery) changes nothing.
        self.failover(server, primary)
        self.assertEqual(2, len(self.agents.casts))
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))

        # Nova works with the server where it now is: deleting it runs on host2 and frees
        # host2's resources; the controller drops the new claim.
        self._delete_server(server)
        self.feed_nova_notifications('instance.delete.end')
        self.assertEqual({}, self.allocations(server['id']))
        self.assertEqual({}, self.allocations(self.reservation(server)))
        for host in self.HOSTS:
            self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}, self.usages(host))
        self.assertEqual(('unprotect', 'host2', server['id']), self.agents.casts[-1])

    def test_lost_primary_coming_back_destroys_its_stale_guest(self):
        """As Nova's own evacuate tests do (test_servers.ServerMovingTests._test_evacuate):
        the source compute stopped and forced down, the server moved, the source compute
        restarted with its hypervisor's guests kept, then forced up."""
        server = self.boot_protected()
        primary = self.host_of(server)
        other = 'host3' if primary == 'host1' else 'host1'
        service_id = self.admin_api.get_services(binary='nova-compute', host=primary)[0]['id']
        lost = self.computes[primary]
        self.assertIn(server['id'], lost.manager.driver.list_instance_uuids())
        lost.stop()   # the host is lost; its guest stays defined in its hypervisor
        self.failover(server, primary)

        # The record Nova's evacuate leaves once the server runs on the destination.
        migration = self._wait_for_migration_status(server, ['done'])
        # dest_host: the destination's my_ip (what libvirt's get_host_ip_addr returns; the fake
        # driver's is a constant), as its compute node reports it.
        dest_ip = [h['host_ip'] for h in self.admin_api.api_get(
            '/os-hypervisors/detail').body['hypervisors'] if h['service']['host'] == 'host2']
        flavor_db_id = objects.Flavor.get_by_flavor_id(
            nova_context.get_admin_context(), self.flavor_id).id
        self.assertEqual(
            ('evacuation', primary, primary, 'host2', 'host2', dest_ip[0],
             flavor_db_id, flavor_db_id),
            (migration['migration_type'], migration['source_compute'],
             migration['source_node'], migration['dest_compute'], migration['dest_node'],
             migration['dest_host'], migration['old_instance_type_id'],
             migration['new_instance_type_id']))
        self.assertEqual(1, len(self.admin_api.api_get('/os-migrations').body['migrations']))
        # Nova itself reads it: the host cannot be forced up before its nova-compute has
        # started and cleaned up.
        exc = self.assertRaises(api_client.OpenStackApiException,
                                self.admin_api.put_service_force_down, service_id, False)
        self.assertEqual(400, exc.response.status_code)
        self.assertIn('`done` evacuation migration records remain', exc.response.text)

        # The lost primary comes back.
        self.computes[primary] = self.restart_compute_service(lost)
        self.admin_api.put_service_force_down(service_id, False)

        self.assertNotIn(server['id'],
                         self.computes[primary].manager.driver.list_instance_uuids())
        self.assertIn('Destroying instance as it has been evacuated from this host but still '
                      'exists in the hypervisor', self.stdlog.logger.output)
        self._wait_for_migration_status(server, ['completed'])
        # Its clean-up of the server's allocation on its provider found nothing: the controller
        # had moved it. The server holds host2, the new backup claim the other az1 host.
        self.assertIn('Expected to find allocations referencing resource provider tree rooted '
                      'at %s' % self.rp(primary), self.stdlog.logger.output)
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))
        self.assertEqual({self.rp(other): self.resources},
                         self.allocations(self.reservation(server)))
        self.assertEqual({'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}, self.usages(primary))
        self.assertEqual(self.resources, self.usages('host2'))
        self.assertEqual(self.resources, self.usages(other))
        shown = self.admin_api.get_server(server['id'])
        self.assertEqual(('ACTIVE', 'host2'), (shown['status'], shown['OS-EXT-SRV-ATTR:host']))
        pair = self.pair(server)
        self.assertEqual(('host2', other, planner.PROTECTED, None),
                         (pair.primary_host, pair.backup_host, pair.status, pair.job))

        # A later restart finds nothing more to do.
        self.computes[primary] = self.restart_compute_service(self.computes[primary])
        self._wait_for_migration_status(server, ['completed'])
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))

    def test_lost_primary_is_no_backup_until_its_compute_has_restarted(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        other = 'host3' if primary == 'host1' else 'host1'
        other_id = self.admin_api.get_services(binary='nova-compute', host=other)[0]['id']
        self.admin_api.put_service(other_id, {'status': 'disabled'})
        # The agents lost each other, not the primary its nova-compute: it keeps reporting,
        # enabled, and keeps its guest, which it would destroy (it has the server's UUID) the
        # next time it starts.
        self.failover(server, primary, force_down=False)
        self.assertEqual([(primary, 'host2', 'done')], self.migrations(server))
        self.controller.resume()
        pair = self.pair(server)
        self.assertEqual((planner.NO_BACKUP, None), (pair.status, pair.backup_host))
        self.assertIn('removed the server\'s stale guest: %s' % primary, pair.reason)
        self.assertEqual({}, self.allocations(self.reservation(server)))

        self.computes[primary] = self.restart_compute_service(self.computes[primary])
        self.assertEqual([(primary, 'host2', 'completed')], self.migrations(server))
        self.assertNotIn(server['id'],
                         self.computes[primary].manager.driver.list_instance_uuids())
        self.controller.resume()
        pair = self.pair(server)
        self.assertEqual((planner.PROTECTED, primary), (pair.status, pair.backup_host))
        self.assertEqual({self.rp(primary): self.resources},
                         self.allocations(self.reservation(server)))
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))

    def nova_view(self, *servers):
        """What a failover would change: hosts, port bindings, allocations, usages, records."""
        return ([self.admin_api.get_server(s['id'])['OS-EXT-SRV-ATTR:host'] for s in servers],
                [self.allocations(s['id']) for s in servers],
                [self.allocations(self.reservation(s)) for s in servers],
                {h: self.usages(h) for h in self.HOSTS},
                sorted((p['id'], p.get('binding:host_id'))
                       for p in self.neutron.list_ports(True)['ports']),
                self.admin_api.api_get('/os-migrations').body['migrations'])

    def test_forged_failover_events_change_nothing(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        other = 'host3' if primary == 'host1' else 'host1'
        plain = self.boot(self._create_flavor(memory_mb=512, vcpu=1, disk=1, ephemeral=0))
        before = self.nova_view(server, plain)
        pair = self.pair(server).to_dict()
        for target, new, old, reason in (
                (plain, 'host2', self.host_of(plain), 'the controller protects no such server'),
                (server, other, primary, "new host %s is not the pair's backup host host2"
                 % other),
                (server, 'host2', other, "lost primary %s is not the pair's primary host %s"
                 % (other, primary)),
                # The pair's own hosts; host2's agent (a fake) still backs the server up.
                (server, 'host2', primary, 'the agent on host2 has the server as backup '
                 '(protected), not as the primary')):
            self.failover(target, old, new=new, force_down=False, genuine=False)
            self.assertEqual(before, self.nova_view(server, plain), reason)
            self.assertIn('Server %s: not acting on its failover to %s' % (target['id'], new),
                          self.stdlog.logger.output)
            self.assertIn(reason, self.stdlog.logger.output)
        record = self.pair(server).to_dict()
        self.assertEqual('refused', record.pop('failover_claim')['verdict'])
        pair.pop('failover_claim')
        self.assertEqual(pair, record)
        self.assertIsNone(self.pair(plain))
        self.assertEqual(1, len(self.agents.casts))
        # The genuine one is reconciled.
        self.failover(server, primary)
        self.assertEqual('host2', self.host_of(server))
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))

    def test_failover_to_a_backup_with_a_pending_record_closes_it(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        self.failover(server, primary)
        # The controller never makes a host with a pending evacuation record of the server
        # its backup; a pair recorded so anyway (e.g. by an earlier version) whose agents bring
        # the server back to the lost primary before its nova-compute restarted: the guest there
        # is the server again.
        pair = self.pair(server)
        pair.backup_host, pair.backup_rp = primary, self.rp(primary)
        self.controller.store.put(pair)
        self.agents.run(primary, server['id'], 'backup', 'protected', 'host2')
        self.failover(server, 'host2', new=primary, force_down=False)
        self.assertEqual(primary, self.host_of(server))
        self.assertEqual([(primary, 'host2', 'completed'), ('host2', primary, 'done')],
                         self.migrations(server))
        self.assertEqual({self.rp(primary): self.resources}, self.allocations(server['id']))
        # Its nova-compute starting neither destroys the server nor takes its allocation.
        self.computes[primary] = self.restart_compute_service(self.computes[primary])
        self.assertIn(server['id'], self.computes[primary].manager.driver.list_instance_uuids())
        self.assertEqual({self.rp(primary): self.resources}, self.allocations(server['id']))
        self.assertEqual('ACTIVE', self.admin_api.get_server(server['id'])['status'])
        # host2's does its part of the second record.
        self.computes['host2'] = self.restart_compute_service(self.computes['host2'])
        self.assertEqual([(primary, 'host2', 'completed'), ('host2', primary, 'completed')],
                         self.migrations(server))
        self.assertEqual({self.rp(primary): self.resources}, self.allocations(server['id']))

    def test_failover_without_a_new_backup(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        other = 'host3' if primary == 'host1' else 'host1'
        service = self.admin_api.get_services(binary='nova-compute', host=other)[0]
        self.admin_api.put_service(service['id'], {'status': 'disabled'})
        self.failover(server, primary)

        self.assertEqual('host2', self.host_of(server))
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))
        self.assertEqual({}, self.allocations(self.reservation(server)))
        pair = self.pair(server)
        self.assertEqual((planner.NO_BACKUP, 'host2', None),
                         (pair.status, pair.primary_host, pair.backup_host))
        self.assertIn('no enabled DT-capable compute host', pair.reason)
        self.assertEqual(1, len(self.agents.casts))

        # Once the host is back, the periodic resume protects the server again.
        self.admin_api.put_service(service['id'], {'status': 'enabled'})
        self.controller.resume()
        pair = self.pair(server)
        self.assertEqual((planner.PROTECTED, other), (pair.status, pair.backup_host))
        self.assertEqual({self.rp(other): self.resources},
                         self.allocations(self.reservation(server)))
        self.assertEqual(('protect', 'host2', server['id'], other), self.agents.casts[-1])

    def test_controller_restart_resumes_failover(self):
        server = self.boot_protected()
        primary = self.host_of(server)
        # The first controller cannot reach Neutron: the failover stops at the port binding.
        original = self.neutron.update_port

        def broken(port_id, body=None):
            raise RuntimeError('neutron unreachable')
        self.neutron.update_port = broken
        self.failover(server, primary)
        pair = self.pair(server)
        self.assertEqual((planner.FAILING_OVER, planner.BIND_PORTS),
                         (pair.status, pair.job.step))
        self.assertIn('neutron unreachable', pair.reason)
        self.assertEqual('host2', self.host_of(server))
        # A new controller process on the same state directory finishes the job.
        self.neutron.update_port = original
        self.controller.store.close()
        self.controller = self.make_controller()
        self.controller.resume()
        pair = self.pair(server)
        self.assertEqual((planner.PROTECTED, 'host2'), (pair.status, pair.primary_host))
        self.assertEqual({self.rp('host2'): self.resources}, self.allocations(server['id']))
        self.assertEqual('host2', self.neutron.show_port(self.neutron.port_1['id'])['port'][
            'binding:host_id'])
