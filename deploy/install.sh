#!/usr/bin/env bash
# Install keeptime system-wide and start keeptimed on its embedded defaults:
#   socket /run/keeptime/keeptime.sock (0600), records /var/lib/keeptime/keeptime.db
# Usage: sudo deploy/install.sh [--client-only]   (KEEPTIME_PREFIX overrides /opt/keeptime)
#   --client-only  install the keeptime CLI and library but start no daemon:
#                  for nodes where keeptimed runs as the Kubernetes DaemonSet
set -euo pipefail
client_only=false
case "${1:-}" in
    "") ;;
    --client-only) client_only=true ;;
    *) echo "usage: install.sh [--client-only]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${KEEPTIME_PREFIX:-/opt/keeptime}
socket=/run/keeptime/keeptime.sock
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (keeptimed needs CAP_SYS_ADMIN and CAP_SYS_TIME)" >&2; exit 1; }

bash "$here/deploy/system-deps.sh"

echo "keeptime: installing into $prefix"
python3 -m venv "$prefix"
# Both distributions from this checkout: keeptime (client/) and keeptimed (the root).
"$prefix/bin/pip" install --quiet --disable-pip-version-check "$here/client" "$here"
ln -sf "$prefix/bin/keeptime" /usr/local/bin/keeptime
ln -sf "$prefix/bin/keeptimed" /usr/local/bin/keeptimed

# Bash completion for keeptime, in new shells.
mkdir -p /etc/bash_completion.d
"$prefix/bin/keeptime" completion bash > /etc/bash_completion.d/keeptime

# The CRIU action script and its configuration (an existing one is kept).
# CRIU uses it once /etc/criu/default.conf (or runc.conf, crun.conf) names it:
# see deploy/criu/default.conf. /usr/libexec/keeptime/criu-hook is the native
# forwarder itself, not keeptime-criu-hook (a shell script that execs it):
# CRIU runs the script at every step, and a shell adds its start to each.
ln -sf "$prefix/bin/keeptime-criu-hook" /usr/local/bin/keeptime-criu-hook
mkdir -p /usr/libexec/keeptime
ln -sfn "$prefix/bin/keeptime-criu-forward" /usr/libexec/keeptime/criu-hook
if [ ! -e /etc/keeptime/criu-hook.toml ]; then
    install -D -m 0644 "$here/deploy/criu/criu-hook.toml" /etc/keeptime/criu-hook.toml
fi

if $client_only; then
    echo "keeptime: installed the CLI and the CRIU hook; they talk to the keeptimed serving $socket"
    exit 0
fi

# An example configuration, every key commented out (the defaults apply);
# an existing one is never overwritten.
if [ ! -e /etc/keeptime/keeptimed.toml ]; then
    install -D -m 0644 "$here/deploy/keeptimed.toml" /etc/keeptime/keeptimed.toml
fi

if [ -d /run/systemd/system ]; then
    install -m 0644 "$here/deploy/systemd/keeptimed.service" /etc/systemd/system/keeptimed.service
    systemctl daemon-reload
    systemctl enable keeptimed.service
    systemctl restart keeptimed.service
else
    # No systemd (a container, a CI runner): run it in the background.
    mkdir -p /var/log/keeptime
    if [ -f /run/keeptime/keeptimed.pid ] && kill -0 "$(cat /run/keeptime/keeptimed.pid)" 2>/dev/null; then
        kill "$(cat /run/keeptime/keeptimed.pid)"
        while kill -0 "$(cat /run/keeptime/keeptimed.pid)" 2>/dev/null; do sleep 0.1; done
    fi
    mkdir -p /run/keeptime
    setsid /usr/local/bin/keeptimed </dev/null >>/var/log/keeptime/keeptimed.log 2>&1 &
    echo $! > /run/keeptime/keeptimed.pid
fi

for _ in $(seq 100); do
    if /usr/local/bin/keeptime --timeout 2 list >/dev/null 2>&1; then
        echo "keeptime: keeptimed is serving on $socket"
        exit 0
    fi
    sleep 0.2
done
echo "keeptime: keeptimed did not come up; see journalctl -u keeptimed or /var/log/keeptime/keeptimed.log" >&2
exit 1
