# shellcheck shell=bash
# Environment of the CoMFLP recipes; sourced from the recipe directory by asr_comflp.sh,
# asr_minimal.sh and (inside an ESPnet checkout) ESPnet's asr.sh.  Recipes link to this file.
#
# Inside an ESPnet checkout (egs2/<corpus>/asr1_comflp/ of a tree that has espnet2/ and tools/),
# ESPnet's own Python environment and tool paths are used, as in ESPnet's recipes.  Elsewhere the
# virtual environment made by tools/setup_env.sh is activated: the one already active, else
# $COMFLP_VENV, else ~/.cache/comflp-espnet/venv (when it exists).
# The plugin's source tree is put on PYTHONPATH, so comflp_espnet is found without installing it.

MAIN_ROOT=$PWD/../../..

if [ -d "${MAIN_ROOT}/espnet2" ] && [ -d "${MAIN_ROOT}/tools" ]; then
    if [ -f "${MAIN_ROOT}/tools/activate_python.sh" ]; then
        . "${MAIN_ROOT}/tools/activate_python.sh"
    else
        echo "[INFO] ${MAIN_ROOT}/tools/activate_python.sh is not present"
    fi
    if [ -f "${MAIN_ROOT}/tools/extra_path.sh" ]; then
        . "${MAIN_ROOT}/tools/extra_path.sh"
    fi
elif [ -z "${VIRTUAL_ENV:-}" ]; then
    _comflp_venv=${COMFLP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/comflp-espnet/venv}
    if [ -f "${_comflp_venv}/bin/activate" ]; then
        . "${_comflp_venv}/bin/activate"
    else
        echo "[INFO] no Python environment activated: create one with tools/setup_env.sh" \
            "(or set COMFLP_VENV)" >&2
    fi
    unset _comflp_venv
fi

# The plugin root is three levels above the physical location of this file
# (<root>/egs2/TEMPLATE/asr1_comflp/path.sh).
_comflp_root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)
if [ -f "${_comflp_root}/comflp_espnet/__init__.py" ]; then
    export PYTHONPATH="${_comflp_root}${PYTHONPATH:+:${PYTHONPATH}}"
fi
unset _comflp_root

if [ -d "${PWD}/utils" ]; then
    export PATH="${PWD}/utils:${PATH}"
fi
export LC_ALL=C
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Python reads and writes UTF-8 even though LC_ALL=C (transcripts in any script).
export PYTHONIOENCODING=UTF-8
# NCCL interface selection for multi-GPU training, as in ESPnet's recipes.
export NCCL_SOCKET_IFNAME="^lo,docker,virbr,vmnet,vboxnet"

if [ -f local/path.sh ]; then
    . local/path.sh
fi
