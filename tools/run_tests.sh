#!/usr/bin/env bash
# Run the test suite in the project's environment (created on first use by tools/setup_env.sh).
#   tools/run_tests.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$("${root}/tools/setup_env.sh" | tail -n 1)

# (setup_env.sh also installs espeak-ng for the synthetic-corpus tests when it can.)
cd "${root}"
exec "${venv}/bin/python" -m pytest "$@"
