#!/bin/bash
# devstack/plugin.sh — nova-dt's DevStack plugin. DevStack sources it as
#
#   source devstack/plugin.sh stack pre-install|install|post-config|extra|test-config
#   source devstack/plugin.sh unstack
#   source devstack/plugin.sh clean
#
# (DevStack's doc/source/plugins.rst), after devstack/settings. Every step is a function of
# devstack/lib/nova-dt; this file holds only what is DevStack's: which services run here
# (is_service_enabled), packages (install_package), processes (run_process, stop_process),
# RabbitMQ URLs and vhosts, sudo, and the openstack CLI of test-config. What each phase does:
# devstack/README.md.

NOVA_DT_PLUGIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Loaded once per shell (DevStack sources this file at every phase).
if [[ -z "${_NOVA_DT_LIB_LOADED:-}" ]]; then
    # shellcheck source=devstack/lib/nova-dt
    source "$NOVA_DT_PLUGIN_DIR/lib/nova-dt"
fi

# lib/nova-dt's privileged steps go through sudo, as DevStack's own (stack.sh runs as STACK_USER).
NOVA_DT_SUDO=${NOVA_DT_SUDO-sudo}

# pre-install: Debian packages to build the agent (compute hosts).
function nova_dt_plugin_pre_install {
    if is_service_enabled n-dt-agent; then
        echo_summary "nova-dt: installing the packages to build nova-dt-agent"
        local -a pkgs
        read -r -a pkgs <<<"$(nova_dt_build_packages)"
        install_package "${pkgs[@]}"
    fi
}

# The compute host's side of docs/compute-host.md: guest RAM tmpfs (optional), vhost_net off
# with kvm, the libvirt hook, then libvirtd restarted so that it finds the hook.
function _nova_dt_plugin_compute_host {
    if [[ -n "$NOVA_DT_RAM_TMPFS_MB" ]] && ! mountpoint -q "$NOVA_DT_RAM_DIR"; then
        sudo install -d -m 0711 "$NOVA_DT_RAM_DIR"
        sudo mount -t tmpfs -o "size=${NOVA_DT_RAM_TMPFS_MB}m,mode=0711" tmpfs "$NOVA_DT_RAM_DIR"
    fi
    if [[ "${LIBVIRT_TYPE:-kvm}" == kvm ]]; then
        nova_dt_disable_vhost_net "$NOVA_DT_MODPROBE_DIR"
        if grep -q '^vhost_net ' /proc/modules 2>/dev/null && ! sudo modprobe -r vhost_net; then
            warn $LINENO "nova-dt: vhost_net is loaded and in use: DT servers need userspace virtio-net; unload it (modprobe -r vhost_net once no guest uses it) or reboot"
        fi
    fi
    nova_dt_install_libvirt_hook "$NOVA_DT_LIBVIRT_ETC_DIR"
    restart_service "${NOVA_DT_LIBVIRT_SERVICE:-libvirtd}"
}

# install: the agent built (only its binaries) and installed, the host prepared; the nova_dt
# package in the Python running Nova wherever a Nova-side piece runs.
function nova_dt_plugin_install {
    if is_service_enabled n-dt-agent; then
        echo_summary "nova-dt: building and installing nova-dt-agent"
        nova_dt_build_agent "$NOVA_DT_BUILD_DIR"
        nova_dt_install_agent "$NOVA_DT_BUILD_DIR" "$NOVA_DT_BIN_DIR"
        _nova_dt_plugin_compute_host
    fi
    if is_service_enabled n-api n-sch n-dt-ctl n-dt-agent; then
        echo_summary "nova-dt: installing the nova_dt package into $NOVA_DT_PYTHON"
        nova_dt_install_python_package
    fi
}

# post-config: nova.conf (and the cell conductors' files), the agent's and the controller's
# configuration, the agents' RabbitMQ vhost.
function nova_dt_plugin_post_config {
    # DevStack's RabbitMQ, unless set in local.conf (an empty value: no bus).
    NOVA_DT_TRANSPORT_URL=${NOVA_DT_TRANSPORT_URL-$(get_transport_url "$NOVA_DT_RPC_VHOST")}
    NOVA_DT_NOTIFICATION_TRANSPORT_URL=${NOVA_DT_NOTIFICATION_TRANSPORT_URL-$(get_notification_url)}
    if [[ -n "$NOVA_DT_RPC_VHOST" ]] && is_service_enabled rabbit; then
        rpc_backend_add_vhost "$NOVA_DT_RPC_VHOST"
    fi

    if is_service_enabled nova; then
        echo_summary "nova-dt: configuring Nova"
        # Every Nova service sends versioned notifications: nova.conf (nova-compute's
        # nova-cpu.conf is copied from it when DevStack starts nova-compute) and each cell
        # conductor's own file, whose [DEFAULT] transport_url is its cell's vhost.
        nova_dt_configure_nova_notifications "$NOVA_CONF"
        if is_service_enabled n-cond && [[ "${CELLSV2_SETUP:-superconductor}" != singleconductor ]]; then
            local i
            for i in $(seq 1 "${NOVA_NUM_CELLS:-1}"); do
                nova_dt_configure_nova_notifications "$(conductor_conf "$i")" \
                    "$NOVA_DT_NOTIFICATION_TRANSPORT_URL"
            done
        fi
    fi
    if is_service_enabled n-sch; then
        nova_dt_configure_nova_scheduler "$NOVA_CONF" "$NOVA_DT_LINK_STATS_FILE"
    fi

    if is_service_enabled n-dt-agent; then
        echo_summary "nova-dt: configuring nova-dt-agent"
        nova_dt_configure_nova_compute "$NOVA_CONF" "$NOVA_DT_FILE_BACKED_MEMORY_MB"
        sudo install -d -o "$STACK_USER" -m 0755 "$NOVA_DT_CONF_DIR"
        # The agent (root) keeps its state here; QEMU's user must be able to pass it.
        sudo install -d -o root -g root -m 0755 "$NOVA_DT_STATE_DIR"
        if [[ "$(trueorfalse True NOVA_DT_PEER_TLS)" == True ]]; then
            nova_dt_make_certs "$NOVA_DT_TLS_DIR" "$NOVA_DT_HOST"
        fi
        nova_dt_write_agent_conf "$NOVA_DT_AGENT_CONF"
    fi
    if is_service_enabled n-dt-ctl; then
        echo_summary "nova-dt: configuring nova-dt-controller"
        sudo install -d -o "$STACK_USER" -m 0755 "$NOVA_DT_CONTROLLER_STATE_DIR"
        nova_dt_write_controller_conf "$NOVA_DT_CONTROLLER_CONF"
    fi
}

# Waits until the agent answers its health check, at most NOVA_DT_START_TIMEOUT seconds.
function _nova_dt_plugin_wait_for_agent {
    local deadline=$((SECONDS + NOVA_DT_START_TIMEOUT))
    until sudo "$NOVA_DT_BIN_DIR/nova-dt-status" --config-file "$NOVA_DT_AGENT_CONF" --health >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die $LINENO "nova-dt-agent did not answer within $NOVA_DT_START_TIMEOUT s (journalctl -u devstack@n-dt-agent)"
        fi
        sleep 1
    done
}

# extra: the agent (as root: it hands guest files to QEMU's user and reads QEMU's memory) and
# the controller (as STACK_USER, with nova.conf and its own file).
function nova_dt_plugin_extra {
    if is_service_enabled n-dt-agent; then
        echo_summary "nova-dt: starting nova-dt-agent"
        run_process n-dt-agent "$NOVA_DT_BIN_DIR/nova-dt-agent --config-file $NOVA_DT_AGENT_CONF" "" root
        _nova_dt_plugin_wait_for_agent
    fi
    if is_service_enabled n-dt-ctl; then
        echo_summary "nova-dt: starting nova-dt-controller"
        local scripts
        scripts=$(nova_dt_python_scripts_dir "$NOVA_DT_PYTHON")
        run_process n-dt-ctl "$scripts/nova-dt-controller --config-file $NOVA_CONF --config-file $NOVA_DT_CONTROLLER_CONF"
    fi
}

# test-config (where n-api runs): the DT aggregates of NOVA_DT_AZ_HOSTS and the flavor
# NOVA_DT_FLAVOR, when set; existing ones are kept.
function nova_dt_plugin_test_config {
    if ! is_service_enabled n-api; then
        return 0
    fi
    if [[ -n "$NOVA_DT_AZ_HOSTS" ]]; then
        echo_summary "nova-dt: DT aggregates"
        local pairs az host agg
        pairs=$(nova_dt_parse_az_hosts "$NOVA_DT_AZ_HOSTS")
        while read -r az host; do
            [[ -n "$host" ]] || continue
            agg=$(nova_dt_aggregate_name "$az")
            if ! openstack aggregate show "$agg" >/dev/null 2>&1; then
                openstack aggregate create --zone "$az" --property nova_dt:capable=true "$agg"
            fi
            if openstack aggregate show -f json -c hosts "$agg" | grep -q "\"$host\""; then
                continue
            fi
            # A compute host stacked after this one (a multi-node setup's subnodes) is not
            # registered yet: it joins its aggregate by hand later.
            if [[ -z "$(openstack compute service list --service nova-compute --host "$host" -f value -c Host)" ]]; then
                warn $LINENO "nova-dt: compute host $host is not registered (yet); later: openstack aggregate add host $agg $host"
                continue
            fi
            openstack aggregate add host "$agg" "$host"
        done <<<"$pairs"
    fi
    if [[ -n "$NOVA_DT_FLAVOR" ]] && ! openstack flavor show "$NOVA_DT_FLAVOR" >/dev/null 2>&1; then
        echo_summary "nova-dt: DT flavor $NOVA_DT_FLAVOR"
        local -a props=(--property dt:enabled=true)
        if [[ -n "$NOVA_DT_FLAVOR_EPOCH_MS" ]]; then
            props+=(--property "dt:epoch_ms=$NOVA_DT_FLAVOR_EPOCH_MS")
        fi
        if [[ -n "$NOVA_DT_FLAVOR_PEER_AZ" ]]; then
            props+=(--property "dt:peer_az=$NOVA_DT_FLAVOR_PEER_AZ")
        fi
        # 2.86: Nova validates the dt:* values (nova_dt's extra spec validators).
        openstack --os-compute-api-version 2.86 flavor create --vcpus "$NOVA_DT_FLAVOR_VCPUS" \
            --ram "$NOVA_DT_FLAVOR_RAM" --disk "$NOVA_DT_FLAVOR_DISK" "${props[@]}" "$NOVA_DT_FLAVOR"
    fi
}

# unstack: the processes stopped (their state kept).
function nova_dt_plugin_unstack {
    stop_process n-dt-ctl
    stop_process n-dt-agent
}

# clean (after unstack): state and configuration removed; the TLS directory (its CA may be the
# one other hosts trust), the libvirt hook, the binaries and the Python package stay.
function nova_dt_plugin_clean {
    nova_dt_apply_defaults
    if is_service_enabled n-dt-agent; then
        sudo rm -rf "$NOVA_DT_STATE_DIR" "$NOVA_DT_REPLICA_PATH" "$(dirname "$NOVA_DT_CONTROL_SOCKET")"
        sudo rm -f "$NOVA_DT_AGENT_CONF"
    fi
    if is_service_enabled n-dt-ctl; then
        sudo rm -rf "$NOVA_DT_CONTROLLER_STATE_DIR"
        sudo rm -f "$NOVA_DT_CONTROLLER_CONF"
    fi
}

case "${1:-}" in
    stack)
        case "${2:-}" in
            pre-install) nova_dt_plugin_pre_install ;;
            install) nova_dt_plugin_install ;;
            post-config) nova_dt_plugin_post_config ;;
            extra) nova_dt_plugin_extra ;;
            test-config) nova_dt_plugin_test_config ;;
        esac
        ;;
    unstack) nova_dt_plugin_unstack ;;
    clean) nova_dt_plugin_clean ;;
esac
