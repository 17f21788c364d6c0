"""Greedy layer pruning by the task metric (--comflp_search glp) and the search-cost record.

The bookkeeping (comflp_glp) and the cost record (comflp_search_cost) are tested on
hand-made score files in milliseconds.  The tests marked ``recipe`` run glp in
asr_comflp.sh (stages 16-20) on the mini_an4 model trained once per session
(mini_an4_recipe.py), in a copy of the trained recipe.
"""

import json
import re

import pytest
import yaml

from comflp_espnet import records
from comflp_espnet.bin import comflp_glp, comflp_search_cost
from comflp_espnet.rundir import RunDir

pytest.register_assert_rewrite("mini_an4_recipe")
from mini_an4_recipe import ASR_EXP, INFERENCE_TAG, MODEL, TAG, copy_trained_recipe, run_recipe

pytest_plugins = ["mini_an4_recipe"]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_scores(path, errors, num_ref=10, metric="cer"):
    """A comflp_score scores.json: model name -> number of errors of the primary metric."""
    path.parent.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, num_err in errors.items():
        counts = {"num_err": num_err, "num_ref": num_ref, "error_rate": 100.0 * num_err / num_ref}
        models[name] = {"cer": counts, "wer": counts}
    path.write_text(json.dumps({"metric": metric, "num_utts": 2, "models": models}))


def prepare(glp_dir, step, num_layers, num_prune, *constraints):
    out = glp_dir / f"step{step:02d}" / "proposals.json"
    comflp_glp.main(["prepare", "--glp_dir", str(glp_dir), "--step", str(step),
                     "--num_layers", str(num_layers), "--num_prune", str(num_prune),
                     *constraints, "--output", str(out)])
    return read_json(out)


def choose(glp_dir, step, errors_of_layer, seconds="1.5"):
    """Scores the step's models by ``errors_of_layer(pruned layers)``, then chooses."""
    props = read_json(glp_dir / f"step{step:02d}" / "proposals.json")["proposals"]
    width = max(2, len(str(len(props))))
    errors = {f"cand{p['rank']:0{width}d}": errors_of_layer(p["pruned"]) for p in props}
    scores = glp_dir / f"step{step:02d}" / "scores" / "scores.json"
    write_scores(scores, errors)
    comflp_glp.main(["choose", "--glp_dir", str(glp_dir), "--step", str(step),
                     "--scores", str(scores), "--seconds", seconds])
    return read_json(glp_dir / f"step{step:02d}" / "step.json")


# ------------------------------------------------------------------ comflp_glp
def test_greedy_steps_remove_the_layer_with_fewest_errors(tmp_path):
    glp = tmp_path / "glp"
    # Errors grow with the removed layers' ids, except that removing 4 costs nothing.
    cost = {1: 5, 2: 3, 3: 3, 4: 0, 5: 9}

    step1 = prepare(glp, 1, 5, 3)
    assert [p["pruned"] for p in step1["proposals"]] == [[1], [2], [3], [4], [5]]
    assert [p["layer"] for p in step1["proposals"]] == [1, 2, 3, 4, 5]
    record = choose(glp, 1, lambda pruned: sum(cost[x] for x in pruned))
    assert record["chosen_layer"] == 4 and record["removed"] == [4] and record["num_decodes"] == 5

    step2 = prepare(glp, 2, 5, 3)
    assert [p["pruned"] for p in step2["proposals"]] == [[1, 4], [2, 4], [3, 4], [4, 5]]
    # Layers 2 and 3 tie at 3 errors: the lower id wins.
    record = choose(glp, 2, lambda pruned: sum(cost[x] for x in pruned))
    assert record["chosen_layer"] == 2 and record["removed"] == [2, 4]
    assert record["removed_before"] == [4]

    prepare(glp, 3, 5, 3)
    record = choose(glp, 3, lambda pruned: sum(cost[x] for x in pruned))
    assert record["chosen_layer"] == 3 and record["num_decodes"] == 3

    out = tmp_path / "proposals.json"
    comflp_glp.main(["finish", "--glp_dir", str(glp), "--num_layers", "5", "--num_prune", "3",
                     "--output", str(out)])
    data = read_json(out)
    assert data["method"] == "glp" and data["num_prune"] == 3
    (prop,) = data["proposals"]
    assert prop["rank"] == 1 and prop["pruned"] == [2, 3, 4] and prop["kept"] == [1, 5]
    assert prop["runs"] == [[2, 4]]
    # k*L - k(k-1)/2 decodes of the fine-search set: 5 + 4 + 3.
    assert data["glp"]["num_decodes"] == 3 * 5 - 3 == 12
    assert data["glp"]["seconds"] == pytest.approx(4.5)
    assert [s["chosen_layer"] for s in data["glp"]["steps"]] == [4, 2, 3]


def test_constraints_limit_the_layers_tried(tmp_path):
    glp = tmp_path / "glp"
    step1 = prepare(glp, 1, 6, 3, "--keep_first", "true", "--protect", "4", "--max_run", "1")
    assert [p["layer"] for p in step1["proposals"]] == [2, 3, 5, 6]
    choose(glp, 1, lambda pruned: 0 if pruned == [5] else 1)
    step2 = prepare(glp, 2, 6, 3, "--keep_first", "true", "--protect", "4", "--max_run", "1")
    # 6 would make the run 5-6, longer than --max_run 1.
    assert [p["layer"] for p in step2["proposals"]] == [2, 3]
    choose(glp, 2, lambda pruned: 0 if 3 in pruned else 1)
    # Only 2 is left and it would join 3: the search is stuck and says how to get out.
    with pytest.raises(SystemExit, match="no layer can be removed after \\[3, 5\\].*--comflp_max_run"):
        prepare(glp, 3, 6, 3, "--keep_first", "true", "--protect", "4", "--max_run", "1")


def test_steps_must_follow_one_another(tmp_path):
    glp = tmp_path / "glp"
    with pytest.raises(SystemExit, match="step01/step.json not found"):
        prepare(glp, 2, 4, 2)
    prepare(glp, 1, 4, 2)
    choose(glp, 1, lambda pruned: pruned[0])
    record = glp / "step01" / "step.json"
    data = read_json(record)
    data["removed_before"] = [3]
    record.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="does not continue step 0"):
        prepare(glp, 2, 4, 2)
    with pytest.raises(SystemExit, match="--num_prune|num_prune must be"):
        prepare(tmp_path / "other", 1, 4, 4)


def test_choose_needs_a_score_for_every_model(tmp_path):
    glp = tmp_path / "glp"
    prepare(glp, 1, 3, 1)
    scores = glp / "step01" / "scores" / "scores.json"
    write_scores(scores, {"cand01": 1, "cand02": 0})
    with pytest.raises(SystemExit, match="no score for cand03 \\(layer 3\\)"):
        comflp_glp.main(["choose", "--glp_dir", str(glp), "--step", "1", "--scores", str(scores)])
    assert not (glp / "step01" / "step.json").exists()


# ------------------------------------------------------------------ comflp_search_cost
def recorded(output, seconds):
    """An output with a freshness record holding its wall-clock seconds."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.exists():
        output.mkdir()
        (output / "x").write_text("x\n")
    records.write_record(output, records.made_from({}, {}), seconds=seconds)


FINE_SECONDS = {"proxy": 4.0, "proxy_scoring": 0.5, "materialize": 1.0, "finalist_decode": 20.0,
                "reference_decode": 7.0, "other": 2.0}


def fake_search(tag_dir, num_finalists=3, num_proxy=10, method="dp"):
    """A search's outputs and their records, as asr_comflp.sh leaves them: states 10 s, matrix
    0.5 s, proposals 1.5 s, the fine search's parts (FINE_SECONDS), scores 1 s."""
    run = RunDir(tag_dir.parent)
    recorded(run.states, 10.0)
    recorded(run.corr_dir / "dc", 0.5)
    t = run.tag(tag_dir.name)
    if not t.proposals.exists():
        t.root.mkdir(parents=True, exist_ok=True)
        t.proposals.write_text(json.dumps({"num_layers": 4, "num_prune": 2, "method": method,
                                           "proposals": [{"rank": 1, "pruned": [1, 2]}]}))
        recorded(t.proposals, 1.5)
    t.fine_search.mkdir(parents=True, exist_ok=True)
    t.fine_search_json.write_text("{}\n")
    records.write_record(t.fine_search, records.made_from({}, {}), seconds=29.5, info={
        "finalists": [f"cand{i:02d}" for i in range(1, num_finalists + 1)], "proxy": "ctc_greedy",
        "proxy_evaluations": num_proxy, "full_decodes": num_finalists, "seconds": FINE_SECONDS})
    recorded(t.scores, 1.0)
    run.fine.mkdir(parents=True, exist_ok=True)
    (run.fine / "text").write_text("u1 A\nu2 B\nu3 C\n")
    records.write_record(run.fine, records.made_from({}, {}), info={"num_utts": 3})


def cost_cli(tag_dir, method, proposals=None):
    comflp_search_cost.main(["--comflp_dir", str(tag_dir.parent), "--tag", tag_dir.name, "--measure", "dc",
                             "--method", method])
    return read_json(tag_dir / "search_cost.json")


def test_search_cost_of_a_comflp_search(tmp_path):
    tag_dir = tmp_path / "comflp" / "dc_dp_prune4"
    fake_search(tag_dir, num_finalists=3, num_proxy=10)
    cost = cost_cli(tag_dir, "dp")
    # Proxy evaluations and full decodes counted apart; the unpruned reference is not counted.
    assert cost["search_decodes"] == 3 and cost["proxy_evaluations"] == 10
    assert cost["reference_decodes"] == 1 and cost["fine_set_utts"] == 3
    assert cost["reference_decode_seconds"] == 7.0
    assert cost["seconds"]["states"] == 10.0 and cost["seconds"]["greedy_loop"] is None
    assert cost["seconds"]["proxy"] == 4.0 and cost["seconds"]["fine_decode"] == 20.0
    assert cost["seconds"]["scoring"] == 1.5  # proxy hypotheses 0.5 + finalists 1
    assert cost["counted"] == ["states", "matrix", "coarse_search", "proxy", "materialize", "fine_decode",
                               "fine_overhead", "scoring"]
    assert cost["search_seconds"] == pytest.approx(10 + 0.5 + 1.5 + 4 + 1 + 20 + 2 + 1.5)
    md = (tag_dir / "search_cost.md").read_text()
    assert "|dc_dp_prune4|dp|10|3|10.0|0.5|1.5|4.0|1.0|20.0|2.0|1.5|-|40.5|" in md
    # Unchanged content is not rewritten (later stages and reruns see the same file).
    before = (tag_dir / "search_cost.json").stat().st_mtime_ns
    cost_cli(tag_dir, "dp")
    assert (tag_dir / "search_cost.json").stat().st_mtime_ns == before


def test_search_cost_leaves_out_parts_a_method_does_not_use(tmp_path):
    tag_dir = tmp_path / "comflp" / "dc_drop_last_prune4"
    fake_search(tag_dir, num_finalists=1, num_proxy=0, method="drop_last")
    cost = cost_cli(tag_dir, "drop_last")
    assert cost["search_decodes"] == 1 and cost["proxy_evaluations"] == 0
    assert cost["counted"] == ["coarse_search", "proxy", "materialize", "fine_decode", "fine_overhead", "scoring"]
    assert cost["search_seconds"] == pytest.approx(40.5 - 10.5)
    # A part that was not timed leaves the total empty rather than wrong.
    records.record_path(tag_dir / "proposals.json").unlink()
    cost = cost_cli(tag_dir, "drop_last")
    assert cost["search_seconds"] is None and cost["not_recorded"] == ["coarse_search"]


def test_search_cost_of_glp_counts_every_step(tmp_path):
    glp = tmp_path / "dc_glp_prune2" / "glp"
    for step in (1, 2):
        prepare(glp, step, 4, 2)
        choose(glp, step, lambda pruned: sum(pruned), seconds="20")
    proposals = tmp_path / "dc_glp_prune2" / "proposals.json"
    comflp_glp.main(["finish", "--glp_dir", str(glp), "--num_layers", "4", "--num_prune", "2",
                     "--output", str(proposals)])
    tag_dir = tmp_path / "dc_glp_prune2"
    fake_search(tag_dir, num_finalists=1, num_proxy=0)
    cost = cost_cli(tag_dir, "glp", proposals)
    assert cost["search_decodes"] == 4 + 3 and cost["proxy_evaluations"] == 0
    assert [s["num_decodes"] for s in cost["glp_steps"]] == [4, 3]
    assert cost["counted"] == ["greedy_loop"]
    # The re-decoding of the final model in stages 17-18 is not part of the search.
    assert cost["final_decodes"] == 1
    assert cost["seconds"]["greedy_loop"] == pytest.approx(40.0)
    assert cost["search_seconds"] == pytest.approx(40.0)


# ------------------------------------------------------------------ glp in the recipe
GLP_TAG = "dc_glp_prune2"
GLP_OPTS = ("--comflp_search", "glp", "--comflp_num_prune", "2")


@pytest.fixture(scope="module")
def glp_run(mini_an4_run, tmp_path_factory):
    """Stages 16-18 with glp on the trained mini_an4 model, a resumed rerun of stage 16, then 19-20."""
    d = copy_trained_recipe(mini_an4_run, tmp_path_factory.mktemp("glp"))
    tarball = mini_an4_run["tarball"]
    search, search_seconds = run_recipe(d, tarball, "--stage", "16", "--stop_stage", "18", *GLP_OPTS)
    assert search.returncode == 0, search.stdout[-6000:] + search.stderr[-6000:]
    tag = d / ASR_EXP / "comflp" / GLP_TAG
    # Lose the search's result but keep its steps: a rerun must not decode again.
    (tag / "proposals.json").unlink()
    rerun, _ = run_recipe(d, tarball, "--stage", "16", "--stop_stage", "16", *GLP_OPTS)
    assert rerun.returncode == 0, rerun.stdout[-6000:] + rerun.stderr[-6000:]
    after, _ = run_recipe(d, tarball, "--stage", "19", "--stop_stage", "20", *GLP_OPTS)
    assert after.returncode == 0, after.stdout[-6000:] + after.stderr[-6000:]
    print(f"\nglp on mini_an4 (L=12, k=2): stages 16-18 took {search_seconds:.0f} s")
    return {"dir": d, "tag": tag, "search": search, "rerun": rerun, "after": after}


@pytest.mark.recipe
def test_glp_removes_the_best_scored_layer_at_each_step(glp_run):
    tag = glp_run["tag"]
    removed = []
    for step, num_models in ((1, 12), (2, 11)):
        step_dir = tag / "glp" / f"step{step:02d}"
        props = read_json(step_dir / "proposals.json")["proposals"]
        # Every layer still present is tried, on top of the layers removed so far.
        assert len(props) == num_models
        assert sorted(p["layer"] for p in props) == [x for x in range(1, 13) if x not in removed]
        assert all(sorted(p["pruned"]) == sorted(removed + [p["layer"]]) for p in props)
        # Each model was decoded through the fine search's parallel path and scored.
        scores = read_json(step_dir / "scores" / "scores.json")
        assert scores["metric"] == "cer"
        names = sorted(scores["models"])
        assert names == [f"cand{i:02d}" for i in range(1, num_models + 1)]
        assert (step_dir / "decode" / "logdir" / "decode.1.log").is_file()
        errors = {p["layer"]: scores["models"][f"cand{p['rank']:02d}"]["cer"]["num_err"] for p in props}
        best = min(errors, key=lambda layer: (errors[layer], layer))
        record = read_json(step_dir / "step.json")
        assert record["chosen_layer"] == best and record["num_decodes"] == num_models
        assert record["seconds"] > 0
        removed.append(best)
        # The step's pruned models are deleted once it is scored.
        assert not (step_dir / "candidates").exists()

    data = read_json(tag / "proposals.json")
    assert data["method"] == "glp" and [p["pruned"] for p in data["proposals"]] == [sorted(removed)]
    # Stages 17-18 treat the greedy result as the single candidate.
    with open(tag / "candidates" / "cand01" / "prune.yaml", encoding="utf-8") as f:
        assert yaml.safe_load(f)["pruned_encoder_layers"] == sorted(removed)
    fine = read_json(tag / "fine_search" / "fine_search.json")
    assert fine["finalists"] == ["cand01"] and fine["candidates"][0]["pruned"] == sorted(removed)
    assert (tag / "scores" / "winner").read_text().strip() == "cand01"
    assert re.search(r"\) Stage 16: Greedy layer pruning", glp_run["search"].stdout)


@pytest.mark.recipe
def test_glp_search_cost_counts_its_decodes(glp_run):
    cost = read_json(glp_run["tag"] / "search_cost.json")
    assert cost["method"] == "glp" and cost["num_layers"] == 12 and cost["num_prune"] == 2
    assert cost["search_decodes"] == 2 * 12 - 1 == 23
    assert [s["num_decodes"] for s in cost["glp_steps"]] == [12, 11]
    assert cost["counted"] == ["greedy_loop"]
    assert cost["search_seconds"] == pytest.approx(sum(s["seconds"] for s in cost["glp_steps"]), abs=0.01)
    assert cost["search_seconds"] > 0
    assert f"|{GLP_TAG}|glp|0|23|" in (glp_run["tag"] / "search_cost.md").read_text()


@pytest.mark.recipe
def test_glp_rerun_resumes_from_completed_steps(glp_run):
    log = glp_run["rerun"].stdout
    assert re.search(r"Greedy step 1/2: .*step01/step.json is current; skipping", log)
    assert re.search(r"Greedy step 2/2: .*step02/step.json is current; skipping", log)
    assert "Decoding" not in log
    assert read_json(glp_run["tag"] / "proposals.json")["proposals"][0]["pruned"] == \
        read_json(glp_run["tag"] / "glp" / "step02" / "step.json")["removed"]


@pytest.mark.recipe
def test_fine_tuning_and_test_decoding_after_glp(glp_run):
    tag = glp_run["tag"]
    with open(tag / "finetune" / "config.yaml", encoding="utf-8") as f:
        assert yaml.safe_load(f)["encoder_conf"]["num_blocks"] == 10
    assert (tag / "finetune" / MODEL).is_file()
    for dset in ("org/train_dev", "test"):
        hyp = tag / "test_decode" / INFERENCE_TAG / dset / "hyp"
        assert sorted(p.name for p in hyp.iterdir() if p.is_dir()) == ["finetuned", "original", "pruned"]
    results = (tag / "RESULTS.md").read_text()
    assert f"<!-- comflp:begin {GLP_TAG} -->" in results and "method glp" in results


@pytest.mark.recipe
def test_search_cost_of_the_comflp_run(mini_an4_run):
    cost = read_json(mini_an4_run["dir"] / ASR_EXP / "comflp" / TAG / "search_cost.json")
    # The default 30 candidates scored by the proxy, 3 finalists decoded.
    assert cost["method"] == "dp" and cost["search_decodes"] == 3 and cost["proxy_evaluations"] == 30
    assert cost["reference_decodes"] == 1 and cost["fine_set_utts"] == 1
    parts = ("states", "matrix", "coarse_search", "proxy", "materialize", "fine_decode", "fine_overhead", "scoring")
    assert cost["counted"] == list(parts) and cost["not_recorded"] == []
    assert all(cost["seconds"][p] > 0 for p in parts)
    # The unpruned model decoded beside the finalists is not part of the search.
    assert cost["reference_decode_seconds"] > 0
    assert cost["search_seconds"] == pytest.approx(sum(cost["seconds"][p] for p in parts), abs=0.01)
