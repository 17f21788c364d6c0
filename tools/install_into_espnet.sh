#!/usr/bin/env bash
# Installs comflp-espnet into an ESPnet checkout:
#   1. pip install -e <this plugin> into ESPnet's Python (ESPNET_ROOT/tools/activate_python.sh
#      when present, else the python3 on PATH);
#   2. copies the recipe directories into ESPNET_ROOT/egs2/:
#        egs2/TEMPLATE/asr1_comflp  egs2/aishell/asr1_comflp  egs2/mini_an4/asr1_comflp  egs2/an4_synth/asr1_comflp
#        egs2/mini_an4_synth/asr1_comflp
#      (cp -a: their relative links, e.g. asr.sh -> ../../TEMPLATE/asr1/asr.sh, then resolve
#      inside the checkout).
#
#   tools/install_into_espnet.sh [--force] [--no-pip] ESPNET_ROOT
#
# An existing recipe directory is not overwritten unless --force is given; with --force its files are
# replaced and its run outputs (data/, dump/, exp/, downloads/, RESULTS.md) are kept.
# Afterwards:  cd ESPNET_ROOT/egs2/mini_an4/asr1_comflp && ./run.sh
set -euo pipefail

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}) $*"; }
usage() {
    echo "usage: $0 [--force] [--no-pip] ESPNET_ROOT" >&2
    exit 2
}

force=false
pip=true
espnet_root=
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=true; shift ;;
        --no-pip) pip=false; shift ;;
        -h|--help) usage ;;
        -*) echo "$0: unknown option $1" >&2; usage ;;
        *) [ -z "${espnet_root}" ] || usage; espnet_root=$1; shift ;;
    esac
done
[ -n "${espnet_root}" ] || usage

plugin_root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
if [ ! -d "${espnet_root}/egs2/TEMPLATE/asr1" ] || [ ! -d "${espnet_root}/espnet2" ]; then
    echo "$0: ${espnet_root} is not an ESPnet checkout (no espnet2/ or egs2/TEMPLATE/asr1/)" >&2
    exit 1
fi
espnet_root=$(cd "${espnet_root}" && pwd)

recipes="egs2/TEMPLATE/asr1_comflp egs2/aishell/asr1_comflp egs2/mini_an4/asr1_comflp egs2/an4_synth/asr1_comflp
    egs2/mini_an4_synth/asr1_comflp"
# Check everything before changing anything.
for r in ${recipes}; do
    if [ -e "${espnet_root}/${r}" ] && ! "${force}"; then
        echo "$0: ${espnet_root}/${r} exists; pass --force to replace it" >&2
        exit 1
    fi
done

if "${pip}"; then
    if [ -f "${espnet_root}/tools/activate_python.sh" ]; then
        # shellcheck disable=SC1091
        . "${espnet_root}/tools/activate_python.sh"
    fi
    python=$(command -v python3 || command -v python)
    log "Installing the comflp_espnet package into $(${python} -c 'import sys; print(sys.prefix)') (pip install -e ${plugin_root})"
    # pip >= 25 refuses one of espnet's URL dependencies; ESPnet's environment normally has an
    # older pip already, otherwise run: ${python} -m pip install 'pip<25'
    "${python}" -m pip install -e "${plugin_root}"
else
    log "Skipping pip install (--no-pip)"
fi

for r in ${recipes}; do
    dst="${espnet_root}/${r}"
    mkdir -p "${dst}"
    # Copied entry by entry. Run outputs (data, dump, exp, downloads, RESULTS.md) are neither
    # copied from the plugin tree nor removed from an earlier install: --force replaces the
    # recipe's files and keeps the user's experiments.
    for entry in "${plugin_root}/${r}"/* "${plugin_root}/${r}"/.[!.]*; do
        [ -e "${entry}" ] || [ -L "${entry}" ] || continue
        name=$(basename "${entry}")
        case "${name}" in
            data|dump|exp|downloads|RESULTS.md) continue ;;
        esac
        rm -rf "${dst:?}/${name}"
        if [ "${r}/${name}" = egs2/TEMPLATE/asr1_comflp/conf ]; then
            # A link to the plugin's top-level conf/ (plugin-wide defaults): copy what it points to.
            cp -aL "${entry}" "${dst}/"
        else
            cp -a "${entry}" "${dst}/"
        fi
    done
    log "Copied ${r} -> ${dst}"
done

broken=$(find "${espnet_root}/egs2/aishell/asr1_comflp" "${espnet_root}/egs2/mini_an4/asr1_comflp" "${espnet_root}/egs2/an4_synth/asr1_comflp" \
    "${espnet_root}/egs2/mini_an4_synth/asr1_comflp" \
    -maxdepth 2 -xtype l 2>/dev/null | sort || true)
if [ -n "${broken}" ]; then
    log "Warning: these links do not resolve in ${espnet_root}:"
    echo "${broken}"
fi
log "Done. Try: cd ${espnet_root}/egs2/mini_an4/asr1_comflp && ./run.sh"
