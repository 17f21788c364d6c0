#!/usr/bin/env python3
"""How long a sweep of every pruning depth takes, against one depth and against greedy layer pruning.

On a recipe whose model is trained (default ``egs2/an4_synth/asr1_comflp``), three searches run one
after another in one invocation, each in a fresh ``--comflp_dir`` beside the others under the output
directory, with the recipe's own options (``run.sh``) and ``--run_args``:

    single   ./run.sh --stage 14 --stop_stage 18 --comflp_num_prune K           (default K = 6)
    sweep    ./run.sh --stage 14 --stop_stage 18 --comflp_sweep_range A:B       (default 1:L-1)
    glp      ./run.sh --stage 16 --stop_stage 18 --comflp_search glp --comflp_glp_metric decode
             --comflp_num_prune B   (glp reads no states, so it starts at stage 16; its step s removes
             the s-th layer, so its steps give every depth 1..B on the way)

An untimed import of ESPnet comes first, so that the first search does not pay for reading torch and
ESPnet from disk alone.  The wall time of each call is measured here; the ratios sweep / single and sweep / glp are printed.
The report (``bench_sweep.{md,json,png}`` in the output directory) lists, for every depth, the
sweep's winner (removed layers, fine-search CER, RTF, speed-up) and glp's greedy choice after that
many steps (removed layers and fine-search CER, from ``glp/stepNN/step.json``), and plots the
sweep's curve (``comflp_espnet.sweep_plot``) with glp's overlaid.  All three use the same seeded
fine-search subset (same ``--comflp_fine_nutt`` and seed); timings on a shared machine are noisy.

Example (the full benchmark; from the plugin root, the an4_synth model trained):

    python bench/bench_sweep.py --recipe_dir egs2/an4_synth/asr1_comflp --overwrite true

A sweep that decodes only the depths around a tolerance's limit, against the single search that
decodes its 10 candidates in full:

    python bench/bench_sweep.py --recipe_dir egs2/an4_synth/asr1_comflp --overwrite true --runs single sweep \\
        --single_args "--comflp_fine_proxy none --comflp_topk 10" \\
        --sweep_args "--comflp_sweep_decode bracket --comflp_max_degradation 2"

A small check of the script (a few minutes):

    python bench/bench_sweep.py --sweep_range 1:3 --single_k 2 --fine_nutt 20 \\
        --run_args "--comflp_calib_nutt 40" --output_dir /tmp/bench_sweep_check --overwrite true
"""

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comflp_espnet.atomic import atomic_output_file  # noqa: E402
from comflp_espnet.cli import LOG_FORMAT, str2bool  # noqa: E402
from comflp_espnet.rundir import RunDir, read_step  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from warm_cache import warm_imports  # noqa: E402

RUNS = ("single", "sweep", "glp")


def run_recipe(recipe_dir: Path, args: List[str], log_path: Path) -> Tuple[int, float]:
    """./run.sh ARGS in the recipe directory; (exit status, wall seconds)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["./run.sh"] + args
    logging.info(f"({recipe_dir}) {' '.join(shlex.quote(a) for a in cmd)}  log: {log_path}")
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=recipe_dir, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        logging.error(f"run.sh failed (exit {proc.returncode}); last lines of {log_path}:\n" + "\n".join(tail))
    return proc.returncode, seconds


def read_json(path: Path) -> Optional[Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def num_layers(recipe_dir: Path, asr_exp: str) -> int:
    import yaml

    config = recipe_dir / asr_exp / "config.yaml"
    if not config.is_file():
        sys.exit(f"bench_sweep: {config} not found: train the recipe's model first (./run.sh --stop_stage 11)")
    return int(yaml.safe_load(config.read_text(encoding="utf-8"))["encoder_conf"]["num_blocks"])


def glp_curve(run_dir: RunDir, tag: str, deepest: int) -> List[Dict[str, Any]]:
    """Every step of glp: the layers removed after it and the fine-search error of that model."""
    steps = []
    for step in range(1, deepest + 1):
        record = read_step(run_dir.tag(tag).glp_step(step))
        if record is None:
            break
        steps.append({"num_prune": step, "removed": sorted(record["removed"]), "error": record.get("error_rate"),
                      "num_err": record.get("num_err"), "seconds": record.get("seconds")})
    return steps


def search_seconds(costs: List[Dict[str, Any]]) -> float:
    """The searches' own accounting of a run (search_cost.json): the work the searches of a sweep
    shared in stage 17 is charged to each by its share, but each counts the whole state dump and
    matrix (stages 14-15), which count once here."""
    shared = [sum((c["seconds"].get(part) or 0.0) for part in ("states", "matrix") if part in c.get("counted", []))
              for c in costs]
    return sum(c["search_seconds"] for c in costs) - sum(shared) + max(shared)


def fmt(value, spec=".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(out: Path, L: int, runs: Dict[str, Dict[str, Any]], sweep_doc: Optional[Dict[str, Any]],
           single: Optional[Dict[str, Any]], glp: List[Dict[str, Any]], settings: Dict[str, Any]) -> Dict[str, Any]:
    def ratio(a, b):
        sa, sb = runs.get(a, {}).get("seconds"), runs.get(b, {}).get("seconds")
        return round(sa / sb, 3) if sa and sb and runs[a]["rc"] == 0 and runs[b]["rc"] == 0 else None

    ratios = {"sweep/single": ratio("sweep", "single"), "sweep/glp": ratio("sweep", "glp"),
              "single/glp": ratio("single", "glp")}
    depths = {r["num_prune"]: r for r in (sweep_doc or {}).get("depths", [])}
    by_glp = {s["num_prune"]: s for s in glp}
    rows = []
    for k in sorted(set(depths) | set(by_glp)):
        d, g = depths.get(k, {}), by_glp.get(k, {})
        rows.append({"num_prune": k, "layers_kept": L - k, "sweep_removed": d.get("removed"),
                     "sweep_error": d.get("error"), "sweep_rtf": (d.get("timing") or {}).get("rtf"),
                     "sweep_cpu_rtf": (d.get("timing") or {}).get("cpu_rtf"),
                     "sweep_speedup": d.get("speedup"), "expected_speedup": d.get("expected_speedup"),
                     "glp_removed": g.get("removed"), "glp_error": g.get("error")})
    metric = ((sweep_doc or {}).get("metric") or "cer").upper()
    lines = ["# Sweep of every depth against one depth and greedy layer pruning", "",
             f"Recipe {settings['recipe_dir']}, model {settings['asr_exp']} ({L} encoder layers); "
             f"run.sh options {settings['run_args'] or '(none)'}; measured {settings['date']} on "
             f"{settings['host']} ({os.cpu_count()} CPUs, shared: timings are noisy).", "",
             "|run|command|wall time (s)|search_seconds (s)|", "|---|---|---|---|"]
    for name in RUNS:
        r = runs.get(name)
        if r:
            lines.append(f"|{name}|`{r['args']}`|{fmt(r['seconds'], '.1f')}{'' if r['rc'] == 0 else ' (failed)'}|"
                         f"{fmt(r.get('search_seconds'), '.1f')}|")
    basis = (sweep_doc or {}).get("speed_basis")
    lines += ["", "Ratios of wall time: " + ", ".join(f"{k} {fmt(v, '.3f')}" for k, v in ratios.items()), "",
              f"|k|layers kept|sweep winner: removed|fine {metric}|RTF|CPU RTF|speed-up|expected speed-up|"
              f"glp after k steps: removed|fine {metric}|", "|---|---|---|---|---|---|---|---|---|---|"]
    if sweep_doc:
        o = sweep_doc["original"]
        timing = o.get("timing") or {}
        lines.append(f"|0|{L}|-|{fmt(o.get('error'))}|{fmt(timing.get('rtf'), '.4f')}|"
                     f"{fmt(timing.get('cpu_rtf'), '.4f')}|1.00x|-|-|{fmt(o.get('error'))}|")
    for r in rows:
        lines.append(f"|{r['num_prune']}|{r['layers_kept']}|{','.join(map(str, r['sweep_removed'] or [])) or '-'}|"
                     f"{fmt(r['sweep_error'])}|{fmt(r['sweep_rtf'], '.4f')}|{fmt(r['sweep_cpu_rtf'], '.4f')}|"
                     f"{fmt(r['sweep_speedup'])}{'x' if r['sweep_speedup'] is not None else ''}|"
                     f"{fmt(r['expected_speedup'])}{'x' if r['expected_speedup'] is not None else ''}|"
                     f"{','.join(map(str, r['glp_removed'] or [])) or '-'}|{fmt(r['glp_error'])}|")
    if sweep_doc:
        lines += ["", f"Speed-up: of the {'CPU time' if basis == 'cpu' else 'wall clock'} of each model's decode of "
                      "the fine-search set (one decode each: noisy); expected speed-up: 1 / (1 - s k / L), s the "
                      "original's encoder share."]
    if single:
        lines += ["", f"Single depth k = {single['num_prune']}: winner removes {single['removed']}, fine {metric} "
                      f"{fmt(single.get('error'))}%."]
    data = {"settings": settings, "runs": runs, "ratios": ratios, "rows": rows, "single": single,
            "glp_steps": glp}
    with atomic_output_file(out / "bench_sweep.md", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n\n![sweep and glp](bench_sweep.png)\n")
    with atomic_output_file(out / "bench_sweep.json", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    if sweep_doc:
        from comflp_espnet.sweep_plot import save_sweep_plot

        curves = []
        if glp:
            curves.append({"label": f"glp (decode), fine-search {metric} after k steps",
                           "layers_kept": [L - s["num_prune"] for s in glp if s["error"] is not None],
                           "error": [s["error"] for s in glp if s["error"] is not None]})
        if single and single.get("error") is not None:
            curves.append({"label": f"single search k = {single['num_prune']}",
                           "layers_kept": [L - single["num_prune"]], "error": [single["error"]]})
        save_sweep_plot(sweep_doc, out / "bench_sweep.png", extra_curves=curves,
                        title=f"CoMFLP sweep and greedy layer pruning ({L}-layer encoder)")
    print("\n".join(lines), flush=True)
    return data


def single_winner(run_dir: RunDir, k: int) -> Optional[Dict[str, Any]]:
    """The single search's winner (its tag is the only one of its --comflp_dir)."""
    tags = [p for p in run_dir.root.iterdir() if p.is_dir() and (p / "scores" / "ranking.json").is_file()] \
        if run_dir.root.is_dir() else []
    if len(tags) != 1:
        return None
    ranking = read_json(tags[0] / "scores" / "ranking.json")
    row = next(r for r in ranking["ranking"] if r["name"] == ranking["winner"])
    return {"num_prune": k, "removed": sorted(row["pruned"]), "error": row.get(ranking["metric"])}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe_dir", type=Path, default=ROOT / "egs2" / "an4_synth" / "asr1_comflp",
                   help="recipe with run.sh whose model is trained")
    p.add_argument("--asr_exp", default="exp/asr_train_asr_transformer_12_raw_en_char",
                   help="experiment dir relative to the recipe")
    p.add_argument("--output_dir", type=Path, default=None,
                   help="where the three --comflp_dir and the report go (default: <recipe>/<asr_exp>/bench_sweep)")
    p.add_argument("--overwrite", type=str2bool, default=False,
                   help="remove the three --comflp_dir of an earlier run of this benchmark first (each run starts "
                        "fresh: without it an existing one is an error)")
    p.add_argument("--single_k", type=int, default=6, help="depth of the single search")
    p.add_argument("--sweep_range", default=None, help="A:B, depths of the sweep (default 1:L-1); glp goes to B")
    p.add_argument("--fine_nutt", type=int, default=None, help="--comflp_fine_nutt of all three (default: run.sh's)")
    p.add_argument("--run_args", default="", help="extra run.sh options for every call (quoted)")
    for name in RUNS:
        p.add_argument(f"--{name}_args", default="",
                       help=f"extra run.sh options for the {name} call alone (quoted), after --run_args")
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=RUNS,
                   help="which of the three to run (the others' results and times are read from the output "
                        "directory, as an earlier run of this benchmark left them; none: the report alone)")
    p.add_argument("--log_level", default="INFO")
    return p


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    recipe_dir = args.recipe_dir.resolve()
    if not (recipe_dir / "run.sh").is_file():
        sys.exit(f"bench_sweep: --recipe_dir {recipe_dir}: no run.sh there")
    L = num_layers(recipe_dir, args.asr_exp)
    from comflp_espnet.sweep import SweepError, parse_sweep_range

    try:
        first, last = parse_sweep_range(args.sweep_range or f"1:{L - 1}", L)
    except SweepError as e:
        sys.exit(f"bench_sweep: {e}".replace("--comflp_sweep_range", "--sweep_range"))
    if not 1 <= args.single_k < L:
        sys.exit(f"bench_sweep: --single_k must be in 1..{L - 1}")
    out = (args.output_dir or recipe_dir / args.asr_exp / "bench_sweep").resolve()
    dirs = {name: out / name for name in RUNS}
    existing = [d for name, d in dirs.items() if name in args.runs and d.exists()]
    if existing and not args.overwrite:
        sys.exit(f"bench_sweep: {existing[0]} exists; each run starts from a fresh --comflp_dir: pass --overwrite "
                 "true to remove it, or another --output_dir")
    for d in existing:
        shutil.rmtree(d)
    common = shlex.split(args.run_args)
    if args.fine_nutt is not None:
        common += ["--comflp_fine_nutt", str(args.fine_nutt)]
    calls = {
        "single": ["--stage", "14", "--stop_stage", "18", "--comflp_dir", str(dirs["single"]),
                   "--comflp_num_prune", str(args.single_k)],
        "sweep": ["--stage", "14", "--stop_stage", "18", "--comflp_dir", str(dirs["sweep"]),
                  "--comflp_sweep_range", f"{first}:{last}"],
        "glp": ["--stage", "16", "--stop_stage", "18", "--comflp_dir", str(dirs["glp"]), "--comflp_search", "glp",
                "--comflp_glp_metric", "decode", "--comflp_num_prune", str(last)],
    }
    earlier = (read_json(out / "bench_sweep.json") or {}).get("runs", {})
    runs: Dict[str, Dict[str, Any]] = {name: r for name, r in earlier.items()
                                       if name not in args.runs and dirs[name].is_dir()}
    warm_imports(recipe_dir)
    for name in RUNS:
        if name not in args.runs:
            continue
        call = ["--asr_exp", args.asr_exp] + calls[name] + common + shlex.split(getattr(args, f"{name}_args"))
        rc, seconds = run_recipe(recipe_dir, call, out / "logs" / f"{name}.log")
        runs[name] = {"rc": rc, "seconds": round(seconds, 1), "args": " ".join(shlex.quote(a) for a in call)}
        logging.info(f"{name}: {seconds:.1f} s (exit {rc})")
    # The searches' own accounting of their time (search_cost.json), beside the wall times.
    for name, r in runs.items():
        costs = [read_json(p) for p in sorted(dirs[name].glob("*/search_cost.json"))]
        costs = [c for c in costs if c]
        if costs and all(c.get("search_seconds") is not None for c in costs):
            r["search_seconds"] = round(search_seconds(costs), 1)
    sweep_doc = read_json(dirs["sweep"] / "sweep" / "sweep.json")
    single = single_winner(RunDir(dirs["single"]), args.single_k)
    glp_tags = sorted(p.name for p in dirs["glp"].glob(f"*_glp_prune{last}")) if dirs["glp"].is_dir() else []
    glp = glp_curve(RunDir(dirs["glp"]), glp_tags[0], last) if glp_tags else []
    settings = {"recipe_dir": str(args.recipe_dir), "asr_exp": args.asr_exp, "num_layers": L,
                "run_args": " ".join(common), "single_k": args.single_k, "sweep_range": f"{first}:{last}",
                "date": time.strftime("%Y-%m-%d %H:%M"), "host": os.uname().nodename}
    out.mkdir(parents=True, exist_ok=True)
    data = report(out, L, runs, sweep_doc, single, glp, settings)
    print("\nwall seconds: " + ", ".join(f"{n} {r['seconds']:.1f}" for n, r in runs.items()))
    print("ratios: " + ", ".join(f"{k} {fmt(v, '.3f')}" for k, v in data["ratios"].items()))
    print(f"report: {out / 'bench_sweep.md'}")
    if any(r["rc"] != 0 for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
