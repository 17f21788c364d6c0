import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from comflp_espnet.bin import comflp_score

REF = {"s1-a": "AB CD", "s1-b": "EF GH", "s2-c": "IJ KL"}


def write_text(path: Path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {v}\n" for k, v in texts.items()))


def setup_case(tmp_path, hyps, scores, decode_times=None, params=None):
    """ref data dir, decoded hyps per model, proposals and candidate dirs."""
    data = tmp_path / "data"
    write_text(data / "text", REF)
    write_text(data / "utt2spk", {k: k.split("-")[0] for k in REF})
    hyp_dir = tmp_path / "decode"
    for name, texts in hyps.items():
        write_text(hyp_dir / name / "text", texts)
        if decode_times and name in decode_times:
            (hyp_dir / name / "decode_time").write_text(decode_times[name])
    proposals = {
        "num_layers": 6, "num_prune": 2, "method": "dp", "topk": len(scores),
        "constraints": {}, "corr": "c.npy",
        "proposals": [
            {"rank": i + 1, "pruned": [i + 1, i + 2], "kept": [], "runs": [[i + 1, i + 2]],
             "score": s}
            for i, s in enumerate(scores)
        ],
    }
    prop_path = tmp_path / "proposals.json"
    prop_path.write_text(json.dumps(proposals))
    cands = tmp_path / "candidates"
    for i in range(len(scores)):
        d = cands / f"cand{i + 1:02d}"
        d.mkdir(parents=True)
        record = {"pruned_encoder_layers": [i + 1, i + 2], "params_before": 1_000_000,
                  "params_after": (params or {}).get(d.name, 800_000)}
        (d / "prune.yaml").write_text(yaml.safe_dump(record))
    return data, hyp_dir, prop_path, cands


def run_score(tmp_path, data, hyp_dir, prop_path=None, cands=None, extra=()):
    out = tmp_path / "scores"
    cmd = ["--ref", str(data / "text"), "--hyp_dir", str(hyp_dir), "--output_dir", str(out)]
    if prop_path:
        cmd += ["--proposals", str(prop_path), "--candidates_dir", str(cands)]
    comflp_score.main(cmd + list(extra))
    return out


def test_lowest_error_wins_and_original_is_listed_but_excluded(tmp_path):
    hyps = {
        "original": dict(REF),  # perfect, but it is the reference model
        "cand01": {"s1-a": "AB CX", "s1-b": "EF GH", "s2-c": "IJ KX"},  # 2 char errors
        "cand02": {"s1-a": "AB CD", "s1-b": "EF GH", "s2-c": "IJ KX"},  # 1 char error
    }
    data, hyp_dir, props, cands = setup_case(
        tmp_path, hyps, scores=[0.9, 0.5],
        decode_times={"cand02": "1.5\n2.0\n"}, params={"cand02": 750_000},
    )
    out = run_score(tmp_path, data, hyp_dir, props, cands, ["--token_type", "char"])
    assert (out / "winner").read_text() == "cand02\n"
    ranking = json.loads((out / "ranking.json").read_text())
    assert [r["name"] for r in ranking["ranking"]] == ["cand02", "cand01"]
    assert ranking["original"]["name"] == "original"
    assert ranking["original"]["params"] == 1_000_000
    best = ranking["ranking"][0]
    assert best["decode_time"] == pytest.approx(3.5)  # two JOB lines summed
    assert best["params"] == 750_000
    assert best["pruned"] == [2, 3]
    assert best["cer"] == pytest.approx(100 / 15)
    md = (out / "ranking.md").read_text()
    assert "|-|original (unpruned)|" in md
    assert "|1|cand02|2,3|2|0.5000|6.7|16.7|0.75|3.5|" in md


def test_ties_go_to_higher_coarse_score_then_rank(tmp_path):
    same = {"s1-a": "AB CX", "s1-b": "EF GH", "s2-c": "IJ KL"}
    hyps = {"cand01": same, "cand02": same, "cand03": same}
    data, hyp_dir, props, cands = setup_case(tmp_path, hyps, scores=[0.4, 0.8, 0.8])
    out = run_score(tmp_path, data, hyp_dir, props, cands, ["--metric", "cer"])
    ranking = json.loads((out / "ranking.json").read_text())
    # cand02 and cand03 share the best coarse score; the lower rank wins.
    assert [r["name"] for r in ranking["ranking"]] == ["cand02", "cand03", "cand01"]
    assert (out / "winner").read_text().strip() == "cand02"


def test_metric_follows_token_type(tmp_path):
    hyps = {
        "cand01": {"s1-a": "AB CX", "s1-b": "EF GH", "s2-c": "IJ KL"},  # CER 1/15, WER 1/6
        "cand02": {"s1-a": "AB CD", "s1-b": "EF GH", "s2-c": "XY KL"},  # CER 2/15, WER 1/6
    }
    data, hyp_dir, props, cands = setup_case(tmp_path, hyps, scores=[0.1, 0.9])
    out = run_score(tmp_path, data, hyp_dir, props, cands, ["--token_type", "char"])
    assert (out / "winner").read_text().strip() == "cand01"
    out = run_score(tmp_path, data, hyp_dir, props, cands, ["--token_type", "bpe"])
    # WER tie -> higher coarse score (cand02).
    assert (out / "winner").read_text().strip() == "cand02"
    assert json.loads((out / "scores.json").read_text())["metric"] == "wer"


def test_missing_hypotheses_are_scored_as_deletions_with_warning(tmp_path, caplog):
    hyps = {"cand01": {"s1-a": "AB CD"}}  # two utterances not decoded
    data, hyp_dir, props, cands = setup_case(tmp_path, hyps, scores=[0.5])
    with caplog.at_level(logging.WARNING):
        out = run_score(tmp_path, data, hyp_dir, extra=["--metric", "cer"])
    assert "2 of 3 reference utterance(s) have no hypothesis" in caplog.text
    summary = json.loads((out / "scores.json").read_text())
    model = summary["models"]["cand01"]
    assert model["missing_hyps"] == ["s1-b", "s2-c"]
    assert model["cer"]["del"] == 10 and model["cer"]["num_ref"] == 15
    result = (out / "cand01" / "result.txt").read_text()
    assert "|Sum/Avg|3|15|33.3|0.0|66.7|0.0|66.7|66.7|" in result
    assert "|s2|1|5|0.0|0.0|100.0|0.0|100.0|100.0|" in result
    assert (out / "cand01" / "score_wer" / "result.txt").is_file()
    scores_md = (out / "scores.md").read_text()
    assert "### CER" in scores_md and "### WER" in scores_md
    assert "|cand01|3|15|33.3|0.0|66.7|0.0|66.7|66.7|" in scores_md


def test_candidate_without_decoding_is_an_error(tmp_path):
    hyps = {"cand01": dict(REF)}
    data, hyp_dir, props, cands = setup_case(tmp_path, hyps, scores=[0.5, 0.4])
    with pytest.raises(SystemExit, match="no decoding for candidate.*cand02"):
        run_score(tmp_path, data, hyp_dir, props, cands, ["--metric", "cer"])
    assert not (tmp_path / "scores").exists()


def test_auto_metric_needs_token_type(tmp_path):
    data, hyp_dir, _, _ = setup_case(tmp_path, {"m": dict(REF)}, scores=[0.5])
    with pytest.raises(SystemExit, match="--token_type"):
        run_score(tmp_path, data, hyp_dir)


def test_rescoring_replaces_previous_outputs(tmp_path):
    data, hyp_dir, props, cands = setup_case(
        tmp_path, {"cand01": dict(REF), "old": dict(REF)}, scores=[0.5]
    )
    out = run_score(tmp_path, data, hyp_dir, extra=["--metric", "wer"])
    assert (out / "old" / "result.txt").is_file()
    shutil.rmtree(hyp_dir / "old")
    out = run_score(tmp_path, data, hyp_dir, extra=["--metric", "wer"])
    assert not (out / "old").exists()
    assert not (out / "winner").exists()


@pytest.mark.parametrize("damage, message", [
    ("no_proposals", "non-empty 'proposals' list"),
    ("bad_prune_yaml", "cand01/prune.yaml does not parse as YAML"),
])
def test_damaged_search_outputs_are_named_and_nothing_is_written(tmp_path, damage, message):
    data, hyp_dir, props, cands = setup_case(tmp_path, {"cand01": dict(REF)}, scores=[0.5])
    if damage == "no_proposals":
        props.write_text(json.dumps({"proposals": []}))
    else:
        (cands / "cand01" / "prune.yaml").write_text("a: [1,\n")
    with pytest.raises(SystemExit, match=message):
        run_score(tmp_path, data, hyp_dir, props, cands, ["--metric", "cer"])
    assert not (tmp_path / "scores").exists()
