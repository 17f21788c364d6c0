#!/usr/bin/env python3
"""The jobs' interpreter options: ``python -O`` against plain ``python``.

ESPnet decorates many functions with typeguard's ``@typechecked``, which
instruments them when their module is imported and checks every call; under
``python -O`` the decorator returns the function as it is (and asserts are
dropped).  ``--comflp_python_opts`` (default ``-O``) runs the jobs that load
the model that way.  Measured side by side in one run, the two settings
alternating:

1. the import of ``espnet2.tasks.asr`` and ``espnet2.bin.asr_inference``
   (what every dump, proxy and decode job imports), in fresh interpreters,
   after one untimed warm-up each (which writes the bytecode caches);
2. a whole decode job as the fine search runs it
   (``python [-O] -m comflp_espnet.bin.comflp_decode``): the original model
   on ``--num_utts`` utterances of ``--data_dir`` with the inference config;
   the hypotheses of both settings must be identical.

Example (the quick demo's model):

    bench/bench_python_opts.py --recipe_dir egs2/mini_an4_synth/asr1_comflp \\
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

IMPORT_CODE = (
    "import time; t = time.perf_counter(); "
    "import espnet2.tasks.asr, espnet2.bin.asr_inference; "
    "print(time.perf_counter() - t)"
)


def add_decode_job_options(p: argparse.ArgumentParser, num_utts: int) -> None:
    """The options of a timed decode job (also bench_job_startup.py's)."""
    p.add_argument("--recipe_dir", default=".", help="working directory of the recipe")
    p.add_argument("--asr_exp", required=True, help="experiment dir with config.yaml")
    p.add_argument("--model_file", default="valid.acc.ave.pth", help="model file in --asr_exp")
    p.add_argument("--data_dir", required=True, help="dumped data dir with wav.scp")
    p.add_argument("--inference_config", default=None, help="decoding config YAML")
    p.add_argument("--num_utts", type=int, default=num_utts, help="utterances decoded per job")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each setting")
    p.add_argument("--python", default=sys.executable, help="interpreter")


class DecodeJob:
    """A comflp_decode job as the fine search runs one: the original model of ``--asr_exp`` on the
    first ``--num_utts`` utterances of ``--data_dir``; each run writes its own output dir."""

    def __init__(self, args, prefix: str):
        self.cwd = Path(args.recipe_dir).resolve()
        exp = self.cwd / args.asr_exp
        data = self.cwd / args.data_dir
        for path in (exp / "config.yaml", exp / args.model_file, data / "wav.scp"):
            if not path.is_file():
                sys.exit(f"not found: {path}")
        self.work = Path(tempfile.mkdtemp(prefix=prefix))
        keys = self.work / "keys.scp"
        with open(data / "wav.scp") as f:
            lines = [line for line in f if line.strip()][: args.num_utts]
        keys.write_text("".join(lines))
        self.num_utts = len(lines)
        models = self.work / "models.scp"
        models.write_text(f"original {exp / 'config.yaml'} {exp / args.model_file}\n")
        self._options = ["--models_scp", str(models), "--data_path_and_name_and_type",
                         f"{data / 'wav.scp'},speech,sound", "--key_file", str(keys), "--ngpu", "0"]
        if args.inference_config:
            self._options += ["--config", str(self.cwd / args.inference_config)]

    def options(self, out: Path) -> list:
        """comflp_decode's options for a run writing to ``out``."""
        return [*self._options, "--output_dir", str(out)]

    @staticmethod
    def hypotheses(out: Path) -> str:
        return (out / "original" / "text").read_text()


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_decode_job_options(p, num_utts=30)
    p.add_argument("--opts", default="-O", help="the interpreter options compared with none")
    return p


def run(cmd, cwd):
    """Runs cmd; returns (seconds, stdout); a failure stops the benchmark with its output."""
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return seconds, r.stdout


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    job = DecodeJob(args, "bench_python_opts_")
    cwd = job.cwd
    settings = {"plain": [args.python], args.opts: [args.python, *args.opts.split()]}

    imports = {name: [] for name in settings}
    for name, py in settings.items():  # warm-up: bytecode caches of each setting
        run([*py, "-c", IMPORT_CODE], cwd)
    for _ in range(args.reps):
        for name, py in settings.items():
            imports[name].append(float(run([*py, "-c", IMPORT_CODE], cwd)[1].split()[-1]))

    jobs = {name: [] for name in settings}
    hyps = {}
    for rep in range(args.reps):
        for name, py in settings.items():
            out = job.work / f"out_{name.strip('-') or 'plain'}_{rep}"
            cmd = [*py, "-m", "comflp_espnet.bin.comflp_decode", *job.options(out)]
            jobs[name].append(run(cmd, cwd)[0])
            hyps.setdefault(name, job.hypotheses(out))
    same = len(set(hyps.values())) == 1

    print(f"# python {args.opts!r} vs plain: {args.reps} runs each, alternating, "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    print("| measurement | plain s (median) | " f"{args.opts} s (median) | ratio |")
    print("|---|---|---|---|")
    for label, table in (("import espnet2.tasks.asr + asr_inference", imports),
                         (f"decode job, {job.num_utts} utterances", jobs)):
        plain, opt = statistics.median(table["plain"]), statistics.median(table[args.opts])
        print(f"| {label} | {plain:.2f} | {opt:.2f} | {opt / plain:.2f} |")
    print(f"hypotheses identical: {'yes' if same else 'NO'}")
    print(f"(outputs in {job.work})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
