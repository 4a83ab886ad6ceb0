"""nova-dt-controller: pairs DT servers with backups and keeps Nova truthful after failovers.

Run it with nova's configuration (it uses nova's databases, Placement and Neutron settings and
message bus) plus its ``[nova_dt]`` options, e.g.::

    nova-dt-controller --config-file /etc/nova/nova.conf --config-file /etc/nova/nova-dt.conf
"""

import nova.monkey_patch  # noqa: F401  (eventlet first, as every nova service)

import sys

from oslo_log import log as logging
from oslo_service import service

import nova.conf
from nova import config
from nova import objects

from nova_dt.controller import service as dt_service

CONF = nova.conf.CONF


def main(argv=None):
    argv = sys.argv if argv is None else argv
    config.parse_args(argv)
    logging.setup(CONF, 'nova-dt-controller')
    objects.register_all()
    launcher = service.launch(CONF, dt_service.ControllerService(CONF), workers=1,
                              restart_method='mutate')
    launcher.wait()


if __name__ == '__main__':
    sys.exit(main())
