"""The fine search through the stage script (asr_comflp.sh stages 14-18) on a tiny ESPnet model
(4-block Transformer, random weights; the demo recipe of test_faults.py). The runs ask for the
``ctc_greedy`` proxy, whose cache entries are Kaldi texts (the default, ``loss``, is checked end to end by
test_recipe_mini_an4.py):

| case | command | expected outcome |
|---|---|---|
| several depths | `--comflp_num_prune "1 2" --comflp_topk 3 --comflp_fine_finalists 2` | one state dump, one matrix, one proxy array and one decode array for both searches; each search's finalists are its 2 best by proxy, the only candidates written; the unpruned model decoded once for both; the winner is a finalist |
| a depth alone after them | `--comflp_num_prune 2` | every stage current: nothing is scored, written or decoded |
| a lost proxy score | one cache entry removed; stages 17-18 | that candidate alone is scored again; nothing decoded |
| a tampered proxy hypothesis | a cache entry's text edited; `--stage 18` alone, then `--stage 17 --stop_stage 18` | stage 18 stops naming the entry and stage 17; stage 17 scores that candidate alone again, same winner |
| another proxy option | `--comflp_proxy_batch_size 1` | a new proxy directory with every candidate scored again; finalists already written or decoded are not redone |
| glp by the proxy | `--comflp_search glp --comflp_glp_metric ctc_greedy` | each step scored by the proxy (no model written), the best removed; pruned sets already scored are reused; its result decoded as the one finalist |
| --comflp_fine_proxy none | `--comflp_fine_proxy none --comflp_topk 3` | every candidate a finalist, decoded; no proxy |
| no CTC branch | a model with ctc_weight 0, `--comflp_fine_proxy ctc_greedy` | ctc_greedy falls back to loss, with a log line |

Marked ``recipe``: it runs the stage script several times (minutes).
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from comflp_espnet import records
from comflp_espnet.rundir import RunDir
from conftest import make_tiny_asr_exp
from test_faults import make_recipe, ok, run

pytestmark = pytest.mark.recipe

PROXY = ["--comflp_fine_proxy", "ctc_greedy"]
DEPTHS = ["--comflp_num_prune", "1 2", "--comflp_topk", "3", "--comflp_fine_finalists", "2", "--nj", "2",
          "--inference_nj", "2", *PROXY]
TAGS = ("dc_dp_prune1", "dc_dp_prune2")


def comflp(d: Path) -> RunDir:
    return RunDir(d / "exp" / "m" / "comflp")


def read_json(path):
    return json.loads(Path(path).read_text())


def proxy_dirs(d: Path):
    return sorted(p for p in comflp(d).fine_evals.iterdir() if p.name.startswith("ctc_greedy_"))


def decode_dir(d: Path) -> Path:
    (only,) = [p for p in comflp(d).fine_evals.iterdir() if p.name.startswith("decode_")]
    return only


def mtimes(*paths):
    return {p: p.stat().st_mtime_ns for p in paths}


@pytest.fixture(scope="module")
def depths_run(tmp_path_factory):
    d = make_recipe(tmp_path_factory.mktemp("fine"))
    first = ok(run(d, "--stage", "14", "--stop_stage", "18", *DEPTHS))
    return {"dir": d, "first": first, "tmp": tmp_path_factory}


def copy_of(depths_run, name):
    base = depths_run["dir"]
    dst = depths_run["tmp"].mktemp(name) / "recipe"
    shutil.copytree(base.parents[2], dst, symlinks=True)
    return dst / "egs2" / "demo" / "asr1_comflp"


def test_several_depths_share_states_matrix_proxy_and_the_original_decode(depths_run):
    d, log = depths_run["dir"], depths_run["first"].stdout + depths_run["first"].stderr
    rd = comflp(d)
    assert log.count("State dumping started") == 1 and log.count("Stage 15: Correlation") == 1
    # One proxy array for both searches' candidates (3 + 3), one decode array for both searches'
    # finalists (2 + 2) and the unpruned model.
    assert len(re.findall(r"Proxy \(ctc_greedy\): 6 candidate\(s\)", log)) == 1
    assert len(re.findall(r"Decoding 5 model\(s\)", log)) == 1
    (proxy,) = proxy_dirs(d)
    dd = decode_dir(d)
    assert sorted(p.name for p in (dd / "hyp").iterdir() if p.is_dir()) == sorted(
        {"original"} | {x["key"] for t in TAGS for x in read_json(rd.tag(t).fine_search_json)["candidates"]
                        if x["finalist"]})
    for tag in TAGS:
        t = rd.tag(tag)
        doc = read_json(t.fine_search_json)
        assert doc["proxy"] == "ctc_greedy" and doc["metric"] == "cer" and len(doc["candidates"]) == 3
        # The finalists are the 2 best by proxy (ties: the coarse rank) ...
        by_proxy = sorted(doc["candidates"], key=lambda c: (c["proxy"]["num_err"], c["rank"]))
        assert doc["finalists"] == [c["name"] for c in by_proxy[:2]]
        assert [c["proxy_rank"] for c in by_proxy] == [1, 2, 3]
        # ... and the only candidates written as ESPnet models.
        assert sorted(p.name for p in t.candidates.iterdir() if p.is_dir()) == sorted(doc["finalists"])
        for item in doc["candidates"]:
            assert (proxy / item["key"] / "text").is_file()
            assert records.read_record(proxy / item["key"]).made_from["options"]["pruned"] == item["pruned"]
        # The unpruned model's decode is the same entry for both searches.
        assert doc["original"]["hyp"].endswith(f"{dd.name}/hyp/original")
        ranking = read_json(t.ranking_json)
        assert ranking["winner"] in doc["finalists"]
        assert all(r["proxy"] is not None for r in ranking["ranking"])
        assert [r["finalist"] for r in ranking["ranking"]] == [True, True, False]
        cost = read_json(t.search_cost_json)
        assert cost["proxy_evaluations"] == 3 and cost["search_decodes"] == 2
        assert cost["seconds"]["proxy"] > 0 and cost["seconds"]["fine_decode"] > 0
        assert cost["search_seconds"] > 0 and cost["not_recorded"] == []
        assert (t.winner_link / "config.yaml").is_file()


def test_a_depth_alone_after_a_run_of_several_does_nothing(depths_run):
    d = depths_run["dir"]
    t = comflp(d).tag("dc_dp_prune2")
    watched = mtimes(t.fine_search_json, t.scores / "winner", decode_dir(d) / "hyp" / "original" / "text")
    r = ok(run(d, "--stage", "14", "--stop_stage", "18", "--comflp_num_prune", "2", "--comflp_topk", "3",
               "--comflp_fine_finalists", "2", *PROXY))
    for n in (14, 15, 16, 17, 18):
        assert re.search(rf"Stage {n}: .*current; skipping", r.stdout), n
    assert "Proxy (" not in r.stdout and "Decoding" not in r.stdout
    assert mtimes(*watched) == watched


def test_a_lost_proxy_score_is_the_only_one_made_again(depths_run):
    d = copy_of(depths_run, "lost")
    (proxy,) = proxy_dirs(d)
    doc = read_json(comflp(d).tag("dc_dp_prune1").fine_search_json)
    lost = doc["candidates"][2]["key"]
    shutil.rmtree(proxy / lost)
    r = ok(run(d, "--stage", "17", "--stop_stage", "18", *DEPTHS))
    assert "Proxy (ctc_greedy): 1 candidate(s)" in r.stdout
    assert "Decoding" not in r.stdout
    assert read_json(comflp(d).tag("dc_dp_prune1").fine_search_json)["finalists"] == doc["finalists"]


def test_a_tampered_proxy_hypothesis_is_detected_and_scored_again(depths_run):
    d = copy_of(depths_run, "tampered")
    (proxy,) = proxy_dirs(d)
    t = comflp(d).tag("dc_dp_prune2")
    doc = read_json(t.fine_search_json)
    key = doc["candidates"][0]["key"]
    text = proxy / key / "text"
    original_text = text.read_text()
    text.write_text(original_text.replace(" ", " X", 1) + "extra utt\n")
    r = run(d, "--stage", "18", "--stop_stage", "18", *DEPTHS)
    assert r.returncode != 0
    message = r.stderr.strip().splitlines()[-1]
    assert f"{key}/text" in message and "changed or damaged" in message and "--stage 17" in message
    r = ok(run(d, "--stage", "17", "--stop_stage", "18", *DEPTHS))
    assert "Proxy (ctc_greedy): 1 candidate(s)" in r.stdout and "Decoding" not in r.stdout
    assert text.read_text() == original_text
    assert read_json(t.ranking_json)["winner"] == read_json(
        comflp(depths_run["dir"]).tag("dc_dp_prune2").ranking_json)["winner"]


def test_another_proxy_option_redoes_only_what_depends_on_it(depths_run):
    d = copy_of(depths_run, "option")
    c = comflp(d)
    before = {tag: read_json(c.tag(tag).fine_search_json)["finalists"] for tag in TAGS}
    written = {tag: {n: (c.tag(tag).candidate(n) / "valid.acc.ave.pth").stat().st_mtime_ns for n in f}
               for tag, f in before.items()}
    decoded = {p.name: (p / "text").stat().st_mtime_ns for p in (decode_dir(d) / "hyp").iterdir() if p.is_dir()}
    r = ok(run(d, "--stage", "14", "--stop_stage", "18", *DEPTHS, "--comflp_proxy_batch_size", "1"))
    assert re.search(r"Stage 16: .*current; skipping", r.stdout)
    assert "Proxy (ctc_greedy): 6 candidate(s)" in r.stdout  # a new way of scoring: all again
    assert len(proxy_dirs(d)) == 2
    new = set()
    for tag in TAGS:
        after = read_json(c.tag(tag).fine_search_json)["finalists"]
        for name in set(after) & set(before[tag]):
            assert (c.tag(tag).candidate(name) / "valid.acc.ave.pth").stat().st_mtime_ns == written[tag][name]
        new |= {x["key"] for x in read_json(c.tag(tag).fine_search_json)["candidates"]
                if x["finalist"]} - set(decoded)
    # Only finalists never decoded before are decoded; the others' decodes are untouched.
    if new:
        assert f"Decoding {len(new)} model(s)" in r.stdout
    else:
        assert "Decoding" not in r.stdout
    for name, mtime in decoded.items():
        assert (decode_dir(d) / "hyp" / name / "text").stat().st_mtime_ns == mtime


def test_glp_by_the_proxy_scores_steps_without_writing_models(depths_run):
    d = copy_of(depths_run, "glp")
    r = ok(run(d, "--stage", "16", "--stop_stage", "18", "--comflp_search", "glp", "--comflp_glp_metric",
               "ctc_greedy", "--comflp_num_prune", "2", *PROXY))
    t = comflp(d).tag("dc_glp_prune2")
    (proxy,) = proxy_dirs(d)
    # Step 1 tries the 4 single layers, 3 of which the depth-1 search had scored already.
    assert "Proxy (ctc_greedy): 1 candidate(s)" in r.stdout
    removed = []
    for step, num in ((1, 4), (2, 3)):
        step_dir = t.glp_step(step)
        record = read_json(step_dir / "step.json")
        values = read_json(step_dir / "proxy.json")
        assert len(values) == num and record["num_proxy"] == num and record["num_decodes"] == 0
        props = read_json(step_dir / "proposals.json")["proposals"]
        layer_of = {f"cand{p['rank']:02d}": p["layer"] for p in props}
        best = min(values, key=lambda n: (values[n]["num_err"], layer_of[n]))
        assert record["chosen_layer"] == layer_of[best]
        assert not (step_dir / "candidates").exists() and not (step_dir / "decode").exists()
        removed.append(record["chosen_layer"])
    doc = read_json(t.fine_search_json)
    assert doc["finalists"] == ["cand01"] and doc["candidates"][0]["pruned"] == sorted(removed)
    assert doc["proxy"] == "none"  # one candidate: a finalist without scoring
    cost = read_json(t.search_cost_json)
    assert cost["proxy_evaluations"] == 7 and cost["search_decodes"] == 0 and cost["counted"] == ["greedy_loop"]


def test_without_proxy_every_candidate_is_decoded(depths_run):
    d = copy_of(depths_run, "none")
    r = ok(run(d, "--stage", "16", "--stop_stage", "18", "--comflp_fine_proxy", "none", "--comflp_topk", "3",
               "--comflp_tag", "full"))
    t = comflp(d).tag("full")
    doc = read_json(t.fine_search_json)
    assert doc["proxy"] == "none" and doc["finalists"] == ["cand01", "cand02", "cand03"]
    assert all(c["proxy"] is None for c in doc["candidates"])
    assert "Proxy (" not in r.stdout
    cost = read_json(t.search_cost_json)
    assert cost["search_decodes"] == 3 and cost["proxy_evaluations"] == 0
    assert "proxy CER" not in (t.scores / "ranking.md").read_text()


def test_a_model_without_ctc_is_scored_by_its_loss(depths_run, tmp_path):
    d = copy_of(depths_run, "noctc")
    make_tiny_asr_exp(d / "exp" / "nc", num_blocks=4, decoder_blocks=1, model_conf={"ctc_weight": 0.0})
    (d / "conf" / "decode_nc.yaml").write_text("beam_size: 2\nctc_weight: 0.0\nmaxlenratio: -3\n")
    r = ok(run(d, "--stage", "14", "--stop_stage", "18", "--asr_exp", "exp/nc", "--comflp_topk", "3",
               "--comflp_fine_finalists", "1", "--inference_config", "conf/decode_nc.yaml", *PROXY))
    assert "no CTC branch" in r.stderr and "loss" in r.stderr
    c = RunDir(d / "exp" / "nc" / "comflp")
    doc = read_json(c.tag("dc_dp_prune2").fine_search_json)
    assert doc["proxy"] == "loss" and doc["metric"] == "loss" and doc["proxy_requested"] == "ctc_greedy"
    assert all(x["proxy"]["value"] > 0 and x["proxy"]["num_tokens"] > 0 for x in doc["candidates"])
    assert [p.name.split("_")[0] for p in c.fine_evals.iterdir()
            if p.is_dir() and not p.name.startswith("decode_") and p.name != "logdir"] == ["loss"]
    assert "proxy loss/token" in (c.tag("dc_dp_prune2").scores / "ranking.md").read_text()
