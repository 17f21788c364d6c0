#!/usr/bin/env bash
# CoMFLP layer pruning as recipe stages after ESPnet's asr.sh.
#
#   Stages  1-13  ESPnet's ./asr.sh (inside an ESPnet checkout), else the plugin's asr_minimal.sh
#   Stage  14     dump pooled encoder states h_0..h_L of a seeded calibration subset of train_set
#   Stage  15     correlation matrix between the states (.npy + heatmap .png), one per measure
#   Stage  16     coarse search: top-K layer sets to remove per measure (their union), per depth
#                 (--comflp_search glp: greedy layer pruning by the task metric or a proxy instead,
#                 its k steps evaluated on the fine-search subset; its result is the one candidate)
#   Stage  17     fine search on a held-out subset: every candidate scored by a cheap proxy (CTC
#                 greedy CER or the model's loss, no model written), the M best (finalists) written
#                 as ESPnet models and decoded with the inference config, with the original
#                 (--comflp_sweep_decode bracket: only the depths around the limit of
#                 --comflp_max_degradation, one decode array per step of the search)
#   Stage  18     score the finalists (CER/WER), choose the winner; record the search's cost
#                 (proxy evaluations, decodes, seconds of stages 14-18) in <tag>/search_cost.{json,md};
#                 several depths (a list, --comflp_sweep, --comflp_sweep_range): the winners' table
#                 and plot in <comflp_dir>/sweep/, and with --comflp_max_degradation the depth that
#                 stages 19-21 work on
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
comflp_measure=dc           # Correlation measure(s): dc, svcca, cka, cosine, angular; a list joins their top-K.
comflp_dc_batch_size=       # Utterances per block for the dc measure (empty: its default).
comflp_search=dp            # Coarse search: dp, beam, greedy, exhaustive (or a baseline, or glp).
comflp_num_prune=           # Encoder layers to remove, or a list of depths "3 6" (or give --comflp_keep).
comflp_keep=                # Encoder layers to keep, or a list (alternative to --comflp_num_prune).
comflp_sweep=false          # Search every depth k = 1..L-1 (instead of --comflp_num_prune).
comflp_sweep_range=         # Search the depths A..B, "A:B" (a sweep over part of the depths).
comflp_max_degradation=     # Choose the smallest winner within X CER/WER points of the original (fine-search set).
comflp_sweep_decode=all     # Depths whose finalists are decoded: all, or bracket (only around the limit of X).
comflp_topk=30              # Candidates the coarse search keeps (per measure).
comflp_beam_size=10         # Beam width of --comflp_search beam.
comflp_aggregate=mean       # How the scores of a proposal's runs combine: mean, sum or min.
comflp_keep_first=false     # Never remove layer 1.
comflp_keep_last=false      # Never remove layer L.
comflp_max_run=             # Longest run of consecutive removed layers (empty: no limit).
comflp_protect=             # Layers never removed, comma separated, e.g. "1,2".
comflp_fine_set=            # Data set of the fine search (default: valid_set).
comflp_fine_nutt=500        # Fine-search utterances (0: all).
comflp_fine_proxy=loss      # Proxy ranking the candidates: loss, ctc_greedy, or none (decode every candidate).
comflp_fine_finalists=3     # Candidates decoded in full (the best by proxy); the winner is the best of them.
comflp_proxy_batch_size=8   # Utterances per batch of the proxy scoring.
comflp_glp_metric=decode    # What glp's steps rank by: decode (CER/WER), ctc_greedy or loss.
comflp_finetune=false       # Fine-tune the winner (stage 19).
comflp_finetune_config=conf/comflp/finetune.yaml  # Overlay on the winner's config.yaml.
comflp_finetune_args=       # Extra asr_train options for fine-tuning, e.g. "--max_epoch 5".
comflp_pack=false           # Pack the final model (stage 21).
comflp_skip_bad_utts=false  # Skip (and list) unreadable or too short utterances instead of stopping.
comflp_lock_wait=0          # Seconds to wait for another run on the same --comflp_dir (0: stop at once).
comflp_python_opts=-O       # Interpreter options of the jobs that load the model (dump, proxy, decode).
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
    --comflp_measure         # dc, svcca, cka, cosine or angular, or a list such as "dc svcca cka" (the
                             # union of each measure's top K) (default="${comflp_measure}").
    --comflp_dc_batch_size   # Block size of the dc measure (default: the measure's own).
    --comflp_search          # dp, beam, greedy, exhaustive, a baseline offered by comflp_search, or glp
                             # (greedy layer pruning by the task metric, decoding in stage 16) (default="${comflp_search}").
    --comflp_num_prune       # Layers to remove, or a list of depths, e.g. "3 6": one search directory
                             # each, sharing states, matrices and evaluations (default: half the layers).
    --comflp_keep            # Layers to keep (or a list), instead of --comflp_num_prune.
    --comflp_sweep           # Search every depth k = 1..L-1 (depths the constraints rule out are
                             # skipped), instead of --comflp_num_prune (default="${comflp_sweep}").
    --comflp_sweep_range     # Search the depths A..B, e.g. 1:10 (implies --comflp_sweep true).
    --comflp_max_degradation # Choose the depth whose winner removes the most layers within X points of
                             # the original's CER (WER for non-char tokens) on the fine-search set;
                             # stages 19-21 then run for that depth only (default: no choice).
    --comflp_sweep_decode    # all: decode every depth's finalists; bracket (with --comflp_max_degradation):
                             # score every depth by the proxy, decode only the depths around the limit
                             # (the deepest within X and the next deeper), starting where the proxy
                             # puts it (default="${comflp_sweep_decode}").
    --comflp_topk            # Coarse-search candidates per measure (default="${comflp_topk}").
    --comflp_beam_size       # Beam width for --comflp_search beam (default="${comflp_beam_size}").
    --comflp_aggregate       # Combination of the runs' scores: mean (CoMFLP), sum or min (default="${comflp_aggregate}").
    --comflp_keep_first      # Never remove layer 1 (default="${comflp_keep_first}").
    --comflp_keep_last       # Never remove the last layer (default="${comflp_keep_last}").
    --comflp_max_run         # Longest run of removed consecutive layers (default: no limit).
    --comflp_protect         # Comma-separated layers never removed (default="${comflp_protect}").
    --comflp_fine_set        # Fine-search data set (default: --valid_set).
    --comflp_fine_nutt       # Fine-search utterances, 0 = all (default="${comflp_fine_nutt}").
    --comflp_fine_proxy      # Cheap proxy that ranks every candidate: loss (teacher-forced loss per token,
                             # CTC and attention as in training), ctc_greedy (CER/WER of CTC greedy decoding;
                             # a model without CTC falls back to loss), none (decode every candidate)
                             # (default="${comflp_fine_proxy}").
    --comflp_fine_finalists  # Candidates decoded with the inference config, the best by proxy; the
                             # winner is the best of them by CER/WER (default="${comflp_fine_finalists}").
    --comflp_proxy_batch_size # Utterances per batch of the proxy (default="${comflp_proxy_batch_size}").
    --comflp_glp_metric      # glp's steps rank by: decode (CER/WER of full decodes), ctc_greedy or loss
                             # (the proxy, no model written) (default="${comflp_glp_metric}").
    --comflp_finetune        # Fine-tune the winner in stage 19 (default="${comflp_finetune}").
    --comflp_finetune_config # Overlay config for fine-tuning (default="${comflp_finetune_config}").
    --comflp_finetune_args   # Extra asr_train options for fine-tuning (default="${comflp_finetune_args}").
    --comflp_pack            # Pack the final model in stage 21 (default="${comflp_pack}").
    --comflp_skip_bad_utts   # Skip (and list) utterances whose audio is unreadable or too short for the
                             # encoder, instead of stopping (default="${comflp_skip_bad_utts}").
    --comflp_lock_wait       # Seconds to wait for another run using the same --comflp_dir; 0 stops at
                             # once, naming it (default="${comflp_lock_wait}").
    --comflp_python_opts     # Python options of the jobs that load the model (state dumping, proxy,
                             # decoding): -O skips the run-time type checks (typeguard) and asserts in
                             # ESPnet's code, about a fifth of each job's import time; "" keeps them
                             # (default="${comflp_python_opts}").
EOF
)

comflp_command_line="$0 $*"
log "${comflp_command_line}"

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
            # The later of --comflp_num_prune / --comflp_keep / the sweep options wins (run.sh passes
            # its defaults first).
            case "${_name}" in
                comflp_num_prune|comflp_keep) depth_option=${_name}; depth_last=${_name} ;;
                comflp_sweep|comflp_sweep_range) depth_last=${_name} ;;
            esac
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
if [ -n "${comflp_num_prune}" ] && [ -n "${comflp_keep}" ]; then
    if [ "${depth_option:-}" = comflp_keep ]; then
        comflp_num_prune=
    else
        comflp_keep=
    fi
fi
if [ "${comflp_sweep}" = true ] || [ -n "${comflp_sweep_range}" ]; then
    if [[ "${depth_last:-comflp_sweep}" == comflp_sweep* ]]; then
        comflp_num_prune=
        comflp_keep=
    else
        comflp_sweep=false
        comflp_sweep_range=
    fi
fi

. ./path.sh
. ./cmd.sh

for _name in stage stop_stage nj inference_nj ngpu num_nodes batch_size comflp_calib_nutt comflp_seed \
        comflp_topk comflp_beam_size comflp_fine_nutt comflp_fine_finalists comflp_proxy_batch_size \
        comflp_lock_wait; do
    [[ "${!_name}" =~ ^[0-9]+$ ]] || die "--${_name} must be a non-negative integer, got '${!_name}'"
done
# The jobs that load the model run as "${job_python} -m ...".
job_python="${python} ${comflp_python_opts}"
# shellcheck disable=SC2086
${job_python} -c pass 2> /dev/null \
    || die "--comflp_python_opts '${comflp_python_opts}' is not accepted by ${python} (try -O, or \"\" for none)"
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
    for _m in ${comflp_measure//,/ }; do
        [[ " ${comflp_measures} " == *" ${_m} "* ]] \
            || die "unknown --comflp_measure '${_m}'; choose from: ${comflp_measures} (or a list of them)"
    done
    [ -n "${comflp_measure//[ ,]/}" ] || die "--comflp_measure is empty; choose from: ${comflp_measures}"
    case "${comflp_fine_proxy}" in
        ctc_greedy|loss|none) ;;
        *) die "unknown --comflp_fine_proxy '${comflp_fine_proxy}'; choose one of: ctc_greedy loss none" ;;
    esac
    case "${comflp_sweep_decode}" in
        all|bracket) ;;
        *) die "unknown --comflp_sweep_decode '${comflp_sweep_decode}'; choose one of: all bracket" ;;
    esac
    case "${comflp_glp_metric}" in
        decode|ctc_greedy|loss) ;;
        *) die "unknown --comflp_glp_metric '${comflp_glp_metric}'; choose one of: decode ctc_greedy loss" ;;
    esac
    [ "${comflp_fine_finalists}" -ge 1 ] || die "--comflp_fine_finalists must be at least 1"
    [ "${comflp_proxy_batch_size}" -ge 1 ] || die "--comflp_proxy_batch_size must be at least 1"
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
    for _name in comflp_num_prune comflp_keep; do
        if [ -n "${!_name}" ] && ! [[ "${!_name}" =~ ^[[:space:],]*[1-9][0-9]*([[:space:],]+[1-9][0-9]*)*[[:space:],]*$ ]]; then
            die "--${_name} must be a positive integer or a list of them (e.g. \"3 6\"), got '${!_name}'"
        fi
    done
    if [ -n "${comflp_sweep_range}" ] && ! [[ "${comflp_sweep_range}" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]]; then
        die "--comflp_sweep_range must be A:B, the first and last number of layers to remove (e.g. 1:10), got '${comflp_sweep_range}'"
    fi
    if [ -n "${comflp_max_degradation}" ] && ! [[ "${comflp_max_degradation}" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]]; then
        die "--comflp_max_degradation must be a number >= 0 (absolute CER/WER points on the fine-search set, e.g. 1.0), got '${comflp_max_degradation}'"
    fi
    if [ -n "${comflp_max_run}" ] && ! [[ "${comflp_max_run}" =~ ^[1-9][0-9]*$ ]]; then
        die "--comflp_max_run must be a positive integer, got '${comflp_max_run}'"
    fi
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
if [ ! -f "${comflp_finetune_config}" ] && [ "${comflp_finetune_config}" = conf/comflp/finetune.yaml ]; then
    # The recipe has no overlay of its own: the plugin-wide default (conf/ of the template is
    # the plugin's top-level conf/, linked in the plugin tree and copied into ESPnet checkouts).
    _default="${comflp_template_dir}/conf/comflp/finetune.yaml"
    [ -f "${_default}" ] && comflp_finetune_config=$(cd "$(dirname "${_default}")" && pwd)/finetune.yaml
fi
if "${comflp_finetune}" && runs_any 19; then
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

# ------------------------------------------------------------------ the run directory
# The CoMFLP stages' Python side (comflp_espnet.stages) owns the layout of --comflp_dir, the
# freshness records of its outputs and the checks; this script runs the job arrays around it.
comflp_stages=
for _s in 14 15 16 17 18 19 20 21; do
    run_stage "${_s}" || continue
    { [ "${_s}" = 19 ] && ! "${comflp_finetune}"; } && continue
    { [ "${_s}" = 21 ] && ! "${comflp_pack}"; } && continue
    comflp_stages+="${_s} "
done
bpemodel=
if [ "${token_type}" = bpe ]; then
    if [ "${lang}" != noinfo ]; then
        bpemodel="data/${lang}_token_list/bpe_${bpemode}${nbpe}/bpe.model"
    else
        bpemodel="data/token_list/bpe_${bpemode}${nbpe}/bpe.model"
    fi
fi
# Every option the stages' Python side reads, as --name=value (values may start with "--").
stage_opts=(
    "--comflp_dir=${comflp_dir}" "--asr_exp=${asr_exp}" "--comflp_tag=${comflp_tag}"
    "--inference_asr_model=${inference_asr_model}" "--data_feats=${data_feats}"
    "--train_set=${train_set}" "--valid_set=${valid_set}" "--fine_set=${comflp_fine_set}"
    "--eval_sets=${eval_sets}" "--audio_format=${audio_format}" "--token_type=${token_type}"
    "--nlsyms_txt=${nlsyms_txt}" "--inference_config=${inference_config}"
    "--inference_args=${inference_args}" "--inference_tag=${inference_tag}" "--batch_size=${batch_size}"
    "--nj=${nj}" "--inference_nj=${inference_nj}" "--ngpu=${ngpu}" "--gpu_inference=${gpu_inference}"
    "--calib_nutt=${comflp_calib_nutt}" "--seed=${comflp_seed}" "--pooling=${comflp_pooling}"
    "--dump_args=${comflp_dump_args}" "--measure=${comflp_measure}"
    "--dc_batch_size=${comflp_dc_batch_size}" "--search=${comflp_search}"
    "--num_prune=${comflp_num_prune}" "--keep=${comflp_keep}" "--topk=${comflp_topk}"
    "--sweep=${comflp_sweep}" "--sweep_range=${comflp_sweep_range}" "--max_degradation=${comflp_max_degradation}"
    "--sweep_decode=${comflp_sweep_decode}"
    "--beam_size=${comflp_beam_size}" "--aggregate=${comflp_aggregate}"
    "--keep_first=${comflp_keep_first}" "--keep_last=${comflp_keep_last}" "--max_run=${comflp_max_run}"
    "--protect=${comflp_protect}" "--fine_nutt=${comflp_fine_nutt}" "--finetune=${comflp_finetune}"
    "--fine_proxy=${comflp_fine_proxy}" "--fine_finalists=${comflp_fine_finalists}"
    "--proxy_batch_size=${comflp_proxy_batch_size}" "--glp_metric=${comflp_glp_metric}"
    "--finetune_config=${comflp_finetune_config}" "--finetune_args=${comflp_finetune_args}"
    "--skip_bad_utts=${comflp_skip_bad_utts}" "--asr_stats_dir=${asr_stats_dir}"
    "--feats_normalize=${feats_normalize}" "--bpemodel=${bpemodel}" "--stages=${comflp_stages}"
)
# stage_tool COMMAND [OPTION...]: comflp_stage with the run's options (an error is one line on stderr);
# only_tag, when set, restricts it to that search of the run (stages 19-21 run per search).
only_tag=
stage_tool() {
    ${python} -m comflp_espnet.bin.comflp_stage "$@" "${stage_opts[@]}" "--only_tag=${only_tag}"
}
# stage_eval COMMAND [OPTION...]: stage_tool, and the shell assignments it prints evaluated here.
stage_eval() {
    local out
    out=$(stage_tool "$@") || exit 2
    eval "${out}"
}

# All checks before any work: the model, the data sets and their sizes.  Sets num_layers, the
# searches of the run (comflp_tags, one per depth of num_prunes), the run's paths (states_dir,
# corr_dir, fine_dir, ...) and those of its first search (comflp_tag, tag_dir, scores_dir, ...).
stage_eval check

# One run at a time per --comflp_dir (see comflp_espnet.runlock): a second run stops naming this one.
mkdir -p "${comflp_dir}"
exec 9<>"${lock_file}"
stage_tool lock --fd 9 --pid $$ "--command_line=${comflp_command_line}" --lock_wait "${comflp_lock_wait}" \
    || exit 2
trap 'stage_tool unlock --fd 9 || true' EXIT
# Under the lock, the checks that read the run directory: the options of the outputs every search
# of --comflp_dir shares, and the outputs the first stage reads.
stage_tool check_run_dir || exit 2

# The commands for jobs of stage 14 and the decoding stages, as asr.sh picks them.
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

# decode_models MODELS_SCP DATA_DIR OUT_DIR [--score_dir DIR] [--label_prefix P]: every model on
# the data set in --inference_nj jobs (scripts/decode_models.sh), into OUT_DIR/hyp/<name>/.
decode_models() {
    local models=$1 data=$2 out=$3
    shift 3
    "${comflp_template_dir}/scripts/decode_models.sh" \
        --cmd "${infer_cmd}" --python "${job_python}" --nj "${inference_nj}" --ngpu "${infer_ngpu}" \
        --batch_size "${batch_size}" --inference_config "${inference_config}" \
        --inference_args "${inference_args}" --audio_format "${audio_format}" \
        --skip_bad_utts "${comflp_skip_bad_utts}" --token_type "${token_type}" \
        --nlsyms_txt "${nlsyms_txt}" "$@" "${models}" "${data}" "${out}" || exit 2
}

# subset_text NUM_UTTS: how a subset of NUM_UTTS utterances is described in the log.
subset_text() {
    if [ "$1" -eq 0 ]; then
        echo "all utterances"
    else
        echo "$1 utterances (seed ${comflp_seed})"
    fi
}

# ================================================================================ CoMFLP stages
if run_stage 14; then
    stage_eval status --stage 14
    if [ "${stage_state}" = current ]; then
        log "Stage 14: ${states_dir}/states.scp is current; skipping"
    else
        log "Stage 14: Dump encoder states of ${asr_model_file} for calibration data ($(subset_text "${comflp_calib_nutt}") of ${calib_source}) -> ${states_dir}${stage_note:+ (redone: ${stage_note})}"
        _start=$(now_seconds)
        stage_eval begin --stage 14
        log "State dumping started... log: '${states_log//JOB/*}'"
        # shellcheck disable=SC2086
        run_or_show_log "${states_log//JOB/*}" \
            ${dump_cmd} JOB=1:"${states_nj}" "${states_log}" \
            ${job_python} -m comflp_espnet.bin.comflp_dump \
                --asr_train_config "${asr_train_config}" \
                --asr_model_file "${asr_model_file}" \
                --data_path_and_name_and_type "${states_data},speech,${calib_type}" \
                --output_dir "${states_output}" \
                --pooling "${comflp_pooling}" \
                --seed "${comflp_seed}" \
                --ngpu "${dump_ngpu}" \
                --skip_bad_utts "${comflp_skip_bad_utts}" \
                ${comflp_dump_args}
        stage_tool end --stage 14 --start "${_start}" --jobs "${states_nj}" || exit 2
    fi
fi

if run_stage 15; then
    stage_eval status --stage 15
    if [ "${stage_state}" = current ]; then
        log "Stage 15: the correlation matrices (${run_measures}) in ${corr_dir} are current; skipping"
    else
        _start=$(now_seconds)
        stage_eval begin --stage 15
        log "Stage 15: Correlation matrix of the states (${corr_measures}) -> ${corr_dir}${stage_note:+ (redone: ${stage_note})}"
        _opts=
        if [ -n "${comflp_dc_batch_size}" ] && [[ " ${corr_measures} " == *" dc "* ]]; then
            _opts+="--batch_size ${comflp_dc_batch_size} "
        fi
        # One process reads the states once and writes every measure's matrix and heatmap.
        # shellcheck disable=SC2086
        run_or_show_log "${corr_log}" \
            ${train_cmd} "${corr_log}" \
            ${python} -m comflp_espnet.bin.comflp_corr \
                --states_scp "${states_scp}" \
                --measure ${corr_measures} \
                --output_dir "${corr_dir}" ${_opts}
        stage_tool end --stage 15 --start "${_start}" || exit 2
    fi
fi

# proxy_array: score candidates by the proxy on the fine-search subset, one ${cmd} JOB=1:N array
# (the proxy_* variables from the stage tool: candidates file, each job's data list, outputs).
proxy_array() {
    local _text_opts=()
    [ -n "${proxy_text}" ] && _text_opts+=(--data_path_and_name_and_type "${proxy_text},text,text")
    log "Proxy (${proxy_name}): ${proxy_count} candidate(s) in ${proxy_nj} job(s)... log: '${proxy_log//JOB/*}'"
    # shellcheck disable=SC2086
    run_or_show_log "${proxy_log//JOB/*}" \
        ${infer_cmd} JOB=1:"${proxy_nj}" "${proxy_log}" \
        ${job_python} -m comflp_espnet.bin.comflp_proxy \
            --asr_train_config "${asr_train_config}" \
            --asr_model_file "${asr_model_file}" \
            --candidates "${proxy_candidates}" \
            --data_path_and_name_and_type "${proxy_data},speech,${proxy_type}" \
            "${_text_opts[@]+"${_text_opts[@]}"}" \
            --output_dir "${proxy_output}" \
            --proxy "${proxy_name}" \
            --batch_size "${proxy_batch_size}" \
            --sort_chunk 0 \
            --ngpu "${infer_ngpu}" \
            --skip_bad_utts "${comflp_skip_bad_utts}"
}

# glp_search: greedy layer pruning, for the search named by only_tag.  Step s evaluates the
# fine-search set with each remaining layer removed on top of the s-1 layers removed so far
# (--comflp_glp_metric decode: one candidate model each, decoded and scored as in stages 17-18;
# ctc_greedy or loss: every model of the step scored by the proxy in one array, no model
# written), then removes the layer whose model does best (ties: the lower layer id).  A step
# whose record is current is kept: a rerun goes on from there.
glp_search() {
    local step step_start
    for step in $(seq "${num_prune}"); do
        step_start=$(now_seconds)
        stage_eval glp_step_begin --step "${step}"
        if [ "${glp_step_state}" = current ]; then
            log "Greedy step ${step}/${num_prune}: ${glp_step_dir}/step.json is current; skipping"
            continue
        fi
        if [ "${glp_metric}" = decode ]; then
            log "Greedy step ${step}/${num_prune}: decode the fine-search set with each of ${glp_num_models} models -> ${glp_step_dir}"
            decode_models "${glp_models_scp}" "${fine_dir}" "${glp_decode_dir}" --score_dir "${glp_scores_dir}"
        else
            log "Greedy step ${step}/${num_prune}: score each of ${glp_num_models} models by ${glp_metric} on the fine-search set -> ${glp_step_dir}"
            [ "${proxy_count}" -gt 0 ] && proxy_array
        fi
        stage_tool glp_step_end --step "${step}" --start "${step_start}" || exit 2
    done
}

if run_stage 16; then
    stage_eval status --stage 16
    if [ "${stage_state}" = current ]; then
        log "Stage 16: the proposals of ${comflp_tags} are current; skipping"
    else
        _start=$(now_seconds)
        if [ "${comflp_search}" = glp ]; then
            log "Stage 16: Greedy layer pruning (glp, by ${glp_metric}): remove ${num_prunes} of ${num_layers} layers one at a time, each step evaluating the fine-search set (${fine_source}) once per remaining layer -> ${comflp_tags}${stage_note:+ (redone: ${stage_note})}"
            for _tag in ${comflp_tags}; do
                only_tag=${_tag}
                stage_eval layout
                glp_search
            done
            only_tag=
            stage_eval layout
        elif [ "${comflp_search}" = none ]; then
            log "Stage 16: The unpruned model as the only candidate (--comflp_search none, a reference) -> ${tag_dir}/proposals.json${stage_note:+ (redone: ${stage_note})}"
        else
            log "Stage 16: Coarse search (${comflp_search}, ${run_measures}, remove ${num_prunes} of ${num_layers} layers, top ${comflp_topk}) -> ${comflp_tags}${stage_note:+ (redone: ${stage_note})}"
        fi
        stage_tool run --stage 16 --start "${_start}" || exit 2
    fi
fi

if run_stage 17; then
    stage_eval status --stage 17
    if [ "${stage_state}" = current ]; then
        log "Stage 17: the fine searches of ${comflp_tags} are current; skipping"
    else
        if [ "${comflp_fine_proxy}" = none ]; then
            _how="decode every candidate"
        elif [ "${comflp_sweep_decode}" = bracket ]; then
            _how="score every candidate by ${fine_proxy}, decode the ${comflp_fine_finalists} best of the depths around the limit of --comflp_max_degradation ${comflp_max_degradation}"
        else
            _how="score every candidate by ${fine_proxy}, decode the ${comflp_fine_finalists} best"
        fi
        log "Stage 17: Fine search: ${_how} and the original on $(subset_text "${comflp_fine_nutt}") of ${fine_source} -> ${comflp_tags}${stage_note:+ (redone: ${stage_note})}"
        _start=$(now_seconds)
        stage_eval begin --stage 17
        _array_start=$(now_seconds)
        [ "${proxy_count}" -gt 0 ] && proxy_array
        stage_eval finalists --start "${_array_start}"
        _array_start=$(now_seconds)
        while [ "${decode_count}" -gt 0 ]; do
            decode_array "${infer_cmd}" "${job_python}" "${infer_ngpu}" "${batch_size}" \
                "${comflp_skip_bad_utts}" "${inference_config}" "${inference_args}"
            [ "${comflp_sweep_decode}" = bracket ] || break
            # A bracketing sweep: the next depths to decode, from the decoded ones (none: done).
            stage_eval next --stage 17 --start "${_array_start}"
            _array_start=$(now_seconds)
        done
        stage_tool end --stage 17 --start "${_array_start}" --stage_start "${_start}" || exit 2
    fi
fi

if run_stage 18; then
    stage_eval status --stage 18
    if [ "${stage_state}" = current ]; then
        log "Stage 18: the winners (${winner_name}) are current; skipping"
    else
        log "Stage 18: Score the finalists and choose the winner(s) -> ${comflp_tags}${stage_note:+ (redone: ${stage_note})}"
        _start=$(now_seconds)
        stage_tool run --stage 18 --start "${_start}" || exit 2
    fi
    # Proxy evaluations, decodes and seconds of each search, from the records (rewritten only when
    # they change).
    stage_tool search_cost || exit 2
    # Several depths: the winners' table and plot (sweep/), and the searches of stages 19-21.
    stage_eval sweep
    sweep_evaluated=true
fi

# Stages 19-21 run for each search of the run in turn (only_tag; the paths of stage_eval layout):
# every search, or with --comflp_max_degradation the chosen one, or none for a sweep without it
# (final_tags, comflp_espnet.sweep_stage).
if runs_any 19 20 21; then
if ! "${sweep_evaluated:-false}"; then
    for _s in 19 20 21; do run_stage "${_s}" && break; done
    stage_eval sweep --stage "${_s}"
fi
[ -n "${final_tags}" ] || log "Stages 19-21: skipped: ${final_note}"
for _tag in ${final_tags}; do
    only_tag=${_tag}
    stage_eval layout
    if run_stage 19; then
        if ! "${comflp_finetune}"; then
            log "Stage 19: Skip fine-tuning (--comflp_finetune false)"
        else
            stage_eval status --stage 19
            if [ "${stage_state}" = current ]; then
                log "Stage 19: ${finetune_dir}/${inference_asr_model} is current; skipping"
            else
                _start=$(now_seconds)
                # The winner's config with the overlay merged in (finetune_config.yaml); the options given
                # below on the command line (data, shapes, output, initialisation) are removed from it.
                stage_eval begin --stage 19
                log "Stage 19: Fine-tune the winner ${finetune_winner} with the overlay ${comflp_finetune_config} -> ${finetune_dir}${stage_note:+ (redone: ${stage_note})}"
                asr_train_data_args "${finetune_train_dir}" "${finetune_valid_dir}" "${finetune_scp}" "${finetune_type}"
                if echo "${cuda_cmd}" | grep -e queue.pl -e queue-freegpu.pl &> /dev/null; then
                    # SGE job names cannot contain "/".
                    _jobname="$(basename "${asr_exp}")_comflp_finetune"
                else
                    _jobname="${finetune_dir}/train.log"
                fi
                log "Fine-tuning started... log: '${finetune_dir}/train.log'"
                # shellcheck disable=SC2086
                launch_asr_train "${finetune_dir}" "${_jobname}" \
                    --config "${finetune_config_file}" \
                    --use_preprocessor true \
                    "${train_data_args[@]}" \
                    --init_param "${finetune_winner_dir}/${inference_asr_model}" \
                    --resume true \
                    ${comflp_finetune_args} \
                    || { tail -n 40 "${finetune_dir}/train.log" >&2; die "fine-tuning failed; log: ${finetune_dir}/train.log (a damaged checkpoint there: remove ${finetune_dir} and rerun stage 19)"; }
                stage_tool end --stage 19 --start "${_start}" || exit 2
            fi
        fi
    fi

    if run_stage 20; then
        log "Stage 20: Decode and score ${eval_sets} with the original, pruned and fine-tuned models -> ${test_decode_dir}"
        stage_eval begin --stage 20
        _results_opts=()
        for dset in ${eval_sets}; do
            # One decoding directory per test set (its scores in score/, read back by comflp_results).
            _results_opts+=(--test_scores "${dset}=${test_decode_dir}/${dset}")
            decode_models "${test_models_scp}" "${data_feats}/${dset}" "${test_decode_dir}/${dset}" \
                --score true --label_prefix "${dset}/"
        done

        _results_extra=()
        "${test_finetuned}" && _results_extra+=(--finetune_dir "${finetune_dir}" --finetune_config "${finetune_config_file}")
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
                --proposals "${proposals_file}" \
                --ranking "${ranking_file}" \
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
            stage_eval status --stage 21
            if [ "${stage_state}" = current ]; then
                log "Stage 21: ${packed_model} is current; skipping"
            else
                _start=$(now_seconds)
                stage_eval begin --stage 21
                log "Stage 21: Pack the ${pack_what} model: ${packed_model}"
                _opts=()
                for _o in ${pack_options}; do
                    _opts+=(--option "${_o}")
                done
                ${python} -m espnet2.bin.pack asr \
                    --asr_train_config "${pack_final_dir}/config.yaml" \
                    --asr_model_file "${pack_final_dir}/${inference_asr_model}" \
                    --option "${pack_final_dir}/prune.yaml" \
                    "${_opts[@]+"${_opts[@]}"}" \
                    --outpath "${pack_tmp}" || die "packing failed"
                mv "${pack_tmp}" "${packed_model}"
                stage_tool end --stage 21 --start "${_start}" || exit 2
            fi
        fi
    fi

done
only_tag=
if run_stage 20 && "${sweep_results}"; then
    # The sweep's table with the test results, and its section in the RESULTS.md files.
    stage_eval sweep --results true
fi
fi

# Where to look, and one line per search: layers removed, parameters, test CER/WER of the original,
# pruned and fine-tuned models, search time (parts not made yet are left out).
if runs_any 16 17 18 19 20 21; then
    if [ -f "${comflp_dir}/sweep/sweep.md" ] && [ "$(echo "${comflp_tags}" | wc -w)" -gt 1 ]; then
        echo "Depth sweep: ${comflp_dir}/sweep/sweep.md (plot: ${comflp_dir}/sweep/sweep.png)"
    fi
    _proxy_only=
    for _tag in ${comflp_tags}; do
        if [ -d "${comflp_dir}/${_tag}" ]; then
            if [ "${comflp_sweep_decode}" = bracket ] && [ ! -d "${comflp_dir}/${_tag}/scores" ]; then
                _proxy_only+=" ${_tag}"
                continue
            fi
            ${python} -m comflp_espnet.bin.comflp_summary --search_dir "${comflp_dir}/${_tag}" || true
        fi
    done
    [ -n "${_proxy_only}" ] && echo "Scored by the proxy only, not decoded (--comflp_sweep_decode bracket):${_proxy_only}"
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
