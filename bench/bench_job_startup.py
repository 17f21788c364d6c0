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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    p.add_argument("--recipe_dir", default=".", help="working directory of the recipe")
    p.add_argument("--asr_exp", required=True, help="experiment dir with config.yaml")
    p.add_argument("--model_file", default="valid.acc.ave.pth", help="model file in --asr_exp")
    p.add_argument("--data_dir", required=True, help="dumped data dir with wav.scp")
    p.add_argument("--inference_config", default=None, help="decoding config YAML")
    p.add_argument("--num_utts", type=int, default=20, help="utterances decoded per job")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each setting")
    p.add_argument("--python", default=sys.executable, help="interpreter")
    return p


def run(cmd, cwd):
    """Runs cmd; returns its wall seconds; a failure stops the benchmark with its output."""
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return seconds


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    cwd = Path(args.recipe_dir).resolve()
    exp = cwd / args.asr_exp
    data = cwd / args.data_dir
    for path in (exp / "config.yaml", exp / args.model_file, data / "wav.scp"):
        if not path.is_file():
            sys.exit(f"not found: {path}")
    py = [args.python, "-O"]
    settings = ("usual", "paused")

    imports = {name: [] for name in settings}
    run([*py, "-c", IMPORTS], cwd)  # warm-up: bytecode and file caches
    for _ in range(args.reps):
        for name in settings:
            imports[name].append(run([*py, "-c", IMPORT_CODE[name]], cwd))

    work = Path(tempfile.mkdtemp(prefix="bench_job_startup_"))
    keys = work / "keys.scp"
    with open(data / "wav.scp") as f:
        lines = [line for line in f if line.strip()][: args.num_utts]
    keys.write_text("".join(lines))
    models = work / "models.scp"
    models.write_text(f"original {exp / 'config.yaml'} {exp / args.model_file}\n")
    jobs = {name: [] for name in settings}
    hyps = {}
    for rep in range(args.reps):
        for name in settings:
            out = work / f"out_{name}_{rep}"
            job = ["--models_scp", str(models), "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
                   "--key_file", str(keys), "--output_dir", str(out), "--ngpu", "0"]
            if args.inference_config:
                job += ["--config", str(cwd / args.inference_config)]
            jobs[name].append(run([*py, "-c", JOB_CODE[name], *job], cwd))
            hyps.setdefault(name, (out / "original" / "text").read_text())
    same = len(set(hyps.values())) == 1

    print(f"# ESPnet imports with the garbage collector paused vs as usual: {args.reps} runs each, "
          f"alternating, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    print("| process, start to exit | as usual s (median) | paused s (median) | saved s | ratio |")
    print("|---|---|---|---|---|")
    for label, table in (("import espnet2.tasks.asr + asr_inference", imports),
                         (f"decode job, {len(lines)} utterances", jobs)):
        usual, paused = statistics.median(table["usual"]), statistics.median(table["paused"])
        print(f"| {label} | {usual:.2f} | {paused:.2f} | {usual - paused:.2f} | {paused / usual:.2f} |")
    print(f"hypotheses identical: {'yes' if same else 'NO'}")
    print(f"(outputs in {work})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
