#!/usr/bin/env bash
# Decode every model of a models.scp on a data set through the recipe's job backend, and score them:
#
#   decode_models.sh [options] MODELS_SCP DATA_DIR OUT_DIR
#
# MODELS_SCP lists "<name> <config.yaml> <model file>".  Each of --nj jobs of "${cmd} JOB=1:N"
# decodes its share of DATA_DIR with every model (comflp_espnet.bin.comflp_decode, one process);
# the shares are joined into OUT_DIR/hyp/<name>/{text,token,score,decode_time,num_utts,skipped},
# each with a freshness record, and OUT_DIR/models.scp lists the models.  With --score_dir the
# hypotheses are scored (CER and WER, comflp_espnet.ranking; with --score true into OUT_DIR/score).  Models whose hypotheses are current
# (same model files, data and decoding options) are not decoded again.
# Used by asr_comflp.sh (stages 16 with glp, 17 and 20) and bench/compare_methods.py; run it from
# the recipe directory after sourcing path.sh and cmd.sh.
set -e
set -u
set -o pipefail

scripts_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
. "${scripts_dir}/common.sh"

cmd=            # Job command, e.g. "${decode_cmd}" (default: the local runner).
python=python3  # Python interpreter.
nj=1            # Parallel jobs.
ngpu=0          # 1: decode on a GPU.
batch_size=1    # Decoding batch size.
inference_config=   # Decoding config (YAML of Speech2Text options).
inference_args=     # Extra decoding options, e.g. "--beam_size 5".
audio_format=flac   # Default audio format of the data dir (its audio_format file wins).
skip_bad_utts=false # Skip (and list) unreadable or too short utterances instead of stopping.
score=false         # Score the hypotheses into OUT_DIR/score.
score_dir=          # Score the hypotheses into this directory instead.
token_type=char     # char: CER is the primary metric, else WER.
nlsyms_txt=none     # Non-linguistic symbols removed before scoring.
label_prefix=       # Prefix of the model names in the score tables.
help_message="Usage: $0 [options] MODELS_SCP DATA_DIR OUT_DIR"
. "${scripts_dir}/parse_options.sh"
[ $# -eq 3 ] || { echo "${help_message}" >&2; exit 1; }
models_scp=$1
data_dir=$2
out_dir=$3
[ -n "${cmd}" ] || cmd="${scripts_dir}/run_local.sh"

job_opts=("--models_scp=${models_scp}" "--data_dir=${data_dir}" "--output_dir=${out_dir}" "--nj=${nj}"
    "--inference_config=${inference_config}" "--inference_args=${inference_args}" "--batch_size=${batch_size}"
    "--ngpu=${ngpu}" "--audio_format=${audio_format}" "--skip_bad_utts=${skip_bad_utts}"
    "--score=${score}" "--score_dir=${score_dir}" "--token_type=${token_type}" "--nlsyms_txt=${nlsyms_txt}"
    "--label_prefix=${label_prefix}")
out=$(${python} -m comflp_espnet.bin.comflp_stage decode_begin "${job_opts[@]}") || exit 2
eval "${out}"
if [ "${decode_state}" = current ]; then
    log "${decode_done} is current; skipping"
    exit 0
fi
if [ "${decode_count}" -gt 0 ]; then
    decode_array "${cmd}" "${python}" "${ngpu}" "${batch_size}" "${skip_bad_utts}" \
        "${inference_config}" "${inference_args}"
fi
${python} -m comflp_espnet.bin.comflp_stage decode_end "${job_opts[@]}" --jobs "${decode_nj:-0}" || exit 2
