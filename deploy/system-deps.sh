#!/usr/bin/env bash
# Debian packages keeptime needs to build and run: the distribution's Python
# with venv (keeptime's virtualenvs are made of /usr/bin/python3, or
# $KEEPTIME_PYTHON, which every user may run), a C compiler and Python's
# headers for keeptimed's native parts, and util-linux's unshare and setpriv
# (used by install.sh, the tests and operators). Installs only what is missing.
# Usage: deploy/system-deps.sh [--test]
#   --test  also what the test suite uses: systemd's systemd-analyze, to verify
#           the unit file (installing the package does not start systemd)
set -euo pipefail
python=${KEEPTIME_PYTHON:-/usr/bin/python3}
need=()
if [ "${1:-}" = --test ]; then
    command -v systemd-analyze >/dev/null || need+=(systemd)
fi
if [ ! -x "$python" ]; then
    need+=(python3 python3-dev python3-venv)
else
    "$python" - <<'PY' || need+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
    "$python" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
fi
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v setpriv >/dev/null && command -v unshare >/dev/null || need+=(util-linux)
command -v pkill >/dev/null || need+=(procps)
command -v openssl >/dev/null || need+=(openssl)   # tests make TLS certificates
if ((${#need[@]})); then
    echo "keeptime: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
