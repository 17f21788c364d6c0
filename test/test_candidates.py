"""comflp_candidates: proposals -> pruned candidate experiments + models.scp."""

import json

import pytest
import yaml

from comflp_espnet import records
from comflp_espnet.bin import comflp_candidates


def original_model(exp):
    from comflp_espnet.model_io import load_asr_model

    return load_asr_model(*exp)[0]


def write_proposals(path, pruned_lists, scores=None):
    scores = scores or [1.0 - 0.1 * i for i in range(len(pruned_lists))]
    path.write_text(json.dumps({
        "num_layers": 4, "num_prune": len(pruned_lists[0]), "method": "dp",
        "topk": len(pruned_lists), "constraints": {}, "corr": "corr.npy",
        "proposals": [
            {"rank": i + 1, "pruned": p, "kept": [], "runs": [[p[0], p[-1]]], "score": s}
            for i, (p, s) in enumerate(zip(pruned_lists, scores))
        ],
    }))
    return path


@pytest.fixture()
def exp(tiny_exp_factory):
    return tiny_exp_factory(num_blocks=4, decoder_blocks=1)


def run(exp, proposals, out, *extra):
    config, model = exp
    comflp_candidates.main([
        "--proposals", str(proposals), "--asr_train_config", str(config),
        "--asr_model_file", str(model), "--output_dir", str(out), *extra,
    ])


def test_candidates_in_rank_order_with_models_scp(tmp_path, exp):
    props = write_proposals(tmp_path / "p.json", [[2, 3], [3, 4], [1, 2]])
    out = tmp_path / "cands"
    run(exp, props, out, "--include_original", "true")
    lines = (out / "models.scp").read_text().splitlines()
    assert lines[0] == f"original {exp[0]} {exp[1]}"
    model_name = exp[1].name
    assert lines[1:] == [
        f"cand0{i} {out / f'cand0{i}' / 'config.yaml'} {out / f'cand0{i}' / model_name}"
        for i in (1, 2, 3)
    ]
    for i, pruned in ((1, [2, 3]), (2, [3, 4]), (3, [1, 2])):
        d = out / f"cand0{i}"
        config = yaml.safe_load((d / "config.yaml").read_text())
        assert config["encoder_conf"]["num_blocks"] == 2
        record = yaml.safe_load((d / "prune.yaml").read_text())
        assert record["pruned_encoder_layers"] == pruned
        # Learnable parameters only: the frontend's mel matrix (a buffer) is not counted.
        assert record["params_before"] == sum(p.numel() for p in original_model(exp).parameters())
        cand = records.read_record(d)
        assert cand.made_from["options"]["prune_encoder"] == pruned
        assert sorted(cand.files) == ["cand0%d/config.yaml" % i, "cand0%d/prune.yaml" % i,
                                      f"cand0{i}/{model_name}"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "cand01", "cand02", "cand03", "models.scp"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]

    run(exp, props, out)  # without the original this time
    assert not (out / "models.scp").read_text().startswith("original")


def test_rerun_keeps_complete_candidates_and_redoes_changed_ones(tmp_path, exp):
    out = tmp_path / "cands"
    run(exp, write_proposals(tmp_path / "p.json", [[2, 3], [3, 4], [1, 2]]), out)
    stamps = {d: (out / d / exp[1].name).stat().st_mtime_ns for d in ("cand01", "cand02")}

    run(exp, write_proposals(tmp_path / "p.json", [[2, 3], [3, 4], [1, 2]]), out)
    assert {d: (out / d / exp[1].name).stat().st_mtime_ns for d in stamps} == stamps

    # A new search: rank 2 changes, rank 3 disappears.
    run(exp, write_proposals(tmp_path / "p.json", [[2, 3], [1, 4]]), out)
    assert (out / "cand01" / exp[1].name).stat().st_mtime_ns == stamps["cand01"]
    record = yaml.safe_load((out / "cand02" / "prune.yaml").read_text())
    assert record["pruned_encoder_layers"] == [1, 4]
    assert not (out / "cand03").exists()
    assert len((out / "models.scp").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "pruned_lists, message",
    [([[2, 3], [4, 5]], "out of range"), ([[1, 2, 3, 4]], "keep at least one")],
)
def test_proposals_that_do_not_fit_the_model_write_nothing(tmp_path, exp, pruned_lists, message):
    props = write_proposals(tmp_path / "p.json", pruned_lists)
    out = tmp_path / "cands"
    with pytest.raises(SystemExit, match=message):
        run(exp, props, out)
    assert not out.exists() or not any(out.iterdir())


def test_missing_proposals_file_names_the_stage(tmp_path, exp):
    with pytest.raises(SystemExit, match="written by the coarse search, stage 16"):
        run(exp, tmp_path / "none.json", tmp_path / "cands")


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"proposals": [{"rank": 1, "pruned": [0]}]}', "1-based layer ids"),
    ('{"proposals": [{"rank": 1, "pruned": [1]}, {"rank": 1, "pruned": [2]}]}', "duplicated ranks"),
])
def test_malformed_proposals_are_reported_before_any_pruning(tmp_path, exp, content, message):
    props = tmp_path / "p.json"
    props.write_text(content)
    out = tmp_path / "cands"
    with pytest.raises(SystemExit) as e:
        run(exp, props, out)
    assert message in str(e.value.code) and f"--proposals {props}" in str(e.value.code)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["prune_yaml", "truncated_model", "no_record"])
def test_damaged_candidate_is_rebuilt(tmp_path, exp, damage):
    props = write_proposals(tmp_path / "p.json", [[2, 3], [1, 2]])
    out = tmp_path / "cands"
    run(exp, props, out)
    model = out / "cand01" / exp[1].name
    content = model.read_bytes()
    kept = (out / "cand02" / exp[1].name).stat().st_mtime_ns
    if damage == "prune_yaml":
        (out / "cand01" / "prune.yaml").write_text("a: [1,\n")
    elif damage == "truncated_model":
        model.write_bytes(content[:1000])
    else:
        records.record_path(out / "cand01").unlink()
    run(exp, props, out)
    assert yaml.safe_load((out / "cand01" / "prune.yaml").read_text())["pruned_encoder_layers"] == [2, 3]
    assert model.read_bytes() == content  # the same bytes again
    assert records.check(out / "cand01", records.read_record(out / "cand01").made_from).current
    assert (out / "cand02" / exp[1].name).stat().st_mtime_ns == kept  # the intact one was kept


def test_a_new_original_model_rebuilds_every_candidate(tmp_path, tiny_exp_factory):
    config, model = tiny_exp_factory(num_blocks=4, decoder_blocks=1)
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    (exp_dir / "config.yaml").write_bytes(config.read_bytes())
    (exp_dir / model.name).write_bytes(model.read_bytes())
    props = write_proposals(tmp_path / "p.json", [[2, 3]])
    out = tmp_path / "cands"
    run((exp_dir / "config.yaml", exp_dir / model.name), props, out)
    before = (out / "cand01" / model.name).read_bytes()
    other = tiny_exp_factory(num_blocks=4, decoder_blocks=1, seed=5)[1]
    (exp_dir / model.name).write_bytes(other.read_bytes())  # retrained in place, same path
    run((exp_dir / "config.yaml", exp_dir / model.name), props, out)
    assert (out / "cand01" / model.name).read_bytes() != before
