#!/usr/bin/env bash
# Stages 1-13 of ESPnet's asr.sh for setups WITHOUT an ESPnet checkout (no Kaldi utils, no sclite):
# asr_comflp.sh runs this script when the recipe has no ./asr.sh.  Same stage numbers, option
# names, directory names and output layout as asr.sh for what it implements; everything runs
# through espnet2's Python entry points:
#    1  local/data.sh ${local_data_opts}                         -> data/<set>
#    3  copy data dirs, utt2num_samples (soundfile), feats_type  -> ${dumpdir}/raw/{org/,}<set>
#    4  drop too short/long utterances and empty texts           -> ${dumpdir}/raw/<train,valid>
#    5  character (or word) token list (espnet2.bin.tokenize_text) -> data/[<lang>_]token_list
#   10  collect stats (espnet2.bin.asr_train --collect_stats)    -> ${asr_stats_dir}
#   11  training (espnet2.bin.launch + espnet2.bin.asr_train)    -> ${asr_exp}
#   12  decoding of the test sets (espnet2.bin.asr_inference)    -> ${asr_exp}/${inference_tag}/<set>
#   13  scoring (comflp_score: CER and WER, sclite-style tables)  -> .../<set>/score_{cer,wer}, ${asr_exp}/RESULTS.md
# Not implemented (ESPnet's asr.sh is needed): speed perturbation (2), language models (6-9),
# feature types other than raw, BPE tokens, segments files.  Their options are accepted only
# with values that turn them off; anything else stops with an error before any work.
# A stage whose output is complete is skipped.
set -e
set -u
set -o pipefail

SECONDS=0

# General configuration
stage=1
stop_stage=13
skip_stages=
skip_data_prep=false
skip_train=false
skip_eval=false
eval_valid_set=false
ngpu=1
num_nodes=1
nj=32
inference_nj=32
gpu_inference=false
dumpdir=dump
expdir=exp
python=python3

# Data preparation
local_data_opts=
speed_perturb_factors=

# Features
feats_type=raw
audio_format=flac
fs=16k
min_wav_duration=0.1
max_wav_duration=20

# Tokens
token_type=bpe
nbpe=30
bpemode=unigram
oov="<unk>"
blank="<blank>"
sos_eos="<sos/eos>"
nlsyms_txt=none
cleaner=none
hyp_cleaner=none
g2p=none
lang=noinfo

# Language models (ESPnet's asr.sh only: accepted when off)
use_lm=false
use_word_lm=false
use_ngram=false
lm_tag=
lm_exp=
lm_config=
lm_args=
lm_train_text=
lm_dev_text=
lm_test_text=
lm_fold_length=150
bpe_train_text=
inference_lm=valid.loss.ave.pth

# ASR model
asr_task=asr
asr_tag=
asr_exp=
asr_stats_dir=
asr_config=
asr_args=
pretrained_model=
ignore_init_mismatch=false
feats_normalize=global_mvn
asr_speech_fold_length=800
asr_text_fold_length=150

# Decoding
batch_size=1
inference_tag=
inference_config=
inference_args=
inference_asr_model=valid.acc.ave.pth
use_k2=false
use_streaming=false
use_maskctc=false

# Data sets
train_set=
valid_set=
test_sets=
score_opts=
local_score_opts=

help_message=$(cat << EOF
Usage: $0 --train_set <set> --valid_set <set> --test_sets "<sets>" [options]

Stages 1-13 of ESPnet's asr.sh without an ESPnet checkout (see the header of this script).

Options:
    --stage / --stop_stage   # First and last stage (default="${stage}" / "${stop_stage}").
    --skip_stages            # Stages to skip, e.g. "1 5" (default="${skip_stages}").
    --skip_data_prep         # Skip stages 1-5 (default="${skip_data_prep}").
    --skip_train             # Skip stages 2-11 (default="${skip_train}").
    --skip_eval              # Skip stages 12-13 (default="${skip_eval}").
    --eval_valid_set         # Also decode the validation set (default="${eval_valid_set}").
    --ngpu                   # GPUs for training, 0 = CPU (default="${ngpu}").
    --num_nodes              # Nodes for training (default="${num_nodes}").
    --nj                     # Parallel jobs for stats (default="${nj}").
    --inference_nj           # Parallel decoding jobs (default="${inference_nj}").
    --gpu_inference          # Decode on GPU (default="${gpu_inference}").
    --dumpdir / --expdir     # Dump and experiment dirs (default="${dumpdir}" / "${expdir}").
    --python                 # Python interpreter (default="${python}").
    --local_data_opts        # Options of local/data.sh (default="${local_data_opts}").
    --feats_type             # Only "raw" (default="${feats_type}").
    --audio_format           # Kept for asr.sh compatibility; audio is used as listed in wav.scp (default="${audio_format}").
    --fs                     # Expected sampling rate; audio is not resampled (default="${fs}").
    --min_wav_duration / --max_wav_duration  # Duration limits in seconds (default="${min_wav_duration}" / "${max_wav_duration}").
    --token_type             # char or word (default="${token_type}").
    --oov / --blank / --sos_eos  # Special tokens (default="${oov}" / "${blank}" / "${sos_eos}").
    --nlsyms_txt / --cleaner / --g2p  # Text processing (default="${nlsyms_txt}" / "${cleaner}" / "${g2p}").
    --lang                   # Language tag used in directory names (default="${lang}").
    --lm_train_text          # Text for the token list (default="${dumpdir}/raw/org/<train_set>/text").
    --use_lm / --use_word_lm / --use_ngram  # Must be false here (default="${use_lm}").
    --asr_tag / --asr_exp / --asr_stats_dir  # Experiment naming as in asr.sh.
    --asr_config / --asr_args  # Training config and extra arguments (default="${asr_config}" / "${asr_args}").
    --pretrained_model / --ignore_init_mismatch  # Initial parameters (default="${pretrained_model}" / "${ignore_init_mismatch}").
    --feats_normalize        # global_mvn or other (default="${feats_normalize}").
    --asr_speech_fold_length / --asr_text_fold_length  # Fold lengths (default="${asr_speech_fold_length}" / "${asr_text_fold_length}").
    --batch_size             # Decoding batch size (default="${batch_size}").
    --inference_tag / --inference_config / --inference_args / --inference_asr_model  # Decoding as in asr.sh.
    --train_set / --valid_set / --test_sets  # Data sets (required).
    Accepted and ignored (asr.sh features not available here): --nbpe --bpemode --bpe_train_text
    --lm_tag --lm_exp --lm_config --lm_args --lm_dev_text --lm_test_text --lm_fold_length --inference_lm
    --speed_perturb_factors (must be empty) --hyp_cleaner --score_opts --local_score_opts
    --asr_task (must be asr) --use_k2 --use_streaming --use_maskctc (must be false).
EOF
)

# (Set after help_message: every "name=" line above it is an option.)
comflp_template_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
. "${comflp_template_dir}/scripts/common.sh"

log "$0 $*"
. "${comflp_template_dir}/scripts/parse_options.sh"

if [ $# -ne 0 ]; then
    log "${help_message}"
    die "no positional arguments are expected"
fi

. ./path.sh
. ./cmd.sh

# ---------------------------------------------------------------- what this script can do
[ "${asr_task}" = asr ] || die "--asr_task ${asr_task} needs ESPnet's asr.sh (only 'asr' is available without an ESPnet checkout)"
[ -z "${speed_perturb_factors}" ] || die "--speed_perturb_factors needs ESPnet's asr.sh; without an ESPnet checkout pass --speed_perturb_factors \"\""
for flag in use_lm use_word_lm use_ngram use_k2 use_streaming use_maskctc; do
    if [ "${!flag}" != false ]; then
        die "--${flag} ${!flag} needs ESPnet's asr.sh; without an ESPnet checkout pass --${flag} false"
    fi
done
[ "${feats_type}" = raw ] || die "--feats_type ${feats_type} needs ESPnet's asr.sh (only 'raw' is available without an ESPnet checkout)"
if [ "${token_type}" != char ] && [ "${token_type}" != word ]; then
    die "--token_type ${token_type} needs ESPnet's asr.sh (only 'char' and 'word' are available without an ESPnet checkout)"
fi
for opt in lm_config lm_args lm_tag lm_exp lm_dev_text lm_test_text bpe_train_text score_opts local_score_opts; do
    if [ -n "${!opt}" ]; then
        log "Note: --${opt} is ignored without ESPnet's asr.sh (no language model / sclite here)"
    fi
done

if ! "${skip_train}"; then
    [ -n "${train_set}" ] || die "--train_set is required"
    [ -n "${valid_set}" ] || die "--valid_set is required"
fi
if ! "${eval_valid_set}"; then
    [ -n "${test_sets}" ] || die "--test_sets is required"
fi
if [ -n "${train_set}" ] && [ "${train_set}" = "${valid_set}" ]; then
    die "train_set and valid_set must be different: --train_set ${train_set} --valid_set ${valid_set}"
fi
# As asr.sh: the validation set listed in test_sets is decoded as org/<valid_set>.
_test_sets=
for dset in ${test_sets}; do
    if [ "${dset}" = "${train_set}" ]; then
        die "train_set and test_sets must be different: --train_set ${train_set} --test_sets '${test_sets}'"
    fi
    if [ "${dset}" = "${valid_set}" ]; then
        log "Info: the valid_set '${valid_set}' is in test_sets: it is decoded as org/${valid_set} (--eval_valid_set true)"
        eval_valid_set=true
    elif [[ " ${_test_sets} " != *" ${dset} "* ]]; then
        _test_sets+="${dset} "
    fi
done
test_sets=${_test_sets}

data_feats=$(data_feats_dir "${dumpdir}" "${feats_type}")
fs_hz=$(${python} -c "import humanfriendly as h; print(h.parse_size('${fs}'))" 2>/dev/null \
        || ${python} -c "import sys; s='${fs}'.lower(); print(int(float(s[:-1]) * 1000) if s.endswith('k') else int(s))")

[ -z "${lm_train_text}" ] && lm_train_text="${data_feats}/org/${train_set}/text"

if [ "${lang}" != noinfo ]; then
    token_listdir=data/${lang}_token_list
else
    token_listdir=data/token_list
fi
token_list="${token_listdir}/${token_type}/tokens.txt"
bpemodel=none
# Text processing of stats collection and training alike.
asr_text_args=(
    --use_preprocessor true
    --bpemodel "${bpemodel}"
    --token_type "${token_type}"
    --token_list "${token_list}"
    --non_linguistic_symbols "${nlsyms_txt}"
    --cleaner "${cleaner}"
    --g2p "${g2p}"
)

# Directory names, as asr.sh derives them.
derive_asr_names

"${skip_data_prep}" && skip_stages+=" 1 2 3 4 5"
"${skip_train}" && skip_stages+=" 2 4 5 6 7 8 9 10 11"
"${skip_eval}" && skip_stages+=" 12 13"
skip_stages+=" 6 7 8 9"  # the LM and n-gram stages are asr.sh-only

if "${eval_valid_set}"; then
    eval_sets="org/${valid_set} ${test_sets}"
else
    eval_sets="${test_sets}"
fi

# ==================================================================================== stages
if run_stage 1; then
    log "Stage 1: Data preparation for data/${train_set}, data/${valid_set}, etc."
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
fi

if run_stage 2; then
    log "Skip stage 2: Speed perturbation"
fi

if run_stage 3; then
    if "${skip_train}"; then
        _dsets="${test_sets}"
        "${eval_valid_set}" && _dsets="${valid_set} ${_dsets}"
    else
        _dsets="${train_set} ${valid_set} ${test_sets}"
    fi
    log "Stage 3: Format data: data/ -> ${data_feats} (wav.scp kept as given; utt2num_samples computed)"
    for dset in ${_dsets}; do
        if [ "${dset}" = "${train_set}" ] || [ "${dset}" = "${valid_set}" ]; then
            _out="${data_feats}/org/${dset}"
        else
            _out="${data_feats}/${dset}"
        fi
        if [ -f "${_out}/feats_type" ]; then
            log "${_out} exists; skipping"
            continue
        fi
        for f in wav.scp text utt2spk; do
            [ -f "data/${dset}/${f}" ] || die "data/${dset}/${f} not found: run stage 1 (local/data.sh) first"
        done
        [ -e "data/${dset}/segments" ] && die "data/${dset}/segments: segmented audio needs ESPnet's asr.sh"
        rm -rf "${_out}.tmp"
        mkdir -p "${_out}.tmp"
        for f in wav.scp text utt2spk spk2utt utt2lang utt2category; do
            if [ -f "data/${dset}/${f}" ]; then
                LC_ALL=C sort -k1,1 "data/${dset}/${f}" > "${_out}.tmp/${f}"
            fi
        done
        ${python} - "${_out}.tmp" "${fs_hz}" <<'PYEOF'
import sys
from pathlib import Path

import soundfile

out, rate = Path(sys.argv[1]), int(sys.argv[2])
formats = set()
with open(out / "wav.scp", encoding="utf-8") as scp, \
        open(out / "utt2num_samples", "w", encoding="utf-8") as num:
    for lineno, line in enumerate(scp, 1):
        utt, path = line.rstrip("\n").split(maxsplit=1)
        if path.endswith("|"):
            sys.exit(f"{out}/wav.scp:{lineno}: command pipes in wav.scp need ESPnet's asr.sh; "
                     "list audio files instead")
        try:
            info = soundfile.info(path)
        except Exception as e:  # soundfile raises several types for unreadable files
            sys.exit(f"{out}/wav.scp:{lineno}: cannot read {path}: {e}")
        if info.samplerate != rate:
            sys.exit(f"{path}: sampling rate {info.samplerate} Hz, but --fs is {rate}; "
                     "resample the audio (ESPnet's asr.sh would do it)")
        if info.channels != 1:
            sys.exit(f"{path}: {info.channels} channels; only mono audio is supported here")
        num.write(f"{utt} {info.frames}\n")
        formats.add(Path(path).suffix.lstrip(".").lower() or "wav")
(out / "audio_format").write_text((sorted(formats)[0] if len(formats) == 1 else "wav") + "\n")
(out / "feats_type").write_text("raw\n")
PYEOF
        rm -rf "${_out}"
        mv "${_out}.tmp" "${_out}"
    done
fi

if run_stage 4; then
    log "Stage 4: Remove long/short data: ${data_feats}/org -> ${data_feats}"
    _min_length=$(${python} -c "print(int(${min_wav_duration} * ${fs_hz}))")
    _max_length=$(${python} -c "print(int(${max_wav_duration} * ${fs_hz}))")
    for dset in "${train_set}" "${valid_set}"; do
        _in="${data_feats}/org/${dset}"
        _out="${data_feats}/${dset}"
        if [ -f "${_out}/feats_type" ]; then
            log "${_out} exists; skipping"
            continue
        fi
        [ -f "${_in}/feats_type" ] || die "${_in} not found: run stage 3 first"
        rm -rf "${_out}.tmp"
        mkdir -p "${_out}.tmp"
        # Utterances kept: duration strictly inside the limits and a non-empty transcript.
        awk -v lo="${_min_length}" -v hi="${_max_length}" '$2 > lo && $2 < hi { print $1 }' \
            "${_in}/utt2num_samples" > "${_out}.tmp/.keep_len"
        awk 'NF > 1 { print $1 }' "${_in}/text" > "${_out}.tmp/.keep_text"
        awk 'NR == FNR { a[$1] = 1; next } ($1 in a)' "${_out}.tmp/.keep_len" "${_out}.tmp/.keep_text" \
            > "${_out}.tmp/.keep"
        for f in wav.scp text utt2spk utt2num_samples utt2lang utt2category; do
            if [ -f "${_in}/${f}" ]; then
                awk 'NR == FNR { a[$1] = 1; next } ($1 in a)' "${_out}.tmp/.keep" "${_in}/${f}" > "${_out}.tmp/${f}"
            fi
        done
        # spk2utt from the kept utt2spk
        awk '{ if (!($2 in u)) { order[++n] = $2; u[$2] = $1 } else { u[$2] = u[$2] " " $1 } }
             END { for (i = 1; i <= n; i++) print order[i], u[order[i]] }' "${_out}.tmp/utt2spk" \
            | LC_ALL=C sort -k1,1 > "${_out}.tmp/spk2utt"
        _kept=$(num_lines "${_out}.tmp/.keep")
        _total=$(num_lines "${_in}/wav.scp")
        rm -f "${_out}.tmp"/.keep*
        [ "${_kept}" -gt 0 ] || die "${_in}: no utterance is left after removing those shorter than ${min_wav_duration} s, longer than ${max_wav_duration} s or without text"
        log "${dset}: kept ${_kept} of ${_total} utterances"
        cp "${_in}/feats_type" "${_in}/audio_format" "${_out}.tmp/"
        rm -rf "${_out}"
        mv "${_out}.tmp" "${_out}"
    done
    # Text for the token list: transcripts without the utterance id's empty lines.
    # shellcheck disable=SC2068
    for lm_txt in ${lm_train_text[@]}; do
        [ -f "${lm_txt}" ] || die "--lm_train_text ${lm_txt}: no such file"
        awk 'NF != 1' "${lm_txt}"
    done > "${data_feats}/lm_train.txt.tmp"
    mv "${data_feats}/lm_train.txt.tmp" "${data_feats}/lm_train.txt"
fi

if run_stage 5; then
    if [ -s "${token_list}" ]; then
        log "Stage 5: ${token_list} exists; skipping"
    else
        log "Stage 5: Generate ${token_type} level token_list from ${data_feats}/lm_train.txt"
        [ -f "${data_feats}/lm_train.txt" ] || die "${data_feats}/lm_train.txt not found: run stage 4 first"
        mkdir -p "$(dirname "${token_list}")"
        # <blank> must be the first token (CTC blank) and <sos/eos> the last, as in asr.sh.
        ${python} -m espnet2.bin.tokenize_text \
            --token_type "${token_type}" \
            --input "${data_feats}/lm_train.txt" --output "${token_list}.tmp" \
            --non_linguistic_symbols "${nlsyms_txt}" \
            --field 2- \
            --cleaner "${cleaner}" \
            --g2p "${g2p}" \
            --write_vocabulary true \
            --add_symbol "${blank}:0" \
            --add_symbol "${oov}:1" \
            --add_symbol "${sos_eos}:-1"
        mv "${token_list}.tmp" "${token_list}"
    fi
fi

if run_stage 10; then
    _asr_train_dir="${data_feats}/${train_set}"
    _asr_valid_dir="${data_feats}/${valid_set}"
    if [ -f "${asr_stats_dir}/train/text_shape.${token_type}" ] && [ -f "${asr_stats_dir}/valid/text_shape.${token_type}" ]; then
        log "Stage 10: ${asr_stats_dir} exists; skipping"
    else
        log "Stage 10: ASR collect stats: train_set=${_asr_train_dir}, valid_set=${_asr_valid_dir}"
        for d in "${_asr_train_dir}" "${_asr_valid_dir}"; do
            [ -f "${d}/feats_type" ] || die "${d} not found: run stages 3-4 first"
        done
        [ -f "${token_list}" ] || die "${token_list} not found: run stage 5 first"
        read -r _scp _type <<< "$(input_spec "${_asr_train_dir}" "${audio_format}")"
        _opts=
        [ -n "${asr_config}" ] && _opts+="--config ${asr_config} "
        _opts+="--frontend_conf fs=${fs} "

        _logdir="${asr_stats_dir}/logdir"
        rm -rf "${_logdir}"
        mkdir -p "${_logdir}"
        _nj=$(min "${nj}" "$(num_lines "${_asr_train_dir}/${_scp}")" "$(num_lines "${_asr_valid_dir}/${_scp}")")
        split_into_jobs "${_asr_train_dir}/${_scp}" "${_nj}" "${_logdir}/train.JOB.scp"
        split_into_jobs "${_asr_valid_dir}/${_scp}" "${_nj}" "${_logdir}/valid.JOB.scp"

        log "ASR collect-stats started... log: '${_logdir}/stats.*.log'"
        # shellcheck disable=SC2086
        run_or_show_log "${_logdir}/stats.*.log" \
            ${train_cmd} JOB=1:"${_nj}" "${_logdir}"/stats.JOB.log \
            ${python} -m espnet2.bin.asr_train \
                --collect_stats true \
                "${asr_text_args[@]}" \
                --train_data_path_and_name_and_type "${_asr_train_dir}/${_scp},speech,${_type}" \
                --valid_data_path_and_name_and_type "${_asr_valid_dir}/${_scp},speech,${_type}" \
                --train_data_path_and_name_and_type "${_asr_train_dir}/text,text,text" \
                --valid_data_path_and_name_and_type "${_asr_valid_dir}/text,text,text" \
                --train_shape_file "${_logdir}/train.JOB.scp" \
                --valid_shape_file "${_logdir}/valid.JOB.scp" \
                --output_dir "${_logdir}/stats.JOB" \
                ${_opts} ${asr_args}

        _opts=
        for i in $(seq "${_nj}"); do
            _opts+="--input_dir ${_logdir}/stats.${i} "
        done
        [ "${feats_normalize}" != global_mvn ] && _opts+="--skip_sum_stats "
        # shellcheck disable=SC2086
        ${python} -m espnet2.bin.aggregate_stats_dirs ${_opts} --output_dir "${asr_stats_dir}"

        # Batch-bins counting needs the vocabulary size as the last shape dimension.
        _vocab=$(num_lines "${token_list}")
        for part in train valid; do
            awk -v N="${_vocab}" '{ print $0 "," N }' "${asr_stats_dir}/${part}/text_shape" \
                > "${asr_stats_dir}/${part}/text_shape.${token_type}.tmp"
        done
        for part in train valid; do
            mv "${asr_stats_dir}/${part}/text_shape.${token_type}.tmp" "${asr_stats_dir}/${part}/text_shape.${token_type}"
        done
    fi
fi

if run_stage 11; then
    _asr_train_dir="${data_feats}/${train_set}"
    _asr_valid_dir="${data_feats}/${valid_set}"
    if [ -f "${asr_exp}/${inference_asr_model}" ]; then
        log "Stage 11: ${asr_exp}/${inference_asr_model} exists; skipping training"
    else
        log "Stage 11: ASR Training: train_set=${_asr_train_dir}, valid_set=${_asr_valid_dir}"
        [ -f "${asr_stats_dir}/train/text_shape.${token_type}" ] || die "${asr_stats_dir} is incomplete: run stage 10 first"
        read -r _scp _type <<< "$(input_spec "${_asr_train_dir}" "${audio_format}")"
        asr_train_data_args "${_asr_train_dir}" "${_asr_valid_dir}" "${_scp}" "${_type}"
        _opts=
        [ -n "${asr_config}" ] && _opts+="--config ${asr_config} "
        _opts+="--frontend_conf fs=${fs} "
        if [ "${feats_normalize}" = global_mvn ]; then
            _opts+="--normalize=global_mvn --normalize_conf stats_file=${asr_stats_dir}/train/feats_stats.npz "
        fi
        mkdir -p "${asr_exp}"
        log "ASR training started... log: '${asr_exp}/train.log'"
        # shellcheck disable=SC2086
        launch_asr_train "${asr_exp}" "${asr_exp}/train.log" \
            "${asr_text_args[@]}" \
            "${train_data_args[@]}" \
            --resume true \
            ${pretrained_model:+--init_param $pretrained_model} \
            --ignore_init_mismatch ${ignore_init_mismatch} \
            ${_opts} ${asr_args} \
            || { tail -n 40 "${asr_exp}/train.log" >&2; die "training failed; log: ${asr_exp}/train.log"; }
        [ -f "${asr_exp}/${inference_asr_model}" ] \
            || die "training finished without ${asr_exp}/${inference_asr_model}; check --inference_asr_model against best_model_criterion in ${asr_config:-the config}"
    fi
fi

if run_stage 12; then
    log "Stage 12: Decoding: training_dir=${asr_exp}"
    for f in config.yaml "${inference_asr_model}"; do
        [ -f "${asr_exp}/${f}" ] || die "${asr_exp}/${f} not found: run stage 11 first (or pass --asr_exp / --inference_asr_model)"
    done
    if "${gpu_inference}"; then
        _cmd="${cuda_cmd}"
        _ngpu=1
    else
        _cmd="${decode_cmd}"
        _ngpu=0
    fi
    _opts=
    [ -n "${inference_config}" ] && _opts+="--config ${inference_config} "
    for dset in ${eval_sets}; do
        _data="${data_feats}/${dset}"
        _dir="${asr_exp}/${inference_tag}/${dset}"
        if [ -f "${_dir}/text" ]; then
            log "${_dir}/text exists; skipping"
            continue
        fi
        [ -f "${_data}/feats_type" ] || die "${_data} not found: run stage 3 first"
        _logdir="${_dir}/logdir"
        rm -rf "${_logdir}"
        mkdir -p "${_logdir}"
        read -r _scp _type <<< "$(input_spec "${_data}" "${audio_format}")"
        _nj=$(min "${inference_nj}" "$(num_lines "${_data}/${_scp}")")
        split_into_jobs "${_data}/${_scp}" "${_nj}" "${_logdir}/keys.JOB.scp"
        log "Decoding started... log: '${_logdir}/asr_inference.*.log'"
        # shellcheck disable=SC2086
        run_or_show_log "${_logdir}/asr_inference.*.log" \
            ${_cmd} --gpu "${_ngpu}" JOB=1:"${_nj}" "${_logdir}"/asr_inference.JOB.log \
            ${python} -m espnet2.bin.asr_inference \
                --batch_size ${batch_size} \
                --ngpu "${_ngpu}" \
                --data_path_and_name_and_type "${_data}/${_scp},speech,${_type}" \
                --key_file "${_logdir}"/keys.JOB.scp \
                --asr_train_config "${asr_exp}"/config.yaml \
                --asr_model_file "${asr_exp}"/"${inference_asr_model}" \
                --output_dir "${_logdir}"/output.JOB \
                ${_opts} ${inference_args}
        for f in token token_int score text; do
            if [ -f "${_logdir}/output.1/1best_recog/${f}" ]; then
                cat_jobs "${_nj}" "${_logdir}/output.JOB/1best_recog/${f}" | LC_ALL=C sort -k1,1 > "${_dir}/${f}.tmp"
            fi
        done
        # "text" last: its presence marks the set as decoded.
        for f in token token_int score text; do
            [ -f "${_dir}/${f}.tmp" ] && mv "${_dir}/${f}.tmp" "${_dir}/${f}"
        done
        [ -f "${_dir}/text" ] || die "decoding wrote no ${_logdir}/output.*/1best_recog/text"
    done
fi

if run_stage 13; then
    log "Stage 13: Scoring"
    _rescored=false
    for dset in ${eval_sets}; do
        _data="${data_feats}/${dset}"
        _dir="${asr_exp}/${inference_tag}/${dset}"
        [ -f "${_dir}/text" ] || die "${_dir}/text not found: run stage 12 first"
        if [ -f "${_dir}/scores.md" ] && [ "${_dir}/scores.md" -nt "${_dir}/text" ]; then
            log "${_dir}/score_{cer,wer} exist; skipping"
            continue
        fi
        # comflp_score scores every <name>/text under --hyp_dir; the name is the set's last path
        # component and the label prefix the rest, giving rows such as "<inference_tag>/test".
        _name=$(basename "${dset}")
        _prefix="${inference_tag}/"
        [ "${_name}" != "${dset}" ] && _prefix+="$(dirname "${dset}")/"
        _work="${_dir}/.scoring"
        rm -rf "${_work}"
        mkdir -p "${_work}/hyp/${_name}"
        cp "${_dir}/text" "${_work}/hyp/${_name}/text"
        _opts=
        [ "${nlsyms_txt}" != none ] && _opts+="--nlsyms_txt ${nlsyms_txt} "
        # shellcheck disable=SC2086
        ${python} -m comflp_espnet.bin.comflp_score \
            --ref "${_data}/text" \
            --hyp_dir "${_work}/hyp" \
            --token_type "${token_type}" \
            --label_prefix "${_prefix}" \
            --output_dir "${_work}/out" ${_opts} \
            || die "scoring ${_dir} failed"
        for _type in cer wer; do
            rm -rf "${_dir}/score_${_type}"
            mv "${_work}/out/${_name}/score_${_type}" "${_dir}/score_${_type}"
            log "Write ${_type} result in ${_dir}/score_${_type}/result.txt"
        done
        mv "${_work}/out/scores.md" "${_dir}/scores.md"
        rm -rf "${_work}"
        _rescored=true
    done

    # ${asr_exp}/RESULTS.md in the layout of ESPnet's show_asr_result.sh; sections that
    # asr_comflp.sh added (between comflp markers) are kept.
    if ! "${_rescored}" && [ -f "${asr_exp}/RESULTS.md" ]; then
        log "${asr_exp}/RESULTS.md is up to date; skipping"
    else
    _score_files=()
    for dset in ${eval_sets}; do
        _score_files+=("${asr_exp}/${inference_tag}/${dset}/scores.md")
    done
    ${python} - "${asr_exp}" "${_score_files[@]}" <<'PYEOF'
import os
import platform
import re
import sys
import time
from pathlib import Path

asr_exp, score_files = sys.argv[1], sys.argv[2:]
rows = {"WER": [], "CER": []}
for path in score_files:
    metric = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            metric = line[4:].strip()
        elif metric in rows and line.startswith("|") and not line.startswith(("|dataset|", "|---")):
            rows[metric].append(line)
versions = []
try:
    import espnet
    versions.append(f"- espnet version: `espnet {espnet.__version__}`")
except Exception:  # the header is informative only
    pass
try:
    import torch
    versions.append(f"- pytorch version: `pytorch {torch.__version__}`")
except Exception:
    pass
header = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|\n|---|---|---|---|---|---|---|---|---|"
out = [
    "<!-- Generated by asr_minimal.sh stage 13 (the format of ESPnet's show_asr_result.sh) -->",
    "# RESULTS",
    "## Environments",
    f"- date: `{time.strftime('%a %b %d %H:%M:%S %Z %Y')}`",
    f"- python version: `{platform.python_version()}`",
    *versions,
    "",
    f"## {Path(asr_exp).name}",
]
for metric in ("WER", "CER"):
    out += [f"### {metric}", "", header, *rows[metric], ""]
old = Path(asr_exp) / "RESULTS.md"
kept = []
if old.exists():
    kept = [m.group(0) for m in re.finditer(
        r"<!-- comflp:begin (\S+) -->.*?<!-- comflp:end \1 -->\n?",
        old.read_text(encoding="utf-8"), flags=re.S)]
text = "\n".join(out) + ("\n" + "".join(kept) if kept else "")
tmp = Path(asr_exp) / "RESULTS.md.tmp"
tmp.write_text(text, encoding="utf-8")
os.replace(tmp, old)
PYEOF
    cat "${asr_exp}/RESULTS.md"
    fi
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
