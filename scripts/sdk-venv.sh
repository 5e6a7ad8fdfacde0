#!/usr/bin/env bash
# Create (idempotently) .venv-sdk: the official Bacalhau v0.3 Python SDK, kept apart from
# .venv because its pins (urllib3<2, pip<23, ...) clash with ours. Used by tests/requester.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SDK_VENV:-$root/.venv-sdk}"
want=("bacalhau-sdk==0.1.6" "bacalhau-apiclient==0.3.23.post8")
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" - <<'PY' 2>/dev/null; then
from importlib.metadata import version
assert version("bacalhau-sdk") == "0.1.6" and version("bacalhau-apiclient") == "0.3.23.post8"
import bacalhau_sdk.config, bacalhau_apiclient  # noqa: F401
PY
    echo "$venv is ready"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}"
echo "$venv is ready"
