#!/usr/bin/env bash
# CoMFLP on mini_an4: a tiny 12-block Transformer trained on 4 utterances, then 4 of its 12
# encoder layers pruned.  Runs on a CPU in a few minutes, with or without an ESPnet checkout:
# stages 1-13 are ESPnet's asr.sh when ./asr.sh resolves, else the plugin's asr_minimal.sh.
#   ./run.sh                      # stages 1-20
#   ./run.sh --stage 14           # CoMFLP stages on the trained model
#   ./run.sh --comflp_finetune true --comflp_pack true   # also stages 19 and 21
set -e
set -u
set -o pipefail

train_set=train_nodev
valid_set=train_dev
test_sets="train_dev test"

asr_config=conf/train_asr_transformer_12.yaml
inference_config=conf/decode_asr.yaml

# Called through this file's directory, so that the CoMFLP stages can also run from the recipe
# directory where asr.sh trained the model (e.g. egs2/aishell/asr1: ../asr1_comflp/run.sh --stage 14).
"$(dirname "$0")/asr_comflp.sh" \
    --nj 1 \
    --inference_nj 1 \
    --ngpu 0 \
    --lang en \
    --feats_type raw \
    --token_type char \
    --use_lm false \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --comflp_calib_nutt 0 \
    --comflp_measure dc \
    --comflp_search dp \
    --comflp_num_prune 4 \
    --comflp_fine_set "${valid_set}" \
    --comflp_fine_nutt 0 \
    --comflp_finetune true \
    "$@"
