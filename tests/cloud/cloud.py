"""A real, minimal OpenStack Zed cloud on the test rig, from Debian 12's own packages.

    cloud = Cloud("cld")
    cloud.up()                       # rig with hosts a, b, c; controller; computes; images
    with cloud.network():            # this thread talks to the cloud's network
        sess = cloud.session()       # keystoneauth session of the admin
    cloud.down()                     # everything gone, rig included

Topology (tests/cloud/README.md): the rig (tests/rig/rig, `up --hosts a,b,c`) gives three compute
hosts, each with its own network, mount and UTS namespace and libvirtd, on one L2 segment whose
switch namespace `<name>-net` (198.18.0.100) also holds the observer. The controller services run
in that switch namespace: MariaDB (127.0.0.1), RabbitMQ, etcd, Keystone and Placement (uwsgi),
Glance, Nova API / conductor / scheduler, neutron-server (ML2, flat provider network physnet1 on
every host's br0), a DHCP agent and a Linux bridge agent. Each compute host runs nova-compute
(libvirt driver, virt_type qemu, file-backed memory) and a Linux bridge agent. Zones by
aggregate: az1 = {a, c}, az2 = {b}.

Every service is a Debian package's Python entry point started inside a rig namespace (`rig exec`),
logging to `<rig dir>/cloud/log/<service>.log`; `down` is the rig's own (every process in the
rig's namespaces, its directory) plus the DHCP agent's `qdhcp-*` namespaces of this cloud.
Needs root; standard library plus the OpenStack clients Debian ships (keystoneauth1 & co).
"""
import contextlib
import ctypes
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RIG = os.path.join(REPO, "tests", "rig", "rig")

CONTROLLER_IP = "198.18.0.100"
HOST_IP = {"a": "198.18.0.1", "b": "198.18.0.2", "c": "198.18.0.3"}
ZONES = {"az1": ("a", "c"), "az2": ("b",)}
PHYSNET = "physnet1"
REGION = "RegionOne"
PORTS = {"keystone": 5000, "placement": 8778, "glance": 9292, "nova": 8774, "neutron": 9696,
         "rabbit": 5672, "etcd": 2379}
# Guest RAM the host's tmpfs (`RIG_RAM_SIZE`) holds; Nova reports FILE_BACKED_MB as the host's RAM.
RIG_RAM_SIZE = "3g"
FILE_BACKED_MB = 1536
GUEST_IMAGE = "dtcounter"
SERVICE_USERS = ("nova", "placement", "glance", "neutron")
DATABASES = ("keystone", "placement", "glance", "nova_api", "nova", "nova_cell0", "neutron")

# `python3 -c LAUNCH NAME module:function ARGS...` runs the function with sys.argv = [NAME, ARGS...],
# which is what the Debian package's /usr/bin/NAME script does (Neutron names its iptables chains
# after sys.argv[0]).
LAUNCH = ("import sys, importlib; m, f = sys.argv[2].split(':'); sys.argv[:3] = sys.argv[1:2]; "
          "sys.exit(getattr(importlib.import_module(m), f)())")
ENTRY = {
    "keystone-manage": "keystone.cmd.manage:main",
    "placement-manage": "placement.cmd.manage:main",
    "glance-manage": "glance.cmd.manage:main",
    "glance-api": "glance.cmd.api:main",
    "nova-manage": "nova.cmd.manage:main",
    "nova-api": "nova.cmd.api:main",
    "nova-conductor": "nova.cmd.conductor:main",
    "nova-scheduler": "nova.cmd.scheduler:main",
    "nova-compute": "nova.cmd.compute:main",
    "neutron-db-manage": "neutron.db.migration.cli:main",
    "neutron-server": "neutron.cmd.eventlet.server:main",
    "neutron-dhcp-agent": "neutron.cmd.eventlet.agents.dhcp:main",
    "neutron-linuxbridge-agent": "neutron.cmd.eventlet.plugins.linuxbridge_neutron_agent:main",
    "nova-dt-controller": "nova_dt.cmd.controller:main",
}

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class CloudError(Exception):
    """A step of the cloud failed; the message says which and carries the relevant log tail."""


def _tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log at %s)" % path


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


def _write_ini(path, sections, mode=0o640):
    """Writes {section: {key: value or [values]}} as an INI file (multi-valued keys repeated)."""
    lines = []
    for section, options in sections.items():
        lines.append("[%s]" % section)
        for key, value in options.items():
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                lines.append("%s = %s" % (key, v))
        lines.append("")
    _write(path, "\n".join(lines), mode)


def _write(path, text, mode=0o640):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class Cloud:
    def __init__(self, name="cld", build_dir=None, log=None):
        self.name = name
        self.rig_dir = "/tmp/nova-dt-rig-%s" % name
        self.dir = os.path.join(self.rig_dir, "cloud")
        self.build = build_dir or os.environ.get("NOVA_DT_BUILD") or os.path.join(REPO, "build")
        self._log = log or (lambda msg: print("cloud[%s]: %s" % (name, msg), file=sys.stderr,
                                              flush=True))
        self._env = dict(os.environ, RIG_NAME=name, RIG_DIR=self.rig_dir,
                         RIG_RAM_SIZE=RIG_RAM_SIZE, NOVA_DT_BUILD=self.build,
                         RIG_GUEST_DIR=os.path.join(self.build, "guest"))
        self._procs = {}
        self._started = time.monotonic()

    # -------------------------------------------------------------------------------------
    # paths, secrets, processes

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def log_path(self, service):
        return self.path("log", service + ".log")

    @property
    def secrets(self):
        with open(self.path("secrets.json")) as f:
            return json.load(f)

    def rig(self, *args, timeout=180, check=True):
        proc = subprocess.run([RIG] + [str(a) for a in args], env=self._env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise CloudError("rig %s failed (exit %d):\n%s"
                             % (" ".join(map(str, args)), proc.returncode, proc.stdout))
        return proc

    def _python_env(self):
        # nova-api loads the dt: extra spec validators through an entry point: nova_dt's metadata
        # (egg-info, made by `up`) and its package must be on the services' path.
        return {"PYTHONPATH": "%s:%s" % (self.path("py"), os.path.join(REPO, "nova-integration")),
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

    def run(self, where, service, *args, timeout=600, env=None):
        """Runs a one-shot entry point (e.g. nova-manage) in a rig namespace, logged; raises."""
        argv = [RIG, "exec", where, "/usr/bin/python3", "-c", LAUNCH, service, ENTRY[service],
                *map(str, args)]
        full_env = dict(self._env, **self._python_env(), **(env or {}))
        log = self.log_path(service)
        with open(log, "ab") as out:
            out.write(("\n$ %s %s\n" % (service, " ".join(map(str, args)))).encode())
            out.flush()
            proc = subprocess.run(argv, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0:
            raise CloudError("%s %s failed (exit %d); tail of %s:\n%s"
                             % (service, " ".join(map(str, args)), proc.returncode, log,
                                _tail(log)))

    def start(self, where, name, argv, env=None):
        """Starts a long-running process in a rig namespace (a host, "net" = the switch, or
        "net+sys" = the switch with a sysfs of its own, as `ip netns exec` gives: what reads
        /sys/class/net, like Neutron's Linux bridge agent, needs it); its output goes to
        log/NAME.log."""
        full_env = dict(self._env, **self._python_env(), **(env or {}))
        enter = ([RIG, "exec", where] if where != "net+sys" else
                 ["ip", "netns", "exec", "%s-net" % self.name])
        with open(self.log_path(name), "ab") as out:
            proc = subprocess.Popen([*enter, *argv], env=full_env,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._procs[name] = proc
        with open(self.path("run", name + ".pid"), "w") as f:
            f.write("%d\n" % proc.pid)
        return proc

    def start_service(self, where, name, service, *args, env=None):
        return self.start(where, name, ["/usr/bin/python3", "-c", LAUNCH, service, ENTRY[service],
                                        *map(str, args)], env=env)

    def pid(self, name):
        with open(self.path("run", name + ".pid")) as f:
            return int(f.read())

    def alive(self, name):
        proc = self._procs.get(name)
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(self.pid(name), 0)
            return True
        except (OSError, ValueError):
            return False

    def wait_for(self, what, check, timeout, service=None, interval=0.5):
        """Polls check() until it returns a true value (returned); a dead service or the
        deadline raises with the service's log tail."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = check()
                if value:
                    return value
            except Exception as e:  # noqa: BLE001 - reported if the wait fails
                last = e
            if service and not self.alive(service):
                raise CloudError("%s exited while waiting for %s; tail of its log:\n%s"
                                 % (service, what, _tail(self.log_path(service))))
            if time.monotonic() > deadline:
                raise CloudError("%s: not within %d s (last error: %r)%s"
                                 % (what, timeout, last, "; tail of %s:\n%s" % (
                                     self.log_path(service), _tail(self.log_path(service)))
                                    if service else ""))
            time.sleep(interval)

    def step(self, what):
        self._log("%5.1f s  %s" % (time.monotonic() - self._started, what))

    # -------------------------------------------------------------------------------------
    # the network namespace of the controller

    @contextlib.contextmanager
    def network(self):
        """Moves the calling thread into the switch namespace (where the APIs listen) for the
        block; threads and children started inside inherit it."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns("/run/netns/%s-net" % self.name)
            try:
                yield
            finally:
                if _libc.setns(home, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the original namespace")
        finally:
            os.close(home)

    def http_ok(self, url):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
        except OSError:
            return False

    def session(self, project="admin", user="admin", password=None):
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3
        auth = v3.Password(auth_url=self.auth_url, username=user,
                           password=password or self.secrets["admin"], project_name=project,
                           user_domain_id="default", project_domain_id="default")
        return ks_session.Session(auth=auth)

    @property
    def auth_url(self):
        return "http://%s:%d/v3" % (CONTROLLER_IP, PORTS["keystone"])

    def openrc(self):
        """Environment of the admin for the openstack CLI (run inside the switch namespace)."""
        return {"OS_AUTH_URL": self.auth_url, "OS_USERNAME": "admin",
                "OS_PASSWORD": self.secrets["admin"], "OS_PROJECT_NAME": "admin",
                "OS_USER_DOMAIN_ID": "default", "OS_PROJECT_DOMAIN_ID": "default",
                "OS_REGION_NAME": REGION, "OS_IDENTITY_API_VERSION": "3",
                "OS_COMPUTE_API_VERSION": "2.86"}

    def openstack(self, *args, timeout=120, check=True):
        """Runs the openstack CLI as the admin inside the switch namespace; returns stdout."""
        env = dict(self._env, **self.openrc())
        proc = subprocess.run([RIG, "exec", "net", "openstack", *map(str, args)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise CloudError("openstack %s failed (exit %d): %s"
                             % (" ".join(map(str, args)), proc.returncode, proc.stderr.strip()))
        return proc.stdout if check else proc

    # -------------------------------------------------------------------------------------
    # up / down

    def down(self):
        """Stops everything and removes every trace: the rig (every process of the cloud runs in
        its namespaces), then this cloud's qdhcp namespaces (after the DHCP agent is gone: it
        would make them again)."""
        problems = []
        networks = self._network_ids()  # (read before `rig down` removes the cloud's directory)
        proc = self.rig("down", timeout=120, check=False)
        if proc.returncode != 0:
            problems.append("rig down: " + proc.stdout[-2000:])
        for ns in ("qdhcp-" + n for n in networks):
            if not os.path.exists("/run/netns/" + ns):
                continue
            pids = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                                  text=True).stdout.split()
            for p in pids:  # dnsmasq
                with contextlib.suppress(OSError):
                    os.kill(int(p), 9)
            if subprocess.run(["ip", "netns", "del", ns]).returncode != 0:
                problems.append("netns " + ns)
        if problems:
            raise CloudError("cloud down left: %s" % "; ".join(problems))

    def _network_ids(self):
        """This cloud's networks (recorded by `up`): the DHCP agent's namespaces are named
        qdhcp-<network id>."""
        try:
            with open(self.path("networks")) as f:
                return [line.strip() for line in f if line.strip()]
        except OSError:
            return []

    def up(self):
        """Brings the whole cloud up (≤ a few minutes on an idle 2-core machine)."""
        self._started = time.monotonic()
        self.step("rig up (hosts a, b, c)")
        self.rig("up", "--hosts", "a,b,c")
        try:
            self.rig("observer", "start")
            # Private (0750) but for the way to data/neutron: Neutron's dnsmasq drops root and
            # must read the DHCP agent's files there (else: "no address available").
            for sub, mode in (("", 0o755), ("etc", 0o750), ("log", 0o750), ("run", 0o750),
                              ("data", 0o755), ("data/neutron", 0o755), ("py", 0o750)):
                os.makedirs(self.path(sub), mode=mode, exist_ok=True)
                os.chmod(self.path(sub), mode)
            self._make_secrets()
            self._make_metadata()
            self._write_configs()
            with self.network():
                self._start_infrastructure()
                self._sync_databases()
                self._start_keystone()
                self._start_controller_services()
                self._create_network()
                self._start_computes()
                self._finish_setup()
                self._start_nova_dt()
            self.step("cloud up")
        except BaseException:
            if os.environ.get("CLOUD_KEEP_ON_FAIL") != "1":
                with contextlib.suppress(Exception):
                    self.down()
            raise

    def _make_secrets(self):
        values = {k: secrets.token_hex(12) for k in
                  ("admin", "db", "rabbit", "metadata") + SERVICE_USERS}
        _write(self.path("secrets.json"), json.dumps(values), 0o600)

    def _make_metadata(self):
        """nova_dt's entry point metadata (the dt: validators) for nova-api, as an installed
        package would have it; the package itself comes from the repository."""
        subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base",
                        self.path("py")], cwd=os.path.join(REPO, "nova-integration"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    # -------------------------------------------------------------------------------------
    # configuration

    def _db(self, name):
        return "mysql+pymysql://cloud:%s@127.0.0.1/%s?charset=utf8" % (self.secrets["db"], name)

    def _transport_url(self):
        return "rabbit://openstack:%s@%s:%d/" % (self.secrets["rabbit"], CONTROLLER_IP,
                                                  PORTS["rabbit"])

    def _authtoken(self, user):
        return {"www_authenticate_uri": self.auth_url, "auth_url": self.auth_url,
                "auth_type": "password", "project_domain_name": "Default",
                "user_domain_name": "Default", "project_name": "service", "username": user,
                "password": self.secrets[user]}

    def _service_auth(self, user, **extra):
        d = {"auth_type": "password", "auth_url": self.auth_url, "project_domain_name": "Default",
             "user_domain_name": "Default", "project_name": "service", "username": user,
             "password": self.secrets[user], "region_name": REGION}
        d.update(extra)
        return d

    def _write_configs(self):
        s = self.secrets
        etc = lambda *p: self.path("etc", *p)  # noqa: E731
        data = lambda *p: self.path("data", *p)  # noqa: E731
        logging_opts = {"debug": "false", "use_stderr": "true"}
        # Keystone
        _write_ini(etc("keystone", "keystone.conf"), {
            "DEFAULT": logging_opts,
            "database": {"connection": self._db("keystone")},
            "token": {"provider": "fernet"},
            "fernet_tokens": {"key_repository": data("keystone-fernet")},
            "credential": {"key_repository": data("keystone-credential")},
        })
        # Placement
        _write_ini(etc("placement", "placement.conf"), {
            "DEFAULT": logging_opts,
            "placement_database": {"connection": self._db("placement")},
            "api": {"auth_strategy": "keystone"},
            "keystone_authtoken": self._authtoken("placement"),
        })
        # Glance
        _write_ini(etc("glance", "glance-api.conf"), {
            "DEFAULT": dict(logging_opts, bind_host=CONTROLLER_IP, bind_port=PORTS["glance"],
                            enabled_backends="fs:file", workers=1),
            "database": {"connection": self._db("glance")},
            "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": data("glance", "images")},
            "os_glance_staging_store": {"filesystem_store_datadir": data("glance", "staging")},
            "os_glance_tasks_store": {"filesystem_store_datadir": data("glance", "tasks")},
            "keystone_authtoken": self._authtoken("glance"),
            "paste_deploy": {"flavor": "keystone",
                             "config_file": "/etc/glance/glance-api-paste.ini"},
            "oslo_concurrency": {"lock_path": data("glance", "lock")},
        })
        # Nova: one file for the controller services, one per compute host on top of it.
        nova = {
            "DEFAULT": dict(logging_opts, transport_url=self._transport_url(),
                            my_ip=CONTROLLER_IP, host="controller",
                            state_path=data("nova"), enabled_apis="osapi_compute",
                            osapi_compute_listen=CONTROLLER_IP,
                            osapi_compute_listen_port=PORTS["nova"], osapi_compute_workers=1),
            "api": {"auth_strategy": "keystone"},
            "api_database": {"connection": self._db("nova_api")},
            "database": {"connection": self._db("nova")},
            "wsgi": {"api_paste_config": "/etc/nova/api-paste.ini"},
            "keystone_authtoken": self._authtoken("nova"),
            "service_user": self._service_auth("nova", send_service_user_token="true"),
            "placement": self._service_auth("nova"),
            "glance": {"api_servers": "http://%s:%d" % (CONTROLLER_IP, PORTS["glance"])},
            "neutron": self._service_auth(
                "nova", service_metadata_proxy="false",
                metadata_proxy_shared_secret=s["metadata"]),
            "scheduler": {"discover_hosts_in_cells_interval": "10", "workers": "1"},
            "conductor": {"workers": "1"},
            "oslo_concurrency": {"lock_path": data("nova", "lock")},
            "vnc": {"enabled": "false"},
            "libvirt": {"virt_type": "qemu", "cpu_mode": "none"},
        }
        _write_ini(etc("nova", "nova.conf"), nova)
        self._nova_dt_lib("nova_dt_configure_nova_notifications", etc("nova", "nova.conf"))
        # The compute hosts' base file, as DevStack's nova-cpu.conf: no database. With one,
        # nova-compute's start-up version check reads the database itself instead of asking
        # the conductor, and on a host that cannot reach it waits a minute for its retries.
        cpu = {section: opts for section, opts in nova.items()
               if section not in ("api_database", "database")}
        _write_ini(etc("nova", "nova-cpu.conf"), cpu)
        self._nova_dt_lib("nova_dt_configure_nova_notifications", etc("nova", "nova-cpu.conf"))
        self._nova_dt_lib("nova_dt_configure_nova_scheduler", etc("nova", "nova.conf"),
                          data("nova-dt", "link-stats.json"))
        for h, ip in HOST_IP.items():
            conf = etc("nova", "nova-compute-%s.conf" % h)
            _write_ini(conf, {
                "DEFAULT": {"host": h, "my_ip": ip, "state_path": "/var/lib/nova",
                            "instances_path": "/var/lib/nova/instances",
                            "compute_driver": "libvirt.LibvirtDriver"},
                "oslo_concurrency": {"lock_path": "/var/lib/nova/tmp"},
                "libvirt": {"virt_type": "qemu", "cpu_mode": "none"},
            })
            self._nova_dt_lib("nova_dt_configure_nova_compute", conf, FILE_BACKED_MB)
        # Neutron
        _write_ini(etc("neutron", "neutron.conf"), {
            "DEFAULT": dict(logging_opts, core_plugin="ml2", service_plugins="",
                            auth_strategy="keystone", bind_host=CONTROLLER_IP,
                            bind_port=PORTS["neutron"], transport_url=self._transport_url(),
                            api_workers=0, rpc_workers=0, rpc_state_report_workers=0,
                            state_path=data("neutron"),
                            notify_nova_on_port_status_changes="true",
                            notify_nova_on_port_data_changes="true",
                            api_paste_config="/etc/neutron/api-paste.ini"),
            "database": {"connection": self._db("neutron")},
            "keystone_authtoken": self._authtoken("neutron"),
            "nova": self._service_auth("neutron"),
            "oslo_concurrency": {"lock_path": data("neutron", "lock")},
            "experimental": {"linuxbridge": "true"},
            # Every privileged command runs directly: the agents already run as root.
            "agent": {"root_helper": "", "report_interval": "10"},
        })
        # The controller's agents and server report as host "controller" (the switch namespace
        # shares the machine's host name); the compute hosts' agents use their own (a, b, c).
        _write_ini(etc("neutron", "host-controller.conf"), {"DEFAULT": {"host": "controller"}})
        _write_ini(etc("neutron", "ml2_conf.ini"), {
            "ml2": {"type_drivers": "flat", "tenant_network_types": "",
                    "mechanism_drivers": "linuxbridge", "extension_drivers": "port_security"},
            "ml2_type_flat": {"flat_networks": PHYSNET},
        })
        # The controller's agent (DHCP port): physnet1 is the switch's br0. Compute hosts: see
        # _create_network. No VXLAN. Security groups: enforced by iptables in each namespace.
        _write_ini(etc("neutron", "linuxbridge_agent.ini"), {
            "linux_bridge": {"bridge_mappings": "%s:br0" % PHYSNET},
            "vxlan": {"enable_vxlan": "false"},
            "securitygroup": {"firewall_driver": "iptables", "enable_security_group": "true"},
            "agent": {"root_helper": ""},
        })
        _write_ini(etc("neutron", "dhcp_agent.ini"), {
            "DEFAULT": {"interface_driver": "linuxbridge",
                        "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq",
                        "enable_isolated_metadata": "false",
                        "dnsmasq_local_resolv": "false",
                        # dnsmasq's own log (it has no syslog here): log/dnsmasq/<network>/
                        "dnsmasq_base_log_dir": self.path("log", "dnsmasq")},
        })
        # Keystone and Placement under uwsgi, as Debian serves them.
        _write(self.path("wsgi", "keystone.py"),
               "from keystone.server.wsgi import initialize_public_application\n"
               "application = initialize_public_application()\n", 0o644)
        _write(self.path("wsgi", "placement.py"),
               "from placement.wsgi import init_application\n"
               "application = init_application()\n", 0o644)

    def _nova_dt_lib(self, function, *args, host=None):
        """Calls a function of the DevStack plugin's library (devstack/lib/nova-dt), with the
        project's own iniset (tests/devstack/ini-functions): the plugin's logic, run for real."""
        script = ('source "$1"; source "$2"; f=$3; shift 3; "$f" "$@"')
        proc = subprocess.run(
            ["bash", "-c", script, "nova-dt-lib",
             os.path.join(REPO, "tests", "devstack", "ini-functions"),
             os.path.join(REPO, "devstack", "lib", "nova-dt"), function, *map(str, args)],
            env=dict(os.environ, NOVA_DT_DIR=REPO, **self._nova_dt_vars(host)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise CloudError("devstack/lib/nova-dt %s %s failed:\n%s"
                             % (function, " ".join(map(str, args)), proc.stdout))

    def _nova_dt_vars(self, host=None):
        """The plugin library's variables (devstack/lib/nova-dt's header) for this cloud."""
        v = {"NOVA_DT_TRANSPORT_URL": self._transport_url(),
             "NOVA_DT_NOTIFICATION_TRANSPORT_URL": self._transport_url(),
             "NOVA_DT_ETCD_ENDPOINTS": "http://%s:%d" % (CONTROLLER_IP, PORTS["etcd"]),
             "NOVA_DT_TLS_DIR": self.path("pki"),
             "NOVA_DT_PEERS": ",".join("%s=%s:7070" % (h, ip) for h, ip in HOST_IP.items()),
             "NOVA_DT_CONTROLLER_STATE_DIR": self.path("data", "nova-dt-controller"),
             "NOVA_DT_LINK_STATS_FILE": self.path("data", "nova-dt", "link-stats.json")}
        if host:
            agent = os.path.join(self.rig_dir, host, "agent")
            v.update({"NOVA_DT_HOST": host, "NOVA_DT_PEER_ADDRESS": "%s:7070" % HOST_IP[host],
                      "NOVA_DT_STATE_DIR": os.path.join(agent, "state"),
                      "NOVA_DT_CONTROL_SOCKET": self.control_socket(host)})
        return v

    def control_socket(self, host):
        return os.path.join(self.rig_dir, host, "agent", "agent.sock")

    # -------------------------------------------------------------------------------------
    # infrastructure: MariaDB, RabbitMQ, etcd

    def _start_infrastructure(self):
        self.step("MariaDB, RabbitMQ, etcd")
        s = self.secrets
        mdir = self.path("data", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root",
                        "--datadir=" + mdir, "--auth-root-authentication-method=socket",
                        "--skip-test-db"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT)
        sock = self.path("run", "mysqld.sock")
        self.start("net", "mariadb", [
            "/usr/sbin/mariadbd", "--no-defaults", "--user=root", "--datadir=" + mdir,
            "--socket=" + sock, "--bind-address=127.0.0.1", "--port=3306",
            "--pid-file=" + self.path("run", "mariadbd.pid"),
            "--innodb-buffer-pool-size=64M", "--performance-schema=off", "--skip-log-bin",
            "--max-connections=500", "--log-error=" + self.log_path("mariadb-error")])
        rdir = self.path("data", "rabbitmq")
        os.makedirs(os.path.join(rdir, "home"), exist_ok=True)
        cookie = os.path.join(rdir, "home", ".erlang.cookie")
        _write(cookie, secrets.token_hex(10), 0o400)
        _write(os.path.join(rdir, "rabbitmq.conf"),
               "listeners.tcp.1 = %s:%d\nlog.console = true\nlog.file = false\n"
               "loopback_users = none\n" % (CONTROLLER_IP, PORTS["rabbit"]))
        _write(os.path.join(rdir, "enabled_plugins"), "[].\n")
        _write(os.path.join(rdir, "rabbitmq-env.conf"), "")
        self._rabbit_env = {
            "HOME": os.path.join(rdir, "home"), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": "cloud@localhost", "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_CONF_ENV_FILE": os.path.join(rdir, "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": os.path.join(rdir, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(rdir, "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(rdir, "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": os.path.join(rdir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(rdir, "log"),
            "RABBITMQ_PID_FILE": os.path.join(rdir, "rabbitmq.pid"),
            "ERL_CRASH_DUMP": os.path.join(rdir, "erl_crash.dump"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.start("net", "rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
                   env=self._rabbit_env)
        self.start("net", "etcd", [
            "/usr/bin/etcd", "--name", "witness", "--data-dir", self.path("data", "etcd"),
            "--listen-client-urls", "http://%s:%d" % (CONTROLLER_IP, PORTS["etcd"]),
            "--advertise-client-urls", "http://%s:%d" % (CONTROLLER_IP, PORTS["etcd"]),
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "witness=http://127.0.0.1:2380"])
        self.wait_for("MariaDB", lambda: os.path.exists(sock) and self._mysql("SELECT 1"),
                      60, "mariadb")
        grants = "".join(
            "CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8; "
            "GRANT ALL PRIVILEGES ON %s.* TO 'cloud'@'127.0.0.1';" % (d, d) for d in DATABASES)
        self._mysql("CREATE USER IF NOT EXISTS 'cloud'@'127.0.0.1' IDENTIFIED BY '%s'; %s "
                    "FLUSH PRIVILEGES;" % (s["db"], grants), check=True)
        self.wait_for("RabbitMQ", lambda: self._rabbitmqctl("await_startup", "--timeout", "5"),
                      90, "rabbitmq", interval=1)
        self._rabbitmqctl("add_user", "openstack", s["rabbit"], check=True)
        self._rabbitmqctl("set_permissions", "openstack", ".*", ".*", ".*", check=True)
        self._rabbitmqctl("delete_user", "guest", check=True)
        self.wait_for("etcd", lambda: self.http_ok(
            "http://%s:%d/health" % (CONTROLLER_IP, PORTS["etcd"])), 30, "etcd")

    def _mysql(self, sql, check=False):
        proc = subprocess.run(["mariadb", "--no-defaults", "-uroot",
                               "--socket=" + self.path("run", "mysqld.sock"), "-e", sql],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=60)
        if check and proc.returncode != 0:
            raise CloudError("mariadb: %s" % proc.stdout)
        return proc.returncode == 0

    def _rabbitmqctl(self, *args, check=False):
        proc = subprocess.run([RIG, "exec", "net", "/usr/lib/rabbitmq/bin/rabbitmqctl", *args],
                              env=dict(self._env, **self._rabbit_env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise CloudError("rabbitmqctl %s: %s" % (" ".join(args), proc.stdout))
        return proc.returncode == 0

    # -------------------------------------------------------------------------------------
    # databases

    def _sync_databases(self):
        self.step("database schemas (keystone, placement, glance, nova, neutron), in parallel")
        etc = lambda *p: self.path("etc", *p)  # noqa: E731
        nova = ["--config-file", etc("nova", "nova.conf")]
        jobs = {
            "keystone": [("keystone-manage", ["--config-file", etc("keystone", "keystone.conf"),
                                              "db_sync"])],
            "placement": [("placement-manage", ["--config-file",
                                                etc("placement", "placement.conf"), "db",
                                                "sync"])],
            "glance": [("glance-manage", ["--config-file", etc("glance", "glance-api.conf"),
                                          "db_sync"])],
            "nova": [("nova-manage", nova + ["api_db", "sync"]),
                     ("nova-manage", nova + ["cell_v2", "map_cell0", "--database_connection",
                                             self._db("nova_cell0")]),
                     ("nova-manage", nova + ["cell_v2", "create_cell", "--name", "cell1"]),
                     ("nova-manage", nova + ["db", "sync"])],
            "neutron": [("neutron-db-manage", ["--config-file", etc("neutron", "neutron.conf"),
                                               "--config-file", etc("neutron", "ml2_conf.ini"),
                                               "upgrade", "head"])],
        }
        errors = []

        def run_chain(chain):
            try:
                for service, args in chain:
                    self.run("net", service, *args)
            except Exception as e:  # noqa: BLE001 - collected and raised below
                errors.append(e)

        threads = [threading.Thread(target=run_chain, args=(c,)) for c in jobs.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    # -------------------------------------------------------------------------------------
    # Keystone and the catalog

    def _uwsgi(self, name, port, wsgi_file, env):
        return self.start("net", name, [
            "/usr/bin/uwsgi", "--plugin", "python3", "--http-socket",
            "%s:%d" % (CONTROLLER_IP, port), "--wsgi-file", self.path("wsgi", wsgi_file),
            "--master", "--processes", "1", "--threads", "4", "--need-app", "--die-on-term",
            "--add-header", "Connection: close", "--buffer-size", "65535",
            "--hook-master-start", "unix_signal:15 gracefully_kill_them_all"], env=env)

    def _start_keystone(self):
        self.step("Keystone: keys, bootstrap, catalog")
        conf = ["--config-file", self.path("etc", "keystone", "keystone.conf")]
        for what in ("fernet_setup", "credential_setup"):
            self.run("net", "keystone-manage", *conf, what, "--keystone-user", "root",
                     "--keystone-group", "root")
        url = "http://%s:%d/v3/" % (CONTROLLER_IP, PORTS["keystone"])
        self.run("net", "keystone-manage", *conf, "bootstrap", "--bootstrap-password",
                 self.secrets["admin"], "--bootstrap-admin-url", url, "--bootstrap-internal-url",
                 url, "--bootstrap-public-url", url, "--bootstrap-region-id", REGION)
        self._uwsgi("keystone", PORTS["keystone"], "keystone.py",
                    {"OS_KEYSTONE_CONFIG_FILES": self.path("etc", "keystone", "keystone.conf")})
        self.wait_for("Keystone", lambda: self.http_ok(self.auth_url), 60, "keystone")
        from keystoneclient.v3 import client as ks_client
        ks = ks_client.Client(session=self.session())
        service_project = ks.projects.create("service", "default")
        admin_role = ks.roles.find(name="admin")
        ks.roles.find(name="member")  # bootstrap made it: users of the tests get it
        for user in SERVICE_USERS:
            u = ks.users.create(user, domain="default", password=self.secrets[user])
            ks.roles.grant(admin_role, user=u, project=service_project)
        ks.roles.grant(ks.roles.find(name="service") if _has_role(ks, "service")
                       else ks.roles.create("service"), user=ks.users.find(name="nova"),
                       project=service_project)
        for name, stype, port, path in (
                ("placement", "placement", PORTS["placement"], ""),
                ("glance", "image", PORTS["glance"], ""),
                ("nova", "compute", PORTS["nova"], "/v2.1"),
                ("neutron", "network", PORTS["neutron"], "")):
            svc = ks.services.create(name, type=stype)
            for interface in ("public", "internal", "admin"):
                ks.endpoints.create(svc, "http://%s:%d%s" % (CONTROLLER_IP, port, path),
                                    interface=interface, region=REGION)

    # -------------------------------------------------------------------------------------
    # Placement, Glance, Nova, Neutron

    def _start_controller_services(self):
        self.step("Placement, Glance, Nova API/conductor/scheduler, Neutron server + agents")
        etc = lambda *p: self.path("etc", *p)  # noqa: E731
        self._uwsgi("placement", PORTS["placement"], "placement.py",
                    {"OS_PLACEMENT_CONFIG_DIR": self.path("etc", "placement")})
        self.start_service("net", "glance-api", "glance-api", "--config-file",
                           etc("glance", "glance-api.conf"))
        nova = ["--config-file", etc("nova", "nova.conf")]
        neutron = ["--config-file", etc("neutron", "neutron.conf"),
                   "--config-file", etc("neutron", "ml2_conf.ini")]
        self.start_service("net", "neutron-server", "neutron-server", *neutron, "--config-file",
                           etc("neutron", "host-controller.conf"))
        self.wait_for("Placement", lambda: self.http_ok(
            "http://%s:%d/" % (CONTROLLER_IP, PORTS["placement"])), 60, "placement")
        self.start_service("net", "nova-api", "nova-api", *nova)
        self.start_service("net", "nova-conductor", "nova-conductor", *nova)
        self.start_service("net", "nova-scheduler", "nova-scheduler", *nova)
        self.wait_for("neutron-server", lambda: self.http_ok(
            "http://%s:%d/" % (CONTROLLER_IP, PORTS["neutron"])), 120, "neutron-server")
        agent = ["--config-file", etc("neutron", "neutron.conf"),
                 "--config-file", etc("neutron", "linuxbridge_agent.ini")]
        here = ["--config-file", etc("neutron", "host-controller.conf")]
        self.start_service("net+sys", "neutron-linuxbridge-agent-controller",
                           "neutron-linuxbridge-agent", *agent, *here)
        self.start_service("net", "neutron-dhcp-agent", "neutron-dhcp-agent",
                           "--config-file", etc("neutron", "neutron.conf"), "--config-file",
                           etc("neutron", "dhcp_agent.ini"), *here)
        self.wait_for("Glance", lambda: self.http_ok(
            "http://%s:%d/" % (CONTROLLER_IP, PORTS["glance"])), 60, "glance-api")
        self.wait_for("nova-api", lambda: self.http_ok(
            "http://%s:%d/" % (CONTROLLER_IP, PORTS["nova"])), 120, "nova-api")

    def _create_network(self):
        """The provider network every server uses: flat on physnet1, the rig's segment
        (198.18.0.0/24, addresses .150-.199 by DHCP, no router), and its wiring on every compute
        host: a provider link `eth1` from the host to the switch in a bridge named as Neutron's
        Linux bridge agent names the network's bridge (brq + the first 11 characters of its id),
        which the host's agent is given as the physnet's bridge (bridge_mappings). So the bridge
        a server's tap joins exists on every host, a backup included, before any server runs
        there. (Without bridge_mappings the agent makes that bridge only when a port of the
        network is bound to the host.) The controller's agent maps physnet1 to the switch's br0."""
        self.step("provider network and its bridges on a, b, c")
        from neutronclient.v2_0 import client as neutron_client
        neutron = neutron_client.Client(session=self.session())
        neutron.list_networks()  # Neutron 21.0.0: a first GET /v2.0/ports after start fails
        net = neutron.create_network({"network": {
            "name": "rig", "shared": True, "provider:network_type": "flat",
            "provider:physical_network": PHYSNET}})["network"]
        with open(self.path("networks"), "a") as f:
            f.write(net["id"] + "\n")
        neutron.create_subnet({"subnet": {
            "network_id": net["id"], "name": "rig-v4", "ip_version": 4,
            "cidr": "198.18.0.0/24", "gateway_ip": None, "enable_dhcp": True,
            "allocation_pools": [{"start": "198.18.0.150", "end": "198.18.0.199"}]}})
        bridge = "brq" + net["id"][:11]
        switch = "%s-net" % self.name
        for h in HOST_IP:
            ns = "%s-%s" % (self.name, h)
            for cmd in (["-n", switch, "link", "add", "prov" + h, "type", "veth", "peer", "name",
                         "eth1", "netns", ns],
                        ["-n", switch, "link", "set", "prov" + h, "master", "br0", "up"],
                        ["-n", ns, "link", "add", bridge, "type", "bridge", "stp_state", "0",
                         "forward_delay", "0"],
                        ["-n", ns, "link", "set", "eth1", "master", bridge, "up"],
                        ["-n", ns, "link", "set", bridge, "up"]):
                subprocess.run(["ip", *cmd], check=True)
        _write_ini(self.path("etc", "neutron", "linuxbridge_agent_compute.ini"), {
            "linux_bridge": {"bridge_mappings": "%s:%s" % (PHYSNET, bridge)},
            "vxlan": {"enable_vxlan": "false"},
            "securitygroup": {"firewall_driver": "iptables", "enable_security_group": "true"},
            "agent": {"root_helper": ""},
        })

    def _start_computes(self):
        self.step("compute hosts a, b, c: nova-compute, Linux bridge agent")
        # The hosts' ebtables: tests/cloud/ebtables says why (README, "Lessons").
        hostbin = self.path("hostbin")
        os.makedirs(hostbin, mode=0o755, exist_ok=True)
        shutil.copy(os.path.join(HERE, "ebtables"), os.path.join(hostbin, "ebtables"))
        os.chmod(os.path.join(hostbin, "ebtables"), 0o755)
        for h in HOST_IP:
            self.rig("exec", h, "mount", "--bind", hostbin, "/usr/local/sbin")
        for h in HOST_IP:
            # What Debian's nova-common makes: the state, instances and lock directories.
            for sub in ("instances", "tmp"):
                os.makedirs(os.path.join(self.rig_dir, h, "nova", sub), mode=0o755,
                            exist_ok=True)
            self._start_compute(h)

    def _start_compute(self, h):
        etc = lambda *p: self.path("etc", *p)  # noqa: E731
        self.start_service(h, "nova-compute-" + h, "nova-compute", "--config-file",
                           etc("nova", "nova-cpu.conf"), "--config-file",
                           etc("nova", "nova-compute-%s.conf" % h))
        self.start_service(h, "neutron-linuxbridge-agent-" + h, "neutron-linuxbridge-agent",
                           "--config-file", etc("neutron", "neutron.conf"), "--config-file",
                           etc("neutron", "linuxbridge_agent_compute.ini"))

    def observer_values(self, address, since=0.0, times=False):
        """Counter values the rig's observer received from address at or after since (unix
        seconds), in arrival order; with times, (arrival time, value) pairs. (A server's
        address may have been an earlier, deleted server's: pass the time it was created.)"""
        values = []
        with open(os.path.join(self.rig_dir, "observer.log"), errors="replace") as f:
            for line in f:
                m = re.match(r"(\S+) (\S+):\d+ seq=(\d+)", line)
                if m and m.group(2) == address and float(m.group(1)) >= since:
                    v = int(m.group(3))
                    values.append((float(m.group(1)), v) if times else v)
        return values

    def power_off(self, host):
        """The host is lost at once, as by a power cut: every process in its namespaces is
        killed (libvirtd, QEMU, nova-compute, the Linux bridge agent, nova-dt-agent); its disk
        (the host's directory of the rig) stays as it was, what RAM held does not: the host's
        RAM file system (guest RAM files, the agent's replicas) and libvirt's runtime directory
        (/run/libvirt: the running domains' status) are emptied."""
        self.rig("kill", host)
        self.rig("exec", host, "find", "/var/lib/libvirt/qemu/ram", "/run/libvirt", "-mindepth",
                 "1", "-delete")

    def power_on(self, host):
        """The host comes back after power_off: its libvirtd, nova-compute, Linux bridge agent
        and nova-dt-agent start again with the configuration they had (as their init system
        would start them). Returns once the agent answers; Nova's view is the caller's to
        wait for."""
        self.rig("libvirtd", host)
        self._start_compute(host)
        self._start_agent(host)
        self._wait_agent(host)

    def _start_nova_dt(self):
        """nova-dt as the DevStack plugin sets it up: peer certificates, an agent on every
        compute host (peer TLS, etcd witness, the agents' bus), nova-dt-controller."""
        self.step("nova-dt: certificates, agents on a, b, c, controller")
        self._nova_dt_lib("nova_dt_make_certs", self.path("pki"), *HOST_IP)
        for h in HOST_IP:
            conf = self._agent_conf(h)
            os.makedirs(os.path.dirname(conf), mode=0o755, exist_ok=True)
            self._nova_dt_lib("nova_dt_write_agent_conf", conf, host=h)
            self._start_agent(h)
        conf = self.path("etc", "nova", "nova-dt.conf")
        self._nova_dt_lib("nova_dt_write_controller_conf", conf)
        self.start_service("net", "nova-dt-controller", "nova-dt-controller", "--config-file",
                           self.path("etc", "nova", "nova.conf"), "--config-file", conf)
        for h in HOST_IP:
            self._wait_agent(h)

    def _agent_conf(self, h):
        return os.path.join(self.rig_dir, h, "agent", "agent.conf")

    def _start_agent(self, h):
        agent_bin = os.path.join(self.build, "agent", "daemon", "nova-dt-agent")
        self.start(h, "nova-dt-agent-" + h, [agent_bin, "--config-file", self._agent_conf(h)])

    def _wait_agent(self, h):
        status = os.path.join(self.build, "agent", "tools", "nova-dt-status")
        self.wait_for("nova-dt-agent on %s" % h, lambda: subprocess.run(
            [status, "--address", "unix:" + self.control_socket(h), "--health",
             "--timeout", "1"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=30).returncode == 0, 60, "nova-dt-agent-" + h)

    def agent_status(self, host):
        """nova-dt-status --json of the agent on host (proto field names)."""
        status = os.path.join(self.build, "agent", "tools", "nova-dt-status")
        proc = subprocess.run([status, "--address", "unix:" + self.control_socket(host),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise CloudError("nova-dt-status on %s: %s" % (host, proc.stderr.strip()))
        return json.loads(proc.stdout)

    def _finish_setup(self):
        from novaclient import client as nova_client
        sess = self.session()
        nova = nova_client.Client("2.86", session=sess)
        self.step("waiting for the three hypervisors and network agents")

        def computes_up():
            services = nova.services.list(binary="nova-compute")
            return sorted(s.host for s in services if s.state == "up") == ["a", "b", "c"]

        self.wait_for("nova-compute up on a, b, c", computes_up, 240, "nova-compute-a",
                      interval=2)
        self.run("net", "nova-manage", "--config-file", self.path("etc", "nova", "nova.conf"),
                 "cell_v2", "discover_hosts")
        seen = []

        def hypervisors():
            seen[:] = sorted(h.hypervisor_hostname for h in nova.hypervisors.list())
            return seen == ["a", "b", "c"]

        try:
            self.wait_for("hypervisors a, b, c", hypervisors, 60, interval=2)
        except CloudError as e:
            raise CloudError("%s; hypervisors: %s" % (e, seen)) from None
        from neutronclient.v2_0 import client as neutron_client
        neutron = neutron_client.Client(session=sess)
        self.wait_for("Linux bridge agents on a, b, c, controller", lambda: sorted(
            a["host"] for a in neutron.list_agents(agent_type="Linux bridge agent")["agents"]
            if a["alive"]) == ["a", "b", "c", "controller"], 120, interval=2)
        self.step("zones (aggregates) and the guest images")
        for zone, hosts in ZONES.items():
            agg = nova.aggregates.create("dt-" + zone, zone)
            nova.aggregates.set_metadata(agg, {"nova_dt:capable": "true"})
            for h in hosts:
                nova.aggregates.add_host(agg, h)
        self._upload_guest_images(sess)

    def _upload_guest_images(self, sess):
        """The test guest (scripts/build-test-guest) as Glance images: its kernel (aki), its
        initramfs (ari) and a raw placeholder disk that names both and carries the kernel
        command line; the guest takes its address from Neutron's DHCP and sends its counter to
        the observer, as on the rig."""
        from glanceclient import client as glance_client
        glance = glance_client.Client("2", session=sess)
        guest = os.path.join(self.build, "guest")
        ids = {}
        for name, fmt, path in (("dtcounter-kernel", "aki", "vmlinux"),
                                ("dtcounter-ramdisk", "ari", "initrd.img")):
            img = glance.images.create(name=name, disk_format=fmt, container_format=fmt,
                                       visibility="public")
            with open(os.path.join(guest, path), "rb") as f:
                glance.images.upload(img.id, f)
            ids[fmt] = img.id
        img = glance.images.create(
            name=GUEST_IMAGE, disk_format="raw", container_format="bare", visibility="public",
            kernel_id=ids["aki"], ramdisk_id=ids["ari"],
            os_command_line="console=ttyS0 panic=-1 dt.ip=dhcp dt.observer=%s:5000"
            % CONTROLLER_IP)
        with open(os.path.join(guest, "disk.raw"), "rb") as f:
            glance.images.upload(img.id, f)


def _has_role(ks, name):
    return any(r.name == name for r in ks.roles.list())


def main(argv):
    import argparse
    p = argparse.ArgumentParser(prog="cloud", description=__doc__.split("\n")[0])
    p.add_argument("--name", default=os.environ.get("CLOUD_NAME", "cld"))
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("openrc")
    sub.add_parser("openstack")
    for cmd in ("power-off", "power-on", "dt-status"):
        sub.add_parser(cmd).add_argument("host", choices=sorted(HOST_IP))
    o = sub.add_parser("observer")
    o.add_argument("address")
    o.add_argument("--since", type=float, default=0.0, metavar="UNIX_SECONDS")
    o.add_argument("--times", action="store_true", help="each value after its arrival time")
    # Everything after `openstack` or `dt-status HOST` is that command's own (argparse's
    # REMAINDER would refuse a first word starting with "--").
    rest = []
    for cmd, words in (("openstack", 1), ("dt-status", 2)):
        if cmd in argv:
            i = argv.index(cmd) + words
            argv, rest = argv[:i], argv[i:]
            break
    a = p.parse_args(argv)
    cloud = Cloud(a.name)
    if a.cmd == "up":
        cloud.up()
    elif a.cmd == "down":
        cloud.down()
    elif a.cmd == "openrc":
        for k, v in cloud.openrc().items():
            print("export %s=%s" % (k, shlex.quote(v)))
    elif a.cmd == "openstack":
        proc = cloud.openstack(*rest, check=False, timeout=900)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode
    elif a.cmd == "power-off":
        cloud.power_off(a.host)
    elif a.cmd == "power-on":
        cloud.power_on(a.host)
    elif a.cmd == "dt-status":
        status = os.path.join(cloud.build, "agent", "tools", "nova-dt-status")
        return subprocess.run([status, "--address", "unix:" + cloud.control_socket(a.host),
                               *rest], timeout=120).returncode
    elif a.cmd == "observer":
        for v in cloud.observer_values(a.address, a.since, a.times):
            print("%.6f %d" % v if a.times else v)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
