#!/usr/bin/env bash
# CoMFLP on a synthesized AN4-style census corpus (espeak-ng voices, noise and reverberation;
# dev/test voices disjoint from the training voices): a 12-block Transformer trained here,
# offline, and then 3 or 6 of its 12 encoder layers pruned.  The benchmark against the other
# layer-pruning methods is bench/compare_methods.py (see docs/benchmarks.md).
#   ./run.sh                              # stages 1-20 on the CPU (training: about an hour on 2 cores)
#   ./run.sh --ngpu 1                     # train (and fine-tune) on a GPU
#   ./run.sh --stage 14                   # CoMFLP stages on the trained model
#   ./run.sh --local_data_opts "--num_train 1000" --asr_args "--max_epoch 8"   # smaller and faster
set -e
set -u
set -o pipefail

train_set=train
valid_set=dev
test_sets="dev test"

asr_config=conf/train_asr_transformer_12.yaml
inference_config=conf/decode_asr.yaml

"$(dirname "$0")/asr_comflp.sh" \
    --nj 2 \
    --inference_nj 2 \
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
    --comflp_calib_nutt 320 \
    --comflp_measure dc \
    --comflp_search dp \
    --comflp_num_prune 6 \
    --comflp_fine_set "${valid_set}" \
    --comflp_fine_nutt 150 \
    --comflp_finetune true \
    "$@"
