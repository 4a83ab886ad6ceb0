"""The controller's view of the services it reads and writes: small interfaces.

The reconciler only sees these; ``nova_clients.py`` implements them over Nova's own code (objects,
report client, neutron client factory) and oslo.messaging, and the unit tests use fakes that hold
state and fail on demand (``nova_dt/tests/unit/controller/fakes.py``). Every method either
succeeds or raises; the reconciler retries failed steps, so implementations need not retry.
"""

import abc


class PlacementConflict(Exception):
    """Placement refused a write with 409.

    ``concurrent`` is True for a generation conflict (someone else changed the consumer or
    provider: read again and retry), False when the resources are not available.
    """

    def __init__(self, message, concurrent):
        super().__init__(message)
        self.concurrent = concurrent


class ServerGone(Exception):
    """The server no longer exists in Nova (deleted while a job was pending)."""


class PlacementAPI(metaclass=abc.ABCMeta):
    """The Placement calls the controller makes (microversion >= 1.28, consumer generations)."""

    @abc.abstractmethod
    def get_allocations(self, consumer_uuid):
        """GET /allocations/{consumer}: dict with ``allocations`` ({rp: {'resources': {}}}),
        ``consumer_generation`` (None when the consumer does not exist), ``project_id``,
        ``user_id`` (absent without allocations)."""

    @abc.abstractmethod
    def put_allocations(self, consumer_uuid, allocations, consumer_generation, project_id,
                        user_id):
        """PUT /allocations/{consumer}: replace the consumer's allocations.

        :raises PlacementConflict: generation conflict or not enough resources.
        """

    @abc.abstractmethod
    def post_allocations(self, body):
        """POST /allocations: set several consumers' allocations at once (all or none).

        ``body`` maps consumer UUID to {'allocations', 'consumer_generation', 'project_id',
        'user_id'}; empty allocations delete a consumer's.
        :raises PlacementConflict: as put_allocations.
        """

    @abc.abstractmethod
    def delete_allocations(self, consumer_uuid):
        """DELETE /allocations/{consumer}; True if deleted, False if there were none."""

    @abc.abstractmethod
    def allocation_candidates(self, resources, member_of=(), forbidden_traits=()):
        """GET /allocation_candidates for one provider holding ``resources``.

        :param resources: dict of resource class to amount.
        :param member_of: aggregate UUIDs; a candidate must be in one of them.
        :returns: dict of provider UUID to planner.Candidate.
        """


class ComputeAPI(metaclass=abc.ABCMeta):
    """What the controller reads from and writes to Nova."""

    @abc.abstractmethod
    def hosts(self):
        """dict of compute host name to planner.HostView for every compute host."""

    @abc.abstractmethod
    def get_instance_host(self, instance_uuid):
        """(host, node) of the server.

        :raises ServerGone: Nova has no such server (any more).
        """

    @abc.abstractmethod
    def set_instance_host(self, instance_uuid, host, node, availability_zone):
        """Record that the server runs on ``host``/``node`` (in ``availability_zone``)."""

    @abc.abstractmethod
    def evacuations(self, instance_uuid):
        """The server's evacuation records (Nova migrations of type ``evacuation``).

        :returns: list of dicts with ``uuid``, ``instance_uuid``, ``migration_type``,
            ``status``, ``source_compute``, ``source_node``, ``dest_compute``, ``dest_node``.
        :raises ServerGone: Nova has no such server (any more).
        """

    @abc.abstractmethod
    def create_evacuation(self, instance_uuid, migration_uuid, source_host, source_node,
                          dest_host, dest_node):
        """Write the record Nova's evacuate leaves once the server runs on ``dest_host``: a
        migration ``migration_uuid`` of type ``evacuation``, status ``done``, from
        ``source_host``/``source_node``. It tells the source's nova-compute, when it starts,
        to destroy its guest of the server (then it sets the status to ``completed``).

        REQUIRES: no record ``migration_uuid`` exists (Nova refuses a duplicate UUID).
        :raises ServerGone: Nova has no such server (any more).
        """

    @abc.abstractmethod
    def complete_evacuation(self, instance_uuid, migration_uuid):
        """Set the status of the server's evacuation record to ``completed``: its source's
        nova-compute no longer acts on it."""


class NetworkAPI(metaclass=abc.ABCMeta):
    """The Neutron port calls of the controller."""

    @abc.abstractmethod
    def ports(self, instance_uuid):
        """The server's ports: list of dicts with ``id`` and ``binding:host_id``."""

    @abc.abstractmethod
    def bind_port(self, port_id, host):
        """Set the port's ``binding:host_id`` to ``host``."""


class AgentAPI(metaclass=abc.ABCMeta):
    """The nova-dt agents' RPC API (docs/bus.md), addressed by compute host."""

    @abc.abstractmethod
    def protect(self, host, instance_uuid, backup_host):
        """Ask the agent on ``host`` to protect the server to ``backup_host`` (cast)."""

    @abc.abstractmethod
    def unprotect(self, host, instance_uuid):
        """Ask the agent on ``host`` to stop protecting the server (cast)."""

    @abc.abstractmethod
    def status(self, host):
        """The status of the agent on ``host`` (RPC call ``status``, docs/bus.md): a dict with
        ``host`` and ``protected_servers`` (each with ``instance_uuid``, ``role``, ``state``).

        Waits at most the client's timeout.
        :raises Exception: no answer in time, or the agent's failure.
        """
