#!/usr/bin/env python3
"""Proxy scoring of many pruning candidates vs their full beam-search decodes.

On a trained model and the same utterances, measured side by side in one run:

1. proxy scoring of N candidates (``comflp_proxy``'s ``run``, the job entry
   point: model load, data reading, the prefix-tree walk, writing), for each
   proxy of ``--proxies``; layer forwards with and without prefix sharing;
2. the same scoring without prefix sharing (each candidate walked alone over
   the same pre-read batches, CTC greedy only): what sharing saves in seconds;
3. full decodes of the candidates as the fine search does them: the pruned
   model written (``surgery.prune_experiment``), loaded by ESPnet's
   ``Speech2Text`` with the inference config, every utterance decoded one at a
   time. ``--num_full n`` decodes only the first n candidates and extrapolates
   to N (printed as extrapolated);
4. with ``--measure_imports``: the import time of the proxy job's modules and
   of ``espnet2.bin.asr_inference``, each in fresh interpreters, alternated.

Candidates: the top N of a dp coarse search on a correlation matrix
(``--corr``, e.g. ``<comflp_dir>/corr/dc.npy`` of stage 15), else N distinct
seeded random sets of ``--num_prune`` layers (default L/2). Utterances: a
seeded subset of ``--num_utts`` of ``--data_dir``. Where full decodes exist,
the CER of each proxy (CTC greedy) is compared with the beam-search CER
(Kendall tau-b over the decoded candidates).

Example (the an4_synth model; relative paths are resolved from --recipe_dir,
where the recipe trained it):

    bench/bench_proxy.py --recipe_dir egs2/an4_synth/asr1_comflp \\
        --asr_exp exp/asr_train_asr_transformer_12_raw_en_char \\
        --data_dir dump/raw/dev --inference_config conf/decode_asr.yaml \\
        --num_candidates 50 --num_utts 100 --num_full 3 --threads 2

Timings on a shared machine are noisy: the ratios printed come from one run.
"""

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN_OPTIONS = ("batch_size", "ngpu", "seed", "num_workers", "log_level", "dtype")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe_dir", default=".", help="working directory of the recipe")
    p.add_argument("--asr_exp", default=None, help="experiment dir with config.yaml")
    p.add_argument("--asr_train_config", default=None, help="default: <asr_exp>/config.yaml")
    p.add_argument("--asr_model_file", default=None,
                   help="default: <asr_exp>/valid.acc.ave.pth")
    p.add_argument("--data_dir", required=True, help="Kaldi data dir (wav.scp, text)")
    p.add_argument("--inference_config", default=None, help="decode config YAML")
    p.add_argument("--num_candidates", type=int, default=50)
    p.add_argument("--num_utts", type=int, default=100)
    p.add_argument("--num_prune", type=int, default=None, help="default: L/2")
    p.add_argument("--corr", default=None, help="correlation matrix .npy for a dp top-N")
    p.add_argument("--num_full", type=int, default=None,
                   help="candidates decoded in full (default: all); the rest extrapolated")
    p.add_argument("--proxies", nargs="+", default=["ctc_greedy", "loss"],
                   choices=["ctc_greedy", "loss"])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the in-process measurements (proxy and full decodes)")
    p.add_argument("--nj", type=int, default=2,
                   help="also run --job_proxy as this many parallel comflp_proxy jobs "
                   "(one thread each, imports included), as the recipe does; 0: skip")
    p.add_argument("--job_proxy", default="loss", choices=["ctc_greedy", "loss"],
                   help="the proxy of the parallel jobs (the recipe's default: loss)")
    p.add_argument("--unshared", type=int, default=1, choices=(0, 1),
                   help="also time the walk without prefix sharing")
    p.add_argument("--measure_imports", type=int, default=1, choices=(0, 1))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work_dir", default=None, help="default: a new temporary dir")
    return p


def choose_candidates(args, num_layers):
    k = args.num_prune if args.num_prune is not None else num_layers // 2
    if args.corr:
        import numpy as np

        from comflp_espnet.search import coarse_search

        found = coarse_search(np.load(args.corr), k, topk=args.num_candidates, method="dp")
        return [list(p.pruned) for p in found], f"dp top-{len(found)} of {args.corr} at k={k}"
    rng = random.Random(args.seed)
    total = 1
    for i in range(k):
        total = total * (num_layers - i) // (i + 1)
    if total <= args.num_candidates:
        sets = [list(c) for c in itertools.combinations(range(1, num_layers + 1), k)]
    else:
        chosen = set()
        while len(chosen) < args.num_candidates:
            chosen.add(tuple(sorted(rng.sample(range(1, num_layers + 1), k))))
        sets = [list(c) for c in sorted(chosen)]
    return sets, f"{len(sets)} seeded random sets at k={k}"


def choose_utterances(args, data_dir: Path, work: Path):
    from comflp_espnet.datadir import read_kaldi_map

    keys = list(read_kaldi_map(data_dir / "wav.scp"))
    rng = random.Random(args.seed)
    if len(keys) > args.num_utts:
        keys = sorted(rng.sample(keys, args.num_utts))
    key_file = work / "keys.scp"
    key_file.write_text("".join(k + "\n" for k in keys))
    return keys, key_file


def cer(refs, hyp_text_file):
    from comflp_espnet.scoring import read_kaldi_text, score_texts, total

    return total(score_texts(refs, read_kaldi_text(hyp_text_file), "char")).error_rate


def run_proxy(args, config, model_file, cand_file, data_dir, key_file, out, proxy):
    from comflp_espnet.bin import comflp_proxy

    cmd = [
        "--asr_train_config", str(config), "--asr_model_file", str(model_file),
        "--candidates", str(cand_file),
        "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
        "--key_file", str(key_file), "--output_dir", str(out), "--proxy", proxy,
        "--batch_size", str(args.batch_size), "--num_threads", str(args.threads),
        "--log_level", "WARNING",
    ]
    if proxy == "loss":  # the reference text is read for the loss only
        cmd += ["--data_path_and_name_and_type", f"{data_dir}/text,text,text"]
    from comflp_espnet.proxy_job import score_share

    parsed = comflp_proxy.get_parser().parse_args(cmd)
    start = time.perf_counter()
    info = score_share(parsed.asr_train_config, parsed.asr_model_file, parsed.candidates,
                       parsed.data_path_and_name_and_type, parsed.output_dir, key_file=parsed.key_file,
                       proxy=parsed.proxy, batch_size=parsed.batch_size, num_threads=parsed.num_threads)
    return time.perf_counter() - start, info


def parallel_jobs(args, config, model_file, cand_file, data_dir, keys, work):
    """The ``--job_proxy`` proxy as ``--nj`` parallel job processes (the recipe's way):
    wall seconds from the first start to the last end, imports included."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    start = time.perf_counter()
    for j in range(1, args.nj + 1):
        share = keys[j - 1 :: args.nj]
        key_file = work / f"jobs/keys.{j}.scp"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text("".join(k + "\n" for k in share))
        log = open(work / f"jobs/proxy.{j}.log", "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "comflp_espnet.bin.comflp_proxy",
             "--asr_train_config", str(config), "--asr_model_file", str(model_file),
             "--candidates", str(cand_file),
             "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
             *(["--data_path_and_name_and_type", f"{data_dir}/text,text,text"] if args.job_proxy == "loss" else []),
             "--key_file", str(key_file), "--output_dir", str(work / f"jobs/output.{j}"),
             "--proxy", args.job_proxy, "--batch_size", str(args.batch_size)],
            env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait()
        log.close()
        if proc.returncode:
            raise SystemExit(f"a comflp_proxy job failed; see {work / 'jobs'}")
    wall = time.perf_counter() - start
    import yaml

    infos = [yaml.safe_load((work / f"jobs/output.{j}/proxy_info.yaml").read_text())
             for j in range(1, args.nj + 1)]
    return wall, [i["seconds"] for i in infos]


def unshared_seconds(args, model, train_args, pruned_sets, data_dir, key_file):
    """The ctc_greedy walk over pre-read batches: all candidates in one tree vs
    one tree per candidate (no prefix sharing). Returns (shared s, unshared s)."""
    from espnet2.tasks.asr import ASRTask

    from comflp_espnet.proxy_job import length_groups
    from comflp_espnet.proxy import ProxyScorer

    loader = ASRTask.build_streaming_iterator(
        [(f"{data_dir}/wav.scp", "speech", "sound")], dtype="float32", batch_size=1,
        key_file=str(key_file), num_workers=0,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False), collate_fn=None,
        inference=True,
    )
    collate = ASRTask.build_collate_fn(train_args, False)
    batches = [collate(g)[1] for g in length_groups(enumerate(loader.dataset), args.batch_size, 10**9)]

    def timed(scorers):
        start = time.perf_counter()
        for scorer in scorers:
            for b in batches:
                scorer.score_batch(b["speech"], b["speech_lengths"])
        return time.perf_counter() - start

    shared = timed([ProxyScorer(model, pruned_sets, "ctc_greedy")])
    alone = timed([ProxyScorer(model, [p], "ctc_greedy") for p in pruned_sets])
    return shared, alone


def full_decodes(args, config, model_file, pruned_sets, data_dir, key_file, work, keys):
    """Materialize and decode the first --num_full candidates; per-candidate seconds."""
    import yaml
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.tasks.asr import ASRTask

    from comflp_espnet.surgery import prune_experiment

    conf = {}
    if args.inference_config:
        conf = yaml.safe_load(Path(args.inference_config).read_text()) or {}
    kwargs = {k: v for k, v in conf.items() if k not in RUN_OPTIONS}
    records = []
    n = len(pruned_sets) if args.num_full is None else min(args.num_full, len(pruned_sets))
    for i, pruned in enumerate(pruned_sets[:n]):
        name = f"cand{i:02d}"
        t0 = time.perf_counter()
        c0 = time.process_time()
        cand_dir = prune_experiment(config, model_file, work / "pruned" / name, pruned)
        t1 = time.perf_counter()
        s2t = Speech2Text(asr_train_config=str(cand_dir / "config.yaml"),
                          asr_model_file=str(cand_dir / Path(model_file).name),
                          device="cpu", **kwargs)
        t2 = time.perf_counter()
        loader = ASRTask.build_streaming_iterator(
            [(f"{data_dir}/wav.scp", "speech", "sound")], dtype="float32", batch_size=1,
            key_file=str(key_file), num_workers=0,
            preprocess_fn=ASRTask.build_preprocess_fn(s2t.asr_train_args, False),
            collate_fn=ASRTask.build_collate_fn(s2t.asr_train_args, False), inference=True,
        )
        hyps = {}
        for utt, batch in loader:
            batch = {k: v[0] for k, v in batch.items() if not k.endswith("_lengths")}
            try:
                results = s2t(**batch)
            except Exception as e:  # too short for the subsampling
                if type(e).__name__ != "TooShortUttError":
                    raise
                results = []
            if isinstance(results, tuple):
                results = results[0]
            hyps[utt[0]] = " ".join((results[0][0] or "").split()) if results else ""
        t3 = time.perf_counter()
        cpu = time.process_time() - c0
        hyp_file = work / "full" / name / "text"
        hyp_file.parent.mkdir(parents=True, exist_ok=True)
        hyp_file.write_text("".join(f"{k} {hyps.get(k, '')}".rstrip() + "\n" for k in keys))
        shutil.rmtree(cand_dir)  # the checkpoint copies add up
        records.append({"name": name, "pruned": pruned, "materialize": t1 - t0,
                        "load": t2 - t1, "decode": t3 - t2, "cpu": cpu, "text": str(hyp_file)})
        print(f"  full decode {name} {pruned}: write {t1 - t0:.1f} s, load {t2 - t1:.1f} s, "
              f"decode {t3 - t2:.1f} s ({cpu:.1f} s CPU in all)", flush=True)
    return records


def import_seconds(repeats=2):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    programs = {
        "comflp_proxy job": "import torch, espnet2.tasks.asr, comflp_espnet.proxy, "
                            "comflp_espnet.bin.comflp_proxy, comflp_espnet.model_io",
        "espnet2.bin.asr_inference": "import espnet2.bin.asr_inference",
    }
    times = {name: [] for name in programs}
    for _ in range(repeats):
        for name, code in programs.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    os.chdir(args.recipe_dir)
    config = Path(args.asr_train_config or Path(args.asr_exp) / "config.yaml")
    model_file = Path(args.asr_model_file or Path(args.asr_exp) / "valid.acc.ave.pth")
    data_dir = Path(args.data_dir)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_proxy."))
    work.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(args.threads)
    from comflp_espnet.model_io import load_asr_model
    from comflp_espnet.scoring import read_kaldi_text
    from comflp_espnet.prefix_tree import PrefixTree

    model, train_args = load_asr_model(config, model_file)
    num_layers = len(model.encoder.encoders)
    pruned_sets, how = choose_candidates(args, num_layers)
    cand_file = work / "candidates.txt"
    cand_file.write_text("".join(f"cand{i:02d} {','.join(map(str, p))}\n"
                                 for i, p in enumerate(pruned_sets)))
    keys, key_file = choose_utterances(args, data_dir, work)
    refs = {k: v for k, v in read_kaldi_text(data_dir / "text").items() if k in set(keys)}
    tree = PrefixTree.from_pruned(pruned_sets, num_layers)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {model_file} ({type(model.encoder).__name__}, L={num_layers}, "
          f"{n_params / 1e6:.2f} M parameters)")
    print(f"candidates: {how}; utterances: {len(keys)} of {data_dir}; torch threads "
          f"{args.threads}; batch size {args.batch_size}")
    print(f"prefix tree: {tree.describe()}", flush=True)

    result = {"model": str(model_file), "num_layers": num_layers, "candidates": pruned_sets,
              "num_utts": len(keys), "threads": args.threads, "batch_size": args.batch_size,
              "tree": {"edges": tree.num_edges, "unshared": tree.num_forwards_unshared}}
    proxy_cer = {}
    for proxy in args.proxies:
        seconds, info = run_proxy(args, config, model_file, cand_file, data_dir, key_file,
                                  work / f"proxy_{proxy}", proxy)
        result[f"proxy_{proxy}"] = {"seconds": seconds, "info_seconds": info["seconds"],
                                    "layer_forwards": info["layer_forwards"]}
        lf = info["layer_forwards"]
        print(f"proxy {proxy}: {seconds:.2f} s for {len(pruned_sets)} candidates x "
              f"{len(keys)} utterances (model load {info['seconds']['load']:.2f} s, data + "
              f"scoring {info['seconds']['score']:.2f} s wall, "
              f"{info['seconds']['score_cpu']:.2f} s CPU); layer forwards {lf['done']} "
              f"(predicted {lf['predicted']}, {lf['without_sharing']} without sharing)",
              flush=True)
        if proxy == "ctc_greedy":
            for i in range(len(pruned_sets)):
                proxy_cer[f"cand{i:02d}"] = cer(refs, work / f"proxy_{proxy}" / f"cand{i:02d}" / "text")

    if args.nj > 0:
        wall, job_seconds = parallel_jobs(args, config, model_file, cand_file, data_dir, keys, work)
        result["jobs"] = {"nj": args.nj, "wall": wall, "per_job": job_seconds}
        print(f"proxy {args.job_proxy} as {args.nj} parallel jobs (1 thread each): {wall:.2f} s wall, "
              "imports and model loading included; per job: " + "; ".join(
                  f"import {s['import']:.1f} s, load {s['load']:.1f} s, data + scoring "
                  f"{s['score']:.1f} s" for s in job_seconds), flush=True)

    if args.unshared:
        shared, alone = unshared_seconds(args, model, train_args, pruned_sets, data_dir, key_file)
        result["walk_seconds"] = {"shared": shared, "unshared": alone}
        print(f"ctc_greedy walk on pre-read batches: {shared:.2f} s with prefix sharing, "
              f"{alone:.2f} s without ({alone / shared:.2f}x; each candidate alone also "
              "reruns the input layers)", flush=True)

    records = full_decodes(args, config, model_file, pruned_sets, data_dir, key_file, work, keys)
    per_candidate = statistics.mean(r["materialize"] + r["load"] + r["decode"] for r in records)
    decode_only = statistics.mean(r["decode"] for r in records)
    full_total = per_candidate * len(pruned_sets)
    full_cpu = statistics.mean(r["cpu"] for r in records) * len(pruned_sets)
    extrapolated = len(records) < len(pruned_sets)
    note = (f"EXTRAPOLATED from {len(records)} of {len(pruned_sets)} candidates"
            if extrapolated else f"all {len(records)} candidates decoded")
    result["full"] = {"records": records, "per_candidate": per_candidate,
                      "decode_only_per_candidate": decode_only, "total": full_total,
                      "total_cpu": full_cpu, "extrapolated": extrapolated}
    print(f"full decodes: {per_candidate:.2f} s per candidate (decode alone {decode_only:.2f} s)"
          f" -> {full_total:.1f} s for {len(pruned_sets)} candidates ({note})")

    n = len(pruned_sets)
    print(f"\n{n} candidates x {len(keys)} utterances, seconds (wall clock; CPU time of the "
          "process beside it, which a shared machine inflates less)")
    print("| method | wall s | CPU s | full decodes / method (wall) | (CPU) |")
    print("|---|---|---|---|---|")
    print(f"| full beam-search decodes{' (extrapolated)' if extrapolated else ''} | "
          f"{full_total:.1f} | {full_cpu:.1f} | 1.0 | 1.0 |")
    for proxy in args.proxies:
        s = result[f"proxy_{proxy}"]["seconds"]
        c = result[f"proxy_{proxy}"]["info_seconds"]["score_cpu"]
        print(f"| proxy {proxy} (model load, data, scoring) | {s:.2f} | {c:.2f} (scoring) | "
              f"{full_total / s:.1f} | {full_cpu / c:.1f} |")
        result[f"proxy_{proxy}"]["ratio_full_over_proxy"] = full_total / s
        result[f"proxy_{proxy}"]["ratio_full_over_proxy_cpu"] = full_cpu / c
    if "jobs" in result:
        s = result["jobs"]["wall"]
        print(f"| proxy {args.job_proxy}, {args.nj} parallel jobs (imports included) | {s:.2f} | | "
              f"{full_total / s:.1f} | |")

    if len(records) >= 2 and proxy_cer:
        from comflp_espnet.rank_agreement import kendall_tau_b

        beam = [cer(refs, r["text"]) for r in records]
        greedy = [proxy_cer[r["name"]] for r in records]
        tau = kendall_tau_b(greedy, beam)
        result["rank_agreement"] = {"beam_cer": beam, "ctc_greedy_cer": greedy, "tau_b": tau}
        print(f"\nCER of the {len(records)} decoded candidates, beam search: "
              f"{[round(c, 1) for c in beam]}; CTC greedy: {[round(c, 1) for c in greedy]}; "
              f"Kendall tau-b {tau:.2f}")

    if args.measure_imports:
        imports = import_seconds()
        result["import_seconds"] = imports
        print("\nimport time (fresh interpreter, median of 2): " + ", ".join(
            f"{k} {v:.2f} s" for k, v in imports.items()))

    (work / "bench_proxy.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {work / 'bench_proxy.json'} (and the proxy outputs and hypotheses)")


if __name__ == "__main__":
    main()
