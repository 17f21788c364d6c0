import json

import pytest
import yaml

from comflp_espnet.bin import comflp_results


def counts(num_ref, corr, sub, dele, ins, snt=2, snt_err=1):
    return {"num_snt": snt, "num_ref": num_ref, "corr": corr, "sub": sub, "del": dele,
            "ins": ins, "num_snt_err": snt_err}


@pytest.fixture()
def inputs(tmp_path):
    winner = tmp_path / "candidates" / "cand02"
    winner.mkdir(parents=True)
    (winner / "prune.yaml").write_text(yaml.safe_dump({
        "pruned_encoder_layers": [3, 4], "num_encoder_layers_before": 12,
        "num_encoder_layers_after": 10, "params_before": 30_000_000,
        "params_after": 27_000_000,
    }))
    scores = tmp_path / "test_decode" / "test" / "scores"
    scores.mkdir(parents=True)
    (scores / "scores.json").write_text(json.dumps({"metric": "cer", "models": {
        "pruned": {"cer": counts(100, 90, 6, 4, 2), "wer": counts(20, 15, 4, 1, 0)},
        "original": {"cer": counts(100, 95, 3, 2, 1), "wer": counts(20, 18, 2, 0, 0)},
    }}))
    ranking = {"metric": "cer", "winner": "cand02", "original": None, "ranking": [
        {"name": "cand02", "is_original": False, "fine_rank": 1, "coarse_rank": 2,
         "coarse_score": 0.91, "pruned": [3, 4], "cer": 5.0, "wer": 10.0,
         "params": 27_000_000, "decode_time": 12.5},
    ]}
    (tmp_path / "ranking.json").write_text(json.dumps(ranking))
    return {"winner": winner, "scores": scores, "ranking": tmp_path / "ranking.json"}


def run(tmp_path, inputs, output, tag="dc_dp_prune2", extra=()):
    comflp_results.main([
        "--output", str(output), "--tag", tag, "--date", "Mon Jan  1 00:00:00 UTC 2024",
        "--winner_dir", str(inputs["winner"]), "--ranking", str(inputs["ranking"]),
        "--test_scores", f"test={inputs['scores']}", "--measure", "dc",
        "--heatmap", str(tmp_path / "corr" / "dc.png"), *extra,
    ])


def test_section_has_espnet_results_content(tmp_path, inputs):
    output = tmp_path / "RESULTS.md"
    run(tmp_path, inputs, output)
    text = output.read_text()
    assert "## Environments" in text and "- espnet version: `espnet " in text
    assert "- Removed encoder layers: 3, 4 (12 -> 10 layers)" in text
    assert "- Params: 30.00 M -> 27.00 M (-10.0%)" in text
    assert "- Coarse score: 0.9100 (coarse rank 2)" in text  # from the ranking
    assert "![dc correlation between h_0..h_L](corr/dc.png)" in text
    assert "|1|cand02|3,4|2|0.9100|5.0|10.0|27.00|12.5|" in text
    cer_block = text.split("### CER")[1].split("### WER")[0]
    lines = [line for line in cer_block.splitlines() if line.startswith("|")]
    assert lines[0] == "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"
    # The unpruned model comes first, then the pruned one.
    assert lines[2] == "|original/test|2|100|95.0|3.0|2.0|1.0|6.0|50.0|"
    assert lines[3] == "|pruned/test|2|100|90.0|6.0|4.0|2.0|12.0|50.0|"
    wer_block = text.split("### WER")[1]
    assert "|pruned/test|2|20|75.0|20.0|5.0|0.0|25.0|50.0|" in wer_block


def test_rerun_replaces_only_its_own_section(tmp_path, inputs):
    output = tmp_path / "RESULTS.md"
    output.write_text("# RESULTS\nnotes written by hand\n")
    run(tmp_path, inputs, output)
    first = output.read_text()
    run(tmp_path, inputs, output)
    assert output.read_text() == first
    assert first.startswith("# RESULTS\nnotes written by hand\n")
    assert first.count("<!-- comflp:begin dc_dp_prune2 -->") == 1

    # Another tag is appended; then the first section changes in place.
    run(tmp_path, inputs, output, tag="cka_dp_prune2")
    output.write_text(output.read_text() + "trailing notes\n")
    run(tmp_path, inputs, output, extra=["--title", "New title"])
    text = output.read_text()
    assert text.count("<!-- comflp:begin") == 2
    first_section = text.split("<!-- comflp:begin dc_dp_prune2 -->")[1].split(
        "<!-- comflp:end dc_dp_prune2 -->")[0]
    assert "# New title" in first_section
    assert text.index("dc_dp_prune2") < text.index("cka_dp_prune2")
    assert text.endswith("<!-- comflp:end cka_dp_prune2 -->\ntrailing notes\n")
    assert text.startswith("# RESULTS\nnotes written by hand\n")


def test_broken_markers_stop_without_touching_the_file(tmp_path, inputs):
    output = tmp_path / "RESULTS.md"
    broken = "intro\n<!-- comflp:begin dc_dp_prune2 -->\nhalf a section\n"
    output.write_text(broken)
    with pytest.raises(SystemExit, match="repair or remove the markers"):
        run(tmp_path, inputs, output)
    assert output.read_text() == broken


def test_bad_test_scores_argument_is_reported(tmp_path, inputs):
    output = tmp_path / "RESULTS.md"
    with pytest.raises(SystemExit, match="NAME=PATH"):
        comflp_results.main(["--output", str(output), "--tag", "t", "--test_scores", "x"])
    with pytest.raises(SystemExit, match="no such file"):
        comflp_results.main(["--output", str(output), "--tag", "t",
                             "--test_scores", f"test={tmp_path / 'missing.json'}"])
    assert not output.exists()


def test_version_of_a_package_run_from_a_checkout(tmp_path, inputs, monkeypatch):
    import importlib.metadata

    import comflp_espnet

    real_version = importlib.metadata.version

    def version(name):
        if name == "comflp-espnet":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    output = tmp_path / "RESULTS.md"
    run(tmp_path, inputs, output)
    assert f"- comflp-espnet version: `{comflp_espnet.__version__}`" in output.read_text()


@pytest.mark.parametrize("damage, message", [
    ("no_counts", "model 'pruned' lacks cer counts"),
    ("bad_prune_yaml", "prune.yaml does not parse as YAML"),
])
def test_damaged_inputs_are_named_and_nothing_is_written(tmp_path, inputs, damage, message):
    if damage == "no_counts":
        (inputs["scores"] / "scores.json").write_text(json.dumps({"metric": "cer", "models": {"pruned": {}}}))
    else:
        (inputs["winner"] / "prune.yaml").write_text("a: [1,\n")
    output = tmp_path / "RESULTS.md"
    with pytest.raises(SystemExit, match=message):
        run(tmp_path, inputs, output)
    assert not output.exists()
