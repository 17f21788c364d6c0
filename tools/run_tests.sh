#!/usr/bin/env bash
# Run the test suite in the project's environment (created on first use by tools/setup_env.sh).
#   tools/run_tests.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$("${root}/tools/setup_env.sh" | tail -n 1)

# The synthetic-corpus tests need Debian's espeak-ng; install it when we can, else they skip.
if ! command -v espeak-ng >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing espeak-ng (apt-get) for the synthetic corpus tests" >&2
    { apt-get install -y -q espeak-ng || { apt-get update -q && apt-get install -y -q espeak-ng; }; } >/dev/null \
        || echo "Warning: could not install espeak-ng; its tests will be skipped" >&2
fi

cd "${root}"
exec "${venv}/bin/python" -m pytest "$@"
