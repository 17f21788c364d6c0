#!/usr/bin/env python3
"""CoMFLP against the other layer-pruning methods on a model trained by a recipe.

For every number of removed layers k (``--num_prune``, default L/4 and L/2) this
driver runs the recipe's CoMFLP stages once per method, each in its own
``--comflp_tag`` directory, sharing the encoder states of stage 14, the fine-search
subset and the fine-tuning overlay:

    comflp_<search>_<measure>  CoMFLP with the recipe's defaults: correlation matrix (dc,
                               svcca, cka), coarse search (dp, beam), top-K candidates
                               ranked by the proxy, the finalists decoded
    glp                        greedy layer pruning by the task metric (full decodes)

and the variants of ``--variants`` (each against the first CoMFLP setting):

    decode10                   the paper's fine search: top 10, every candidate decoded
                               (--comflp_fine_proxy none --comflp_topk 10)
    decode_all                 every candidate of the default's pool decoded (its real
                               CERs give the rank agreement of proxy and real CER)
    union                      the union of the dc, svcca and cka top-K pools
    glp_proxy                  glp whose steps rank by the default proxy
                               (--comflp_glp_metric loss)
    drop_last                  the last k layers
    random                     K seeded random proposals, fine-searched
    bi                         block influence (cosine measure)
    angular                    most similar contiguous block (angular measure)

Steps (``--steps``, in this order; each can be rerun alone, finished work is kept):

    search    an untimed import of ESPnet (the page cache warm for every search alike),
              ./run.sh --stage 14 --stop_stage 14 once, then for every (k, method)
              ./run.sh --stage 15 --stop_stage 18 --comflp_tag <tag> ...
              (wall time of every call recorded in OUT/runs.json)
    test      decode the unpruned model and every distinct winner on --test_sets
              with the recipe's own decoding (scripts/decode_models.sh: the recipe's
              ${decode_cmd} jobs, one process per job decodes all models; a winner
              chosen by several methods is decoded once) and score them
    finetune  ./run.sh --stage 19 --stop_stage 19 --comflp_tag <tag> for the methods
              of --finetune (identical overlay for all; a winner chosen by several
              methods is fine-tuned once), and for the unpruned model as the reference
              (./run.sh --stage 16 --stop_stage 19 --comflp_search none --comflp_tag
              unpruned_reference: the unpruned model is that search's only candidate);
              then decode the fine-tuned models on --test_sets as in "test"
    report    OUT/benchmark.md (tables), OUT/benchmark.json, OUT/benchmark.png
              (CER vs layers kept, one line per method); per-utterance errors give
              95 % bootstrap intervals of every CER on the last test set and paired
              bootstrap comparisons (the first CoMFLP setting against each baseline and
              each variant, every fine-tuned winner against the fine-tuned unpruned model)

Rank agreement: for every CoMFLP setting whose candidates were also decoded in
full by another search of the run (decode_all, decode10), Kendall's tau-b between
the proxy values and the real CERs of the shared candidates on the fine-search set.

Search cost per method is read from ``<tag>/search_cost.json`` (decodes of the
fine-search set; seconds of states + matrix + coarse search + fine search, or of
the greedy loop for glp) when the recipe writes it, otherwise it is the wall time
of the driver's stage 15-18 call plus the stage 14 time for the methods that read
the states, and the number of candidates decoded.

Example (from the plugin root; the recipe must have trained its model):

    bench/compare_methods.py --recipe_dir egs2/an4_synth/asr1_comflp \\
        --num_prune 3 6 --run_args "--comflp_fine_nutt 150"

Output: ``<asr_exp>/comflp/benchmark/`` unless ``--output_dir``.
"""

import argparse
import calendar
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from comflp_espnet import bootstrap, records, scoring  # noqa: E402
from comflp_espnet.rank_agreement import kendall_tau_b  # noqa: E402
from comflp_espnet.rundir import (  # noqa: E402
    DecodeDir, DocumentError, RunDir, TagDir, read_fine_search, read_models_scp, read_ranking, read_scores_json,
    read_search_cost, read_winner, write_models_scp,
)
from comflp_espnet.surgery import read_prune_record  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from warm_cache import warm_imports  # noqa: E402

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
STEPS = ("search", "test", "finetune", "report")
COMFLP_MEASURES = ("dc", "svcca", "cka")
COMFLP_SEARCHES = ("dp", "beam")
BASELINES = ("glp", "drop_last", "random", "bi", "angular")
# The correlation measure a baseline's search reads; drop_last, random and glp read
# none, and are given dc only because the stage script needs some --comflp_measure.
BASELINE_MEASURE = {"glp": "dc", "drop_last": "dc", "random": "dc", "bi": "cosine", "angular": "angular"}
ORIGINAL = "original"
# The unpruned model given the same fine-tune as the winners: the fair reference of the "ft" columns.
REFERENCE_TAG = "unpruned_reference"
REFERENCE_LABEL = "unpruned"
BOOTSTRAP_SAMPLES = 1000


class Method:
    def __init__(self, label: str, measure: str, search: str, extra_args: Sequence[str] = (),
                 tag_name: Optional[str] = None, variant: bool = False):
        self.label = label
        # a variant of the first CoMFLP setting (--variants): compared with it pairwise
        self.variant = variant
        self.measure = measure
        self.search = search
        self.extra_args = list(extra_args)
        self.tag_name = tag_name or f"{measure}_{search}"

    @property
    def is_comflp(self) -> bool:
        return self.label.startswith("comflp_")

    @property
    def reads_states(self) -> bool:
        return self.search not in ("glp", "drop_last", "random")

    def tag(self, k: int) -> str:
        return f"{self.tag_name}_prune{k}"


VARIANTS = ("decode10", "decode_all", "union", "glp_proxy")


def build_methods(measures: Sequence[str], searches: Sequence[str], baselines: Sequence[str],
                  variants: Sequence[str] = ()) -> List[Method]:
    methods = [Method(f"comflp_{s}_{m}", m, s) for m in measures for s in searches]
    first = methods[0] if methods else Method("comflp_dp_dc", "dc", "dp")
    stem = f"{first.measure}_{first.search}"
    extra = {
        "decode10": Method(f"{first.label}_decode10", first.measure, first.search,
                           ["--comflp_fine_proxy", "none", "--comflp_topk", "10"], f"{stem}_decode10", True),
        "decode_all": Method(f"{first.label}_decode_all", first.measure, first.search,
                             ["--comflp_fine_proxy", "none"], f"{stem}_decode_all", True),
        "union": Method(f"comflp_{first.search}_union", "dc svcca cka", first.search, [],
                        f"union_{first.search}", True),
    }
    methods += [extra[v] for v in variants if v in extra]
    for b in baselines:
        methods.append(Method(b, BASELINE_MEASURE[b], b, ["--comflp_glp_metric", "decode"] if b == "glp" else []))
        if b == "glp" and "glp_proxy" in variants:
            methods.append(Method("glp_proxy", "dc", "glp", ["--comflp_glp_metric", "loss"], "dc_glp_proxy",
                                  True))
    return methods


# ------------------------------------------------------------------------ small helpers
def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path: Path, default=None):
    if not path.is_file():
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def recipe_env(threads: Optional[int]) -> Dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_recipe(recipe_dir: Path, args: List[str], log_path: Path, env: Dict[str, str]) -> Tuple[int, float]:
    """Run ./run.sh ARGS in the recipe directory; (exit status, wall seconds)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["./run.sh"] + args
    logging.info(f"({recipe_dir}) {' '.join(shlex.quote(a) for a in cmd)}  log: {log_path}")
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=recipe_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-15:]
        logging.error(f"run.sh failed (exit {proc.returncode}); last lines of {log_path}:\n{''.join(tail)}")
    return proc.returncode, seconds


# ------------------------------------------------------------------------ the benchmark
class Benchmark:
    def __init__(self, args):
        self.args = args
        self.recipe_dir = args.recipe_dir.resolve()
        self.asr_exp = args.asr_exp
        if self.asr_exp is None:
            self.asr_exp = self.find_asr_exp()
        self.comflp_dir = Path(self.asr_exp) / "comflp"
        # The run directory as the recipe lays it out (paths relative to the recipe directory).
        self.run_dir = RunDir(self.recipe_dir / self.comflp_dir)
        self.out = (args.output_dir or (self.recipe_dir / self.comflp_dir / "benchmark")).resolve()
        self.methods = build_methods(args.measures, args.searches, args.baselines, args.variants)
        self.env = recipe_env(args.threads)
        self.runs_path = self.out / "runs.json"
        self.runs = read_json(self.runs_path, {})
        # Per-utterance character errors, keyed by (set, model, hyp record digest); references per set.
        self.utt_errors: Dict[Tuple[str, str, str], Tuple[List[int], List[int]]] = {}
        self.references: Dict[str, Dict[str, str]] = {}

    def find_asr_exp(self) -> str:
        exps = sorted(
            p for p in (self.recipe_dir / "exp").glob("asr_*")
            if not p.name.startswith("asr_stats") and (p / "config.yaml").is_file()
        )
        if len(exps) != 1:
            sys.exit(
                f"compare_methods: found {len(exps)} trained experiments in {self.recipe_dir}/exp "
                f"({', '.join(p.name for p in exps) or 'none'}); name one with --asr_exp exp/<dir>"
            )
        return f"exp/{exps[0].name}"

    # paths relative to the recipe directory (as the recipe writes them)
    def rpath(self, rel) -> Path:
        return self.recipe_dir / rel

    def tag_dir(self, method: Method, k: int) -> TagDir:
        return self.run_dir.tag(method.tag(k))

    def base_args(self) -> List[str]:
        return ["--asr_exp", str(self.asr_exp)] + shlex.split(self.args.run_args)

    def record_run(self, key: str, rc: int, seconds: float) -> None:
        self.runs[key] = {"rc": rc, "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.runs_path, self.runs)

    # ---- step: search
    def step_search(self) -> None:
        # Stage 14 once; its time is recorded only when it really dumped the states.
        existed = records.read_record(self.run_dir.states) is not None
        warm_imports(self.recipe_dir, self.env)
        rc, sec = run_recipe(self.recipe_dir, ["--stage", "14", "--stop_stage", "14"] + self.base_args(),
                             self.out / "logs" / "stage14.log", self.env)
        if rc != 0:
            sys.exit("compare_methods: stage 14 failed; see the log above")
        if not existed:
            self.record_run("states", rc, sec)
        for k in self.args.num_prune:
            for method in self.methods:
                if self.deadline_passed():
                    logging.warning("--deadline reached: stopping the searches here")
                    return
                key = f"search/{method.tag(k)}"
                if self.winner_name(self.tag_dir(method, k)) and key in self.runs and self.runs[key]["rc"] == 0:
                    continue
                rc, sec = run_recipe(
                    self.recipe_dir,
                    ["--stage", "15", "--stop_stage", "18", "--comflp_measure", method.measure,
                     "--comflp_search", method.search, "--comflp_num_prune", str(k),
                     "--comflp_tag", method.tag(k)] + self.base_args() + method.extra_args,
                    self.out / "logs" / f"search_{method.tag(k)}.log", self.env,
                )
                if key not in self.runs or rc == 0:
                    self.record_run(key, rc, sec)
                self.step_report(quiet=True)

    def deadline_passed(self) -> bool:
        return self.args.deadline is not None and time.time() > self.args.deadline

    # ---- decoding of test sets (steps test and finetune)
    def test_data_dir(self, dset: str) -> Path:
        for rel in (f"{self.args.dumpdir}/raw/org/{dset}", f"{self.args.dumpdir}/raw/{dset}"):
            if (self.rpath(rel) / "wav.scp").is_file():
                return Path(rel)
        sys.exit(f"compare_methods: test set {dset} not found under {self.recipe_dir}/{self.args.dumpdir}/raw[/org]")

    def original_model(self) -> Tuple[str, str]:
        return (f"{self.asr_exp}/config.yaml", f"{self.asr_exp}/{self.args.inference_asr_model}")

    @staticmethod
    def winner_name(tag_dir: TagDir) -> Optional[str]:
        try:
            return read_winner(tag_dir.scores)
        except DocumentError:
            return None

    def winner_entry(self, method: Method, k: int) -> Optional[Dict[str, Any]]:
        tag_dir = self.tag_dir(method, k)
        name = self.winner_name(tag_dir)
        if name is None:
            return None
        cand = tag_dir.candidate(name)
        removed = sorted(read_prune_record(cand)["pruned_encoder_layers"])
        rel = cand.relative_to(self.recipe_dir)
        return {
            "candidate": name,
            "removed": removed,
            "model_name": f"k{k}_rm" + "_".join(f"{x:02d}" for x in removed),
            "config": f"{rel}/config.yaml",
            "model": f"{rel}/{self.args.inference_asr_model}",
        }

    def finetuned_entry(self, method: Method, k: int) -> Optional[Dict[str, Any]]:
        """The fine-tuned winner of (method, k): its own, or that of a method with the same winner."""
        ft = self.tag_dir(method, k).finetune
        if not (ft / self.args.inference_asr_model).is_file():
            ft = self.twin_finetune(method, k)
            if ft is None:
                return None
        return self.finetune_model(ft)

    def finetune_model(self, ft: Path) -> Dict[str, Any]:
        rel = ft.relative_to(self.recipe_dir)
        return {
            "model_name": f"ft_{ft.parent.name}",
            "config": f"{rel}/config.yaml",
            "model": f"{rel}/{self.args.inference_asr_model}",
        }

    def twin_finetune(self, method: Method, k: int) -> Optional[Path]:
        """A finished fine-tune of another method whose winner removed the same layers.

        Fine-tuning depends only on the winner's weights and the common overlay, so a winner
        chosen by several methods is fine-tuned once and shared, like its test decodes."""
        entry = self.winner_entry(method, k)
        if entry is None:
            return None
        for other in self.methods:
            if other is method:
                continue
            ft = self.tag_dir(other, k).finetune
            twin = self.winner_entry(other, k)
            if twin and twin["removed"] == entry["removed"] and (ft / self.args.inference_asr_model).is_file():
                return ft
        return None

    def reference_dir(self) -> TagDir:
        return self.run_dir.tag(REFERENCE_TAG)

    def reference_finetuned_entry(self) -> Optional[Dict[str, Any]]:
        ft = self.reference_dir().finetune
        return self.finetune_model(ft) if (ft / self.args.inference_asr_model).is_file() else None

    def template_dir(self) -> Path:
        """The recipe's stage scripts (asr_comflp.sh links into the template)."""
        return (self.recipe_dir / "asr_comflp.sh").resolve().parent

    def decode_and_score(self, models: Dict[str, Tuple[str, str]]) -> None:
        """Decode MODELS (name -> (config, model)) on every test set with the recipe's own decoding
        (scripts/decode_models.sh through the recipe's ${decode_cmd}); score them all."""
        script = self.template_dir() / "scripts" / "decode_models.sh"
        for dset in self.args.test_sets:
            data = self.test_data_dir(dset)
            work = self.test_decoding(dset)
            # Every model decoded so far stays listed, so the scores cover them all; decoded ones are kept.
            listed: Dict[str, Tuple[str, str]] = {}
            if work.models_scp.is_file():
                listed = {n: (c, m) for n, c, m in read_models_scp(work.models_scp, check_files=False)}
            listed.update(models)
            scp_path = self.out / "test_decode" / f"{dset.replace('/', '_')}.models.scp"
            write_models_scp(scp_path, [(n, c, m) for n, (c, m) in sorted(listed.items())])
            cmd = ["bash", "-c", '. ./path.sh && . ./cmd.sh && exec "$0" --cmd "${decode_cmd}" "$@"', str(script),
                   "--python", "python", "--nj", str(self.args.inference_nj),
                   "--ngpu", str(1 if self.args.gpu_inference else 0),
                   "--inference_config", self.args.inference_config, "--token_type", "char",
                   "--score", "true", "--label_prefix", f"{dset}/",
                   str(scp_path), str(data), str(work.root)]
            if self.args.gpu_inference:
                cmd[2] = '. ./path.sh && . ./cmd.sh && exec "$0" --cmd "${cuda_cmd} --gpu 1" "$@"'
            log_path = self.out / "logs" / f"test_decode_{dset}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            logging.info(f"Decoding {len(listed)} model(s) on {data} (current ones are kept)  log: {log_path}")
            start = time.time()
            with open(log_path, "w", encoding="utf-8") as log:
                rc = subprocess.run(cmd, cwd=self.recipe_dir, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env).returncode
            if rc != 0:
                sys.exit(f"compare_methods: decoding {dset} failed; log: {log_path}")
            logging.info(f"Decoded {dset} in {time.time() - start:.0f} s")

    # ---- step: test
    def step_test(self) -> None:
        models = {ORIGINAL: self.original_model()}
        for k in self.args.num_prune:
            for method in self.methods:
                entry = self.winner_entry(method, k)
                if entry:
                    models[entry["model_name"]] = (entry["config"], entry["model"])
        self.decode_and_score(models)

    # ---- step: finetune
    def finetune_methods(self) -> List[Tuple[Method, int]]:
        """(method, k) of --finetune in the order given; 'all' adds every pair not named before it
        (k by k, in table order)."""
        pairs = [(method, k) for k in self.args.num_prune for method in self.methods]
        chosen: List[Tuple[Method, int]] = []
        for item in self.args.finetune:
            for method, k in pairs:
                if item in ("all", method.label, f"{method.label}@{k}") and (method, k) not in chosen:
                    chosen.append((method, k))
        return chosen

    def wants_reference(self) -> bool:
        return "all" in self.args.finetune or REFERENCE_LABEL in self.args.finetune

    def run_finetune(self, key: str, tag: str, extra: List[str], stages: Tuple[int, int] = (19, 19)) -> None:
        rc, sec = run_recipe(
            self.recipe_dir,
            ["--stage", str(stages[0]), "--stop_stage", str(stages[1]), "--comflp_finetune", "true",
             "--comflp_tag", tag] + extra + self.base_args(),
            self.out / "logs" / f"finetune_{tag}.log", self.env,
        )
        self.record_run(key, rc, sec)

    def step_finetune(self) -> None:
        models = {}
        if self.wants_reference():
            if self.reference_finetuned_entry() is None and not self.deadline_passed():
                # The unpruned model as the only candidate of a search, fine-tuned by stage 19.
                self.run_finetune(f"finetune/{REFERENCE_TAG}", REFERENCE_TAG,
                                  ["--comflp_search", "none"], stages=(16, 19))
            entry = self.reference_finetuned_entry()
            if entry:
                models[entry["model_name"]] = (entry["config"], entry["model"])
        for method, k in self.finetune_methods():
            if self.winner_entry(method, k) is None:
                logging.warning(f"{method.tag(k)}: no search result; not fine-tuned")
                continue
            key = f"finetune/{method.tag(k)}"
            if self.finetuned_entry(method, k) is None:
                if self.deadline_passed():
                    logging.warning("--deadline reached: no further fine-tuning")
                    break
                self.run_finetune(key, method.tag(k),
                                  ["--comflp_measure", method.measure, "--comflp_search", method.search,
                                   "--comflp_num_prune", str(k)])
            entry = self.finetuned_entry(method, k)
            if entry:
                models[entry["model_name"]] = (entry["config"], entry["model"])
            self.step_report(quiet=True)
        if models:
            self.decode_and_score(models)

    # ---- step: report
    def test_decoding(self, dset: str) -> DecodeDir:
        """The decoding of the test set ``dset`` (all models) in the benchmark's directory."""
        return DecodeDir(self.out / "test_decode" / dset)

    def test_cer(self, dset: str, name: str) -> Optional[float]:
        path = self.test_decoding(dset).score / "scores.json"
        if not path.is_file():
            return None
        scores = read_scores_json(path)
        if name not in scores["models"]:
            return None
        return scores["models"][name]["cer"]["error_rate"]

    def search_cost(self, method: Method, k: int) -> Dict[str, Any]:
        tag_dir = self.tag_dir(method, k)
        cost = read_search_cost(tag_dir)
        if cost and cost.get("search_seconds") is not None:
            return {"decodes": cost.get("search_decodes"), "proxy_evals": cost.get("proxy_evaluations"),
                    "seconds": cost["search_seconds"], "source": "search_cost.json", "parts": cost.get("seconds")}
        run = self.runs.get(f"search/{method.tag(k)}")
        if run is None or run["rc"] != 0:
            return {"decodes": None, "seconds": None, "source": None}
        seconds = run["seconds"]
        if method.reads_states and "states" in self.runs:
            seconds += self.runs["states"]["seconds"]
        decodes = None
        if tag_dir.models_scp.is_file():
            decodes = sum(1 for n, _, _ in read_models_scp(tag_dir.models_scp, check_files=False) if n != ORIGINAL)
        return {"decodes": decodes, "seconds": round(seconds, 3), "source": "driver wall time"}

    def collect(self) -> Dict[str, Any]:
        rows = []
        for k in self.args.num_prune:
            for method in self.methods:
                entry = self.winner_entry(method, k)
                row: Dict[str, Any] = {"method": method.label, "tag": method.tag(k), "num_prune": k,
                                       "comflp": method.is_comflp, "variant": method.variant}
                if entry is None:
                    row["status"] = "not run"
                    rows.append(row)
                    continue
                row["status"] = "done"
                row["removed"] = entry["removed"]
                ranking_path = self.tag_dir(method, k).ranking_json
                ranking = read_ranking(ranking_path) if ranking_path.is_file() else {}
                for r in ranking.get("ranking", []):
                    if r.get("name") == entry["candidate"]:
                        row["fine_cer"] = r.get("cer")
                row["fine_cer_original"] = (ranking.get("original") or {}).get("cer")
                ft = self.finetuned_entry(method, k)
                row["model_name"] = entry["model_name"]
                row["ft_model_name"] = ft["model_name"] if ft else None
                self.add_test_results(row)
                row.update({f"search_{key}": v for key, v in self.search_cost(method, k).items() if key != "parts"})
                ft_run = self.runs.get(f"finetune/{method.tag(k)}")
                row["finetune_seconds"] = ft_run["seconds"] if ft_run else None
                rows.append(row)
        for row in rows:
            if row["comflp"] and row["status"] == "done":
                row.update(self.rank_agreement(next(m for m in self.methods if m.label == row["method"]),
                                               row["num_prune"]))
        # ratio of every search's time to glp's at the same k
        for row in rows:
            glp = next((r for r in rows if r["method"] == "glp" and r["num_prune"] == row["num_prune"]), None)
            if glp and glp.get("search_seconds") and row.get("search_seconds") is not None:
                row["ratio_to_glp"] = row["search_seconds"] / glp["search_seconds"]
        original = {dset: self.test_cer(dset, ORIGINAL) for dset in self.args.test_sets}
        ref_ft = self.reference_finetuned_entry()
        reference: Dict[str, Any] = {"method": REFERENCE_LABEL, "num_prune": 0, "removed": [], "comflp": False,
                                     "status": "reference", "model_name": ORIGINAL,
                                     "ft_model_name": ref_ft["model_name"] if ref_ft else None}
        self.add_test_results(reference)
        # Every fine search also decodes the unpruned model: its CER on the fine-search set.
        reference["fine_cer"] = next((r["fine_cer_original"] for r in rows if r.get("fine_cer_original") is not None), None)
        ref_run = self.runs.get(f"finetune/{REFERENCE_TAG}")
        reference["finetune_seconds"] = ref_run["seconds"] if ref_run else None
        return {"asr_exp": str(self.asr_exp), "recipe_dir": str(self.recipe_dir), "test_sets": self.args.test_sets,
                "num_layers": self.num_layers(), "original_cer": original, "reference": reference, "rows": rows,
                "paired": self.paired_comparisons(rows, reference), "bootstrap_samples": BOOTSTRAP_SAMPLES,
                "settings": self.settings()}

    def rank_agreement(self, method: Method, k: int) -> Dict[str, Any]:
        """Kendall's tau-b between the proxy values of METHOD's candidates and the real CERs (full
        decodes on the fine-search set) of the same layer sets, from its own finalists and the other
        searches at k; none unless another search decoded one of its candidates that it did not
        (over its own finalists alone, "the proxy's top 3 hold the best" would always be true)."""
        try:
            doc = read_fine_search(self.tag_dir(method, k))
        except (DocumentError, OSError):
            return {}
        proxy = {tuple(c["pruned"]): c["proxy"]["value"] for c in doc["candidates"] if c.get("proxy")}
        real: Dict[Tuple[int, ...], float] = {}
        own, from_others = set(), set()
        for other in self.methods:
            try:
                ranking = read_ranking(self.tag_dir(other, k).ranking_json)
            except (DocumentError, OSError):
                continue
            for r in ranking.get("ranking", []):
                if r.get("cer") is not None and not r.get("is_original"):
                    real.setdefault(tuple(r["pruned"]), r["cer"])
                    (own if other is method else from_others).add(tuple(r["pruned"]))
        shared = [p for p in proxy if p in real and proxy[p] is not None]
        if len(shared) < 3 or not set(shared) & (from_others - own):
            return {}
        tau = kendall_tau_b([proxy[p] for p in shared], [real[p] for p in shared])
        best_real = min(shared, key=lambda p: (real[p], p))
        top3 = sorted(shared, key=lambda p: (proxy[p], p))[:3]
        coarse_rank = {tuple(c["pruned"]): c["rank"] for c in doc["candidates"]}
        return {"tau": None if math.isnan(tau) else tau, "tau_n": len(shared),
                "proxy_top3_has_best": best_real in top3, "best_real_coarse_rank": coarse_rank[best_real]}

    def utterance_errors(self, dset: str, name: Optional[str]) -> Optional[Tuple[List[int], List[int]]]:
        """Character errors and reference lengths per utterance of DSET for the decoded model NAME."""
        if name is None:
            return None
        hyp_dir = self.test_decoding(dset).hyp(name)
        hyp = hyp_dir / "text"
        record = records.read_record(hyp_dir)
        if record is None or not hyp.is_file():
            return None
        stamp = (dset, name, record.digest)
        if stamp not in self.utt_errors:
            if dset not in self.references:
                self.references[dset] = scoring.read_kaldi_text(self.rpath(self.test_data_dir(dset) / "text"))
            scores = scoring.score_texts(self.references[dset], scoring.read_kaldi_text(hyp), "char")
            self.utt_errors[stamp] = ([s.counts.num_err for s in scores], [s.counts.num_ref for s in scores])
        return self.utt_errors[stamp]

    def add_test_results(self, row: Dict[str, Any]) -> None:
        """CER and its 95 % bootstrap interval on every test set, before and after fine-tuning."""
        for dset in self.args.test_sets:
            for prefix, name in (("", row.get("model_name")), ("ft_", row.get("ft_model_name"))):
                row[f"cer_{prefix}{dset}"] = self.test_cer(dset, name) if name else None
                counts = self.utterance_errors(dset, name)
                if counts is not None:
                    iv = bootstrap.error_rate_interval(*counts, num_samples=BOOTSTRAP_SAMPLES)
                    row[f"ci_{prefix}{dset}"] = [iv.low, iv.high]

    def paired_comparisons(self, rows: List[Dict[str, Any]], reference: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Paired bootstrap on the held-out set (difference = first minus second, in CER points):
        the default CoMFLP setting (the first one) against every baseline and every variant of it
        (decode10, decode_all, union) at the same k, before and
        after fine-tuning; and every distinct fine-tuned winner against the fine-tuned unpruned model."""
        dset = self.args.test_sets[-1]
        done = [r for r in rows if r.get("status") == "done"]
        comflp = next((m.label for m in self.methods if m.is_comflp), None)
        pairs = []
        for prefix, when in (("", "before"), ("ft_", "after")):
            for a in (r for r in done if r["method"] == comflp):
                pairs += [(a, b, prefix, when) for b in done
                          if b["num_prune"] == a["num_prune"] and (not b["comflp"] or b.get("variant"))]
        seen = set()
        for a in done:
            if a.get("ft_model_name") and a["ft_model_name"] not in seen:
                seen.add(a["ft_model_name"])
                pairs.append((a, reference, "ft_", "after"))
        out = []
        for a, b, prefix, when in pairs:
            ea = self.utterance_errors(dset, a.get(f"{prefix}model_name"))
            eb = self.utterance_errors(dset, b.get(f"{prefix}model_name"))
            if ea is None or eb is None:
                continue
            cmp = bootstrap.paired_difference(ea[0], eb[0], ea[1], num_samples=BOOTSTRAP_SAMPLES)
            out.append({"num_prune": a["num_prune"], "a": a["method"], "b": b["method"], "when": when,
                        "set": dset, "difference": cmp.difference, "low": cmp.low, "high": cmp.high,
                        "prob_a_better": cmp.prob_a_better})
        return out

    def num_layers(self) -> Optional[int]:
        conf = self.rpath(f"{self.asr_exp}/config.yaml")
        if not conf.is_file():
            return None
        return (yaml.safe_load(conf.read_text()).get("encoder_conf") or {}).get("num_blocks")

    def settings(self) -> Dict[str, Any]:
        def subset_size(subset: Path) -> Optional[int]:
            record = records.read_record(subset)
            return record.info.get("num_utts") if record else None

        count = lambda p: sum(1 for _ in open(p, encoding="utf-8")) if p.is_file() else None  # noqa: E731
        return {"run_args": self.args.run_args, "fine_search_utts": subset_size(self.run_dir.fine),
                "calibration_utts": subset_size(self.run_dir.calib),
                "test_utts": {d: count(self.rpath(self.test_data_dir(d) / "text")) for d in self.args.test_sets},
                "finetune": self.args.finetune, "inference_config": self.args.inference_config,
                "cpu_count": os.cpu_count(), "stage14_seconds": (self.runs.get("states") or {}).get("seconds")}

    def step_report(self, quiet: bool = False) -> None:
        data = self.collect()
        write_json(self.out / "benchmark.json", data)
        write_text_atomic(self.out / "benchmark.md", render_markdown(data))
        try:
            plot(data, self.out / "benchmark.png")
        except Exception as e:  # a missing plot must not lose the tables
            logging.warning(f"plot not written: {e}")
        if not quiet:
            logging.info(f"Report: {self.out / 'benchmark.md'}, {self.out / 'benchmark.png'}")


# ------------------------------------------------------------------------ rendering
def fmt(value, spec=".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def fmt_ci(value) -> str:
    return "-" if not value else f"{value[0]:.1f}-{value[1]:.1f}"


def render_markdown(data: Dict[str, Any]) -> str:
    sets = data["test_sets"]
    held_out = sets[-1]
    s = data["settings"]
    ref = data.get("reference") or {}
    lines = [
        "# Layer-pruning benchmark",
        "",
        f"Model: `{data['asr_exp']}` ({data['num_layers']} encoder layers), recipe `{data['recipe_dir']}`.",
        "Unpruned CER: " + ", ".join(f"{d} {fmt(data['original_cer'].get(d))}" for d in sets) + ".",
        f"Fine search on {s['fine_search_utts']} utterances, states from {s['calibration_utts']} calibration "
        f"utterances, test sets " + ", ".join(f"{d} ({s['test_utts'].get(d)} utts)" for d in sets) + ".",
        f"Recipe options: `{s['run_args'] or '(run.sh defaults)'}`; fine-tuned: {', '.join(s['finetune']) or 'none'}.",
        "",
        "CER in %. `fine` = CER of the winner on the fine-search set; `ft` = after the common fine-tune "
        "(methods whose winners removed the same layers share one fine-tuned model); "
        f"`{held_out} CI` = 95 % bootstrap interval over the {held_out} utterances "
        f"({data.get('bootstrap_samples')} resamples); "
        "decodes = pruned models decoded in full on the fine-search set to choose the winner; proxy = candidates "
        "scored by the proxy (`--comflp_fine_proxy`, the loss by default); "
        "search s = wall time of the search (states + matrix + coarse + fine "
        "search; glp: its greedy loop); ratio = search s / glp's (glp by full decodes); tau = Kendall's tau-b "
        "between the proxy and the real CER over the candidates decoded in full by this search (its finalists) "
        "or another (n of them; shown when another search decoded some of them), with whether the proxy's top 3 hold the best by real CER, and that best's rank in the "
        "coarse search (a rank above 10 is a candidate the paper's K = 10 never sees). "
        "The `unpruned` row is the original model, and the same fine-tune applied to it.",
        "",
    ]
    header = (["k", "method", "layers removed", "fine"] + [f"{d}" for d in sets] + [f"{held_out} CI"]
              + [f"{d} ft" for d in sets] + [f"{held_out} ft CI"]
              + ["decodes", "proxy", "search s", "ratio to glp", "tau (n)", "status"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in ([ref] if ref else []) + data["rows"]:
        cells = [str(row["num_prune"]), row["method"], ",".join(map(str, row.get("removed", []))) or "-",
                 fmt(row.get("fine_cer"))]
        cells += [fmt(row.get(f"cer_{d}")) for d in sets] + [fmt_ci(row.get(f"ci_{held_out}"))]
        cells += [fmt(row.get(f"cer_ft_{d}")) for d in sets] + [fmt_ci(row.get(f"ci_ft_{held_out}"))]
        tau = "-" if row.get("tau") is None else (
            f"{row['tau']:.2f} (n {row['tau_n']}, " + ("top 3 has best" if row.get("proxy_top3_has_best")
                                                         else "top 3 misses best")
            + f", best at coarse rank {row.get('best_real_coarse_rank')})")
        cells += [fmt(row.get("search_decodes"), "d") if row.get("search_decodes") is not None else "-",
                  fmt(row.get("search_proxy_evals"), "d") if row.get("search_proxy_evals") else "-",
                  fmt(row.get("search_seconds"), ".0f"), fmt(row.get("ratio_to_glp"), ".2f"), tau, row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Summary (computed from the table)", ""]
    lines += summary_lines(data)
    paired = data.get("paired") or []
    if paired:
        lines += [
            "",
            f"## Paired bootstrap on {held_out}",
            "",
            "Difference = CER of the first model minus CER of the second, on the same utterances (negative: "
            "the first is better), with its 95 % interval and the share of resamples in which the first is "
            "better (ties count half: the same model against itself gets 0.50). An interval that contains 0 means "
            "the test set cannot tell the two apart.",
            "",
            "| k | first | second | fine-tuned | difference | 95 % interval | P(first better) |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in paired:
            lines.append(f"| {p['num_prune']} | {p['a']} | {p['b']} | {'yes' if p['when'] == 'after' else 'no'} | "
                         f"{p['difference']:+.1f} | {p['low']:+.1f} to {p['high']:+.1f} | {p['prob_a_better']:.2f} |")
    return "\n".join(lines) + "\n"


def mean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summary_lines(data: Dict[str, Any]) -> List[str]:
    rows = [r for r in data["rows"] if r["status"] == "done"]
    out = []
    dset = data["test_sets"][-1]
    for k in sorted({r["num_prune"] for r in rows}):
        at_k = [r for r in rows if r["num_prune"] == k]
        glp = next((r for r in at_k if r["method"] == "glp"), None)
        comflp = [r for r in at_k if r["comflp"]]
        if glp and comflp:
            ratios = [r.get("ratio_to_glp") for r in comflp if r.get("ratio_to_glp") is not None]
            if ratios:
                out.append(f"- k={k}: CoMFLP search time / glp's: {min(ratios):.2f} to {max(ratios):.2f} "
                           f"({len(ratios)} CoMFLP settings).")
            for which in ("fine_cer", f"cer_{dset}"):
                gv = glp.get(which)
                cv = [(r.get(which), r["method"]) for r in comflp if r.get(which) is not None]
                if gv is not None and cv:
                    best = min(cv)
                    out.append(f"- k={k}, {'fine-search set' if which == 'fine_cer' else dset}: best CoMFLP "
                               f"winner {best[0]:.1f} ({best[1]}), mean over CoMFLP settings "
                               f"{mean([v for v, _ in cv]):.1f}, glp {gv:.1f} (gap of the mean: "
                               f"{mean([v for v, _ in cv]) - gv:+.1f} points).")
    key = f"cer_{dset}"
    comflp_mean = mean([r.get(key) for r in rows if r["comflp"]])
    if comflp_mean is not None:
        parts = [f"CoMFLP (all settings) {comflp_mean:.1f}"]
        for b in BASELINES:
            m = mean([r.get(key) for r in rows if r["method"] == b])
            if m is not None:
                parts.append(f"{b} {m:.1f}")
        out.append(f"- Mean {dset} CER before fine-tuning over the k values run: " + ", ".join(parts) + ".")
    # After fine-tuning: the k values at which every baseline's winner was fine-tuned; CoMFLP's mean
    # is over the settings fine-tuned there (named by count, since the deadline may cut some).
    key = f"cer_ft_{dset}"
    ks = [k for k in sorted({r["num_prune"] for r in rows})
          if all(r.get(key) is not None for r in rows if r["num_prune"] == k and not r["comflp"])
          and any(r.get(key) is not None for r in rows if r["num_prune"] == k and r["comflp"])]
    if ks:
        at = [r for r in rows if r["num_prune"] in ks]
        done = [r[key] for r in at if r["comflp"] and r.get(key) is not None]
        parts = [f"CoMFLP {mean(done):.1f} ({len(done)} of {sum(r['comflp'] for r in at)} settings fine-tuned)"]
        parts += [f"{b} {mean([r[key] for r in at if r['method'] == b]):.1f}" for b in BASELINES
                  if any(r["method"] == b for r in at)]
        ref = (data.get("reference") or {}).get(key)
        if ref is not None:
            parts.append(f"unpruned {ref:.1f}")
        out.append(f"- Mean {dset} CER after fine-tuning (k = {', '.join(map(str, ks))}): " + ", ".join(parts) + ".")
    return out or ["- (no finished method yet)"]


def plot(data: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = data["test_sets"]
    dset = sets[-1]
    L = data["num_layers"]
    rows = [r for r in data["rows"] if r["status"] == "done"]
    labels = list(dict.fromkeys(r["method"] for r in rows))
    palette = plt.get_cmap("tab20").colors
    color = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, key, title in ((axes[0], f"cer_{dset}", f"{dset}: before fine-tuning"),
                           (axes[1], f"cer_ft_{dset}", f"{dset}: after fine-tuning")):
        # Lines end at the unpruned model (given the same fine-tune in the right panel).
        unpruned = (data.get("reference") or {}).get(key)
        if unpruned is None and key == f"cer_{dset}":
            unpruned = data["original_cer"].get(dset)
        for label in labels:
            pts = sorted((L - r["num_prune"], r[key]) for r in rows if r["method"] == label and r.get(key) is not None)
            if unpruned is not None and pts:
                pts.append((L, unpruned))
            if pts:
                xs, ys = zip(*sorted(pts))
                style = "-o" if label.startswith("comflp_") else "--s"
                ax.plot(xs, ys, style, label=label, markersize=4, color=color[label])
        ax.set_title(title)
        ax.set_xlabel("encoder layers kept")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CER (%)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------ CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe_dir", type=Path, default=Path("egs2/an4_synth/asr1_comflp"),
                   help="recipe with run.sh whose model (stage 11) is trained")
    p.add_argument("--asr_exp", default=None, help="experiment dir relative to the recipe (default: the only exp/asr_*)")
    p.add_argument("--output_dir", type=Path, default=None, help="default: <recipe>/<asr_exp>/comflp/benchmark")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--num_prune", type=int, nargs="+", default=None,
                   help="layers removed (default: L/4 and L/2 of the trained encoder)")
    p.add_argument("--measures", nargs="+", default=list(COMFLP_MEASURES), choices=COMFLP_MEASURES)
    p.add_argument("--searches", nargs="+", default=list(COMFLP_SEARCHES), choices=COMFLP_SEARCHES)
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--variants", nargs="*", default=[], choices=VARIANTS,
                   help="further searches: decode10 (top 10, all decoded), decode_all (the default's pool, "
                        "all decoded), union (dc+svcca+cka pools), glp_proxy (glp by the loss proxy)")
    p.add_argument("--finetune", nargs="*", default=["all"],
                   help="what to fine-tune, in this order: 'all', 'unpruned' (the reference), labels "
                        "(e.g. comflp_dp_dc glp) or label@k; 'none' for nothing")
    p.add_argument("--test_sets", nargs="+", default=["dev", "test"])
    p.add_argument("--run_args", default="", help="extra run.sh options for every call (quoted)")
    p.add_argument("--inference_config", default="conf/decode_asr.yaml", help="decoding config of the test decodes")
    p.add_argument("--inference_asr_model", default="valid.acc.ave.pth")
    p.add_argument("--inference_nj", type=int, default=2, help="parallel test-decoding jobs")
    p.add_argument("--gpu_inference", action="store_true", help="decode the test sets on a GPU")
    p.add_argument("--dumpdir", default="dump")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the recipe's processes")
    p.add_argument("--deadline", default=None,
                   help="UTC time HH:MM after which no new search or fine-tune starts (a partial report is written)")
    p.add_argument("--log_level", default="INFO")
    return p


def parse_deadline(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    hh, mm = map(int, value.split(":"))
    now = time.gmtime()
    target = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, 0, 0, 0, 0))
    if target < time.time() - 12 * 3600:
        target += 24 * 3600
    elif target > time.time() + 12 * 3600:
        target -= 24 * 3600
    return target


def main(cmd=None):
    parser = get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if not (args.recipe_dir / "run.sh").is_file():
        parser.error(f"--recipe_dir {args.recipe_dir}: no run.sh there")
    try:
        args.deadline = parse_deadline(args.deadline)
    except ValueError:
        parser.error(f"--deadline {args.deadline}: expected HH:MM (UTC)")
    if args.finetune == ["none"]:
        args.finetune = []
    bench = Benchmark(args)
    if args.num_prune is None:
        L = bench.num_layers()
        if not L:
            parser.error(f"{bench.recipe_dir}/{bench.asr_exp}/config.yaml not found: train the model first or give --num_prune")
        args.num_prune = sorted({max(1, L // 4), max(1, L // 2)})
    labels = [m.label for m in bench.methods]
    for item in args.finetune:
        label, _, k = item.partition("@")
        if item not in ("all", REFERENCE_LABEL) and (label not in labels or (k and not k.isdigit())):
            parser.error(f"--finetune {item}: expected all, none, {REFERENCE_LABEL}, or one of "
                         f"{', '.join(labels)} (optionally with @k)")
    logging.info(f"Methods: {', '.join(labels)}; k = {args.num_prune}; output {bench.out}")
    for step in STEPS:
        if step in args.steps:
            getattr(bench, f"step_{step}")()
    bench.step_report()


if __name__ == "__main__":
    main()
