"""comflp_espnet.run_summary and comflp_summary on search directories written here, in the layout
and file formats stage 16-20 outputs have (copied from a finished mini_an4_synth run, shortened)."""

import json
import os
import time

import pytest
import yaml

from comflp_espnet.bin import comflp_summary
from comflp_espnet.run_summary import SummaryError, summarize, summary_line, summary_lines

EXP = "exp/asr_train_asr_transformer_12_raw_en_char"
INFERENCE_TAG = "decode_asr_asr_model_valid.acc.ave"


def counts(num_ref, num_err, num_snt=100):
    return {"num_snt": num_snt, "num_ref": num_ref, "corr": num_ref - num_err, "sub": num_err // 2,
            "del": num_err - num_err // 2, "ins": 0, "num_err": num_err, "num_snt_err": min(num_snt, num_err),
            "error_rate": 100.0 * num_err / num_ref}


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_proposals(tag):
    write_json(tag / "proposals.json", {
        "num_layers": 12, "num_prune": 6, "method": "dp", "topk": 30,
        "constraints": {"keep_first": False, "keep_last": False, "max_run": None, "protect": []},
        "options": {"beam_size": 10, "aggregate": "mean", "seed": 0},
        "corr": f"{EXP}/comflp/corr/dc.npy",
        "proposals": [
            {"rank": 1, "pruned": [3, 5, 7, 9, 11, 12], "kept": [1, 2, 4, 6, 8, 10], "score": 0.9896},
            {"rank": 2, "pruned": [1, 3, 5, 7, 10, 12], "kept": [2, 4, 6, 8, 9, 11], "score": 0.9894},
            {"rank": 3, "pruned": [1, 4, 6, 7, 10, 12], "kept": [2, 3, 5, 8, 9, 11], "score": 0.9878},
        ],
    })


def write_ranking(tag, winner="cand03"):
    def row(name, rank, pruned, cer, fine_rank):
        return {"name": name, "is_original": False, "finalist": True, "coarse_rank": rank, "coarse_score": 0.98,
                "pruned": pruned, "proxy": 20.7, "proxy_rank": rank, "cer": cer, "wer": 3 * cer,
                "num_err": int(cer * 10), "params": 513980, "decode_time": 35.8, "num_utts": 50.0,
                "missing_hyps": 0, "fine_rank": fine_rank}
    write_json(tag / "scores" / "ranking.json", {
        "metric": "cer", "winner": winner,
        "ranking": [row("cand03", 3, [1, 4, 6, 7, 10, 12], 7.1, 1), row("cand01", 1, [3, 5, 7, 9, 11, 12], 7.5, 2)],
        "original": {"name": "original", "is_original": True, "pruned": [], "cer": 4.2, "wer": 13.8,
                     "params": 813884, "decode_time": 31.5, "num_utts": 50.0},
        "proxy": "ctc_greedy", "proxy_metric": "cer", "num_finalists": 2, "finalists": ["cand01", "cand03"],
        "measures": [],
    })
    (tag / "scores" / "winner").write_text(winner + "\n")


def write_candidate(tag, name="cand03", pruned=(1, 4, 6, 7, 10, 12)):
    cand = tag / "candidates" / name
    cand.mkdir(parents=True)
    (cand / "config.yaml").write_text("encoder: transformer\nencoder_conf:\n    num_blocks: 6\n")
    (cand / "valid.acc.ave.pth").write_bytes(b"\0" * 16)
    kept = [x for x in range(1, 13) if x not in pruned]
    (cand / "prune.yaml").write_text(yaml.safe_dump({
        "original_config": f"{EXP}/config.yaml", "original_model": f"{EXP}/valid.acc.ave.pth",
        "encoder": "transformer", "decoder": "transformer",
        "num_encoder_layers_before": 12, "num_encoder_layers_after": len(kept),
        "pruned_encoder_layers": list(pruned), "kept_encoder_layers": kept,
        "num_decoder_layers_before": 2, "num_decoder_layers_after": 2,
        "pruned_decoder_layers": [], "kept_decoder_layers": [1, 2],
        "params_before": 813884, "params_after": 513980,
        "config_changes": [f"encoder_conf.num_blocks: 12 -> {len(kept)}"], "warnings": [],
    }, sort_keys=False))
    return cand


def write_test_scores(tag, test_set, rates, inference_tag=INFERENCE_TAG, num_ref=2195):
    score = tag / "test_decode" / inference_tag / test_set / "score"
    models = {}
    for model, rate in rates.items():
        models[model] = {"cer": counts(num_ref, round(rate * num_ref / 100)),
                         "wer": counts(500, round(3 * rate * 5)), "missing_hyps": [], "extra_hyps": 0}
    write_json(score / "scores.json", {"ref": f"dump/raw/{test_set}/text", "hyp_dir": str(score.parent / "hyp"),
                                       "metric": "cer", "num_utts": 100, "models": models})
    return score / "scores.json"


RESULTS_MD = """<!-- comflp:begin dc_dp_prune6 -->
# CoMFLP layer pruning (dc_dp_prune6)

## Model
- Removed encoder layers: 1, 4, 6, 7, 10, 12 (12 -> 6 layers)

## Results

### CER

|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|
|---|---|---|---|---|---|---|---|---|
|original/test|100|2195|90.0|4.0|5.2|1.2|10.4|48.0|
|pruned/test|100|2195|82.0|8.0|7.0|3.0|18.0|60.0|
|finetuned/test|100|2195|91.0|3.5|5.0|1.0|9.5|45.0|

### WER

|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|
|---|---|---|---|---|---|---|---|---|
|original/test|100|500|79.7|15.9|4.4|1.6|21.9|48.0|
<!-- comflp:end dc_dp_prune6 -->
"""


def write_search_cost(tag, seconds=140.012):
    write_json(tag / "search_cost.json", {
        "tag": tag.name, "method": "dp", "num_layers": 12, "num_prune": 6, "fine_set_utts": 50,
        "fine_proxy": "ctc_greedy", "search_decodes": 3, "proxy_evaluations": 30,
        "finalists": ["cand20", "cand09", "cand22"], "reference_decodes": 1,
        "seconds": {"states": 27.4, "matrix": 2.5, "coarse_search": 0.016, "proxy": 30.2, "materialize": 1.8,
                    "fine_decode": 76.3, "fine_overhead": 1.2, "scoring": 0.5, "greedy_loop": None},
        "reference_decode_seconds": 24.5, "counted": ["states", "matrix", "coarse_search", "proxy",
                                                      "materialize", "fine_decode", "fine_overhead", "scoring"],
        "not_recorded": [], "search_seconds": seconds,
    })


@pytest.fixture
def finished(tmp_path):
    """A search directory after stages 16-20 with fine-tuning, as the recipe leaves it."""
    tag = tmp_path / EXP / "comflp" / "dc_dp_prune6"
    write_proposals(tag)
    write_ranking(tag)
    write_candidate(tag, "cand03")
    write_candidate(tag, "cand01", pruned=(3, 5, 7, 9, 11, 12))
    (tag / "winner").symlink_to("candidates/cand03")
    finetune = tag / "finetune"
    finetune.mkdir()
    (finetune / "config.yaml").write_text("max_epoch: 2\n")
    (finetune / "valid.acc.ave.pth").write_bytes(b"\0" * 16)
    write_search_cost(tag)
    write_test_scores(tag, "test", {"original": 10.8, "pruned": 17.3, "finetuned": 9.6})
    (tag / "RESULTS.md").write_text(RESULTS_MD)
    return tag


def test_finished_search_gives_where_to_look_and_one_line(finished):
    lines = summary_lines(summarize(finished))
    assert lines == [
        f"Results: {finished / 'RESULTS.md'}",
        f"Pruned model (winner cand03): {finished / 'candidates' / 'cand03'}",
        f"Fine-tuned model: {finished / 'finetune'}",
        "dc_dp_prune6: removed encoder layers 1,4,6,7,10,12 (12 -> 6); params 0.81 M -> 0.51 M (-36.8%); "
        "test CER original 10.8% / pruned 17.3% / fine-tuned 9.6%; search 2 min 20 s",
    ]


def test_cli_prints_the_summary_with_paths_as_given(finished, capsys, monkeypatch):
    monkeypatch.chdir(finished.parents[3])
    comflp_summary.main(["--search_dir", f"{EXP}/comflp/dc_dp_prune6"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Results: {EXP}/comflp/dc_dp_prune6/RESULTS.md"
    # The winner link is followed as written (relative to the search directory), not resolved.
    assert out[1] == f"Pruned model (winner cand03): {EXP}/comflp/dc_dp_prune6/candidates/cand03"
    assert out[3].startswith("dc_dp_prune6: removed encoder layers 1,4,6,7,10,12")


def test_missing_search_dir_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SummaryError, match="--search_dir .*no such directory"):
        summarize(tmp_path / "nothing")
    with pytest.raises(SystemExit) as e:
        comflp_summary.main(["--search_dir", str(tmp_path / "nothing")])
    assert "comflp_summary: error: --search_dir" in str(e.value.code)


def test_before_stage_19_only_the_search_is_summarized(tmp_path):
    tag = tmp_path / "comflp" / "dc_dp_prune6"
    write_proposals(tag)
    write_ranking(tag)
    write_candidate(tag)
    (tag / "winner").symlink_to("candidates/cand03")
    write_search_cost(tag, seconds=42.4)
    # A fine-tuning that started but wrote no model yet.
    (tag / "finetune").mkdir()
    (tag / "finetune" / "train.log").write_text("started\n")
    lines = summary_lines(summarize(tag))
    assert lines == [
        f"Pruned model (winner cand03): {tag / 'candidates' / 'cand03'}",
        "dc_dp_prune6: removed encoder layers 1,4,6,7,10,12 (12 -> 6); params 0.81 M -> 0.51 M (-36.8%); "
        "search 42 s",
    ]


def test_without_prune_record_the_ranking_and_proposals_are_read(tmp_path):
    tag = tmp_path / "dc_dp_prune6"
    write_proposals(tag)
    write_ranking(tag)
    # No winner link and no candidate directory: only scores/winner names the winner.
    summary = summarize(tag)
    assert summary["winner"] == "cand03" and summary["winner_dir"] is None
    assert summary_line(summary) == (
        "dc_dp_prune6: removed encoder layers 1,4,6,7,10,12 (12 -> 6); params 0.81 M -> 0.51 M (-36.8%)")


def test_error_rates_fall_back_to_the_results_table(finished):
    for path in (finished / "test_decode").rglob("scores.json"):
        path.unlink()
    summary = summarize(finished)
    assert summary["metric"] == "cer"
    assert summary["test"] == {"test": {"original": 10.4, "pruned": 18.0, "finetuned": 9.5}}
    assert "test CER original 10.4% / pruned 18.0% / fine-tuned 9.5%" in summary_line(summary)


def test_decode_scores_win_over_the_results_table(finished):
    assert summarize(finished)["test"]["test"]["original"] == pytest.approx(10.8, abs=0.05)


def test_several_test_sets_and_models_that_were_not_decoded(finished):
    write_test_scores(finished, "org/dev", {"original": 4.0, "pruned": 7.0})
    line = summary_line(summarize(finished))
    assert "org/dev CER original 4.0% / pruned 7.0%;" in line
    assert "test CER original 10.8% / pruned 17.3% / fine-tuned 9.6%" in line


def test_the_decoding_scored_last_or_the_one_asked_for(finished):
    older = finished / "test_decode" / INFERENCE_TAG / "test" / "score" / "scores.json"
    newer = write_test_scores(finished, "test", {"original": 5.0, "pruned": 6.0, "finetuned": 5.5},
                              inference_tag="decode_beam10_asr_model_valid.acc.ave")
    past = time.time() - 100
    os.utime(older, (past, past))
    assert summarize(finished)["test"]["test"]["original"] == pytest.approx(5.0, abs=0.05)
    assert newer.is_file()
    chosen = summarize(finished, inference_tag=INFERENCE_TAG)
    assert chosen["test"]["test"]["original"] == pytest.approx(10.8, abs=0.05)


def test_unreadable_pieces_are_left_out_with_a_warning(finished, capsys, caplog):
    (finished / "search_cost.json").write_text('{"search_seconds": 14')  # cut short
    (finished / "candidates" / "cand03" / "prune.yaml").write_text("params_before: [\n")
    comflp_summary.main(["--search_dir", str(finished)])
    out = capsys.readouterr().out.splitlines()
    # The layers and parameters now come from the ranking and proposals; no search time.
    assert out[-1] == ("dc_dp_prune6: removed encoder layers 1,4,6,7,10,12 (12 -> 6); params 0.81 M -> 0.51 M "
                       "(-36.8%); test CER original 10.8% / pruned 17.3% / fine-tuned 9.6%")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "search_cost.json" in warned and "prune.yaml" in warned


def test_an_empty_search_dir_has_no_results_yet(tmp_path):
    (tmp_path / "dc_dp_prune6").mkdir()
    assert summary_lines(summarize(tmp_path / "dc_dp_prune6")) == ["dc_dp_prune6: no results yet"]


def test_an_unpruned_reference_search_says_none_removed(tmp_path):
    tag = tmp_path / "dc_none_prune0"
    cand = write_candidate(tag, "cand01", pruned=())
    (tag / "winner").symlink_to("candidates/cand01")
    record = yaml.safe_load((cand / "prune.yaml").read_text())
    record["params_after"] = record["params_before"]
    (cand / "prune.yaml").write_text(yaml.safe_dump(record))
    assert summary_line(summarize(tag)) == (
        "dc_none_prune0: removed encoder layers none (12 -> 12); params 0.81 M -> 0.81 M (+0.0%)")
