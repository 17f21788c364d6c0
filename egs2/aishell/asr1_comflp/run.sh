#!/usr/bin/env bash
# CoMFLP on AISHELL-1 (Mandarin, 178 h), as in the CoMFLP paper: a 24-block Branchformer trained
# by ESPnet's asr.sh with the options and configs of egs2/aishell/asr1, then 12 of its 24 encoder
# layers pruned.  Needs an ESPnet checkout (asr.sh, Kaldi utils, local/ of egs2/aishell/asr1).
#   ./run.sh                  # stages 1-20: data, training (4 GPUs), CoMFLP
#   ./run.sh --stage 14       # CoMFLP on an already trained model
#   cd ../asr1 && ../asr1_comflp/run.sh --stage 14   # CoMFLP on the model egs2/aishell/asr1 trained
set -e
set -u
set -o pipefail

train_set=train
valid_set=dev
test_sets="dev test"

asr_config=conf/train_asr_branchformer.yaml
inference_config=conf/decode_asr_branchformer.yaml

use_lm=false
use_wordlm=false

# speed perturbation (train_set becomes "${train_set}_sp")
speed_perturb_factors="0.9 1.0 1.1"

# Called through this file's directory, so that the CoMFLP stages can also run from the recipe
# directory where asr.sh trained the model (e.g. egs2/aishell/asr1: ../asr1_comflp/run.sh --stage 14).
"$(dirname "$0")/asr_comflp.sh" \
    --nj 32 \
    --inference_nj 32 \
    --ngpu 4 \
    --lang zh \
    --audio_format "flac.ark" \
    --feats_type raw \
    --token_type char \
    --use_lm ${use_lm} \
    --use_word_lm ${use_wordlm} \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --speed_perturb_factors "${speed_perturb_factors}" \
    --asr_speech_fold_length 512 \
    --asr_text_fold_length 150 \
    --lm_fold_length 150 \
    --lm_train_text "data/${train_set}/text" \
    --comflp_calib_nutt 320 \
    --comflp_measure dc \
    --comflp_search dp \
    --comflp_num_prune 12 \
    --comflp_topk 10 \
    --comflp_fine_set "${valid_set}" \
    --comflp_fine_nutt 500 \
    "$@"
