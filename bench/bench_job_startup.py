#!/usr/bin/env python3
"""A job's fixed cost: importing ESPnet with the garbage collector paused, or as usual.

Every dump, proxy and decode job imports torch and ESPnet (about a million
long-lived objects) and exits when done.  ``comflp_espnet.gc_tuning`` runs
those imports with the cyclic garbage collector off and freezes what they
made, so that neither the collections during the import nor the one at exit
rescan them.  Measured side by side in one run, the two settings alternating,
each in a fresh interpreter (``python -O``, as the recipe runs its jobs):

1. the whole process (start to exit) of importing ``espnet2.tasks.asr`` and
   ``espnet2.bin.asr_inference``: as usual, and inside ``collector_paused()``;
2. a whole decode job as the fine search runs it
   (``python -O -m comflp_espnet.bin.comflp_decode``): the original model on
   ``--num_utts`` utterances of ``--data_dir``; the "as usual" run switches
   the tuning off (``gc.disable`` and ``gc.freeze`` made no-ops before the job
   starts).  The hypotheses of both settings must be identical.

Example (the an4_synth model):

    bench/bench_job_startup.py --recipe_dir egs2/an4_synth/asr1_comflp \\
        --asr_exp exp/asr_train_asr_transformer_12_raw_en_char \\
        --data_dir dump/raw/dev --inference_config conf/decode_asr.yaml

Timings on a shared machine are noisy: the ratios printed come from one run.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_python_opts import DecodeJob, add_decode_job_options, run  # noqa: E402

IMPORTS = "import espnet2.tasks.asr, espnet2.bin.asr_inference"
IMPORT_CODE = {
    "usual": IMPORTS,
    "paused": f"from comflp_espnet.gc_tuning import collector_paused\nwith collector_paused():\n    {IMPORTS}",
}
# Runs the decode job's entry point; the "usual" setting first makes the tuning a no-op.
JOB_CODE = {
    "usual": "import gc, runpy, sys; gc.disable = gc.freeze = lambda: None; "
             "sys.argv[0] = 'comflp_decode'; runpy.run_module('comflp_espnet.bin.comflp_decode', run_name='__main__')",
    "paused": "import runpy, sys; "
              "sys.argv[0] = 'comflp_decode'; runpy.run_module('comflp_espnet.bin.comflp_decode', run_name='__main__')",
}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_decode_job_options(p, num_utts=20)
    return p


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    job = DecodeJob(args, "bench_job_startup_")
    cwd = job.cwd
    py = [args.python, "-O"]
    settings = ("usual", "paused")

    imports = {name: [] for name in settings}
    run([*py, "-c", IMPORTS], cwd)  # warm-up: bytecode and file caches
    for _ in range(args.reps):
        for name in settings:
            imports[name].append(run([*py, "-c", IMPORT_CODE[name]], cwd)[0])

    jobs = {name: [] for name in settings}
    hyps = {}
    for rep in range(args.reps):
        for name in settings:
            out = job.work / f"out_{name}_{rep}"
            jobs[name].append(run([*py, "-c", JOB_CODE[name], *job.options(out)], cwd)[0])
            hyps.setdefault(name, job.hypotheses(out))
    same = len(set(hyps.values())) == 1

    print(f"# ESPnet imports with the garbage collector paused vs as usual: {args.reps} runs each, "
          f"alternating, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    print("| process, start to exit | as usual s (median) | paused s (median) | saved s | ratio |")
    print("|---|---|---|---|---|")
    for label, table in (("import espnet2.tasks.asr + asr_inference", imports),
                         (f"decode job, {job.num_utts} utterances", jobs)):
        usual, paused = statistics.median(table["usual"]), statistics.median(table["paused"])
        print(f"| {label} | {usual:.2f} | {paused:.2f} | {usual - paused:.2f} | {paused / usual:.2f} |")
    print(f"hypotheses identical: {'yes' if same else 'NO'}")
    print(f"(outputs in {job.work})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
