#!/usr/bin/env python3
"""Which candidates should the fine search decode? Each way of choosing finalists against full decodes
of the whole pool, on the fine-search set and on a held-out test set.

For every k of ``--num_prune``, on a recipe whose model is trained, three searches of the same coarse
pool run one after another (stages 15-18, tags ``fc_<variant>_prune<k>``, with the recipe's options and
``--run_args``):

    ctc_greedy   --comflp_fine_proxy ctc_greedy: the proxy scores the pool, its M best are decoded
    loss         --comflp_fine_proxy loss: likewise by the teacher-forced loss
    decode_all   --comflp_fine_proxy none: every candidate of the pool decoded in full

They share the recipe's cache of fine-search decodes, so the pool is decoded once. From their
``scores/ranking.json`` each rule below chooses finalists; its winner is the finalist with the fewest
errors on the fine-search set (ties: the better coarse rank), as stage 18 chooses:

    ctc_greedy   the M best by CTC-greedy CER
    loss         the M best by teacher-forced loss (the recipe's default)
    coarse       the M best by coarse score (no proxy)
    coarse10     the 10 best by coarse score (the paper's fine search: all 10 decoded)
    pool         every candidate (the pool's best on the fine-search set)

Every distinct winner is decoded on ``--test_set`` with the recipe's own decoding
(``scripts/decode_models.sh`` through the recipe's ``${decode_cmd}``). The report (``finalist_choice.md``
and ``.json`` in the output directory): per k, Kendall's tau-b of each proxy against the real CER over
the pool, and the fine-search and test CER of each rule's winner; over all k together, the paired
bootstrap difference on test of each rule's winners against the default's (``loss``).

Example (from the plugin root, the an4_synth model trained; about 25 minutes on 2 CPU cores):

    python bench/finalist_choice.py --recipe_dir egs2/an4_synth/asr1_comflp \\
        --asr_exp exp/asr_train_asr_transformer_12_raw_en_char --num_prune 2 3 4 6 8
"""

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from comflp_espnet import bootstrap, scoring  # noqa: E402
from comflp_espnet.atomic import atomic_output_file  # noqa: E402
from comflp_espnet.rank_agreement import kendall_tau_b  # noqa: E402
from comflp_espnet.rundir import RunDir, read_ranking, write_models_scp  # noqa: E402

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
VARIANTS = {"ctc_greedy": ["--comflp_fine_proxy", "ctc_greedy"], "loss": ["--comflp_fine_proxy", "loss"],
            "decode_all": ["--comflp_fine_proxy", "none"]}
RULES = ("ctc_greedy", "loss", "coarse", "coarse10", "pool")
DEFAULT_RULE = "loss"
BOOTSTRAP_SAMPLES = 2000


def tag(variant: str, k: int) -> str:
    return f"fc_{variant}_prune{k}"


def pool_of(rankings: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The pool of one k: eval key -> real errors and CER (decode_all), coarse rank, proxy values and the
    candidate's name in the decode_all search, from the three searches' ranking.json."""
    by_key = {v: {r["eval_key"]: r for r in doc["ranking"] if not r.get("is_original")}
              for v, doc in rankings.items()}
    pool = {}
    for key, r in by_key["decode_all"].items():
        if r.get("num_err") is None:
            raise ValueError(f"{key}: not decoded in the decode_all search; rerun it")
        pool[key] = {"name": r["name"], "num_err": r["num_err"], "cer": r["cer"], "coarse_rank": r["coarse_rank"],
                     "ctc_greedy": by_key["ctc_greedy"][key]["proxy"], "loss": by_key["loss"][key]["proxy"]}
    return pool


def finalists(pool: Mapping[str, Mapping[str, Any]], rule: str, m: int) -> List[str]:
    """The keys the rule decodes (lower proxy value first; ties and the coarse rules: coarse rank)."""
    if rule in ("ctc_greedy", "loss"):
        order = sorted(pool, key=lambda x: (pool[x][rule], pool[x]["coarse_rank"]))
        return order[:m]
    order = sorted(pool, key=lambda x: pool[x]["coarse_rank"])
    return {"coarse": order[:m], "coarse10": order[:10], "pool": order}[rule]


def winners(pool: Mapping[str, Mapping[str, Any]], m: int) -> Dict[str, str]:
    """Each rule's winner: its finalist with the fewest fine-search errors (ties: coarse rank)."""
    return {rule: min(finalists(pool, rule, m), key=lambda x: (pool[x]["num_err"], pool[x]["coarse_rank"]))
            for rule in RULES}


def rank_agreement(pool: Mapping[str, Mapping[str, Any]], proxy: str) -> float:
    keys = sorted(pool)
    return kendall_tau_b([pool[x][proxy] for x in keys], [pool[x]["num_err"] for x in keys])


class Study:
    def __init__(self, args):
        self.args = args
        self.recipe = Path(args.recipe_dir).resolve()
        self.out = Path(args.output_dir).resolve()
        self.run_dir = RunDir(self.recipe / args.asr_exp / "comflp")
        self.env = dict(os.environ)

    def run(self, stage_args: Sequence[str], log_name: str) -> None:
        cmd = ["./run.sh", *stage_args, "--asr_exp", self.args.asr_exp, *self.args.run_args.split()]
        log = self.out / "logs" / f"{log_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        logging.info(f"({self.recipe}) {' '.join(cmd)}  log: {log}")
        with open(log, "w", encoding="utf-8") as f:
            rc = subprocess.run(cmd, cwd=self.recipe, stdout=f, stderr=subprocess.STDOUT, env=self.env).returncode
        if rc != 0:
            sys.exit(f"finalist_choice: {' '.join(cmd)} failed; log: {log}")

    def search(self, k: int) -> Dict[str, Dict[str, Any]]:
        rankings = {}
        for variant, extra in VARIANTS.items():
            name = tag(variant, k)
            self.run(["--stage", "15", "--stop_stage", "18", "--comflp_num_prune", str(k), "--comflp_tag", name,
                      "--comflp_fine_finalists", str(self.args.finalists), *extra], name)
            rankings[variant] = read_ranking(self.run_dir.tag(name).ranking_json)
        return pool_of(rankings)

    def decode_test(self, models: Dict[str, tuple]) -> Path:
        work = self.out / "test_decode"
        scp = self.out / "test_models.scp"
        write_models_scp(scp, sorted((n, c, m) for n, (c, m) in models.items()))
        # the recipe's own stage scripts: asr_comflp.sh links into its template
        script = (self.recipe / "asr_comflp.sh").resolve().parent / "scripts" / "decode_models.sh"
        cmd = ["bash", "-c", '. ./path.sh && . ./cmd.sh && exec "$0" --cmd "${decode_cmd}" "$@"', str(script),
               "--python", "python", "--nj", str(self.args.inference_nj), "--ngpu", "0",
               "--inference_config", self.args.inference_config, "--token_type", "char", "--score", "false",
               str(scp), self.args.test_set, str(work)]
        log = self.out / "logs" / "test_decode.log"
        logging.info(f"Decoding {len(models)} winner(s) on {self.args.test_set}  log: {log}")
        with open(log, "w", encoding="utf-8") as f:
            rc = subprocess.run(cmd, cwd=self.recipe, stdout=f, stderr=subprocess.STDOUT, env=self.env).returncode
        if rc != 0:
            sys.exit(f"finalist_choice: decoding {self.args.test_set} failed; log: {log}")
        return work / "hyp"

    def main(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.run(["--stage", "14", "--stop_stage", "14"], "stage14")
        results, models = {}, {}
        for k in self.args.num_prune:
            pool = self.search(k)
            chosen = winners(pool, self.args.finalists)
            cand_dir = self.run_dir.tag(tag("decode_all", k)).candidates
            for key in set(chosen.values()):
                name = pool[key]["name"]
                model_file = next(p.name for p in (cand_dir / name).glob("*.pth"))
                models[f"k{k}_{key}"] = (str(cand_dir / name / "config.yaml"), str(cand_dir / name / model_file))
            results[k] = {"pool": len(pool), "best_fine": min(p["cer"] for p in pool.values()),
                          "tau": {p: rank_agreement(pool, p) for p in ("ctc_greedy", "loss")},
                          "winners": {r: {"key": key, "fine_cer": pool[key]["cer"]} for r, key in chosen.items()}}
        hyp_root = self.decode_test(models)
        ref = scoring.read_kaldi_text(self.recipe / self.args.test_set / "text")
        per_utt = {}
        for name in models:
            scores = scoring.score_texts(ref, scoring.read_kaldi_text(hyp_root / name / "text"), "char")
            per_utt[name] = ([s.counts.num_err for s in scores], [s.counts.num_ref for s in scores])
        for k, res in results.items():
            for r, w in res["winners"].items():
                err, ref_len = per_utt[f"k{k}_{w['key']}"]
                w["test_cer"] = 100.0 * sum(err) / sum(ref_len)
        pooled = {}
        for rule in RULES:
            errs, lens = [], []
            for k, res in results.items():
                e, n = per_utt[f"k{k}_{res['winners'][rule]['key']}"]
                errs += e
                lens += n
            pooled[rule] = (errs, lens)
        paired = {}
        for rule in RULES:
            if rule == DEFAULT_RULE:
                continue
            cmp = bootstrap.paired_difference(pooled[rule][0], pooled[DEFAULT_RULE][0], pooled[rule][1],
                                              num_samples=BOOTSTRAP_SAMPLES)
            paired[rule] = {"difference": cmp.difference, "low": cmp.low, "high": cmp.high,
                            "prob_better": cmp.prob_a_better}
        data = {"recipe_dir": str(self.recipe), "asr_exp": self.args.asr_exp, "finalists": self.args.finalists,
                "test_set": self.args.test_set, "depths": results, "paired_against_default": paired}
        md = report(data)
        for name, text in (("finalist_choice.json", json.dumps(data, indent=1) + "\n"), ("finalist_choice.md", md)):
            with atomic_output_file(self.out / name, encoding="utf-8") as f:
                f.write(text)
        print(md)


def report(data: Mapping[str, Any]) -> str:
    m = data["finalists"]
    lines = [f"Finalists M = {m}; CER in % (fine-search set / {data['test_set']}) of each rule's winner.", "",
             "| k | pool | best fine | tau ctc_greedy | tau loss | " + " | ".join(RULES) + " |",
             "|---" * (5 + len(RULES)) + "|"]
    for k, res in data["depths"].items():
        cells = [f"{res['winners'][r]['fine_cer']:.1f} / {res['winners'][r]['test_cer']:.1f}" for r in RULES]
        lines.append(f"| {k} | {res['pool']} | {res['best_fine']:.1f} | {res['tau']['ctc_greedy']:.2f} | "
                     f"{res['tau']['loss']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired bootstrap on {data['test_set']}, the winners of every k together, each rule minus "
              f"{DEFAULT_RULE} (negative: the rule's winners are better):", "",
              "| rule | difference | 95 % interval | P(rule better) |", "|---|---|---|---|"]
    for rule, p in data["paired_against_default"].items():
        lines.append(f"| {rule} | {p['difference']:+.2f} | {p['low']:+.2f} to {p['high']:+.2f} | "
                     f"{p['prob_better']:.2f} |")
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe_dir", required=True, help="recipe whose model is trained (run.sh stages 1-11 done)")
    p.add_argument("--asr_exp", required=True, help="the trained experiment, relative to the recipe")
    p.add_argument("--num_prune", type=int, nargs="+", default=[3, 6], help="numbers of layers removed")
    p.add_argument("--finalists", type=int, default=3, help="M: finalists decoded per proxy rule")
    p.add_argument("--test_set", default="dump/raw/test", help="held-out data dir, relative to the recipe")
    p.add_argument("--inference_config", default="conf/decode_asr.yaml", help="relative to the recipe")
    p.add_argument("--inference_nj", type=int, default=2)
    p.add_argument("--run_args", default="", help="more run.sh options, one string")
    p.add_argument("--output_dir", default="finalist_choice", help="report and test decodes")
    return p


def main(cmd=None) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    args = get_parser().parse_args(cmd)
    if args.finalists < 1:
        sys.exit("finalist_choice: --finalists must be >= 1")
    Study(args).main()


if __name__ == "__main__":
    main()
