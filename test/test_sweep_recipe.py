"""A depth sweep through the mini_an4 recipe, on the model the shared recipe run trained:

| run | command (in a copy of the trained recipe) | expected |
|---|---|---|
| 1 | `./run.sh --stage 14 --stop_stage 20 --comflp_sweep_range 3:4 --comflp_max_degradation 1000 --comflp_finetune false` (run.sh's own `--comflp_num_prune 4` comes first) | the sweep wins: searches k = 3 and 4; every winner is within 1000 points, so k = 4 is chosen; `comflp/sweep/sweep.{json,md,png}` hold both winners with the figures of their own outputs (fine-search CER/WER, parameters, RTF from the decodes, speed-up); stage 20 runs for k = 4 only; its RESULTS.md and `${asr_exp}/RESULTS.md` get the sweep section |
| 2 | the same with `--stage 18 --comflp_max_degradation 0` | the choice follows the error counts of each search's scores (the deepest winner with no more errors than the original, or none: stages 19-21 skipped with a log line) |
| 3 | run 1 again | nothing is redone or rewritten |

Marked ``recipe``: it runs the recipe's CoMFLP stages (a few minutes on 2 cores).
"""

import json
import re
from pathlib import Path

import pytest
import yaml

pytest.register_assert_rewrite("mini_an4_recipe")
from mini_an4_recipe import ASR_EXP, INFERENCE_TAG, copy_trained_recipe, run_recipe

pytest_plugins = ["mini_an4_recipe"]
pytestmark = pytest.mark.recipe

SWEEP = ["--comflp_sweep_range", "3:4", "--comflp_finetune", "false"]
TAGS = {3: "dc_dp_prune3", 4: "dc_dp_prune4"}


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def ok(result):
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return result


def run_sweep(mini_an4_run, tmp_path_factory, name, options, what):
    """Stages 14-20 with OPTIONS on a copy of the trained mini_an4 recipe."""
    d = copy_trained_recipe(mini_an4_run, tmp_path_factory.mktemp(name))
    first, seconds = run_recipe(d, mini_an4_run["tarball"], "--stage", "14", "--stop_stage", "20", *options,
                                "--comflp_max_degradation", "1000")
    ok(first)
    print(f"\nmini_an4 {what}, stages 14-20: {seconds:.0f} s")
    return {"dir": d, "first": first, "tarball": mini_an4_run["tarball"]}


@pytest.fixture(scope="module")
def sweep_run(mini_an4_run, tmp_path_factory):
    return run_sweep(mini_an4_run, tmp_path_factory, "sweep", SWEEP, "sweep k = 3, 4")


def comflp(d):
    return d / ASR_EXP / "comflp"


def counts(d, k, model):
    """The error counts of ``model`` on the fine-search set, from search k's own scores."""
    tag = comflp(d) / TAGS[k]
    metric = read_json(tag / "scores" / "scores.json")["metric"]
    return read_json(tag / "scores" / "scores.json")["models"][model][metric]


def test_the_sweep_replaces_run_sh_depth_and_searches_each_k(sweep_run):
    log = sweep_run["first"].stdout
    assert re.search(r"Stage 16: Coarse search \(dp, dc, remove 3 4 of 12 layers", log)
    for k, tag in TAGS.items():
        assert read_json(comflp(sweep_run["dir"]) / tag / "proposals.json")["num_prune"] == k
    assert not (comflp(sweep_run["dir"]) / "dc_dp_prune2").exists()
    # The end of the run names the sweep's table beside each search's summary.
    sweep_md = f"{ASR_EXP}/comflp/sweep/sweep.md"
    assert f"Depth sweep: {sweep_md} (plot: {ASR_EXP}/comflp/sweep/sweep.png)" in log


def test_sweep_table_holds_each_winner_with_its_figures(sweep_run):
    d = sweep_run["dir"]
    sweep_dir = comflp(d) / "sweep"
    doc = read_json(sweep_dir / "sweep.json")
    assert doc["num_layers"] == 12 and doc["metric"] == "cer" and doc["max_degradation"] == 1000
    assert [r["num_prune"] for r in doc["depths"]] == [3, 4]
    original = doc["original"]
    o_info = original["timing"]
    assert o_info["rtf"] > 0 and 0 < o_info["encoder_share"] < 1 and o_info["device"] == "cpu"
    assert o_info["cpu_rtf"] > 0 and 0 < o_info["encoder_cpu_share"] < 1 and o_info["num_threads"] == 1
    assert doc["speed_basis"] == "cpu"  # every decode on the CPU with its CPU time recorded
    fine_utts = len((comflp(d) / "fine" / "text").read_text().splitlines())
    assert o_info["num_utts"] == fine_utts
    for row in doc["depths"]:
        tag = comflp(d) / TAGS[row["num_prune"]]
        ranking = read_json(tag / "scores" / "ranking.json")
        assert row["winner"] == ranking["winner"] and row["layers_kept"] == 12 - row["num_prune"]
        winner_dir = tag / "candidates" / row["winner"]
        prune = yaml.safe_load((winner_dir / "prune.yaml").read_text())
        assert row["removed"] == prune["pruned_encoder_layers"] and row["params"] == prune["params_after"]
        assert original["params"] == prune["params_before"]
        c = counts(d, row["num_prune"], row["winner"])
        assert row["num_err"] == c["num_err"] and row["cer"] == pytest.approx(c["error_rate"])
        o = counts(d, row["num_prune"], "original")
        assert original["num_err"] == o["num_err"]
        assert row["degradation"] == pytest.approx(c["error_rate"] - o["error_rate"])
        # The speed figures are those of the winner's own decode of the fine-search set.
        item = next(i for i in read_json(tag / "fine_search" / "fine_search.json")["candidates"]
                    if i["name"] == row["winner"])
        info = yaml.safe_load((d / item["hyp"] / "decode_info.yaml").read_text())  # relative to the recipe
        assert row["timing"]["rtf"] == info["rtf"] > 0 and row["timing"]["cpu_rtf"] == info["cpu_rtf"] > 0
        assert info["rtf"] == pytest.approx(info["decode_time"] / info["audio_seconds"], rel=1e-3)
        assert 0 < info["encoder_time"] < info["decode_time"] and 0 < info["encoder_cpu_time"] < info["decode_cpu_time"]
        assert row["speedup"] == pytest.approx(o_info["cpu_rtf"] / info["cpu_rtf"], rel=1e-3)
        share = o_info["encoder_cpu_share"]
        assert row["expected_speedup"] == pytest.approx(1 / (1 - share * row["num_prune"] / 12), abs=1e-3)
    md = (sweep_dir / "sweep.md").read_text()
    for row in doc["depths"]:
        assert re.search(rf"^\|{row['num_prune']}\|{row['layers_kept']}\|{','.join(map(str, row['removed']))}\|"
                         rf"[0-9.]+\|{row['cer']:.2f}\|{row['wer']:.2f}\|", md, re.M)
    assert re.search(r"^\|0 \(original\)\|12\|-\|", md, re.M)
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_max_degradation_chooses_the_deepest_within_it_and_stage_20_runs_for_it_alone(sweep_run):
    d = sweep_run["dir"]
    doc = read_json(comflp(d) / "sweep" / "sweep.json")
    assert doc["choice"]["num_prune"] == 4 and doc["final_tags"] == [TAGS[4]]
    assert [r["chosen"] for r in doc["depths"]] == [False, True]
    assert "**Chosen: k = 4** (dc_dp_prune4, 8 of 12 layers kept)" in (comflp(d) / "sweep" / "sweep.md").read_text()
    assert (comflp(d) / TAGS[4] / "test_decode").is_dir()
    assert not (comflp(d) / TAGS[3] / "test_decode").exists() and not (comflp(d) / TAGS[3] / "RESULTS.md").exists()
    assert len(re.findall(r"Stage 20: Decode and score", sweep_run["first"].stdout)) == 1
    # Stage 20's test results are in the table of the depth it evaluated.
    row = doc["depths"][1]
    for dset in ("org/train_dev", "test"):
        scores = read_json(comflp(d) / TAGS[4] / "test_decode" / INFERENCE_TAG / dset / "score" / "scores.json")
        assert row["test"][dset]["pruned"]["cer"] == pytest.approx(scores["models"]["pruned"]["cer"]["error_rate"])
        assert doc["original"]["test"][dset]["cer"] == pytest.approx(scores["models"]["original"]["cer"]["error_rate"])
    assert doc["depths"][0]["test"] == {}


def sweep_section(results):
    return results.read_text().split("<!-- comflp:begin sweep -->")[1].split("<!-- comflp:end sweep -->")[0]


def test_results_md_gets_the_sweep_section(sweep_run):
    d = sweep_run["dir"]
    for results in (comflp(d) / TAGS[4] / "RESULTS.md", d / ASR_EXP / "RESULTS.md"):
        text = results.read_text()
        assert text.count("<!-- comflp:begin sweep -->") == 1 and "<!-- comflp:end sweep -->" in text
        section = sweep_section(results)
        assert "**Chosen: k = 4**" in section and re.search(r"^\|4\|8\|", section, re.M)
        (image,) = re.findall(r"!\[CER against layers kept\]\(([^)]+)\)", section)
        assert (results.parent / image).resolve() == (comflp(d) / "sweep" / "sweep.png").resolve()
    assert "<!-- comflp:begin dc_dp_prune4 -->" in (d / ASR_EXP / "RESULTS.md").read_text()
    assert "<!-- comflp:begin dc_dp_prune3 -->" not in (d / ASR_EXP / "RESULTS.md").read_text()


def test_a_stricter_tolerance_chooses_by_the_error_counts(sweep_run):
    d = sweep_run["dir"]
    r = ok(run_recipe(d, sweep_run["tarball"], "--stage", "18", "--stop_stage", "20", *SWEEP,
                      "--comflp_max_degradation", "0")[0])
    doc = read_json(comflp(d) / "sweep" / "sweep.json")
    # Independently of the sweep: the deepest k whose winner makes no more errors than the original.
    expected = [k for k in (3, 4) if counts(d, k, read_json(comflp(d) / TAGS[k] / "scores" / "ranking.json")["winner"])
                ["num_err"] <= counts(d, k, "original")["num_err"]]
    if expected:
        assert doc["choice"]["num_prune"] == max(expected) and doc["final_tags"] == [TAGS[max(expected)]]
        assert f"chose k = {max(expected)}" in r.stdout + r.stderr
    else:
        assert doc["choice"]["tag"] is None and doc["final_tags"] == []
        assert re.search(r"Stages 19-21: skipped: --comflp_max_degradation 0: no depth is within", r.stdout)
        assert "Stage 20: Decode" not in r.stdout
    assert [r["within"] for r in doc["depths"]] == [k in expected for k in (3, 4)]


def test_a_rerun_rewrites_nothing(sweep_run):
    d = sweep_run["dir"]
    ok(run_recipe(d, sweep_run["tarball"], "--stage", "14", "--stop_stage", "20", *SWEEP,
                  "--comflp_max_degradation", "1000")[0])  # back to run 1's choice
    files = [comflp(d) / "sweep" / n for n in ("sweep.json", "sweep.md", "sweep.png")]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    section = sweep_section(d / ASR_EXP / "RESULTS.md")
    r = ok(run_recipe(d, sweep_run["tarball"], "--stage", "14", "--stop_stage", "20", *SWEEP,
                      "--comflp_max_degradation", "1000")[0])
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert sweep_section(d / ASR_EXP / "RESULTS.md") == section
    assert "sweep.md (unchanged)" in r.stdout + r.stderr
    assert "Decoding" not in r.stdout


# ---------------------------------------------------------------------------- bracketing sweep
# The CTC greedy proxy: an error rate, so the original's value gives the bracket its first guess.
BRACKET = ["--comflp_sweep_range", "2:5", "--comflp_finetune", "false", "--comflp_sweep_decode", "bracket",
           "--comflp_fine_proxy", "ctc_greedy"]


@pytest.fixture(scope="module")
def bracket_run(mini_an4_run, tmp_path_factory):
    return run_sweep(mini_an4_run, tmp_path_factory, "bracket", BRACKET, "bracketing sweep k = 2..5")


def bracket_tag(k):
    return f"dc_dp_prune{k}"


def test_bracket_decodes_only_the_depths_around_the_limit(bracket_run):
    # Every winner is within 1000 points, and so is every depth by the proxy: the search starts at the
    # deepest depth, finds it within, and is done: one depth decoded, chosen, evaluated in stage 20.
    d = bracket_run["dir"]
    log = bracket_run["first"].stdout + bracket_run["first"].stderr
    assert "bracket (--comflp_max_degradation 1000): decode k = 5: the deepest depth whose proxy-best is within" in log
    assert re.search(r"bracket \(original [0-9.]+% \+ 1000\): k = 5 [0-9.]+% within: done: the limit is bracketed", log)
    assert len(re.findall(r"Decoding \d+ model\(s\) on \S+/comflp/fine ", log)) == 1
    for k in (2, 3, 4):
        tag = comflp(d) / bracket_tag(k)
        assert (tag / "proposals.json").is_file()
        assert not (tag / "fine_search").exists() and not (tag / "scores").exists()
        assert not (tag / "candidates").exists() and not (tag / "test_decode").exists()
    assert (comflp(d) / bracket_tag(5) / "scores" / "ranking.json").is_file()
    doc = read_json(comflp(d) / "sweep" / "sweep.json")
    assert [r["decoded"] for r in doc["depths"]] == [False, False, False, True]
    assert doc["choice"]["num_prune"] == 5 and doc["final_tags"] == [bracket_tag(5)]
    assert len(re.findall(r"Stage 20: Decode and score", bracket_run["first"].stdout)) == 1
    # An undecoded depth's row is its best candidate by the proxy, with the proxy's value.
    fine_evals = comflp(d) / "fine_evals"
    (proxy_dir,) = [p for p in fine_evals.iterdir() if p.name.startswith("ctc_greedy_")]
    for row in doc["depths"][:3]:
        proposals = read_json(comflp(d) / bracket_tag(row["num_prune"]) / "proposals.json")
        assert sorted(row["removed"]) in [sorted(p["pruned"]) for p in proposals["proposals"]]
        key = "rm" + "-".join(f"{x:02d}" for x in sorted(row["removed"]))
        assert (proxy_dir / key / "text").is_file()
        assert row["proxy"] is not None and row.get("cer") is None and row["winner"] is None
    assert (proxy_dir / "unpruned" / "text").is_file() and doc["original"]["proxy"] is not None
    md = (comflp(d) / "sweep" / "sweep.md").read_text()
    assert md.count("(not decoded)") == 3
    assert "k = 2, 3, 4: not decoded (`--comflp_sweep_decode bracket`" in md


def test_bracket_rerun_decodes_nothing(bracket_run):
    d = bracket_run["dir"]
    r = ok(run_recipe(d, bracket_run["tarball"], "--stage", "14", "--stop_stage", "20", *BRACKET,
                      "--comflp_max_degradation", "1000")[0])
    assert "Decoding" not in r.stdout
    assert "Stage 17: the fine searches of" in r.stdout and "are current; skipping" in r.stdout


def test_bracket_with_a_tolerance_brackets_the_deepest_depth_within_it(bracket_run):
    d = bracket_run["dir"]
    ok(run_recipe(d, bracket_run["tarball"], "--stage", "17", "--stop_stage", "18", *BRACKET,
                  "--comflp_max_degradation", "0")[0])
    doc = read_json(comflp(d) / "sweep" / "sweep.json")
    decoded = {r["num_prune"]: r["within"] for r in doc["depths"] if r["decoded"]}
    # Whatever this model's errors are, the search ends with the limit bracketed.
    inside = [k for k, ok_ in decoded.items() if ok_]
    if inside:
        chosen = max(inside)
        assert doc["choice"]["num_prune"] == chosen
        assert chosen == 5 or decoded.get(chosen + 1) is False
    else:
        assert doc["choice"]["tag"] is None and decoded.get(2) is False
    # Each decoded depth's flag is its own scores' error counts against the original's.
    for k, flag in decoded.items():
        winner = read_json(comflp(d) / bracket_tag(k) / "scores" / "ranking.json")["winner"]
        mine = read_json(comflp(d) / bracket_tag(k) / "scores" / "scores.json")
        metric = mine["metric"]
        assert flag == (mine["models"][winner][metric]["num_err"] <= mine["models"]["original"][metric]["num_err"])
