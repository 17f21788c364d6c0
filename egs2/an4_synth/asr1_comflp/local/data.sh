#!/usr/bin/env bash
# Stage 1 of the an4_synth recipe: synthesizes the AN4-style census corpus with espeak-ng
# (local/synth_an4.py) into Kaldi-style data dirs
#   data/train, data/dev, data/test      (wav.scp, text, utt2spk, spk2utt)
# with the audio under downloads/synth_an4/.  Test and dev voices are disjoint from the
# training voices.  Running it again skips the utterances that already exist, so an
# interrupted run resumes and changed options only regenerate what they change.
#
# Noise and room impulse responses come from the mini_an4 tarball (downloads/noise/*.wav and
# downloads/rirs/*.wav), looked up in this order:
#   --mini_an4_tarball PATH
#   $ESPNET_ROOT/egs2/mini_an4/asr1/downloads.tar.gz
#   ../../mini_an4/asr1/downloads.tar.gz      (ESPnet's mini_an4 recipe, plugin installed in ESPnet)
#   <plugin root>/../shared/data/mini_an4/downloads.tar.gz
# or pass --noise_dir/--rir_dir.  --augment false makes clean speech and needs neither.
#
# Needs espeak-ng: apt-get install -y espeak-ng   (MBROLA voices are used when installed:
# apt-get install -y mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1).
set -euo pipefail

log() {
    local caller_file=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${caller_file}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

nj=4                # parallel synthesis processes
seed=0              # seed of prompts, voice split and audio
num_train=3000      # training utterances
num_dev=300         # development utterances
num_test=300        # test utterances
mini_an4_tarball=   # mini_an4 downloads.tar.gz (noise/ and rirs/); searched when empty
noise_dir=          # directory of noise *.wav (instead of the tarball's)
rir_dir=            # directory of room impulse response *.wav (instead of the tarball's)
augment=true        # add noise and reverberation
snr_range="5 30"    # SNR range in dB, "MIN MAX"
wav_dir=downloads/synth_an4
synth_opts=         # further options of local/synth_an4.py, e.g. "--mbrola no --noise_prob 0.5"
python=python3

help_message="Usage: $0 [options]

Options:
    --nj                # parallel synthesis processes (default=${nj})
    --seed              # seed of prompts, voice split and audio (default=${seed})
    --num_train         # training utterances (default=${num_train})
    --num_dev           # development utterances (default=${num_dev})
    --num_test          # test utterances (default=${num_test})
    --mini_an4_tarball  # mini_an4 downloads.tar.gz providing noise/ and rirs/ (default: searched)
    --noise_dir         # directory of noise *.wav (default: the tarball's)
    --rir_dir           # directory of room impulse response *.wav (default: the tarball's)
    --augment           # add noise and reverberation (default=${augment})
    --snr_range         # \"MIN MAX\" SNR in dB (default=\"${snr_range}\")
    --wav_dir           # where the audio is written (default=${wav_dir})
    --synth_opts        # further options for local/synth_an4.py (see its --help)
    --python            # Python with numpy, scipy and soundfile (default=\"${python}\")"

log "$0 $*"
recipe_dir=$PWD
script_dir=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
plugin_root=$(cd "${script_dir}/../../../.." && pwd)
. "${plugin_root}/egs2/TEMPLATE/asr1_comflp/scripts/parse_options.sh"
. "${plugin_root}/egs2/TEMPLATE/asr1_comflp/scripts/common.sh"

if [ $# -ne 0 ]; then
    log "${help_message}"
    log "Error: no positional arguments are expected"
    exit 2
fi

if ! command -v espeak-ng > /dev/null; then
    log "Error: espeak-ng is not installed; install it with: apt-get install -y espeak-ng"
    exit 1
fi

augment_opts=()
if "${augment}"; then
    if [ -n "${noise_dir}" ]; then
        augment_opts+=(--noise_dir "${noise_dir}")
    fi
    if [ -n "${rir_dir}" ]; then
        augment_opts+=(--rir_dir "${rir_dir}")
    fi
    if [ -z "${noise_dir}" ] || [ -z "${rir_dir}" ]; then
        tarball=$(find_mini_an4_tarball "${mini_an4_tarball}" "${recipe_dir}" "${plugin_root}") || {
            log "It provides the noise and room impulse responses: or pass --noise_dir and --rir_dir," \
                "or --augment false for clean speech"
            exit 1
        }
        log "Noise and room impulse responses from ${tarball}"
        augment_opts+=(--noise_tarball "${tarball}")
    fi
    # shellcheck disable=SC2206
    augment_opts+=(--snr_range ${snr_range})
else
    augment_opts+=(--noise_prob 0 --rir_prob 0)
fi

log "Synthesizing ${num_train}/${num_dev}/${num_test} train/dev/test utterances with ${nj} processes"
# shellcheck disable=SC2086
"${python}" "${script_dir}/synth_an4.py" \
    --output_dir data \
    --wav_dir "${wav_dir}" \
    --num_train "${num_train}" \
    --num_dev "${num_dev}" \
    --num_test "${num_test}" \
    --seed "${seed}" \
    --nj "${nj}" \
    "${augment_opts[@]}" \
    ${synth_opts}

for dset in train dev test; do
    if [ -f "data/${dset}/wav.scp" ]; then
        log "data/${dset}: $(wc -l < "data/${dset}/wav.scp") utterances," \
            "$(wc -l < "data/${dset}/spk2utt") speakers"
    fi
done
log "Successfully finished. [elapsed=${SECONDS}s]"
