#!/usr/bin/env python3
"""State-dump throughput and memory, measured side by side.

1. Throughput: over the same utterances, read through the same ESPnet loader,
   time (a) a plain ``model.encode`` per batch and (b) the full dump (hooks,
   pooling, writing ark/scp). Goal: dump >= 0.8x the plain forward.
2. Memory: peak RSS of a dump of ``--small`` vs ``--large`` utterances, each
   in a fresh subprocess (same model, same utterance length). Goal: flat.

    python bench/bench_dump.py [--num_utts 200] [--small 100] [--large 1000]
        [--seconds 0.5] [--encoder conformer] [--num_blocks 6] [--output_size 64]

Defaults keep the run short on a CPU; the model is randomly initialised.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))


def make_exp(work: Path, args):
    from conftest import make_tiny_asr_exp

    conf = {"output_size": args.output_size, "linear_units": 4 * args.output_size}
    if args.encoder in ("branchformer", "e_branchformer"):
        conf["cgmlp_linear_units"] = 4 * args.output_size
    return make_tiny_asr_exp(
        work / "exp", encoder=args.encoder, num_blocks=args.num_blocks, encoder_conf=conf
    )


def make_data(work: Path, name: str, num_utts: int, seconds: float) -> Path:
    """Data dir of num_utts utterances sharing one wav (keeps setup fast)."""
    import numpy as np
    import soundfile

    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    wav = work / "noise.wav"
    if not wav.exists():
        audio = 0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))
        soundfile.write(wav, audio.astype("float32"), 16000)
    keys = [f"utt{i:06d}" for i in range(num_utts)]
    (data / "wav.scp").write_text("".join(f"{k} {wav}\n" for k in keys))
    (data / "text").write_text("".join(f"{k} A B\n" for k in keys))
    return data


def throughput(args, work: Path, config: Path, model_file: Path) -> None:
    import torch
    from espnet2.tasks.asr import ASRTask

    from comflp_espnet.bin.comflp_dump import run_dump
    from comflp_espnet.model_io import load_asr_model

    torch.set_num_threads(args.threads)
    data = make_data(work, "tp", args.num_utts, args.seconds)
    triple = [(str(data / "wav.scp"), "speech", "sound")]
    model, train_args = load_asr_model(config, model_file)

    def plain():
        # Timed from loader construction, like the dump (which builds its own).
        start = time.perf_counter()
        loader = ASRTask.build_streaming_iterator(
            triple, dtype="float32", batch_size=args.batch_size, num_workers=0,
            preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
            collate_fn=ASRTask.build_collate_fn(train_args, False), inference=True,
        )
        with torch.no_grad():
            for _, batch in loader:
                model.encode(batch["speech"], batch["speech_lengths"])
        return time.perf_counter() - start

    def dump(n):
        start = time.perf_counter()
        run_dump(model, train_args, triple, str(work / f"dump{n}"), batch_size=args.batch_size)
        return time.perf_counter() - start

    plain()  # warm-up
    plain_times, dump_times = [], []
    for n in range(args.repeats):  # interleaved, so load drifts hit both
        plain_times.append(plain())
        dump_times.append(dump(n))
    t_plain, t_dump = min(plain_times), min(dump_times)
    print(f"throughput over {args.num_utts} utts x {args.seconds}s, batch {args.batch_size}, "
          f"{args.encoder} {args.num_blocks}x{args.output_size}, {args.threads} thread(s):")
    print(f"  plain encode : {args.num_utts / t_plain:8.1f} utt/s  ({t_plain:.3f} s)")
    print(f"  state dump   : {args.num_utts / t_dump:8.1f} utt/s  ({t_dump:.3f} s)")
    print(f"  ratio dump/plain throughput = {t_plain / t_dump:.3f}  (goal >= 0.8)")


def memory_child(config: str, model_file: str, data: str, out: str, threads: int) -> None:
    import torch

    from comflp_espnet.bin.comflp_dump import run_dump
    from comflp_espnet.model_io import load_asr_model

    torch.set_num_threads(threads)
    model, train_args = load_asr_model(config, model_file)
    # Reset the kernel's peak-RSS mark so that the peak covers the dump only,
    # not the (larger) transient peak of importing ESPnet.
    reset = _reset_peak_rss()
    before = _rss_kb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_dump(model, train_args, [(f"{data}/wav.scp", "speech", "sound")], out, batch_size=8)
    after = _rss_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_kb": before, "rss_peak_kb": after, "peak_reset": reset}))


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory(args, work: Path, config: Path, model_file: Path) -> None:
    results = {}
    for n in (args.small, args.large):
        data = make_data(work, f"mem{n}", n, args.seconds)
        proc = subprocess.run(
            [sys.executable, __file__, "--_child", str(config), str(model_file), str(data),
             str(work / f"memdump{n}"), str(args.threads)],
            capture_output=True, text=True, check=True,
        )
        results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    small, large = results[args.small], results[args.large]
    how = "peak RSS during the dump" if small.get("peak_reset") else "ru_maxrss"
    print(f"peak memory ({how}, fresh process each, {args.seconds}s utts):")
    for n in (args.small, args.large):
        r = results[n]
        print(f"  {n:6d} utts: peak {r['rss_peak_kb'] / 1024:8.1f} MiB "
              f"(before the dump {r['rss_before_kb'] / 1024:8.1f} MiB, "
              f"dump adds {(r['rss_peak_kb'] - r['rss_before_kb']) / 1024:6.1f} MiB)")
    grow_small = small["rss_peak_kb"] - small["rss_before_kb"]
    grow_large = large["rss_peak_kb"] - large["rss_before_kb"]
    print(f"  ratio peak {args.large}/{args.small} = {large['rss_peak_kb'] / small['rss_peak_kb']:.3f}"
          f", ratio of dump increments = {grow_large / max(grow_small, 1):.2f}  (goal: flat)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _, _, config, model_file, data, out, threads = sys.argv
        memory_child(config, model_file, data, out, int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_utts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoder", default="conformer")
    parser.add_argument("--num_blocks", type=int, default=6)
    parser.add_argument("--output_size", type=int, default=64)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config, model_file = make_exp(work, args)
        throughput(args, work, config, model_file)
        memory(args, work, config, model_file)


if __name__ == "__main__":
    main()
