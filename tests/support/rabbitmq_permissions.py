"""The RabbitMQ users of docs/bus.md ("RabbitMQ users and permissions"), made on a test node.

    users = apply_documented_permissions(rmq, host="compute-1", rpc_vhost="nova_dt")
    users.agent_url(rmq, users.rpc_vhost)
    # -> rabbit://nova-dt-agent-compute-1:...@127.0.0.1:<port>/nova_dt

The shell blocks that follow the markers `<!-- rabbitmq-agent-permissions` and
`<!-- rabbitmq-controller-permissions` in docs/bus.md are run as they are, with bash, with
`rabbitmqctl` pointing at the test node and the variables the page lists set: the tests prove the
commands an operator copies, not a copy of them. Standard library only.
"""
import os
import re
import subprocess
import urllib.parse

import rabbitmq

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "bus.md")
MARKERS = ("rabbitmq-agent-permissions", "rabbitmq-controller-permissions")


def documented_blocks(path=DOC):
    """{marker: shell text} of the ```sh block right after each marker comment."""
    with open(path) as f:
        text = f.read()
    blocks = {}
    for marker in MARKERS:
        m = re.search(r"<!-- %s\b[^>]*-->\n```sh\n(.*?)\n```" % re.escape(marker), text, re.S)
        if not m:
            raise AssertionError("no ```sh block after <!-- %s in %s" % (marker, path))
        blocks[marker] = m.group(1)
    return blocks


class Users:
    """What apply_documented_permissions made: names, passwords, vhosts."""

    def __init__(self, host, controller_host, notify_vhost, rpc_vhost):
        self.host = host
        self.controller_host = controller_host
        self.notify_vhost = notify_vhost
        self.rpc_vhost = rpc_vhost
        self.agent = "nova-dt-agent-" + host
        self.agent_password = "agent-secret-" + host
        self.controller = "nova-dt-controller"
        self.controller_password = "controller-secret"

    @staticmethod
    def url(rmq, user, password, vhost):
        quoted = "" if vhost == "/" else urllib.parse.quote(vhost, safe="")
        return "rabbit://%s:%s@127.0.0.1:%d/%s" % (urllib.parse.quote(user, safe=""),
                                                   urllib.parse.quote(password, safe=""),
                                                   rmq.port, quoted)

    def agent_url(self, rmq, vhost):
        return self.url(rmq, self.agent, self.agent_password, vhost)

    def controller_url(self, rmq, vhost):
        return self.url(rmq, self.controller, self.controller_password, vhost)


def run_block(rmq, script, env):
    """Runs one documented block with bash (-e: any failing command fails it)."""
    prelude = 'rabbitmqctl() { "%s" -q -n "%s" "$@"; }\n' % (rabbitmq.CTL, rmq.node_name)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + script],
                          env=dict(rmq.env, **env), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise AssertionError("documented rabbitmqctl commands failed (exit %d):\n%s"
                             % (proc.returncode, proc.stdout))
    return proc.stdout


def apply_documented_permissions(rmq, host, controller_host="dt-controller",
                                 notify_vhost="/", rpc_vhost="nova_dt", controller=True):
    """Makes the agent user of `host` (and the controller's) with the documented commands."""
    users = Users(host, controller_host, notify_vhost, rpc_vhost)
    env = {"HOST": host, "NOTIFY_VHOST": notify_vhost, "RPC_VHOST": rpc_vhost,
           "AGENT_PASSWORD": users.agent_password,
           "CONTROLLER_PASSWORD": users.controller_password,
           "CONTROLLER_HOST": controller_host}
    blocks = documented_blocks()
    run_block(rmq, blocks["rabbitmq-agent-permissions"], env)
    if controller:
        run_block(rmq, blocks["rabbitmq-controller-permissions"], env)
    return users
