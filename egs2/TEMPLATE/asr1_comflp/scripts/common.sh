#!/usr/bin/env bash
# Helpers shared by asr_comflp.sh, asr_minimal.sh and the recipes' local/data.sh (sourced, not run).  Functions that read
# the scripts' options (stage, dumpdir, asr_config, ...) say so.

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

# decode_array CMD PYTHON NGPU BATCH_SIZE SKIP_BAD_UTTS INFERENCE_CONFIG INFERENCE_ARGS: the
# "${CMD} JOB=1:N" array of comflp_espnet.bin.comflp_decode that decodes the models of a decode
# directory laid out by comflp_espnet.bin.comflp_stage (its decode_* variables: decode_count,
# decode_nj, decode_log, decode_models_scp, decode_scp, decode_type, decode_keys, decode_output).
decode_array() {
    local cmd=$1 python=$2 ngpu=$3 batch_size=$4 skip_bad_utts=$5 config=$6 args=$7 opts=()
    [ -n "${config}" ] && opts+=(--config "${config}")
    log "Decoding ${decode_count} model(s) on $(dirname "${decode_scp}") in ${decode_nj} job(s)... log: '${decode_log//JOB/*}'"
    # shellcheck disable=SC2086
    run_or_show_log "${decode_log//JOB/*}" \
        ${cmd} JOB=1:"${decode_nj}" "${decode_log}" \
        ${python} -m comflp_espnet.bin.comflp_decode \
            --models_scp "${decode_models_scp}" \
            --data_path_and_name_and_type "${decode_scp},speech,${decode_type}" \
            --key_file "${decode_keys}" \
            --output_dir "${decode_output}" \
            --ngpu "${ngpu}" \
            --batch_size "${batch_size}" \
            --skip_bad_utts "${skip_bad_utts}" \
            "${opts[@]+"${opts[@]}"}" ${args}
}

# run_stage N: true when stage N is inside [stage, stop_stage] and not in skip_stages.
run_stage() {
    [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ] && [[ " ${skip_stages} " != *" $1 "* ]]
}

# runs_any N...: true when any of the stages runs.
runs_any() {
    local s
    for s in "$@"; do
        run_stage "${s}" && return 0
    done
    return 1
}

# data_feats_dir DUMPDIR FEATS_TYPE: asr.sh's directory of the dumped data of a feature type.
data_feats_dir() {
    case "$2" in
        raw|raw_copy|fbank_pitch|fbank|extracted) echo "$1/$2" ;;
        *) die "not supported: --feats_type $2" ;;
    esac
}

# derive_asr_names: the directory names asr.sh derives from its options, for those not given:
# asr_tag, lm_tag, asr_stats_dir, asr_exp, lm_exp, ngram_exp and inference_tag.  Reads asr.sh's
# options of the same names (asr_config, asr_args, feats_type, lang, token_type, nbpe,
# speed_perturb_factors, lm_config, lm_args, expdir, inference_*, use_lm, use_ngram, use_k2, ...).
derive_asr_names() {
    local lm_token_type=${token_type}
    if [ -z "${asr_tag}" ]; then
        if [ -n "${asr_config}" ]; then
            asr_tag="$(basename "${asr_config}" .yaml)_${feats_type}"
        else
            asr_tag="train_${feats_type}"
        fi
        if [ "${lang}" != noinfo ]; then
            asr_tag+="_${lang}_${token_type}"
        else
            asr_tag+="_${token_type}"
        fi
        [ "${token_type}" = bpe ] && asr_tag+="${nbpe}"
        [ "${token_type}" = hugging_face ] && asr_tag+="_"${hugging_face_model_name_or_path/\//-}
        if [ -n "${asr_args}" ]; then
            asr_tag+="$(echo "${asr_args}" | sed -e "s/--/\_/g" -e "s/[ |=/]//g")"
        fi
        [ -n "${speed_perturb_factors}" ] && asr_tag+="_sp"
    fi
    if [ -z "${lm_tag}" ]; then
        if [ -n "${lm_config}" ]; then
            lm_tag="$(basename "${lm_config}" .yaml)"
        else
            lm_tag="train"
        fi
        if [ "${lang}" != noinfo ]; then
            lm_tag+="_${lang}_${lm_token_type}"
        else
            lm_tag+="_${lm_token_type}"
        fi
        [ "${lm_token_type}" = bpe ] && lm_tag+="${nbpe}"
        if [ -n "${lm_args}" ]; then
            lm_tag+="$(echo "${lm_args}" | sed -e "s/--/\_/g" -e "s/[ |=/]//g")"
        fi
    fi
    if [ -z "${asr_stats_dir}" ]; then
        if [ "${lang}" != noinfo ]; then
            asr_stats_dir="${expdir}/asr_stats_${feats_type}_${lang}_${token_type}"
        else
            asr_stats_dir="${expdir}/asr_stats_${feats_type}_${token_type}"
        fi
        [ "${token_type}" = bpe ] && asr_stats_dir+="${nbpe}"
        [ "${token_type}" = hugging_face ] && asr_stats_dir+="_"${hugging_face_model_name_or_path/\//-}
        [ -n "${speed_perturb_factors}" ] && asr_stats_dir+="_sp"
    fi
    [ -z "${asr_exp}" ] && asr_exp="${expdir}/asr_${asr_tag}"
    [ -z "${lm_exp}" ] && lm_exp="${expdir}/lm_${lm_tag}"
    [ -z "${ngram_exp:-}" ] && ngram_exp="${expdir}/ngram"
    if [ -z "${inference_tag}" ]; then
        if [ -n "${inference_config}" ]; then
            inference_tag="$(basename "${inference_config}" .yaml)"
        else
            inference_tag=inference
        fi
        if [ -n "${inference_args}" ]; then
            inference_tag+="$(echo "${inference_args}" | sed -e "s/--/\_/g" -e "s/[ |=]//g")"
        fi
        if "${use_lm}"; then
            inference_tag+="_lm_$(basename "${lm_exp}")_$(echo "${inference_lm}" | sed -e "s/\//_/g" -e "s/\.[^.]*$//g")"
        fi
        if "${use_ngram}"; then
            inference_tag+="_ngram_$(basename "${ngram_exp}")_$(echo "${inference_ngram}" | sed -e "s/\//_/g" -e "s/\.[^.]*$//g")"
        fi
        inference_tag+="_asr_model_$(echo "${inference_asr_model}" | sed -e "s/\//_/g" -e "s/\.[^.]*$//g")"
        if "${use_k2}"; then
            inference_tag+="_use_k2_k2_ctc_decoding_${k2_ctc_decoding}_use_nbest_rescoring_${use_nbest_rescoring}"
        fi
    fi
    return 0
}

# split_into_jobs IN NJ PATTERN: split_keys IN into NJ parts named PATTERN with JOB replaced by
# 1..NJ (e.g. logdir/keys.JOB.scp), the names the jobs of "${cmd} JOB=1:NJ" read.
split_into_jobs() {
    local in=$1 nj=$2 pattern=$3 n parts=()
    for n in $(seq "${nj}"); do
        parts+=("${pattern//JOB/${n}}")
    done
    split_keys "${in}" "${parts[@]}"
}

# cat_jobs NJ PATTERN: the files PATTERN with JOB replaced by 1..NJ, concatenated in job order.
cat_jobs() {
    local nj=$1 pattern=$2 n
    for n in $(seq "${nj}"); do
        cat "${pattern//JOB/${n}}"
    done
}

# asr_train_data_args TRAIN_DIR VALID_DIR SCP TYPE: the data, shape-file and fold-length options
# of espnet2.bin.asr_train for speech + text training (into the array train_data_args), in the
# order asr.sh gives them: --fold_length pairs with --train_shape_file by position (speech, then
# text).  Reads asr_stats_dir, token_type, feats_type, asr_speech_fold_length and
# asr_text_fold_length.
asr_train_data_args() {
    local train_dir=$1 valid_dir=$2 scp=$3 type=$4 speech_fold_length
    if [ "${feats_type}" = raw ] || [ "${feats_type}" = raw_copy ]; then
        # Raw audio is counted in samples, not frames.
        speech_fold_length="$((asr_speech_fold_length * 100))"
    else
        speech_fold_length="${asr_speech_fold_length}"
    fi
    train_data_args=(
        --train_data_path_and_name_and_type "${train_dir}/${scp},speech,${type}"
        --train_shape_file "${asr_stats_dir}/train/speech_shape"
        --fold_length "${speech_fold_length}"
        --train_data_path_and_name_and_type "${train_dir}/text,text,text"
        --train_shape_file "${asr_stats_dir}/train/text_shape.${token_type}"
        --fold_length "${asr_text_fold_length}"
        --valid_data_path_and_name_and_type "${valid_dir}/${scp},speech,${type}"
        --valid_shape_file "${asr_stats_dir}/valid/speech_shape"
        --valid_data_path_and_name_and_type "${valid_dir}/text,text,text"
        --valid_shape_file "${asr_stats_dir}/valid/text_shape.${token_type}"
    )
}

# launch_asr_train OUT_DIR JOB_NAME OPTION...: espnet2.bin.<asr_task>_train with the options,
# writing OUT_DIR (log: OUT_DIR/train.log), through espnet2.bin.launch on --ngpu GPUs and
# --num_nodes nodes with ${cuda_cmd}, as asr.sh trains.  Reads python, cuda_cmd, ngpu, num_nodes
# and asr_task.
launch_asr_train() {
    local out=$1 jobname=$2
    shift 2
    ${python} -m espnet2.bin.launch \
        --cmd "${cuda_cmd} --name ${jobname}" \
        --log "${out}/train.log" \
        --ngpu "${ngpu}" \
        --num_nodes "${num_nodes}" \
        --init_file_prefix "${out}/.dist_init_" \
        --multiprocessing_distributed true -- \
        ${python} -m "espnet2.bin.${asr_task}_train" --output_dir "${out}" "$@"
}

# results_section_id ASR_EXP COMFLP_DIR TAG: the id of a search's section in ASR_EXP/RESULTS.md.
# The tag alone under the default COMFLP_DIR (ASR_EXP/comflp); otherwise COMFLP_DIR (relative to
# ASR_EXP when inside it) is part of the id, so that searches with the same tag in different
# --comflp_dir keep separate sections.
results_section_id() {
    local asr_exp=${1%/} comflp_dir=${2%/} tag=$3
    if [ "${comflp_dir}" = "${asr_exp}/comflp" ]; then
        echo "${tag}"
    else
        echo "${comflp_dir#"${asr_exp}"/}/${tag}" | sed 's/[^A-Za-z0-9_.+-]/+/g'
    fi
}

# now_seconds: wall-clock time in seconds, with fractions.
now_seconds() {
    date +%s.%N
}

# Path of the mini_an4 tarball (ESPnet's CI data; its noise/ and rirs/ also serve an4_synth): $1 when
# given, else ESPnet's copy ($ESPNET_ROOT, or egs2/mini_an4/asr1 beside the recipe $2), else the
# shared data beside the plugin root $3.  Prints the path; says what it looked for and fails otherwise.
find_mini_an4_tarball() {
    local explicit=$1 recipe_dir=$2 plugin_root=$3 c
    if [ -n "${explicit}" ]; then
        [ -f "${explicit}" ] || { log "Error: --mini_an4_tarball ${explicit}: no such file" >&2; return 1; }
        echo "${explicit}"
        return 0
    fi
    local candidates=()
    [ -n "${ESPNET_ROOT:-}" ] && candidates+=("${ESPNET_ROOT}/egs2/mini_an4/asr1/downloads.tar.gz")
    candidates+=("${recipe_dir}/../../mini_an4/asr1/downloads.tar.gz"
                 "${plugin_root}/../shared/data/mini_an4/downloads.tar.gz")
    for c in "${candidates[@]}"; do
        if [ -f "${c}" ]; then
            echo "${c}"
            return 0
        fi
    done
    log "Error: the mini_an4 tarball was not found; looked for: ${candidates[*]}." \
        "Pass --local_data_opts '--mini_an4_tarball /path/to/downloads.tar.gz'" \
        "(ESPnet ships it as egs2/mini_an4/asr1/downloads.tar.gz)" >&2
    return 1
}
