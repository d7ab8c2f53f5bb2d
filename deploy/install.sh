#!/usr/bin/env bash
# Install keeptime system-wide and start keeptimed on its embedded defaults:
#   socket /run/keeptime/keeptime.sock (0600), records /var/lib/keeptime/keeptime.db
# Usage, as root: deploy/install.sh [--client-only]
#   --client-only  install the keeptime CLI, library and CRIU hook but start no
#                  daemon: for nodes where keeptimed runs as the Kubernetes DaemonSet
# KEEPTIME_PREFIX overrides /opt/keeptime, the virtualenv both distributions go
# into; KEEPTIME_PYTHON overrides /usr/bin/python3, the interpreter it is made of.
set -euo pipefail
client_only=false
case "${1:-}" in
    "") ;;
    --client-only) client_only=true ;;
    *) echo "usage: install.sh [--client-only]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${KEEPTIME_PREFIX:-/opt/keeptime}
# The distribution's own Python, not the first python3 on PATH: a virtualenv
# runs the interpreter it was made of, and a per-user one (pyenv under root's
# 0700 home) would leave keeptime unusable by anyone but root.
python=${KEEPTIME_PYTHON:-/usr/bin/python3}
socket=/run/keeptime/keeptime.sock
pidfile=/run/keeptime/keeptimed.pid
log=/var/log/keeptime/keeptimed.log
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (keeptimed needs CAP_SYS_ADMIN and CAP_SYS_TIME)" >&2; exit 1; }
umask 022   # what is installed is for every user who may call keeptimed

KEEPTIME_PYTHON=$python bash "$here/deploy/system-deps.sh"

echo "keeptime: installing into $prefix (Python: $python)"
if [ -e "$prefix/bin/python3" ] && [ "$(readlink -f "$prefix/bin/python3")" != "$(readlink -f "$python")" ]; then
    echo "keeptime: $prefix was made of $(readlink -f "$prefix/bin/python3"); making it anew of $python"
    "$python" -m venv --clear "$prefix"
else
    "$python" -m venv "$prefix"
fi
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

# Socket-group members and rootless CRIU run keeptime as themselves: check
# that a user other than root (nobody) can.
as_nobody() { env -i PATH=/usr/bin:/bin setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if ! as_nobody "$prefix/bin/keeptime" --version >/dev/null; then
    echo "keeptime: $prefix/bin/keeptime does not run as a user other than root (uid 65534);" \
         "can every user enter $prefix and run its Python, $(readlink -f "$prefix/bin/python3")?" >&2
    exit 1
fi
status=0
as_nobody "$prefix/bin/keeptime-criu-hook" 2>/dev/null || status=$?
if [ "$status" != 2 ]; then   # 2: "this is a CRIU action script", as run by hand
    echo "keeptime: the CRIU hook $prefix/bin/keeptime-criu-hook does not run as a user other than root" >&2
    exit 1
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
    where="see systemctl status keeptimed and journalctl -u keeptimed"
else
    # No systemd (a container, a CI runner): run it in the background; an
    # earlier one is stopped first (the processes it restored keep running).
    old=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$old" ] && [ "$(cat "/proc/$old/comm" 2>/dev/null)" = keeptimed ]; then
        echo "keeptime: stopping the keeptimed already running (pid $old)"
        kill "$old"
        while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
    fi
    mkdir -p "$(dirname "$log")" /run/keeptime
    setsid /usr/local/bin/keeptimed --pid-file "$pidfile" </dev/null >>"$log" 2>&1 &
    echo "keeptime: no systemd here: started keeptimed in the background (pid $!); log $log, pid file $pidfile"
    where="see $log"
fi

for _ in $(seq 100); do
    if /usr/local/bin/keeptime --timeout 2 health >/dev/null 2>&1; then
        echo "keeptime: keeptimed is serving on $socket"
        exit 0
    fi
    sleep 0.2
done
echo "keeptime: keeptimed did not come up; $where" >&2
exit 1
