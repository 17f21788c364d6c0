#!/usr/bin/env bash
# The quick demo: CoMFLP on a small AN4-style census corpus synthesized offline with espeak-ng
# (2000 clean training utterances of US-English voices; dev and test voices disjoint from the
# training voices), whose 12-block Transformer (d_model 64) recognizes speech after 8 epochs on
# a CPU (test CER about 10 %); then a sweep over 2, 4, 6 and 8 removed encoder layers (per depth,
# K=30 candidates scored by the loss proxy, the 3 best decoded), the depth curve, the
# deepest winner within 3 CER points of the original on the fine-search set chosen, fine-tuned
# for 2 epochs, and the original, pruned and fine-tuned models evaluated.  Stages 1-20 take
# under 10 minutes on 2 CPU cores, offline.
# The corpus is egs2/an4_synth's, made smaller and easier by conf/data.conf (options of
# local/data.sh, the an4_synth generator); egs2/an4_synth/asr1_comflp is the benchmark.
# Needs espeak-ng: apt-get install -y espeak-ng
#   ./run.sh                                   # stages 1-20
#   ./run.sh --stage 14                        # CoMFLP stages on the trained model
#   ./run.sh --stage 14 --comflp_num_prune 5 --comflp_max_degradation ""
#                                              # one more depth on the same model (dc_dp_prune5/)
set -e
set -u
set -o pipefail

train_set=train
valid_set=dev
test_sets="test"

asr_config=conf/train_asr_transformer_12.yaml
inference_config=conf/decode_asr.yaml

# Called through this file's directory, so that the CoMFLP stages can also run from another
# recipe directory where asr.sh trained the model (../asr1_comflp/run.sh --stage 14).
"$(dirname "$0")/asr_comflp.sh" \
    --nj 2 \
    --inference_nj 2 \
    --ngpu 0 \
    --lang en \
    --feats_type raw \
    --token_type char \
    --feats_normalize utterance_mvn \
    --use_lm false \
    --local_data_opts "--config conf/data.conf" \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --skip_eval true \
    --comflp_calib_nutt 200 \
    --comflp_measure dc \
    --comflp_search dp \
    --comflp_num_prune "2 4 6 8" \
    --comflp_max_degradation 3 \
    --comflp_fine_set "${valid_set}" \
    --comflp_fine_nutt 50 \
    --comflp_finetune true \
    "$@"
