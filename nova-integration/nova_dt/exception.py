"""Exceptions the nova-dt agent raises over oslo.messaging RPC.

The agent (agent/bus/rpc_server.cc, RpcServer::FailureFor) names these classes in its failure
replies; a client that lists ``nova_dt.exception`` in ``allowed_remote_exmods`` gets them
re-raised as they are, anyone else gets ``oslo_messaging.RemoteError`` with ``exc_type`` set to
the class name. Invalid arguments come back as the builtin ``ValueError``.
"""


class NovaDTException(Exception):
    """Base class of the agent's errors; the message is the agent's reason."""


class ServerNotFound(NovaDTException):
    """No such server on that host, or it is not protected there."""


class InvalidState(NovaDTException):
    """The server is not in a state that allows the request (e.g. already protected)."""


class AgentUnavailable(NovaDTException):
    """The agent could not serve the request in time (starting, stopping or overloaded)."""
