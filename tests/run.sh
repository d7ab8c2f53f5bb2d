#!/usr/bin/env bash
# Run keeptime's test suite: a virtualenv (.venv, or $KEEPTIME_TEST_VENV) of
# the distribution's Python (/usr/bin/python3, or $KEEPTIME_PYTHON) with both
# distributions installed editable, keeptime (client/) and keeptimed (the
# root, with its test extras), then pytest.
# Tests marked `root` need root and time namespaces and are skipped elsewhere.
# Usage, as root: tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KEEPTIME_TEST_VENV:-.venv}
python=${KEEPTIME_PYTHON:-/usr/bin/python3}
bash deploy/system-deps.sh --test
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -e ./client -e '.[test]'
exec "$venv/bin/python" -m pytest "$@"
