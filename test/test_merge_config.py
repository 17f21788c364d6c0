"""comflp_merge_config: the fine-tuning config is the winner's config plus an overlay."""

import pytest
import yaml

from comflp_espnet.bin.comflp_merge_config import main
from comflp_espnet.config_merge import merge


def test_merge_is_recursive_and_overlay_wins():
    base = {"optim": "adam", "optim_conf": {"lr": 0.001, "weight_decay": 1e-6},
            "encoder_conf": {"num_blocks": 8}, "best_model_criterion": [["valid", "acc", "max"]]}
    overlay = {"optim_conf": {"lr": 0.0002}, "best_model_criterion": [["valid", "loss", "min"]],
               "max_epoch": 3}
    merged = merge(base, overlay)
    assert merged["optim_conf"] == {"lr": 0.0002, "weight_decay": 1e-6}
    assert merged["best_model_criterion"] == [["valid", "loss", "min"]]
    assert merged["encoder_conf"] == {"num_blocks": 8} and merged["max_epoch"] == 3
    assert base["optim_conf"]["lr"] == 0.001  # inputs untouched


def test_cli_drops_command_line_options(tmp_path):
    base = tmp_path / "config.yaml"
    base.write_text(yaml.safe_dump({
        "train_data_path_and_name_and_type": [["dump/raw/tr/wav.scp", "speech", "sound"]],
        "train_shape_file": ["exp/stats/train/speech_shape"],
        "fold_length": [80000, 150], "output_dir": "exp/asr", "init_param": [],
        "ngpu": 4, "dist_world_size": 4, "max_epoch": 60,
        "token_list": ["<blank>", "<unk>", "你", "<sos/eos>"],
        "encoder_conf": {"num_blocks": 8},
    }, allow_unicode=True))
    overlay = tmp_path / "ft.yaml"
    overlay.write_text("max_epoch: 5\n")
    out = tmp_path / "ft" / "merged.yaml"
    main(["--base", str(base), "--overlay", str(overlay), "--output", str(out)])
    merged = yaml.safe_load(out.read_text(encoding="utf-8"))
    for key in ("train_data_path_and_name_and_type", "train_shape_file", "fold_length",
                "output_dir", "init_param", "ngpu", "dist_world_size"):
        assert key not in merged
    assert merged["max_epoch"] == 5 and merged["encoder_conf"] == {"num_blocks": 8}
    assert merged["token_list"][2] == "你"


@pytest.mark.parametrize("text, message", [("[1, 2]\n", "must be a YAML mapping"),
                                           ("a: [1,\n", "does not parse")])
def test_cli_rejects_bad_overlay_without_output(tmp_path, text, message):
    base = tmp_path / "config.yaml"
    base.write_text("max_epoch: 1\n")
    overlay = tmp_path / "ft.yaml"
    overlay.write_text(text)
    out = tmp_path / "merged.yaml"
    with pytest.raises(SystemExit) as e:
        main(["--base", str(base), "--overlay", str(overlay), "--output", str(out)])
    assert message in str(e.value) and "--overlay" in str(e.value)
    assert not out.exists()
    with pytest.raises(SystemExit, match="no such file"):
        main(["--base", str(tmp_path / "none.yaml"), "--overlay", str(overlay), "--output", str(out)])
