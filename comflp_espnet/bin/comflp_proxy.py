#!/usr/bin/env python3
"""Score layer-pruning candidates of one ESPnet ASR model by a cheap proxy.

One job of ``${cmd} JOB=1:N``::

    python -m comflp_espnet.bin.comflp_proxy \\
        --asr_train_config exp/asr_train/config.yaml \\
        --asr_model_file exp/asr_train/valid.acc.ave.pth \\
        --candidates proxy/candidates.txt \\
        --data_path_and_name_and_type dump/raw/dev/wav.scp,speech,sound \\
        [--data_path_and_name_and_type dump/raw/dev/text,text,text] \\
        --key_file proxy/keys.JOB.scp --output_dir proxy/output.JOB \\
        [--proxy ctc_greedy|loss] [--batch_size 8] [--sort_chunk 1000] [--ngpu 0] [--dtype float32]

The model is loaded once; no pruned model is written: every candidate is the
model with some encoder layers skipped, evaluated through a prefix tree of the
candidates' kept-layer sequences.  ``--candidates``: lines ``<name> <pruned
layer ids>`` (``cand01 2,5,7``; a name alone is the original model).

``--proxy ctc_greedy`` (CTC argmax, repeats collapsed, blanks dropped, text as
Speech2Text writes it) needs a CTC branch; a model without one is scored by
``loss`` instead, with a log line saying so.  ``--proxy loss`` (the model's own
teacher-forced loss) needs the reference text: a second
``--data_path_and_name_and_type <text file>,text,text``.

Outputs (``OUT/<name>/text`` or ``OUT/<name>/loss``, ``OUT/proxy_info.yaml``, a
freshness record) and the batching: ``comflp_espnet.proxy_job``.  A rerun
with the same model, candidates, data and options finds OUT current and does
nothing.
"""

import argparse
from typing import List, Optional

from comflp_espnet.cli import exit_on_error, new_parser, setup_logging, str2bool, str2triple, str_or_none
from comflp_espnet.proxy_job import PROXIES, score_share


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_proxy",
        "Score layer-pruning candidates of an ESPnet ASR model by a cheap proxy",
    )
    parser.add_argument("--asr_train_config", required=True, help="Training config.yaml")
    parser.add_argument("--asr_model_file", required=True, help="Model file (.pth)")
    parser.add_argument(
        "--candidates", required=True,
        help="Lines '<name> <comma-separated pruned layer ids>' (a name alone: the original)",
    )
    parser.add_argument(
        "--data_path_and_name_and_type", type=str2triple, action="append", required=True,
        help="e.g. dump/raw/dev/wav.scp,speech,sound (and dump/raw/dev/text,text,text "
        "for --proxy loss)",
    )
    parser.add_argument("--key_file", type=str_or_none, default=None, help="This job's keys")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--proxy", default="ctc_greedy", choices=PROXIES)
    parser.add_argument(
        "--batch_size", type=int, default=8,
        help="Utterances per batch (sorted by length; 4-16 measured best on CPU)",
    )
    parser.add_argument(
        "--sort_chunk", type=int, default=1000,
        help="Utterances read and sorted by length at a time before batching; 0: batches of "
        "--batch_size consecutive utterances as listed (the recipe lists them sorted, in whole batches)",
    )
    parser.add_argument(
        "--skip_bad_utts", type=str2bool, default=False,
        help="Skip (and list) utterances whose audio cannot be read, instead of stopping",
    )
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1), help="0: CPU, 1: GPU")
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    parser.add_argument(
        "--num_threads", type=int, default=None,
        help="torch threads (default: torch's, which follows OMP_NUM_THREADS)",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog):
        score_share(args.asr_train_config, args.asr_model_file, args.candidates,
                    args.data_path_and_name_and_type, args.output_dir, key_file=args.key_file,
                    proxy=args.proxy, batch_size=args.batch_size, sort_chunk=args.sort_chunk,
                    ngpu=args.ngpu, dtype=args.dtype, num_threads=args.num_threads,
                    skip_bad_utts=args.skip_bad_utts)


if __name__ == "__main__":
    main()
