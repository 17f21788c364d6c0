#!/usr/bin/env bash
# CoMFLP layer pruning as recipe stages after ESPnet's asr.sh.
#
#   Stages  1-13  ESPnet's ./asr.sh (inside an ESPnet checkout), else the plugin's asr_minimal.sh
#   Stage  14     dump pooled encoder states h_0..h_L of a seeded calibration subset of train_set
#   Stage  15     correlation matrix between the states (.npy + heatmap .png)
#   Stage  16     coarse search: top-K layer sets to remove, one pruned candidate dir each
#                 (--comflp_search glp: greedy layer pruning by the task metric instead, its
#                 k steps decoded on the fine-search subset; its result is the one candidate)
#   Stage  17     fine search: decode every candidate (and the original) on a held-out subset
#   Stage  18     score the candidates (CER/WER), choose the winner; record the search's cost
#                 (decodes, wall-clock seconds of stages 14-18) in <tag>/search_cost.{json,md}
#   Stage  19     optional (--comflp_finetune true): fine-tune the winner
#   Stage  20     decode and score --test_sets with the original, pruned and fine-tuned models;
#                 RESULTS.md sections
#   Stage  21     optional (--comflp_pack true): pack the final model with espnet2.bin.pack
#
# Options this script declares are used here; the asr.sh options among them are also passed on
# to asr.sh, and every other option is passed to asr.sh (or asr_minimal.sh) unchanged.
# Run it through a recipe's run.sh, from that recipe directory (egs2/<corpus>/asr1_comflp) or from the
# directory where asr.sh trained the model (e.g. egs2/<corpus>/asr1: ../asr1_comflp/run.sh --stage 14).
set -e
set -u
set -o pipefail

comflp_template_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
. "${comflp_template_dir}/scripts/common.sh"

SECONDS=0

# ---- options: begin (every "name=default" line up to "options: end" is an option)
# General configuration
stage=1                 # First stage to run.
stop_stage=10000        # Last stage to run.
skip_stages=            # Stages to skip, e.g. "19 21".
ngpu=1                  # GPUs for training and state dumping (0: CPU).
num_nodes=1             # Nodes for (fine-)training.
nj=32                   # Parallel jobs (state dumping).
inference_nj=32         # Parallel jobs in decoding.
gpu_inference=false     # Decode on GPU.
dumpdir=dump            # Directory of dumped data (asr.sh's).
expdir=exp              # Directory of experiments.
python=python3          # Python interpreter.
batch_size=1            # Decoding batch size.

# Names asr.sh derives its directories from
speed_perturb_factors=
feats_type=raw
audio_format=flac
fs=16k
token_type=bpe
nbpe=30
bpemode=unigram
hugging_face_model_name_or_path=""
nlsyms_txt=none
cleaner=none
g2p=none
lang=noinfo
use_lm=true
use_word_lm=false
lm_tag=
lm_exp=
lm_config=
lm_args=
use_ngram=false
ngram_exp=
ngram_num=3
inference_ngram=3gram.bin
asr_task=asr
asr_tag=
asr_exp=
asr_stats_dir=
asr_config=
asr_args=
feats_normalize=global_mvn
asr_speech_fold_length=800
asr_text_fold_length=150
use_k2=false
k2_ctc_decoding=true
use_nbest_rescoring=true
inference_tag=
inference_config=
inference_args=
inference_lm=valid.loss.ave.pth
inference_asr_model=valid.acc.ave.pth
train_set=
valid_set=
test_sets=

# CoMFLP
comflp_dir=                 # Output root (default: ${asr_exp}/comflp).
comflp_tag=                 # Name of one search's directory (default: <measure>_<search>_prune<k>).
comflp_calib_nutt=320       # Calibration utterances from train_set (0: all).
comflp_seed=0               # Seed of the calibration / fine-search subsets.
comflp_pooling=mean         # Pooling of the states per utterance (mean or frame).
comflp_dump_args=           # Extra options of comflp_dump, e.g. "--batch_size 16".
comflp_measure=dc           # Correlation measure: dc, svcca, cka, cosine or angular.
comflp_dc_batch_size=       # Utterances per block for the dc measure (empty: its default).
comflp_search=dp            # Coarse search: dp, beam, greedy, exhaustive (or a baseline, or glp).
comflp_num_prune=           # Encoder layers to remove (or give --comflp_keep).
comflp_keep=                # Encoder layers to keep (alternative to --comflp_num_prune).
comflp_topk=10              # Candidates the coarse search keeps.
comflp_beam_size=10         # Beam width of --comflp_search beam.
comflp_aggregate=mean       # How the scores of a proposal's runs combine: mean, sum or min.
comflp_keep_first=false     # Never remove layer 1.
comflp_keep_last=false      # Never remove layer L.
comflp_max_run=             # Longest run of consecutive removed layers (empty: no limit).
comflp_protect=             # Layers never removed, comma separated, e.g. "1,2".
comflp_fine_set=            # Data set of the fine search (default: valid_set).
comflp_fine_nutt=500        # Fine-search utterances (0: all).
comflp_finetune=false       # Fine-tune the winner (stage 19).
comflp_finetune_config=conf/comflp/finetune.yaml  # Overlay on the winner's config.yaml.
comflp_finetune_args=       # Extra asr_train options for fine-tuning, e.g. "--max_epoch 5".
comflp_pack=false           # Pack the final model (stage 21).
# ---- options: end

help_message=$(cat << EOF
Usage: $0 --train_set <set> --valid_set <set> --test_sets "<sets>" [options]

Runs ESPnet's asr.sh for stages 1-13 (or the plugin's asr_minimal.sh without an ESPnet checkout)
and CoMFLP layer pruning in stages 14-21.  Options not listed here are passed to asr.sh.

Options:
    # General configuration
    --stage                  # First stage (default="${stage}").
    --stop_stage             # Last stage (default="${stop_stage}").
    --skip_stages            # Stages to skip (default="${skip_stages}").
    --ngpu                   # GPUs for training and state dumping, 0 = CPU (default="${ngpu}").
    --num_nodes              # Nodes for fine-tuning (default="${num_nodes}").
    --nj                     # Parallel jobs for state dumping (default="${nj}").
    --inference_nj           # Parallel jobs for decoding (default="${inference_nj}").
    --gpu_inference          # Decode on GPU (default="${gpu_inference}").
    --dumpdir                # Dump directory (default="${dumpdir}").
    --expdir                 # Experiment directory (default="${expdir}").
    --python                 # Python interpreter (default="${python}").
    --batch_size             # Decoding batch size (default="${batch_size}").

    # The trained model (named as asr.sh names it)
    --asr_exp                # Experiment dir (default: ${expdir}/asr_<asr_tag>).
    --asr_tag                # Suffix of the experiment dir (default: from --asr_config etc.).
    --asr_config             # Training config (default="${asr_config}").
    --asr_args               # Extra training arguments (default="${asr_args}").
    --asr_stats_dir          # Stats dir (default: ${expdir}/asr_stats_<feats_type>_...).
    --inference_asr_model    # Model file in the experiment dir (default="${inference_asr_model}").
    --feats_type --audio_format --fs --token_type --nbpe --bpemode --lang --speed_perturb_factors
    --nlsyms_txt --cleaner --g2p --feats_normalize --asr_speech_fold_length --asr_text_fold_length
    --use_lm --lm_tag --lm_exp --lm_config --lm_args --inference_lm --use_ngram --ngram_exp
    --ngram_num --inference_ngram --use_k2 --k2_ctc_decoding --use_nbest_rescoring --asr_task
    --hugging_face_model_name_or_path --use_word_lm
                             # As in asr.sh; they determine asr.sh's directory names.

    # Data and decoding
    --train_set              # Training set; the calibration subset is drawn from it (default="${train_set}").
    --valid_set              # Validation set; default fine-search set (default="${valid_set}").
    --test_sets              # Sets decoded in stage 20 (default="${test_sets}").
    --inference_config       # Decoding config (default="${inference_config}").
    --inference_args         # Extra decoding options (default="${inference_args}").
    --inference_tag          # Name of decoding result dirs (default: as asr.sh derives it).

    # CoMFLP
    --comflp_dir             # Output root (default: <asr_exp>/comflp).
    --comflp_tag             # Directory of one search (default: <measure>_<search>_prune<k>).
    --comflp_calib_nutt      # Calibration utterances, 0 = all (default="${comflp_calib_nutt}").
    --comflp_seed            # Seed of the subsets (default="${comflp_seed}").
    --comflp_pooling         # State pooling, mean or frame (default="${comflp_pooling}").
    --comflp_dump_args       # Extra comflp_dump options (default="${comflp_dump_args}").
    --comflp_measure         # dc, svcca, cka, cosine or angular (default="${comflp_measure}").
    --comflp_dc_batch_size   # Block size of the dc measure (default: the measure's own).
    --comflp_search          # dp, beam, greedy, exhaustive, a baseline offered by comflp_search, or glp
                             # (greedy layer pruning by the task metric, decoding in stage 16) (default="${comflp_search}").
    --comflp_num_prune       # Layers to remove (default: half of the encoder layers).
    --comflp_keep            # Layers to keep, instead of --comflp_num_prune.
    --comflp_topk            # Coarse-search candidates (default="${comflp_topk}").
    --comflp_beam_size       # Beam width for --comflp_search beam (default="${comflp_beam_size}").
    --comflp_aggregate       # Combination of the runs' scores: mean (CoMFLP), sum or min (default="${comflp_aggregate}").
    --comflp_keep_first      # Never remove layer 1 (default="${comflp_keep_first}").
    --comflp_keep_last       # Never remove the last layer (default="${comflp_keep_last}").
    --comflp_max_run         # Longest run of removed consecutive layers (default: no limit).
    --comflp_protect         # Comma-separated layers never removed (default="${comflp_protect}").
    --comflp_fine_set        # Fine-search data set (default: --valid_set).
    --comflp_fine_nutt       # Fine-search utterances, 0 = all (default="${comflp_fine_nutt}").
    --comflp_finetune        # Fine-tune the winner in stage 19 (default="${comflp_finetune}").
    --comflp_finetune_config # Overlay config for fine-tuning (default="${comflp_finetune_config}").
    --comflp_finetune_args   # Extra asr_train options for fine-tuning (default="${comflp_finetune_args}").
    --comflp_pack            # Pack the final model in stage 21 (default="${comflp_pack}").
EOF
)

log "$0 $*"

# ------------------------------------------------------------------ option routing
# Option names declared between the "options" markers of a script (asr.sh and asr_minimal.sh
# declare all of theirs before help_message).
declared_options() {
    local script=$1
    if grep -q '^# ---- options: begin' "${script}"; then
        sed -n '/^# ---- options: begin/,/^# ---- options: end/p' "${script}"
    else
        sed -n '1,/^help_message=/p' "${script}"
    fi | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' | sort -u
}

own_options=" $(declared_options "${BASH_SOURCE[0]}" | tr '\n' ' ') "
if [ -e ./asr.sh ]; then
    asr_script=./asr.sh
    asr_script_desc="ESPnet's asr.sh"
else
    asr_script="${comflp_template_dir}/asr_minimal.sh"
    asr_script_desc="asr_minimal.sh (stages 1-13 without an ESPnet checkout)"
fi
asr_options=" $(declared_options "${asr_script}" | tr '\n' ' ') "

own_args=()
forward_args=()
foreign_options=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            own_args+=("$1")
            shift
            ;;
        --*)
            if [[ "$1" == --*=* ]]; then
                _name=${1%%=*}
                _value=${1#*=}
                shift
            else
                [ $# -ge 2 ] || die "option $1 needs a value"
                _name=$1
                _value=$2
                shift 2
            fi
            _name=${_name#--}
            _name=${_name//-/_}
            if [ "${_name}" = config ]; then
                own_args+=(--config "${_value}")
                forward_args+=(--config "${_value}")
            elif [[ "${own_options}" == *" ${_name} "* ]]; then
                own_args+=("--${_name}" "${_value}")
                # stage/stop_stage are given to asr.sh explicitly; comflp_* are ours alone.
                if [ "${_name}" != stage ] && [ "${_name}" != stop_stage ] && [[ "${_name}" != comflp_* ]]; then
                    forward_args+=("--${_name}" "${_value}")
                fi
            else
                forward_args+=("--${_name}" "${_value}")
                foreign_options+=("${_name}")
            fi
            ;;
        *)
            log "${help_message}"
            die "no positional arguments are expected, got '$1'"
            ;;
    esac
done
set -- "${own_args[@]+"${own_args[@]}"}"
. "${comflp_template_dir}/scripts/parse_options.sh"

. ./path.sh
. ./cmd.sh

for _name in stage stop_stage nj inference_nj ngpu num_nodes batch_size comflp_calib_nutt comflp_seed \
        comflp_topk comflp_beam_size comflp_fine_nutt; do
    [[ "${!_name}" =~ ^[0-9]+$ ]] || die "--${_name} must be a non-negative integer, got '${!_name}'"
done
asr_stages_requested=false
[ "${stage}" -le 13 ] && asr_stages_requested=true
if ! "${asr_stages_requested}"; then
    # asr.sh will not run to reject them, so check the passed-on options here.
    for _name in "${foreign_options[@]+"${foreign_options[@]}"}"; do
        if [[ "${asr_options}" != *" ${_name} "* ]]; then
            die "unknown option --${_name}: neither asr_comflp.sh nor ${asr_script_desc} has it (see $0 --help)"
        fi
    done
fi

# ------------------------------------------------------------------ names, as asr.sh derives them
data_feats=$(data_feats_dir "${dumpdir}" "${feats_type}")
[ -n "${speed_perturb_factors}" ] && train_set="${train_set}_sp"

# Test sets as asr.sh evaluates them: the validation set is decoded as org/<valid_set>.
eval_sets=
for dset in ${test_sets}; do
    if [ "${dset}" = "${valid_set}" ]; then
        _entry="org/${valid_set}"
    else
        _entry=${dset}
    fi
    [[ " ${eval_sets} " == *" ${_entry} "* ]] || eval_sets+="${_entry} "
done
# asr.sh lists org/<valid_set> first.
if [[ " ${eval_sets} " == *" org/${valid_set} "* ]]; then
    eval_sets="org/${valid_set} $(echo " ${eval_sets} " | sed -e "s| org/${valid_set} | |")"
fi
eval_sets=$(echo "${eval_sets}" | xargs)

derive_asr_names

[ -z "${comflp_dir}" ] && comflp_dir="${asr_exp}/comflp"
[ -z "${comflp_fine_set}" ] && comflp_fine_set=${valid_set}
asr_train_config="${asr_exp}/config.yaml"
asr_model_file="${asr_exp}/${inference_asr_model}"

# ------------------------------------------------------------------ checks before any work
comflp_measures="dc svcca cka cosine angular"
if runs_any 14 15 16 17 18 19 20 21; then
    _import_error=$(${python} -c "import comflp_espnet" 2>&1) \
        || die "${python} cannot import comflp_espnet (${_import_error##*$'\n'}).
  Install the plugin into this Python (tools/install_into_espnet.sh ESPNET_ROOT, or pip install -e <plugin>),
  or run from a recipe whose path.sh puts the plugin on PYTHONPATH."
    [[ " ${comflp_measures} " == *" ${comflp_measure} "* ]] \
        || die "unknown --comflp_measure '${comflp_measure}'; choose one of: ${comflp_measures}"
    # The search methods (and baselines) comflp_search offers.
    comflp_methods=$(${python} - 2>/dev/null <<'PYEOF' || true
from comflp_espnet.bin.comflp_search import get_parser
for action in get_parser()._actions:
    if "--method" in action.option_strings and action.choices:
        print(" ".join(action.choices))
PYEOF
)
    [ -n "${comflp_methods}" ] || comflp_methods="dp beam greedy exhaustive"
    # Greedy layer pruning by the task metric decodes in stage 16 (comflp_glp keeps its steps).
    comflp_methods+=" glp"
    [[ " ${comflp_methods} " == *" ${comflp_search} "* ]] \
        || die "unknown --comflp_search '${comflp_search}'; choose one of: ${comflp_methods}"
    # The two similarity baselines read their own measure's matrix.
    if [ "${comflp_search}" = bi ] && [ "${comflp_measure}" != cosine ]; then
        die "--comflp_search bi reads cosine similarities: pass --comflp_measure cosine"
    fi
    if [ "${comflp_search}" = angular ] && [ "${comflp_measure}" != angular ]; then
        die "--comflp_search angular reads angular distances: pass --comflp_measure angular"
    fi
    case "${comflp_aggregate}" in
        mean|sum|min) ;;
        *) die "unknown --comflp_aggregate '${comflp_aggregate}'; choose one of: mean sum min" ;;
    esac
    if [ -n "${comflp_num_prune}" ] && [ -n "${comflp_keep}" ]; then
        die "give --comflp_num_prune or --comflp_keep, not both"
    fi
    for _name in comflp_num_prune comflp_keep comflp_max_run; do
        if [ -n "${!_name}" ] && ! [[ "${!_name}" =~ ^[1-9][0-9]*$ ]]; then
            die "--${_name} must be a positive integer, got '${!_name}'"
        fi
    done
    [ "${comflp_topk}" -ge 1 ] || die "--comflp_topk must be at least 1"
    if [ -n "${comflp_protect}" ] && ! [[ "${comflp_protect}" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]]; then
        die "--comflp_protect must list layer numbers separated by commas (e.g. 1,2), got '${comflp_protect}'"
    fi
    [ "${comflp_pooling}" = mean ] || [ "${comflp_pooling}" = frame ] \
        || die "--comflp_pooling must be mean or frame, got '${comflp_pooling}'"
    if "${use_lm}" || "${use_ngram}"; then
        log "Note: CoMFLP decoding (stages 17 and 20) does not use a language model (--use_lm/--use_ngram)"
    fi
fi
# A YAML file that must parse into a mapping; $1 option name, $2 file.
check_yaml_mapping() {
    [ -f "$2" ] || die "--$1 $2: no such file"
    ${python} - "$2" <<'PYEOF' || die "--$1 $2 does not parse as a YAML mapping of options (see the message above)"
import sys

import yaml

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        conf = yaml.safe_load(f)
except yaml.YAMLError as e:
    sys.exit(f"{sys.argv[1]}: {e}")
if conf is not None and not isinstance(conf, dict):
    sys.exit(f"{sys.argv[1]}: expected a mapping such as 'beam_size: 10', got a {type(conf).__name__}")
PYEOF
}
if runs_any 16 17 20; then
    [ -n "${inference_config}" ] && check_yaml_mapping inference_config "${inference_config}"
    # A misspelt decoding option fails now, not when the first decode starts (no ESPnet import: fast).
    # shellcheck disable=SC2086
    ${python} -m comflp_espnet.bin.comflp_decode --check_options true \
        ${inference_config:+--config "${inference_config}"} ${inference_args} \
        || die "fix the decoding options of --inference_config '${inference_config}' / --inference_args '${inference_args}' (see above)"
fi
if "${comflp_finetune}" && runs_any 19; then
    if [ ! -f "${comflp_finetune_config}" ] && [ "${comflp_finetune_config}" = conf/comflp/finetune.yaml ]; then
        # The recipe has no overlay of its own: the plugin-wide default (conf/ of the template is
        # the plugin's top-level conf/, linked in the plugin tree and copied into ESPnet checkouts).
        _default="${comflp_template_dir}/conf/comflp/finetune.yaml"
        [ -f "${_default}" ] && comflp_finetune_config=$(cd "$(dirname "${_default}")" && pwd)/finetune.yaml
    fi
    check_yaml_mapping comflp_finetune_config "${comflp_finetune_config}"
fi
if runs_any 20 && [ -z "${eval_sets}" ]; then
    die "--test_sets is required for stage 20"
fi

# ------------------------------------------------------------------ stages 1-13: asr.sh
if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 1 ]; then
    _asr_stop=$(min "${stop_stage}" 13)
    log "Stages ${stage}-${_asr_stop}: ${asr_script_desc}"
    "${asr_script}" --stage "${stage}" --stop_stage "${_asr_stop}" \
        "${forward_args[@]+"${forward_args[@]}"}"
fi
if [ "${stop_stage}" -lt 14 ]; then
    log "Successfully finished. [elapsed=${SECONDS}s]"
    exit 0
fi

# ------------------------------------------------------------------ checks of the trained model and data
# A file with settings next to an output: a rerun with other settings stops instead of silently
# reusing the old output.
check_settings() {
    local file=$1 settings=$2
    if [ -f "${file}" ] && [ "$(cat "${file}")" != "${settings}" ]; then
        die "$(dirname "${file}") was made with other settings.
    then: $(cat "${file}")
    now:  ${settings}
  Remove $(dirname "${file}") (and what was made from it), or choose another --comflp_dir / --comflp_tag."
    fi
}
write_settings() {
    printf '%s\n' "$2" > "$1.tmp"
    mv "$1.tmp" "$1"
}

calib_dir="${comflp_dir}/calib"
states_dir="${comflp_dir}/states"
corr_dir="${comflp_dir}/corr"
corr_file="${corr_dir}/${comflp_measure}.npy"
heatmap_file="${corr_dir}/${comflp_measure}.png"
fine_dir="${comflp_dir}/fine"

if runs_any 14 16 17 19 20 21; then
    for _f in "${asr_train_config}" "${asr_model_file}"; do
        if [ ! -f "${_f}" ]; then
            die "no trained model: ${_f} does not exist.
  Train one with stages 1-13 (asr.sh; training is stage 11), or point --asr_exp (now ${asr_exp})
  and --inference_asr_model (now ${inference_asr_model}) to an existing experiment."
        fi
    done
fi
if [ -f "${asr_train_config}" ] && [ -f "${asr_model_file}" ]; then
    read -r encoder_type num_layers <<< "$(${python} - "${asr_train_config}" <<'PYEOF'
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    conf = yaml.safe_load(f) or {}
print(conf.get("encoder", "?"), (conf.get("encoder_conf") or {}).get("num_blocks", "?"))
PYEOF
)"
    # Token list, BPE model and feature statistics are named relative to the directory where asr.sh
    # trained the model: a wrong working directory fails here rather than inside a job.
    ${python} - "${asr_train_config}" <<'PYEOF' || die "run the CoMFLP stages from the recipe directory where the model was trained (see above)"
import sys

from comflp_espnet.model_io import check_config_paths, read_train_config

try:
    check_config_paths(read_train_config(sys.argv[1]), sys.argv[1])
except (FileNotFoundError, ValueError) as e:
    sys.exit(f"Error: {e}")
PYEOF
    [[ "${num_layers}" =~ ^[0-9]+$ ]] \
        || die "${asr_train_config}: no encoder_conf.num_blocks; CoMFLP prunes transformer, conformer, branchformer and e_branchformer encoders"
    case "${encoder_type}" in
        transformer|conformer|branchformer|e_branchformer) ;;
        *) die "${asr_train_config}: encoder '${encoder_type}' is not supported (transformer, conformer, branchformer, e_branchformer)" ;;
    esac
    if [ -n "${comflp_keep}" ]; then
        [ "${comflp_keep}" -lt "${num_layers}" ] \
            || die "--comflp_keep ${comflp_keep} must be smaller than the ${num_layers} encoder layers of ${asr_train_config}"
        num_prune=$((num_layers - comflp_keep))
    elif [ -n "${comflp_num_prune}" ]; then
        [ "${comflp_num_prune}" -lt "${num_layers}" ] \
            || die "--comflp_num_prune ${comflp_num_prune} must be smaller than the ${num_layers} encoder layers of ${asr_train_config}"
        num_prune=${comflp_num_prune}
    else
        num_prune=$((num_layers / 2))
        log "Info: --comflp_num_prune not given: removing half of the ${num_layers} encoder layers (${num_prune})"
    fi
    if [ -n "${comflp_protect}" ]; then
        for _layer in ${comflp_protect//,/ }; do
            [ "${_layer}" -le "${num_layers}" ] \
                || die "--comflp_protect ${comflp_protect}: layer ${_layer} does not exist (the encoder has ${num_layers} layers)"
        done
    fi
    [ -z "${comflp_tag}" ] && comflp_tag="${comflp_measure}_${comflp_search}_prune${num_prune}"
fi
if [ -z "${comflp_tag}" ]; then
    # Stages that only read existing outputs (15, 18): the tag from the options alone.
    if [ -n "${comflp_num_prune}" ]; then
        comflp_tag="${comflp_measure}_${comflp_search}_prune${comflp_num_prune}"
    else
        die "--comflp_num_prune (or --comflp_tag) is needed to find the search directory"
    fi
fi
tag_dir="${comflp_dir}/${comflp_tag}"

# data dir of a set name as asr.sh lays them out: <data_feats>/<set>, else <data_feats>/org/<set>
find_data_dir() {
    if [ -d "${data_feats}/$1" ]; then
        echo "${data_feats}/$1"
    elif [ -d "${data_feats}/org/$1" ]; then
        echo "${data_feats}/org/$1"
    else
        echo ""
    fi
}
# check_subset_source OPTION SET_DIR NUTT WHAT
check_subset_source() {
    local scp
    read -r scp _ <<< "$(input_spec "$2" "${audio_format}")"
    [ -f "$2/${scp}" ] || die "$2/${scp} not found ($4 source). Run stages 3-4 (asr.sh) first, or check $1"
    local available
    available=$(num_lines "$2/${scp}")
    if [ "$3" -gt "${available}" ]; then
        die "$4: $2 has ${available} utterances, fewer than the $3 requested; lower the number (0 = all) or choose another set ($1)"
    fi
}

calib_source="${data_feats}/${train_set}"
calib_settings="source=${calib_source} num_utts=${comflp_calib_nutt} seed=${comflp_seed}"
states_settings="model=${asr_model_file} calib=(${calib_settings}) pooling=${comflp_pooling} args=${comflp_dump_args}"
if run_stage 14 && [ ! -f "${states_dir}/states_info.yaml" ]; then
    [ -n "${train_set}" ] || die "--train_set is required for stage 14"
    if [ ! -d "${calib_dir}" ]; then
        check_subset_source "--train_set/--comflp_calib_nutt" "${calib_source}" "${comflp_calib_nutt}" "calibration set"
    fi
fi
fine_source=
if [ -n "${comflp_fine_set}" ]; then
    fine_source=$(find_data_dir "${comflp_fine_set}")
fi
fine_settings="source=${fine_source} num_utts=${comflp_fine_nutt} seed=${comflp_seed}"
if { run_stage 17 || { run_stage 16 && [ "${comflp_search}" = glp ]; }; } && [ ! -d "${fine_dir}" ]; then
    [ -n "${comflp_fine_set}" ] || die "--comflp_fine_set (or --valid_set) is required for stage 17 (and for stage 16 with --comflp_search glp)"
    [ -n "${fine_source}" ] \
        || die "fine-search set '${comflp_fine_set}' not found in ${data_feats}/ (nor ${data_feats}/org/): run stages 3-4 or fix --comflp_fine_set"
    check_subset_source "--comflp_fine_set/--comflp_fine_nutt" "${fine_source}" "${comflp_fine_nutt}" "fine-search set"
fi
if run_stage 20; then
    for dset in ${eval_sets}; do
        [ -d "${data_feats}/${dset}" ] || die "test set ${data_feats}/${dset} not found: run stages 3-4 or fix --test_sets"
    done
fi

# The command for jobs of stage 14 and the decoding stages, as asr.sh picks them.
if [ "${ngpu}" -gt 0 ]; then
    dump_cmd="${cuda_cmd} --gpu 1"
    dump_ngpu=1
else
    dump_cmd="${train_cmd}"
    dump_ngpu=0
fi
if "${gpu_inference}"; then
    infer_cmd="${cuda_cmd} --gpu 1"
    infer_ngpu=1
else
    infer_cmd="${decode_cmd}"
    infer_ngpu=0
fi

# decode_models MODELS_SCP DATA_DIR OUT_DIR: comflp_decode over --inference_nj jobs (each job
# decodes its share with every model), merged into OUT_DIR/hyp/<name>/.
decode_models() {
    local models_scp=$1 data=$2 out=$3 scp type name f
    local logdir="${out}/logdir"
    read -r scp type <<< "$(input_spec "${data}" "${audio_format}")"
    local _nj
    _nj=$(min "${inference_nj}" "$(num_lines "${data}/${scp}")")
    mkdir -p "${logdir}"
    # Keys are split afresh; comflp_decode keeps a job's finished models when its keys are unchanged.
    split_into_jobs "${data}/${scp}" "${_nj}" "${logdir}/keys.JOB.scp"
    local _opts=
    [ -n "${inference_config}" ] && _opts+="--config ${inference_config} "
    log "Decoding $(num_lines "${models_scp}") model(s) on ${data} in ${_nj} job(s)... log: '${logdir}/decode.*.log'"
    # shellcheck disable=SC2086
    run_or_show_log "${logdir}/decode.*.log" \
        ${infer_cmd} JOB=1:"${_nj}" "${logdir}"/decode.JOB.log \
        ${python} -m comflp_espnet.bin.comflp_decode \
            --models_scp "${models_scp}" \
            --data_path_and_name_and_type "${data}/${scp},speech,${type}" \
            --key_file "${logdir}"/keys.JOB.scp \
            --output_dir "${logdir}"/output.JOB \
            --ngpu "${infer_ngpu}" \
            --batch_size "${batch_size}" \
            ${_opts} ${inference_args}
    rm -rf "${out}/hyp.tmp"
    mkdir -p "${out}/hyp.tmp"
    while read -r name _; do
        [ -n "${name}" ] || continue
        mkdir -p "${out}/hyp.tmp/${name}"
        for f in text token score; do
            cat_jobs "${_nj}" "${logdir}/output.JOB/${name}/${f}" | LC_ALL=C sort -k1,1 > "${out}/hyp.tmp/${name}/${f}"
        done
        # One line per job; comflp_score sums them.
        for f in decode_time num_utts; do
            cat_jobs "${_nj}" "${logdir}/output.JOB/${name}/${f}" > "${out}/hyp.tmp/${name}/${f}"
        done
    done < "${models_scp}"
    rm -rf "${out}/hyp"
    mv "${out}/hyp.tmp" "${out}/hyp"
}

# score_models REF HYP_DIR OUT_DIR [comflp_score options...]: CER and WER of every model under
# HYP_DIR (<name>/text) against the Kaldi text REF.
score_models() {
    local ref=$1 hyp=$2 out=$3
    shift 3
    local opts=()
    [ "${nlsyms_txt}" != none ] && opts+=(--nlsyms_txt "${nlsyms_txt}")
    ${python} -m comflp_espnet.bin.comflp_score \
        --ref "${ref}" \
        --hyp_dir "${hyp}" \
        --token_type "${token_type}" \
        --output_dir "${out}" \
        "${opts[@]+"${opts[@]}"}" "$@" \
        || die "scoring ${hyp} failed"
}

# make_subset SOURCE NUM_UTTS OUT SETTINGS WHAT: the seeded subset of the data dir SOURCE (all
# of it for NUM_UTTS 0); an existing OUT made with the same SETTINGS is kept.
make_subset() {
    local source=$1 num_utts=$2 out=$3 settings=$4 what=$5
    if [ -d "${out}" ]; then
        check_settings "${out}/.settings" "${settings}"
        return 0
    fi
    ${python} -m comflp_espnet.bin.comflp_subset \
        --data_dir "${source}" \
        --num_utts "${num_utts}" \
        --seed "${comflp_seed}" \
        --output_dir "${out}" || die "making the ${what} failed"
    cp "${source}/feats_type" "${out}/" 2>/dev/null || true
    cp "${source}/audio_format" "${out}/" 2>/dev/null || true
    write_settings "${out}/.settings" "${settings}"
}

# ================================================================================ CoMFLP stages
if run_stage 14; then
    if [ -f "${states_dir}/states_info.yaml" ] && [ -f "${states_dir}/states.scp" ]; then
        check_settings "${states_dir}/.settings" "${states_settings}"
        log "Stage 14: ${states_dir}/states.scp exists; skipping"
    else
        if [ "${comflp_calib_nutt}" -eq 0 ]; then
            _what="all utterances"
        else
            _what="${comflp_calib_nutt} utterances (seed ${comflp_seed})"
        fi
        log "Stage 14: Dump encoder states of ${asr_model_file} for calibration data (${_what} of ${calib_source}) -> ${states_dir}"
        _start=$(now_seconds)
        make_subset "${calib_source}" "${comflp_calib_nutt}" "${calib_dir}" "${calib_settings}" "calibration subset"
        check_settings "${states_dir}/.settings" "${states_settings}"
        _logdir="${states_dir}/logdir"
        rm -rf "${_logdir}" "${states_dir}/states.scp" "${states_dir}/states_info.yaml"
        mkdir -p "${_logdir}"
        read -r _scp _type <<< "$(input_spec "${calib_dir}" "${audio_format}")"
        [ -f "${calib_dir}/${_scp}" ] || die "${calib_dir}/${_scp} not found; remove ${calib_dir} and rerun stage 14"
        _nj=$(min "${nj}" "$(num_lines "${calib_dir}/${_scp}")")
        split_into_jobs "${calib_dir}/${_scp}" "${_nj}" "${_logdir}/keys.JOB.scp"
        log "State dumping started... log: '${_logdir}/dump.*.log'"
        # shellcheck disable=SC2086
        run_or_show_log "${_logdir}/dump.*.log" \
            ${dump_cmd} JOB=1:"${_nj}" "${_logdir}"/dump.JOB.log \
            ${python} -m comflp_espnet.bin.comflp_dump \
                --asr_train_config "${asr_train_config}" \
                --asr_model_file "${asr_model_file}" \
                --data_path_and_name_and_type "${calib_dir}/${_scp},speech,${_type}" \
                --key_file "${_logdir}"/keys.JOB.scp \
                --output_dir "${_logdir}"/output.JOB \
                --pooling "${comflp_pooling}" \
                --seed "${comflp_seed}" \
                --ngpu "${dump_ngpu}" \
                ${comflp_dump_args}
        _outputs=()
        for n in $(seq "${_nj}"); do
            _outputs+=("${_logdir}/output.${n}")
        done
        ${python} -m comflp_espnet.bin.comflp_dump --merge "${_outputs[@]}" --output_dir "${states_dir}" \
            || die "merging the state dumps failed"
        write_settings "${states_dir}/.settings" "${states_settings}"
        write_elapsed "${states_dir}/wall_seconds" "${_start}"
    fi
fi

if run_stage 15; then
    if [ -f "${corr_file}" ] && [ -f "${heatmap_file}" ]; then
        log "Stage 15: ${corr_file} exists; skipping"
    else
        log "Stage 15: Correlation matrix (${comflp_measure}) of the states -> ${corr_file}, ${heatmap_file}"
        [ -f "${states_dir}/states_info.yaml" ] || die "${states_dir}/states.scp not found: run stage 14 first"
        _opts=
        if [ -n "${comflp_dc_batch_size}" ] && [ "${comflp_measure}" = dc ]; then
            _opts+="--batch_size ${comflp_dc_batch_size} "
        fi
        mkdir -p "${corr_dir}"
        _start=$(now_seconds)
        # shellcheck disable=SC2086
        run_or_show_log "${corr_dir}/${comflp_measure}.log" \
            ${train_cmd} "${corr_dir}/${comflp_measure}.log" \
            ${python} -m comflp_espnet.bin.comflp_corr \
                --states_scp "${states_dir}/states.scp" \
                --measure "${comflp_measure}" \
                --output "${corr_file}" \
                --heatmap "${heatmap_file}" ${_opts}
        write_elapsed "${corr_dir}/${comflp_measure}.wall_seconds" "${_start}"
    fi
fi

fine_decode_dir="${tag_dir}/fine_decode"
fine_decode_settings="fine=(${fine_settings}) inference_config=${inference_config} inference_args=${inference_args}"
scores_dir="${tag_dir}/scores"
# Wall-clock seconds of the search's parts (comflp_search_cost gathers them after stage 18).
timing_dir="${tag_dir}/timing"
glp_dir="${tag_dir}/glp"
if [ "${comflp_search}" = glp ]; then
    # The greedy search reads no matrix; it depends on the fine-search data and decoding options.
    search_settings="method=glp num_prune=${num_prune:-?} keep_first=${comflp_keep_first} keep_last=${comflp_keep_last} max_run=${comflp_max_run} protect=${comflp_protect} model=${asr_model_file} decode=(${fine_decode_settings})"
else
    search_settings="corr=${corr_file} method=${comflp_search} num_prune=${num_prune:-?} topk=${comflp_topk} aggregate=${comflp_aggregate} keep_first=${comflp_keep_first} keep_last=${comflp_keep_last} max_run=${comflp_max_run} protect=${comflp_protect} model=${asr_model_file}"
    [ "${comflp_search}" = beam ] && search_settings+=" beam_size=${comflp_beam_size}"
    [ "${comflp_search}" = random ] && search_settings+=" seed=${comflp_seed}"
fi

# glp_search: greedy layer pruning by the task metric, into ${tag_dir}/proposals.json.  Step s
# decodes the fine-search set with each remaining layer removed on top of the s-1 layers removed
# so far (one candidate model each, decoded through decode_models and scored as in stages
# 17-18), then removes the layer whose model makes the fewest errors (ties: the lower layer id).
# A step is complete once ${glp_dir}/stepNN/step.json exists; a rerun goes on from there.
glp_search() {
    local step step_dir start
    local glp_opts=(--num_layers "${num_layers}" --num_prune "${num_prune}"
        --keep_first "${comflp_keep_first}" --keep_last "${comflp_keep_last}"
        --protect "${comflp_protect}" --max_run "${comflp_max_run}")
    make_subset "${fine_source}" "${comflp_fine_nutt}" "${fine_dir}" "${fine_settings}" "fine-search subset"
    check_settings "${glp_dir}/.settings" "${search_settings}"
    mkdir -p "${glp_dir}"
    write_settings "${glp_dir}/.settings" "${search_settings}"
    for step in $(seq "${num_prune}"); do
        step_dir="${glp_dir}/step$(printf '%02d' "${step}")"
        if [ -f "${step_dir}/step.json" ]; then
            # The step's pruned models are only needed until it is scored.
            rm -rf "${step_dir}/candidates"
            log "Greedy step ${step}/${num_prune}: ${step_dir}/step.json exists; skipping"
            continue
        fi
        start=$(now_seconds)
        ${python} -m comflp_espnet.bin.comflp_glp prepare \
            --glp_dir "${glp_dir}" --step "${step}" "${glp_opts[@]}" \
            --output "${step_dir}/proposals.json" \
            || die "greedy step ${step}: choosing the layers to try failed"
        ${python} -m comflp_espnet.bin.comflp_candidates \
            --proposals "${step_dir}/proposals.json" \
            --asr_train_config "${asr_train_config}" \
            --asr_model_file "${asr_model_file}" \
            --output_dir "${step_dir}/candidates" \
            || die "greedy step ${step}: writing the pruned models failed"
        log "Greedy step ${step}/${num_prune}: decode the fine-search set with each of $(num_lines "${step_dir}/candidates/models.scp") models -> ${step_dir}"
        decode_models "${step_dir}/candidates/models.scp" "${fine_dir}" "${step_dir}/decode"
        score_models "${fine_dir}/text" "${step_dir}/decode/hyp" "${step_dir}/scores"
        ${python} -m comflp_espnet.bin.comflp_glp choose \
            --glp_dir "${glp_dir}" --step "${step}" \
            --scores "${step_dir}/scores/scores.json" \
            --seconds "$(elapsed_since "${start}")" \
            || die "greedy step ${step}: choosing the layer to remove failed"
        rm -rf "${step_dir}/candidates"
    done
    ${python} -m comflp_espnet.bin.comflp_glp finish \
        --glp_dir "${glp_dir}" "${glp_opts[@]}" \
        --output "${tag_dir}/proposals.json" \
        || die "the greedy search failed"
}

if run_stage 16; then
    if [ -f "${tag_dir}/candidates/models.scp" ] && [ -f "${tag_dir}/proposals.json" ]; then
        check_settings "${tag_dir}/.settings" "${search_settings}"
        log "Stage 16: ${tag_dir}/candidates exists; skipping"
    else
        if [ "${comflp_search}" = glp ]; then
            log "Stage 16: Greedy layer pruning (glp): remove ${num_prune} of ${num_layers} layers one at a time, each step decoding the fine-search set (${fine_source}) once per remaining layer -> ${glp_dir}, ${tag_dir}/proposals.json, ${tag_dir}/candidates"
        else
            log "Stage 16: Coarse search (${comflp_search}, remove ${num_prune} of ${num_layers} layers, top ${comflp_topk}) -> ${tag_dir}/proposals.json, ${tag_dir}/candidates"
            [ -f "${corr_file}" ] || die "${corr_file} not found: run stage 15 first (with --comflp_measure ${comflp_measure})"
        fi
        check_settings "${tag_dir}/.settings" "${search_settings}"
        mkdir -p "${tag_dir}"
        _start=$(now_seconds)
        if [ -f "${tag_dir}/proposals.json" ]; then
            :
        elif [ "${comflp_search}" = glp ]; then
            glp_search
        else
            _opts=
            [ -n "${comflp_max_run}" ] && _opts+="--max_run ${comflp_max_run} "
            [ -n "${comflp_protect}" ] && _opts+="--protect ${comflp_protect} "
            # shellcheck disable=SC2086
            ${python} -m comflp_espnet.bin.comflp_search \
                --corr "${corr_file}" \
                --num_prune "${num_prune}" \
                --topk "${comflp_topk}" \
                --method "${comflp_search}" \
                --beam_size "${comflp_beam_size}" \
                --aggregate "${comflp_aggregate}" \
                --keep_first "${comflp_keep_first}" \
                --keep_last "${comflp_keep_last}" \
                --seed "${comflp_seed}" \
                --output "${tag_dir}/proposals.json" ${_opts} \
                || die "the coarse search failed"
        fi
        ${python} -m comflp_espnet.bin.comflp_candidates \
            --proposals "${tag_dir}/proposals.json" \
            --asr_train_config "${asr_train_config}" \
            --asr_model_file "${asr_model_file}" \
            --include_original true \
            --output_dir "${tag_dir}/candidates" \
            || die "writing the pruned candidates failed"
        write_settings "${tag_dir}/.settings" "${search_settings}"
        write_elapsed "${timing_dir}/coarse_search" "${_start}"
    fi
fi

if run_stage 17; then
    if [ -f "${fine_decode_dir}/hyp/.done" ]; then
        check_settings "${fine_decode_dir}/.settings" "${fine_decode_settings}"
        log "Stage 17: ${fine_decode_dir}/hyp exists; skipping"
    else
        if [ "${comflp_fine_nutt}" -eq 0 ]; then
            _what="all utterances"
        else
            _what="${comflp_fine_nutt} utterances (seed ${comflp_seed})"
        fi
        log "Stage 17: Fine search: decode every candidate and the original on ${_what} of ${fine_source} -> ${fine_decode_dir}"
        [ -f "${tag_dir}/candidates/models.scp" ] || die "${tag_dir}/candidates/models.scp not found: run stage 16 first"
        _start=$(now_seconds)
        make_subset "${fine_source}" "${comflp_fine_nutt}" "${fine_dir}" "${fine_settings}" "fine-search subset"
        check_settings "${fine_decode_dir}/.settings" "${fine_decode_settings}"
        mkdir -p "${fine_decode_dir}"
        cp "${tag_dir}/candidates/models.scp" "${fine_decode_dir}/models.scp"
        decode_models "${fine_decode_dir}/models.scp" "${fine_dir}" "${fine_decode_dir}"
        touch "${fine_decode_dir}/hyp/.done"
        write_settings "${fine_decode_dir}/.settings" "${fine_decode_settings}"
        write_elapsed "${timing_dir}/fine_decode" "${_start}"
    fi
fi

if run_stage 18; then
    if [ -f "${scores_dir}/winner" ] && [ "${scores_dir}/winner" -nt "${fine_decode_dir}/hyp/.done" ]; then
        log "Stage 18: ${scores_dir}/winner exists ($(cat "${scores_dir}/winner")); skipping"
    else
        log "Stage 18: Score the fine search and choose the winner -> ${scores_dir}"
        [ -f "${fine_decode_dir}/hyp/.done" ] || die "${fine_decode_dir}/hyp not found: run stage 17 first"
        _start=$(now_seconds)
        score_models "${fine_dir}/text" "${fine_decode_dir}/hyp" "${scores_dir}" \
            --proposals "${tag_dir}/proposals.json" \
            --candidates_dir "${tag_dir}/candidates"
        ln -sfn "candidates/$(cat "${scores_dir}/winner")" "${tag_dir}/winner"
        write_elapsed "${timing_dir}/fine_score" "${_start}"
        log "Winner: $(cat "${scores_dir}/winner") (ranking: ${scores_dir}/ranking.md)"
    fi
    # Decodes and seconds the search took (rewritten only when they change).
    ${python} -m comflp_espnet.bin.comflp_search_cost \
        --method "${comflp_search}" \
        --tag "${comflp_tag}" \
        --states_seconds "${states_dir}/wall_seconds" \
        --matrix_seconds "${corr_dir}/${comflp_measure}.wall_seconds" \
        --coarse_search_seconds "${timing_dir}/coarse_search" \
        --fine_decode_seconds "${timing_dir}/fine_decode" \
        --fine_score_seconds "${timing_dir}/fine_score" \
        --proposals "${tag_dir}/proposals.json" \
        --fine_models_scp "${fine_decode_dir}/models.scp" \
        --fine_hyp_dir "${fine_decode_dir}/hyp" \
        --fine_text "${fine_dir}/text" \
        --output_dir "${tag_dir}" \
        || die "writing ${tag_dir}/search_cost.json failed"
fi

winner_dir="${tag_dir}/winner"
winner_name=$(cat "${scores_dir}/winner" 2>/dev/null || true)
finetune_dir="${tag_dir}/finetune"
finetune_settings="winner=${winner_name} overlay=${comflp_finetune_config} args=${comflp_finetune_args}"
if run_stage 19; then
    if ! "${comflp_finetune}"; then
        log "Stage 19: Skip fine-tuning (--comflp_finetune false)"
    elif [ -f "${finetune_dir}/${inference_asr_model}" ]; then
        check_settings "${finetune_dir}/.settings" "${finetune_settings}"
        log "Stage 19: ${finetune_dir}/${inference_asr_model} exists; skipping"
    else
        [ -f "${winner_dir}/config.yaml" ] || die "${winner_dir} not found: run stage 18 first"
        log "Stage 19: Fine-tune the winner ${winner_name} with the overlay ${comflp_finetune_config} -> ${finetune_dir}"
        check_settings "${finetune_dir}/.settings" "${finetune_settings}"
        _asr_train_dir="${data_feats}/${train_set}"
        _asr_valid_dir="${data_feats}/${valid_set}"
        for _d in "${_asr_train_dir}" "${_asr_valid_dir}"; do
            [ -d "${_d}" ] || die "${_d} not found: fine-tuning uses asr.sh's training data (stages 3-4)"
        done
        for _f in "${asr_stats_dir}/train/speech_shape" "${asr_stats_dir}/train/text_shape.${token_type}"; do
            [ -f "${_f}" ] || die "${_f} not found: fine-tuning uses asr.sh's stats (stage 10); check --asr_stats_dir"
        done
        mkdir -p "${finetune_dir}"
        # The winner's config with the overlay merged in; the options given below on the
        # command line (data, shapes, output, initialisation) are removed from it.
        ${python} -m comflp_espnet.bin.comflp_merge_config \
            --base "${winner_dir}/config.yaml" \
            --overlay "${comflp_finetune_config}" \
            --output "${finetune_dir}/finetune_config.yaml" \
            || die "merging ${comflp_finetune_config} into ${winner_dir}/config.yaml failed"
        read -r _scp _type <<< "$(input_spec "${_asr_train_dir}" "${audio_format}")"
        asr_train_data_args "${_asr_train_dir}" "${_asr_valid_dir}" "${_scp}" "${_type}"
        if echo "${cuda_cmd}" | grep -e queue.pl -e queue-freegpu.pl &> /dev/null; then
            # SGE job names cannot contain "/".
            _jobname="$(basename "${asr_exp}")_comflp_finetune"
        else
            _jobname="${finetune_dir}/train.log"
        fi
        log "Fine-tuning started... log: '${finetune_dir}/train.log'"
        # shellcheck disable=SC2086
        launch_asr_train "${finetune_dir}" "${_jobname}" \
            --config "${finetune_dir}/finetune_config.yaml" \
            --use_preprocessor true \
            "${train_data_args[@]}" \
            --init_param "${winner_dir}/${inference_asr_model}" \
            --resume true \
            ${comflp_finetune_args} \
            || { tail -n 40 "${finetune_dir}/train.log" >&2; die "fine-tuning failed; log: ${finetune_dir}/train.log"; }
        [ -f "${finetune_dir}/${inference_asr_model}" ] \
            || die "fine-tuning finished without ${finetune_dir}/${inference_asr_model}; check --inference_asr_model against best_model_criterion in ${comflp_finetune_config}"
        # Keep the removal record with the fine-tuned model.
        cp "${winner_dir}/prune.yaml" "${finetune_dir}/prune.yaml"
        write_settings "${finetune_dir}/.settings" "${finetune_settings}"
    fi
fi

test_decode_dir="${tag_dir}/test_decode/${inference_tag}"
if run_stage 20; then
    log "Stage 20: Decode and score ${eval_sets} with the original, pruned and fine-tuned models -> ${test_decode_dir}"
    [ -f "${winner_dir}/config.yaml" ] || die "${winner_dir} not found: run stage 18 first"
    # The candidate's own directory (not the "winner" link), so a new winner is noticed.
    _winner="${tag_dir}/candidates/${winner_name}"
    _models="original ${asr_train_config} ${asr_model_file}
pruned ${_winner}/config.yaml ${_winner}/${inference_asr_model}"
    if [ -f "${finetune_dir}/${inference_asr_model}" ]; then
        _models+="
finetuned ${finetune_dir}/config.yaml ${finetune_dir}/${inference_asr_model}"
    elif "${comflp_finetune}"; then
        die "${finetune_dir}/${inference_asr_model} not found: run stage 19 first (or pass --comflp_finetune false)"
    fi
    _results_opts=()
    for dset in ${eval_sets}; do
        _data="${data_feats}/${dset}"
        _dir="${test_decode_dir}/${dset}"
        _results_opts+=(--test_scores "${dset}=${_dir}/score")
        if [ -f "${_dir}/score/scores.json" ] && [ "$(cat "${_dir}/models.scp" 2>/dev/null)" = "${_models}" ]; then
            log "${_dir}/score exists; skipping"
            continue
        fi
        mkdir -p "${_dir}"
        printf '%s\n' "${_models}" > "${_dir}/models.scp"
        rm -f "${_dir}/hyp/.done"
        decode_models "${_dir}/models.scp" "${_data}" "${_dir}"
        score_models "${_data}/text" "${_dir}/hyp" "${_dir}/score" --label_prefix "${dset}/"
        cat "${_dir}/score/scores.md"
    done

    _results_extra=()
    [ -f "${finetune_dir}/${inference_asr_model}" ] && _results_extra+=(--finetune_dir "${finetune_dir}" --finetune_config "${finetune_dir}/finetune_config.yaml")
    [ -n "${inference_config}" ] && _results_extra+=(--inference_config "${inference_config}")
    # glp reads no matrix, so there may be no heatmap.
    [ -f "${heatmap_file}" ] && _results_extra+=(--heatmap "${heatmap_file}")
    for _results in "${tag_dir}/RESULTS.md" "${asr_exp}/RESULTS.md"; do
        _section=${comflp_tag}
        [ "${_results}" = "${asr_exp}/RESULTS.md" ] && _section=$(results_section_id "${asr_exp}" "${comflp_dir}" "${comflp_tag}")
        ${python} -m comflp_espnet.bin.comflp_results \
            --output "${_results}" \
            --tag "${_section}" \
            --asr_exp "${asr_exp}" \
            --asr_model_file "${asr_model_file}" \
            --winner_dir "${winner_dir}" \
            --proposals "${tag_dir}/proposals.json" \
            --ranking "${scores_dir}/ranking.json" \
            --fine_set "${comflp_fine_set}" \
            --measure "${comflp_measure}" \
            "${_results_opts[@]}" "${_results_extra[@]+"${_results_extra[@]}"}" \
            || die "writing ${_results} failed"
    done
    log "Results: ${tag_dir}/RESULTS.md (also a section in ${asr_exp}/RESULTS.md)"
fi

if run_stage 21; then
    if ! "${comflp_pack}"; then
        log "Stage 21: Skip packing (--comflp_pack false)"
    else
        if [ -f "${finetune_dir}/${inference_asr_model}" ]; then
            _final_dir=${finetune_dir}
            _what=finetuned
        else
            _final_dir=${winner_dir}
            _what=pruned
        fi
        packed_model="${tag_dir}/$(basename "${asr_exp}")_comflp_${comflp_tag}_${_what}_${inference_asr_model%.*}.zip"
        if [ -f "${packed_model}" ]; then
            log "Stage 21: ${packed_model} exists; skipping"
        else
            log "Stage 21: Pack the ${_what} model: ${packed_model}"
            [ -f "${_final_dir}/config.yaml" ] || die "${_final_dir} not found: run stage 18 (and 19) first"
            _opts=
            if [ "${feats_normalize}" = global_mvn ] && [ -f "${asr_stats_dir}/train/feats_stats.npz" ]; then
                _opts+="--option ${asr_stats_dir}/train/feats_stats.npz "
            fi
            if [ "${token_type}" = bpe ]; then
                if [ "${lang}" != noinfo ]; then
                    _bpemodel="data/${lang}_token_list/bpe_${bpemode}${nbpe}/bpe.model"
                else
                    _bpemodel="data/token_list/bpe_${bpemode}${nbpe}/bpe.model"
                fi
                _opts+="--option ${_bpemodel} "
            fi
            [ "${nlsyms_txt}" != none ] && _opts+="--option ${nlsyms_txt} "
            [ -f "${tag_dir}/RESULTS.md" ] && _opts+="--option ${tag_dir}/RESULTS.md "
            [ -d "${_final_dir}/images" ] && _opts+="--option ${_final_dir}/images "
            # shellcheck disable=SC2086
            ${python} -m espnet2.bin.pack asr \
                --asr_train_config "${_final_dir}/config.yaml" \
                --asr_model_file "${_final_dir}/${inference_asr_model}" \
                --option "${_final_dir}/prune.yaml" \
                ${_opts} \
                --outpath "${packed_model}.tmp.zip" || die "packing failed"
            mv "${packed_model}.tmp.zip" "${packed_model}"
        fi
    fi
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
