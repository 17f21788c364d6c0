"""bench/compare_methods.py on the trained mini_an4 model: searches through the recipe, test
decodes, fine-tuning of the winners and of the unpruned reference, and the report with its
bootstrap intervals."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mini_an4_recipe import ASR_EXP, MODEL, ROOT, copy_trained_recipe

pytest_plugins = ["mini_an4_recipe"]

DRIVER = ROOT / "bench" / "compare_methods.py"
K = 2
ARGS = ["--num_prune", str(K), "--measures", "dc", "--searches", "dp", "beam",
        "--baselines", "drop_last", "--test_sets", "train_dev", "test", "--inference_nj", "1"]


def load_driver():
    sys.path.insert(0, str(DRIVER.parent))
    try:
        import compare_methods
    finally:
        sys.path.remove(str(DRIVER.parent))
    return compare_methods


def test_finetune_order_follows_the_option_and_all_adds_the_rest():
    cm = load_driver()
    bench = cm.Benchmark.__new__(cm.Benchmark)
    bench.methods = cm.build_methods(["dc"], ["dp"], ["glp", "drop_last"])
    bench.args = type("Args", (), {"num_prune": [6, 3], "finetune": ["glp@3", "comflp_dp_dc", "all"]})()
    order = [(m.label, k) for m, k in bench.finetune_methods()]
    assert order == [("glp", 3), ("comflp_dp_dc", 6), ("comflp_dp_dc", 3),
                     ("glp", 6), ("drop_last", 6), ("drop_last", 3)]
    bench.args.finetune = ["drop_last@6"]
    assert [(m.label, k) for m, k in bench.finetune_methods()] == [("drop_last", 6)]


def test_unknown_finetune_label_is_an_error(tmp_path):
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    exp = tmp_path / "exp" / "asr_x"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("encoder_conf: {num_blocks: 12}\n")
    r = subprocess.run([sys.executable, str(DRIVER), "--recipe_dir", str(tmp_path), "--steps", "report",
                        "--finetune", "glpp"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "--finetune glpp" in r.stderr and "drop_last" in r.stderr
    assert not (exp / "comflp").exists()


def run_driver(recipe_dir: Path, *extra):
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["COMFLP_VENV"] = sys.prefix
    return subprocess.run([sys.executable, str(DRIVER), "--recipe_dir", str(recipe_dir), *ARGS, *extra],
                          env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def bench_run(mini_an4_run, tmp_path_factory):
    d = copy_trained_recipe(mini_an4_run, tmp_path_factory.mktemp("bench"))
    first = run_driver(d)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-6000:]
    out = d / ASR_EXP / "comflp" / "benchmark"
    runs_before = (out / "runs.json").read_text()
    second = run_driver(d)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-6000:]
    return {"dir": d, "out": out, "data": json.loads((out / "benchmark.json").read_text()),
            "runs_before": runs_before, "second": second}


def rows_by_method(data):
    return {r["method"]: r for r in data["rows"]}


@pytest.mark.recipe
def test_every_method_ran_and_was_decoded_on_the_test_sets(bench_run):
    rows = rows_by_method(bench_run["data"])
    assert set(rows) == {"comflp_dp_dc", "comflp_beam_dc", "drop_last"}
    for row in rows.values():
        assert row["status"] == "done"
        assert len(row["removed"]) == K
        assert row["search_decodes"] >= 1 and row["search_seconds"] > 0
        for dset in ("train_dev", "test"):
            assert 0 <= row[f"cer_{dset}"]
    assert rows["drop_last"]["removed"] == [11, 12]
    # A winner's test CER is that of its pruned model, decoded on every test utterance.
    scores = json.loads((bench_run["out"] / "test_decode" / "test" / "score" / "scores.json").read_text())
    row = rows["comflp_dp_dc"]
    assert scores["models"][row["model_name"]]["cer"]["error_rate"] == row["cer_test"]
    assert scores["models"][row["model_name"]]["missing_hyps"] == []


@pytest.mark.recipe
def test_unpruned_reference_gets_the_same_fine_tune(bench_run):
    ref = bench_run["data"]["reference"]
    assert ref["cer_test"] == bench_run["data"]["original_cer"]["test"]
    ranking = json.loads((bench_run["dir"] / ASR_EXP / "comflp" / f"dc_dp_prune{K}" / "scores" / "ranking.json").read_text())
    assert ref["fine_cer"] == ranking["original"]["cer"]
    assert ref["cer_ft_test"] is not None
    ft = bench_run["dir"] / ASR_EXP / "comflp" / "unpruned_reference" / "finetune"
    winner_ft = bench_run["dir"] / ASR_EXP / "comflp" / f"dc_dp_prune{K}" / "finetune"
    ft_conf = yaml.safe_load((ft / "config.yaml").read_text())
    winner_conf = yaml.safe_load((winner_ft / "config.yaml").read_text())
    original = yaml.safe_load((bench_run["dir"] / ASR_EXP / "config.yaml").read_text())
    assert ft_conf["encoder_conf"]["num_blocks"] == original["encoder_conf"]["num_blocks"] == 12
    assert winner_conf["encoder_conf"]["num_blocks"] == 12 - K
    # Same overlay, same schedule: only the depth differs.
    for key in ("max_epoch", "optim_conf", "scheduler_conf"):
        assert ft_conf[key] == winner_conf[key]
    assert yaml.safe_load((ft / "prune.yaml").read_text())["pruned_encoder_layers"] == []
    assert (ft / MODEL).is_file()


@pytest.mark.recipe
def test_a_winner_chosen_twice_is_fine_tuned_once(bench_run):
    rows = rows_by_method(bench_run["data"])
    comflp = bench_run["dir"] / ASR_EXP / "comflp"
    dp, beam = rows["comflp_dp_dc"], rows["comflp_beam_dc"]
    if dp["removed"] != beam["removed"]:
        pytest.skip("dp and beam chose different winners on this model")
    assert (comflp / f"dc_dp_prune{K}" / "finetune" / MODEL).is_file()
    assert not (comflp / f"dc_beam_prune{K}" / "finetune").exists()
    assert beam["ft_model_name"] == dp["ft_model_name"]
    assert beam["cer_ft_test"] == dp["cer_ft_test"]


@pytest.mark.recipe
def test_report_has_intervals_and_paired_comparisons(bench_run):
    data = bench_run["data"]
    for row in data["rows"] + [data["reference"]]:
        for prefix in ("", "ft_"):
            low, high = row[f"ci_{prefix}test"]
            assert low <= row[f"cer_{prefix}test"] <= high
    paired = {(p["a"], p["b"], p["when"]): p for p in data["paired"]}
    assert {("comflp_dp_dc", "drop_last", "before"), ("comflp_dp_dc", "drop_last", "after"),
            ("comflp_dp_dc", "unpruned", "after"), ("drop_last", "unpruned", "after")} <= set(paired)
    rows = rows_by_method(data)
    p = paired[("comflp_dp_dc", "drop_last", "before")]
    assert p["difference"] == pytest.approx(rows["comflp_dp_dc"]["cer_test"] - rows["drop_last"]["cer_test"], abs=1e-9)
    assert p["low"] <= p["difference"] <= p["high"]
    md = (bench_run["out"] / "benchmark.md").read_text()
    assert "| 0 | unpruned |" in md
    assert "## Paired bootstrap on test" in md
    assert f"- Mean test CER after fine-tuning (k = {K}): CoMFLP " in md
    assert "(2 of 2 settings fine-tuned)" in md
    assert (bench_run["out"] / "benchmark.png").stat().st_size > 0


@pytest.mark.recipe
def test_rerun_does_no_work_again(bench_run):
    assert (bench_run["out"] / "runs.json").read_text() == bench_run["runs_before"]
    assert "--stage 19" not in bench_run["second"].stderr


def test_variants_are_searches_of_their_own_with_their_options():
    cm = load_driver()
    methods = {m.label: m for m in cm.build_methods(["dc"], ["dp"], ["glp"], ["decode10", "union", "glp_proxy"])}
    assert list(methods) == ["comflp_dp_dc", "comflp_dp_dc_decode10", "comflp_dp_union", "glp", "glp_proxy"]
    assert methods["comflp_dp_dc_decode10"].extra_args == ["--comflp_fine_proxy", "none", "--comflp_topk", "10"]
    assert methods["comflp_dp_dc_decode10"].tag(6) == "dc_dp_decode10_prune6"
    assert methods["comflp_dp_union"].measure == "dc svcca cka" and methods["comflp_dp_union"].is_comflp
    assert methods["glp"].extra_args == ["--comflp_glp_metric", "decode"]
    assert methods["glp_proxy"].extra_args == ["--comflp_glp_metric", "loss"]
    assert len({m.tag(3) for m in methods.values()}) == len(methods)  # one directory each


def test_the_default_is_compared_with_its_variants_and_the_baselines_not_other_settings():
    cm = load_driver()
    bench = cm.Benchmark.__new__(cm.Benchmark)
    bench.args = argparse.Namespace(test_sets=["test"])
    bench.methods = cm.build_methods(["dc", "svcca"], ["dp"], ["glp"], ["decode10", "glp_proxy"])
    # Per-utterance errors of each model on 4 utterances of 10 characters each.
    errors = {"m_dc": [1, 0, 2, 1], "m_svcca": [0, 0, 0, 0], "m_d10": [1, 1, 2, 1], "m_glp": [2, 2, 2, 2],
              "m_gp": [1, 0, 2, 0]}
    bench.utterance_errors = lambda dset, name: (errors[name], [10] * 4) if name in errors else None
    rows = [{"method": m.label, "num_prune": 3, "comflp": m.is_comflp, "variant": m.variant, "status": "done",
             "model_name": name}
            for m, name in zip(bench.methods, ["m_dc", "m_svcca", "m_d10", "m_glp", "m_gp"])]
    pairs = {(p["a"], p["b"]): p for p in bench.paired_comparisons(rows, {"method": "unpruned"})}
    assert set(pairs) == {("comflp_dp_dc", "comflp_dp_dc_decode10"), ("comflp_dp_dc", "glp"),
                          ("comflp_dp_dc", "glp_proxy")}
    assert pairs[("comflp_dp_dc", "comflp_dp_dc_decode10")]["difference"] == pytest.approx(-2.5)
    assert pairs[("comflp_dp_dc", "glp")]["difference"] == pytest.approx(-10.0)


def test_rank_agreement_needs_candidates_decoded_by_another_search(monkeypatch):
    cm = load_driver()
    bench = cm.Benchmark.__new__(cm.Benchmark)
    bench.methods = cm.build_methods(["dc"], ["dp"], ["glp"], ["decode10"])
    default, decode10, glp = bench.methods
    pool = [[1], [2], [3], [4], [5]]
    proxy = [10.0, 11.0, 12.0, 13.0, 14.0]
    fine = {"candidates": [{"pruned": p, "rank": i + 1, "proxy": {"value": v}}
                           for i, (p, v) in enumerate(zip(pool, proxy))]}
    rankings = {default.tag(1): [([1], 7.0), ([2], 6.0), ([3], 8.0)],  # its own 3 finalists
                decode10.tag(1): [([2], 6.0), ([4], 5.0), ([5], 9.0)], glp.tag(1): []}
    bench.tag_dir = lambda method, k: argparse.Namespace(ranking_json=method.tag(k))
    monkeypatch.setattr(cm, "read_fine_search", lambda tag_dir: fine)
    monkeypatch.setattr(cm, "read_ranking", lambda tag: {"ranking": [
        {"pruned": p, "cer": c, "is_original": False} for p, c in rankings[tag]]})
    got = bench.rank_agreement(default, 1)
    assert got["tau_n"] == 5
    assert got["proxy_top3_has_best"] is False and got["best_real_coarse_rank"] == 4
    # Over its own finalists alone there is nothing to learn: no agreement is reported.
    rankings[decode10.tag(1)] = [([2], 6.0)]
    assert bench.rank_agreement(default, 1) == {}
