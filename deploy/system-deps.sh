#!/usr/bin/env bash
# Debian packages keeptime needs to build and run: a C compiler and Python's
# headers for the cffi module, venv, and util-linux's unshare (used by tests
# and operators). Installs only what is missing.
# Usage: deploy/system-deps.sh [--test]
#   --test  also what the test suite uses: systemd's systemd-analyze, to verify
#           the unit file (installing the package does not start systemd)
set -euo pipefail
need=()
if [ "${1:-}" = --test ]; then
    command -v systemd-analyze >/dev/null || need+=(systemd)
fi
command -v gcc >/dev/null || need+=(gcc libc6-dev)
python3 - <<'PY' || need+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v unshare >/dev/null || need+=(util-linux)
command -v pkill >/dev/null || need+=(procps)
command -v openssl >/dev/null || need+=(openssl)   # tests make TLS certificates
if ((${#need[@]})); then
    echo "keeptime: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
