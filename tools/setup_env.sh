#!/usr/bin/env bash
# Create (or reuse) the Python environment comflp-espnet runs and is tested in.
#   tools/setup_env.sh            -> prints the venv's path on the last line
# The venv lives outside the checkout (COMFLP_VENV, default ~/.cache/comflp-espnet/venv) so that fresh
# clones reuse it; it is rebuilt whenever requirements.txt changes.
set -euo pipefail
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}) $*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${COMFLP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/comflp-espnet/venv}
python=${COMFLP_PYTHON:-python3.11}
command -v "${python}" >/dev/null || python=python3
req="${root}/requirements.txt"
want=$(sha256sum "${req}" | cut -d' ' -f1)

if [ -x "${venv}/bin/python" ] && [ "$(cat "${venv}/.comflp_requirements" 2>/dev/null)" = "${want}" ]; then
    log "Reusing ${venv}"
else
    log "Creating ${venv} (torch, espnet: several GB, takes a few minutes the first time)"
    "${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, got " + sys.version' \
        || { log "Error: set COMFLP_PYTHON to a Python 3.11 interpreter"; exit 1; }
    rm -f "${venv}/.comflp_requirements"
    "${python}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install -q 'pip<25'
    # torch first, so that espnet's own requirement on torch resolves to this build.
    "${venv}/bin/python" -m pip install -q torch==2.9.1 torchaudio==2.9.1
    "${venv}/bin/python" -m pip install -q -r "${req}"
    echo "${want}" > "${venv}/.comflp_requirements"
fi
# The synthetic corpora (egs2/mini_an4_synth, egs2/an4_synth) speak with Debian's espeak-ng: install
# it when we can (root with apt-get); otherwise their data stage says how.
if ! command -v espeak-ng >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "Installing espeak-ng (apt-get) for the synthetic corpora"
        { apt-get install -y -q espeak-ng || { apt-get update -q && apt-get install -y -q espeak-ng; }; } >/dev/null 2>&1 \
            || log "Warning: could not install espeak-ng (apt-get install -y espeak-ng)"
    else
        log "Note: the synthetic corpora need espeak-ng: sudo apt-get install -y espeak-ng"
    fi
fi
echo "${venv}"
