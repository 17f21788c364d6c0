#!/usr/bin/env bash
# Helpers shared by asr_comflp.sh and asr_minimal.sh (sourced, not run).

# Progress line in the format of ESPnet's asr.sh: "<date> (<file>:<line>:<function>) message".
log() {
    local caller_file=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${caller_file}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# Prints the error in the log format on stderr and exits with status 2.
die() {
    local caller_file=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${caller_file}:${BASH_LINENO[0]}:${FUNCNAME[1]}) Error: $*" >&2
    exit 2
}

# Smallest of the integer arguments.
min() {
    local best=$1 x
    for x in "$@"; do
        [ "${x}" -lt "${best}" ] && best=${x}
    done
    echo "${best}"
}

# split_keys IN OUT1 OUT2 ...: splits the lines of IN into contiguous, nearly equal parts (as
# Kaldi's split_scp.pl does without --utt2spk).  Refuses to make more parts than there are lines.
split_keys() {
    local in=$1
    shift
    local parts=$# lines
    lines=$(wc -l < "${in}")
    if [ "${parts}" -gt "${lines}" ]; then
        die "cannot split ${in} (${lines} lines) into ${parts} parts"
    fi
    awk -v parts="${parts}" -v lines="${lines}" -v outs="$*" '
        BEGIN { split(outs, out, " ") }
        {
            # Line NR (1-based) goes to part p with floor((p-1)*lines/parts) < NR <= floor(p*lines/parts).
            p = int(((NR - 1) * parts) / lines) + 1
            print > out[p]
        }' "${in}"
    # Parts that received no line still have to exist.
    local f
    for f in "$@"; do
        [ -e "${f}" ] || : > "${f}"
    done
}

# input_spec DATA_DIR [DEFAULT_AUDIO_FORMAT]: prints "<scp file name> <ESPnet data type>" for the
# speech input of a dumped data dir, following the feats_type/audio_format files asr.sh writes.
input_spec() {
    local dir=$1 default_format=${2:-wav} feats_type audio_format
    feats_type=$(cat "${dir}/feats_type" 2>/dev/null || echo raw)
    audio_format=$(cat "${dir}/audio_format" 2>/dev/null || echo "${default_format}")
    if [ "${feats_type}" = raw ]; then
        if [[ "${audio_format}" == *ark* ]]; then
            echo "wav.scp kaldi_ark"
        elif [[ "${audio_format}" == *multi* ]]; then
            echo "wav.scp multi_columns_sound"
        else
            echo "wav.scp sound"
        fi
    else
        echo "feats.scp kaldi_ark"
    fi
}

# num_lines FILE: line count, 0 when the file does not exist.
num_lines() {
    if [ -f "$1" ]; then
        wc -l < "$1" | tr -d ' '
    else
        echo 0
    fi
}

# run_or_show_log LOG_GLOB CMD...: runs CMD; on failure prints the logs matching LOG_GLOB that
# mention an error (as asr.sh does) and exits.
run_or_show_log() {
    local pattern=$1
    shift
    if ! "$@"; then
        local f shown=false
        for f in ${pattern}; do
            [ -f "${f}" ] || continue
            if grep -qi -e error -e traceback "${f}"; then
                echo "===== ${f} (last 40 lines) =====" >&2
                tail -n 40 "${f}" >&2
                shown=true
            fi
        done
        if ! "${shown}"; then
            echo "see the logs: ${pattern}" >&2
        fi
        die "command failed: $*"
    fi
}
