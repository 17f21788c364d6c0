"""The whole mini_an4 recipe, stages 1-20, without an ESPnet checkout (CPU, a few minutes).

The recipe runs once in a temporary copy of egs2/mini_an4/asr1_comflp; the tests
then check what a user gets from it, and a second run that must skip every
finished stage.  Deselect with ``-m "not recipe"``.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.register_assert_rewrite("mini_an4_recipe")
from mini_an4_recipe import ASR_EXP, INFERENCE_TAG, MODEL, TAG, run_recipe

pytest_plugins = ["mini_an4_recipe"]
pytestmark = pytest.mark.recipe


def watched_files(d):
    """Outputs whose modification times must not change on a rerun."""
    exp = d / ASR_EXP
    tag = exp / "comflp" / TAG
    files = [
        d / "data/train_nodev/wav.scp",
        d / "dump/raw/train_nodev/utt2num_samples",
        d / "data/en_token_list/char/tokens.txt",
        exp / MODEL,
        exp / "comflp/states/states.scp",
        exp / "comflp/corr/dc.npy",
        tag / "proposals.json",
        tag / "fine_search/fine_search.json",
        tag / "winner" / MODEL,
        d / fine_search(d)["original"]["hyp"] / "text",
        tag / "scores/winner",
        tag / "search_cost.json",
        tag / "finetune" / MODEL,
    ]
    for dset in ("org/train_dev", "test"):
        files.append(tag / "test_decode" / INFERENCE_TAG / dset / "score/scores.json")
    return files


@pytest.fixture(scope="module")
def recipe_run(mini_an4_run):
    """The shared first run, and a second run of it that must skip what is done."""
    d = mini_an4_run["dir"]
    mtimes = {f: f.stat().st_mtime_ns for f in watched_files(d)}
    second, second_seconds = run_recipe(d, mini_an4_run["tarball"], "--comflp_pack", "true")
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-6000:]
    first_seconds = mini_an4_run["seconds"]
    print(f"\nmini_an4 recipe: first run {first_seconds:.0f} s, second run {second_seconds:.0f} s")
    return {"dir": d, "first": mini_an4_run["result"], "second": second, "mtimes": mtimes,
            "second_seconds": second_seconds, "first_seconds": first_seconds}


def fine_search(d):
    return json.loads((d / ASR_EXP / "comflp" / TAG / "fine_search/fine_search.json").read_text())


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def test_stages_logged_once_each(recipe_run):
    log = recipe_run["first"].stdout
    for n in list(range(1, 6)) + list(range(10, 22)):
        # e.g. "(asr_comflp.sh:700:main) Stage 14: Dump ..." or "Skip stage 2: Speed perturbation"
        assert re.search(rf"\) (Stage|Skip stage) {n}: ", log), f"no 'Stage {n}:' line"


def test_jobs_that_load_the_model_run_with_python_opts(recipe_run):
    # --comflp_python_opts defaults to -O: ESPnet's run-time type checks are off in the jobs.
    comflp_dir = recipe_run["dir"] / ASR_EXP / "comflp"
    logs = {"comflp_dump": sorted(comflp_dir.glob("states/logdir/dump.*.log")),
            "comflp_proxy": sorted(comflp_dir.glob("fine_evals/*/logdir/proxy.*.log")),
            "comflp_decode": sorted(comflp_dir.glob("fine_evals/*/logdir/decode.*.log"))}
    for entry, paths in logs.items():
        assert paths, f"no log of {entry}"
        for path in paths:
            command = path.read_text().splitlines()[0]
            assert re.match(rf"# \S*python3? -O -m comflp_espnet\.bin\.{entry} ", command), command


def test_correlation_matrix_and_heatmap(recipe_run):
    corr_dir = recipe_run["dir"] / ASR_EXP / "comflp" / "corr"
    corr = np.load(corr_dir / "dc.npy")
    assert corr.shape == (13, 13)  # h_0 .. h_12 of the 12-block encoder
    assert np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0)
    assert (corr_dir / "dc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_candidates_differ_from_original_only_in_depth(recipe_run):
    d = recipe_run["dir"]
    original = load_yaml(d / ASR_EXP / "config.yaml")
    tag = d / ASR_EXP / "comflp" / TAG
    proposals = load_yaml(tag / "proposals.json")["proposals"]
    assert len(proposals) == 30  # the default --comflp_topk
    # The 3 finalists (the best by the proxy) are the only candidates written as ESPnet models.
    finalists = fine_search(d)["finalists"]
    assert len(finalists) == 3
    assert sorted(p.name for p in (tag / "candidates").iterdir() if p.is_dir()) == sorted(finalists)
    for rank, prop in enumerate(proposals, 1):
        assert len(prop["pruned"]) == 4 and set(prop["pruned"]) <= set(range(1, 13))
        if f"cand{rank:02d}" not in finalists:
            continue
        cand = tag / "candidates" / f"cand{rank:02d}"
        config = load_yaml(cand / "config.yaml")
        before, after = flatten(original), flatten(config)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert changed == {"encoder_conf.num_blocks"}, changed
        assert config["encoder_conf"]["num_blocks"] == 8
        assert (cand / MODEL).stat().st_size > 0
        record = load_yaml(cand / "prune.yaml")
        assert record["pruned_encoder_layers"] == sorted(prop["pruned"])
        assert record["num_encoder_layers_before"] == 12 and record["num_encoder_layers_after"] == 8


def test_every_candidate_was_decoded_and_scored(recipe_run):
    d = recipe_run["dir"]
    tag = d / ASR_EXP / "comflp" / TAG
    keys = {line.split()[0] for line in (d / "dump/raw/train_dev/wav.scp").read_text().splitlines()}
    doc = fine_search(d)
    assert doc["proxy"] == "loss" and doc["metric"] == "loss" and len(doc["candidates"]) == 30
    # Every candidate scored by the default proxy (its teacher-forced loss on the fine-search set) ...
    for c in doc["candidates"]:
        assert c["proxy"]["value"] > 0 and c["proxy"]["num_tokens"] > 0
        lines = (d / doc["proxy_dir"] / c["key"] / "loss").read_text().splitlines()
        assert {line.split()[0] for line in lines} == keys and c["proxy"]["num_utts"] == len(keys)
    # ... the 3 best by it (ties: the coarse rank) are the finalists, best first ...
    by_proxy = sorted(doc["candidates"], key=lambda c: (c["proxy"]["value"], c["rank"]))
    assert doc["finalists"] == [c["name"] for c in by_proxy[:3]]
    assert [c["proxy_rank"] for c in by_proxy] == list(range(1, 31))
    # ... and the finalists and the original decoded with the inference config.
    finalists = [c for c in doc["candidates"] if c["finalist"]]
    assert sorted(c["name"] for c in finalists) == sorted(doc["finalists"])
    for hyp in [doc["original"]["hyp"]] + [c["hyp"] for c in finalists]:
        text = d / hyp / "text"
        assert {line.split(maxsplit=1)[0] for line in text.read_text().splitlines()} == keys
    scores = (tag / "scores/scores.md").read_text()
    assert "### CER" in scores and "### WER" in scores
    assert "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|" in scores
    for name in doc["finalists"]:
        assert re.search(rf"^\|{name}\|", scores, re.M)
    winner = (tag / "scores/winner").read_text().strip()
    assert winner in doc["finalists"]
    assert (tag / "winner").resolve() == (tag / "candidates" / winner).resolve()
    assert winner in (tag / "scores/ranking.md").read_text()


def test_winner_loads_in_stock_speech2text(recipe_run, monkeypatch):
    from espnet2.bin.asr_inference import Speech2Text
    import soundfile

    d = recipe_run["dir"]
    monkeypatch.chdir(d)  # the configs hold paths relative to the recipe dir, as asr.sh writes them
    winner = Path(ASR_EXP) / "comflp" / TAG / "winner"
    s2t = Speech2Text(asr_train_config=str(winner / "config.yaml"),
                      asr_model_file=str(winner / MODEL), beam_size=2, device="cpu")
    assert len(s2t.asr_model.encoder.encoders) == 8
    for line in (d / "dump/raw/test/wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        speech, _ = soundfile.read(path, dtype="float32")
        results = s2t(speech)
        assert results and isinstance(results[0][0], str)


def test_packed_model_unpacks_and_loads(recipe_run, tmp_path):
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.main_funcs.pack_funcs import unpack

    tag = recipe_run["dir"] / ASR_EXP / "comflp" / TAG
    (packed,) = tag.glob("*_finetuned_valid.acc.ave.zip")
    files = unpack(str(packed), str(tmp_path))
    s2t = Speech2Text(**files, device="cpu")
    assert len(s2t.asr_model.encoder.encoders) == 8


def test_finetuned_model_keeps_the_pruned_depth(recipe_run):
    ft = recipe_run["dir"] / ASR_EXP / "comflp" / TAG / "finetune"
    assert load_yaml(ft / "config.yaml")["encoder_conf"]["num_blocks"] == 8
    assert "--init_param" in (ft / "train.log").read_text()
    assert (ft / MODEL).exists()


def test_test_sets_decoded_with_all_models_and_results_written(recipe_run):
    d = recipe_run["dir"]
    tag = d / ASR_EXP / "comflp" / TAG
    for dset in ("org/train_dev", "test"):
        out = tag / "test_decode" / INFERENCE_TAG / dset
        for name in ("original", "pruned", "finetuned"):
            assert (out / "hyp" / name / "text").read_text().strip()
        assert (out / "score" / "scores.json").exists()
    results = (tag / "RESULTS.md").read_text()
    assert f"<!-- comflp:begin {TAG} -->" in results and f"<!-- comflp:end {TAG} -->" in results
    assert "### CER" in results and "### WER" in results
    for row in ("original", "pruned", "finetuned"):
        assert re.search(rf"^\|[^|\n]*{row}[^|\n]*\|", results, re.M), row
    assert re.search(r"^\|[^|\n]*test[^|\n]*\|\d+\|", results, re.M)
    asr_results = (d / ASR_EXP / "RESULTS.md").read_text()
    assert asr_results.startswith("<!--") and "# RESULTS" in asr_results
    assert f"<!-- comflp:begin {TAG} -->" in asr_results
    assert asr_results.count(f"<!-- comflp:begin {TAG} -->") == 1  # rerun replaced, not appended


def test_second_run_skips_finished_stages(recipe_run):
    log = recipe_run["second"].stdout
    for f, mtime in recipe_run["mtimes"].items():
        assert f.stat().st_mtime_ns == mtime, f"{f} was rewritten by the second run"
    assert "already prepared; skipping" in log
    for n in (5, 10, 11, 14, 15, 16, 17, 18, 19, 21):
        assert re.search(rf"Stage {n}: .*skipping", log), f"stage {n} did not skip"
    assert "score is current; skipping" in log
    assert "Decoding started" not in log and "training started" not in log
    assert recipe_run["second_seconds"] < recipe_run["first_seconds"] / 2
