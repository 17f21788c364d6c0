"""Layer pruning of ESPnet ASR models: equivalence, stock loading, config edits, errors."""

import logging

import numpy as np
import pytest
import torch
import yaml

from comflp_espnet.model_io import load_asr_model
from comflp_espnet.surgery import (
    PruneError,
    SUPPORTED_ENCODERS,
    num_encoder_layers,
    prune_config,
    prune_experiment,
    prune_state_dict,
    validate_layer_ids,
)

# Per family: extra encoder options (per-layer lists, intermediate CTC) and layers to remove.
FAMILIES = {
    "transformer": ({"interctc_layer_idx": [1, 3]}, (2,)),
    "conformer": ({"stochastic_depth_rate": [0.1, 0.2, 0.3, 0.4]}, (1, 3)),
    "branchformer": (
        {
            "cgmlp_weight": [0.2, 0.4, 0.6, 0.8],
            "attn_branch_drop_rate": [0.0, 0.1, 0.2, 0.3],
            "stochastic_depth_rate": [0.0, 0.1, 0.2, 0.3],
        },
        (2, 4),
    ),
    "e_branchformer": ({"interctc_layer_idx": [2]}, (1,)),
}


class SkipLayer(torch.nn.Module):
    """Stands in for a removed layer: passes its inputs through unchanged."""

    def forward(self, *args):
        return args


def _skip_layers(layer_list, removed):
    for layer in removed:
        layer_list[layer - 1] = SkipLayer()


def _speech(seed=0, lengths=(5200, 4000)):
    generator = torch.Generator().manual_seed(seed)
    speech = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        speech[i, :n] = 0.1 * torch.randn(n, generator=generator)
    return speech, torch.tensor(lengths)


@pytest.fixture(scope="module")
def speech2text_class():
    # Imported once per module: the import costs seconds.
    from espnet2.bin.asr_inference import Speech2Text

    return Speech2Text


def _config(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("encoder", sorted(FAMILIES))
def test_pruned_encoder_equals_original_with_layers_skipped(
    encoder, tiny_exp_factory, tmp_path, speech2text_class
):
    encoder_conf, removed = FAMILIES[encoder]
    config, model_file = tiny_exp_factory(encoder, encoder_conf=encoder_conf)
    out = prune_experiment(config, model_file, tmp_path / "pruned", prune_encoder=removed)

    original, _ = load_asr_model(config, model_file)
    pruned, pruned_args = load_asr_model(out / "config.yaml", out / model_file.name)
    assert num_encoder_layers(pruned) == 4 - len(removed)
    assert pruned_args.encoder_conf["num_blocks"] == 4 - len(removed)
    _skip_layers(original.encoder.encoders, removed)

    speech, lengths = _speech()
    with torch.no_grad():
        expected, expected_lens = original.encode(speech, lengths)
        actual, actual_lens = pruned.encode(speech, lengths)
    if isinstance(expected, tuple):  # intermediate CTC outputs
        expected, actual = expected[0], actual[0]
    assert torch.equal(expected_lens, actual_lens)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)

    # Stock ESPnet loads it with every key matching, and decodes.
    speech2text = speech2text_class(
        asr_train_config=str(out / "config.yaml"),
        asr_model_file=str(out / model_file.name),
        beam_size=2,
        maxlenratio=0.3,
    )
    saved = torch.load(out / model_file.name, map_location="cpu")
    speech2text.asr_model.load_state_dict(saved, strict=True)
    results = speech2text(speech[0, : lengths[0]].numpy())
    if isinstance(results, tuple):  # (n-best, intermediate CTC results)
        results = results[0]
    text, tokens = results[0][0], results[0][1]
    assert isinstance(text, str) and isinstance(tokens, list)

    # ... and as --init_param of asr_train (loads by key, reports mismatch).
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    fresh, _ = ASRTask.build_model_from_file(out / "config.yaml", None, "cpu")
    load_pretrained_model(str(out / model_file.name), fresh, ignore_init_mismatch=False)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_config_differs_only_in_layer_options(tiny_exp_factory, tmp_path):
    config, model_file = tiny_exp_factory(
        "branchformer", encoder_conf=FAMILIES["branchformer"][0]
    )
    out = prune_experiment(
        config, model_file, tmp_path / "p", prune_encoder=(2, 4), prune_decoder=(1,)
    )
    before, after = _config(config), _config(out / "config.yaml")
    assert list(before) == list(after)  # same keys, same order
    for key in before:
        if key not in ("encoder_conf", "decoder_conf"):
            assert before[key] == after[key], key
    enc = after["encoder_conf"]
    assert enc["num_blocks"] == 2
    assert enc["cgmlp_weight"] == [0.2, 0.6]
    assert enc["attn_branch_drop_rate"] == [0.0, 0.2]
    assert enc["stochastic_depth_rate"] == [0.0, 0.2]
    assert {k: v for k, v in enc.items() if not isinstance(v, list) and k != "num_blocks"} == {
        k: v for k, v in before["encoder_conf"].items()
        if not isinstance(v, list) and k != "num_blocks"
    }
    assert after["decoder_conf"]["num_blocks"] == 1

    record = _config(out / "prune.yaml")
    assert record["pruned_encoder_layers"] == [2, 4]
    assert record["kept_encoder_layers"] == [1, 3]
    assert record["pruned_decoder_layers"] == [1]
    assert record["num_encoder_layers_before"] == 4
    assert record["num_encoder_layers_after"] == 2
    assert record["params_after"] < record["params_before"]
    assert record["original_model"].endswith(model_file.name)


def test_checkpoint_renumbered_and_other_keys_bit_identical(tiny_exp_factory, tmp_path):
    config, model_file = tiny_exp_factory("conformer", encoder_conf=FAMILIES["conformer"][0])
    out = prune_experiment(
        config, model_file, tmp_path / "p", prune_encoder=(1, 3), prune_decoder=(2,)
    )
    before = torch.load(model_file, map_location="cpu")
    after = torch.load(out / model_file.name, map_location="cpu")
    renames = {"encoder.encoders.1.": "encoder.encoders.0.",
               "encoder.encoders.3.": "encoder.encoders.1.",
               "decoder.decoders.0.": "decoder.decoders.0."}
    expected = {}
    for key, value in before.items():
        if key.startswith(("encoder.encoders.", "decoder.decoders.")):
            for old, new in renames.items():
                if key.startswith(old):
                    expected[new + key[len(old):]] = value
        else:
            expected[key] = value
    assert set(after) == set(expected)
    for key, value in expected.items():
        assert after[key].dtype == value.dtype
        assert after[key].numpy().tobytes() == value.numpy().tobytes(), key


def test_decoder_pruning_equals_decoder_with_layers_skipped(tiny_exp_factory, tmp_path):
    config, model_file = tiny_exp_factory("transformer", decoder_blocks=3)
    out = prune_experiment(config, model_file, tmp_path / "p", prune_decoder=(2,))
    original, _ = load_asr_model(config, model_file)
    pruned, _ = load_asr_model(out / "config.yaml", out / model_file.name)
    assert len(pruned.decoder.decoders) == 2
    _skip_layers(original.decoder.decoders, (2,))
    torch.manual_seed(0)
    memory = torch.randn(2, 7, 16)
    memory_lens = torch.tensor([7, 5])
    tokens = torch.tensor([[8, 3, 4, 5], [8, 6, 7, 0]])
    token_lens = torch.tensor([4, 3])
    with torch.no_grad():
        expected = original.decoder(memory, memory_lens, tokens, token_lens)[0]
        actual = pruned.decoder(memory, memory_lens, tokens, token_lens)[0]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_interctc_remapped_and_intermediate_outputs_match(tiny_exp_factory, tmp_path):
    config, model_file = tiny_exp_factory(
        "transformer", encoder_conf={"interctc_layer_idx": [1, 3]}
    )
    out = prune_experiment(config, model_file, tmp_path / "p", prune_encoder=(2,))
    assert _config(out / "config.yaml")["encoder_conf"]["interctc_layer_idx"] == [1, 2]
    original, _ = load_asr_model(config, model_file)
    pruned, _ = load_asr_model(out / "config.yaml", out / model_file.name)
    _skip_layers(original.encoder.encoders, (2,))
    speech, lengths = _speech(seed=1)
    with torch.no_grad():
        (_, inter_before), _ = original.encode(speech, lengths)
        (_, inter_after), _ = pruned.encode(speech, lengths)
    before = dict(inter_before)
    after = dict(inter_after)
    assert sorted(after) == [1, 2]
    torch.testing.assert_close(after[1], before[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(after[2], before[3], atol=1e-5, rtol=0)


def test_interctc_layer_removed_or_made_last_is_dropped_with_warning(caplog):
    config = {"encoder": "e_branchformer",
              "encoder_conf": {"num_blocks": 6, "interctc_layer_idx": [2, 4, 5]}}
    with caplog.at_level(logging.WARNING):
        new, _, warnings = prune_config(config, prune_encoder=(4, 6))
    # layer 2 -> 2; layer 4 removed; layer 5 becomes the last layer (4 of 4).
    assert new["encoder_conf"]["interctc_layer_idx"] == [2]
    assert len(warnings) == 2
    assert "layer 4 is removed" in caplog.text
    assert "becomes the last layer" in caplog.text
    assert config["encoder_conf"]["interctc_layer_idx"] == [2, 4, 5]  # input untouched


def test_per_layer_lists_and_checkpoint_layers_sliced():
    config = {
        "encoder": "conformer",
        "encoder_conf": {
            "num_blocks": 5,
            "stochastic_depth_rate": [0.0, 0.1, 0.2, 0.3, 0.4],
            "layer_drop_rate": 0.1,  # scalar: unchanged
        },
        "decoder": "transformer",
        "decoder_conf": {"num_blocks": 3, "gradient_checkpoint_layers": [1, 3]},
    }
    new, _, _ = prune_config(config, prune_encoder=(1, 4), prune_decoder=(1,))
    assert new["encoder_conf"]["stochastic_depth_rate"] == [0.1, 0.2, 0.4]
    assert new["encoder_conf"]["layer_drop_rate"] == 0.1
    assert new["encoder_conf"]["num_blocks"] == 3
    assert new["decoder_conf"]["gradient_checkpoint_layers"] == [2]
    assert new["decoder_conf"]["num_blocks"] == 2

    wrong = {"encoder": "branchformer", "encoder_conf": {"num_blocks": 4, "cgmlp_weight": [0.5] * 3}}
    with pytest.raises(PruneError, match="cgmlp_weight has 3 entries"):
        prune_config(wrong, prune_encoder=(1,))


def test_default_num_blocks_used_when_config_omits_it():
    new, _, _ = prune_config({"encoder": "branchformer", "encoder_conf": {}}, prune_encoder=(12,))
    assert new["encoder_conf"]["num_blocks"] == 11


@pytest.mark.parametrize(
    "layers, message",
    [((0,), "out of range"), ((5,), "out of range"), ((2, 2), "more than once"),
     ((1, 2, 3, 4), "cannot remove all")],
)
def test_bad_layer_ids(layers, message):
    with pytest.raises(PruneError, match=message):
        validate_layer_ids(layers, 4)


def test_unsupported_encoder_lists_supported():
    with pytest.raises(PruneError) as excinfo:
        prune_config({"encoder": "rnn", "encoder_conf": {}}, prune_encoder=(1,))
    for name in SUPPORTED_ENCODERS:
        assert name in str(excinfo.value)
    with pytest.raises(PruneError, match="supported decoders: transformer"):
        prune_config({"decoder": "rnn", "decoder_conf": {}}, prune_decoder=(1,))


def test_prune_state_dict_rejects_missing_layers():
    with pytest.raises(PruneError, match="no encoder.encoders"):
        prune_state_dict({"ctc.weight": torch.zeros(1)}, prune_encoder=(1,))


def test_missing_files_named(tiny_exp_factory, tmp_path):
    config, model_file = tiny_exp_factory("transformer")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        prune_experiment(config, tmp_path / "nope.pth", tmp_path / "out", prune_encoder=(1,))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_asr_model(tmp_path / "nope.yaml", model_file)
    assert not (tmp_path / "out").exists()


def test_missing_relative_stats_file_reports_path_and_recipe_dir(tmp_path, monkeypatch):
    from comflp_espnet.model_io import check_config_paths

    recipe = tmp_path / "recipe"
    (recipe / "exp" / "asr_stats").mkdir(parents=True)
    (recipe / "exp" / "asr_stats" / "feats_stats.npz").write_bytes(b"")
    (recipe / "exp" / "asr_train").mkdir()
    config_path = recipe / "exp" / "asr_train" / "config.yaml"
    config = {"normalize": "global_mvn",
              "normalize_conf": {"stats_file": "exp/asr_stats/feats_stats.npz"}}
    monkeypatch.chdir(recipe)
    check_config_paths(config, config_path)  # found from the recipe directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as excinfo:
        check_config_paths(config, config_path)
    message = str(excinfo.value)
    assert "normalize_conf.stats_file: exp/asr_stats/feats_stats.npz" in message
    assert str(tmp_path) in message and f"relative to {recipe}" in message


def test_prune_cli_errors_leave_no_output(tiny_exp_factory, tmp_path):
    from comflp_espnet.bin import comflp_prune

    config, model_file = tiny_exp_factory("transformer")
    base = ["--asr_train_config", str(config), "--asr_model_file", str(model_file)]
    for bad in (["--prune", "1,9"], ["--prune", "1,1"], ["--prune", "1,2,3,4"], ["--prune", "x"],
                []):
        out = tmp_path / "out"
        with pytest.raises(SystemExit) as excinfo:
            comflp_prune.main(base + bad + ["--output_dir", str(out)])
        assert excinfo.value.code not in (0, None)
        assert not out.exists()
        assert not list(tmp_path.glob(".out*"))

    comflp_prune.main(base + ["--prune", "2,3", "--output_dir", str(tmp_path / "ok")])
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == [
        "config.yaml", "prune.yaml", model_file.name]
    # Rerunning replaces the directory.
    comflp_prune.main(base + ["--prune", "4", "--output_dir", str(tmp_path / "ok")])
    assert _config(tmp_path / "ok" / "prune.yaml")["pruned_encoder_layers"] == [4]
    assert np.array_equal(
        _config(tmp_path / "ok" / "config.yaml")["encoder_conf"]["num_blocks"], 3
    )


def test_prune_record_names_the_model_file_as_given_not_its_link_target(tiny_exp_factory, tmp_path):
    # asr.sh's valid.acc.ave.pth is a link to the averaged checkpoint: the record keeps the name
    # the user gave.
    config, model = tiny_exp_factory("transformer")
    link = tmp_path / "valid.acc.ave.pth"
    link.symlink_to(model)
    out = prune_experiment(config, link, tmp_path / "pruned", prune_encoder=[1])
    record = yaml.safe_load((out / "prune.yaml").read_text())
    assert record["original_model"] == str(link.absolute())
