"""Which proxy a run uses, from the model's training config (``stages.Run.proxy_for``): each proxy
falls back to the other where it cannot be computed, and a model that allows neither is an error
that names the option and the way out."""

import logging

import pytest
import yaml

from comflp_espnet.stages import Options, Run, StageError, check


def run_for(tmp_path, config, **options):
    """A run on an experiment with this training config (its weights are not read here)."""
    exp = tmp_path / "exp" / "m"
    exp.mkdir(parents=True, exist_ok=True)
    full = {"encoder": "transformer", "encoder_conf": {"num_blocks": 4}, **config}
    (exp / "config.yaml").write_text(yaml.safe_dump(full))
    (exp / "valid.acc.ave.pth").touch()
    return Run(Options(comflp_dir=str(exp / "comflp"), asr_exp=str(exp), num_prune="2", **options))


HYBRID = {"decoder": "transformer", "model_conf": {"ctc_weight": 0.3}}


@pytest.mark.parametrize("config, requested, used", [
    (HYBRID, "loss", "loss"),
    (HYBRID, "ctc_greedy", "ctc_greedy"),
    ({"decoder": "transformer", "model_conf": {"ctc_weight": 0.0}}, "ctc_greedy", "loss"),
    ({"decoder": "transducer", "model_conf": {"ctc_weight": 0.3}}, "loss", "ctc_greedy"),
    ({"decoder": "mlm", "model": "maskctc", "model_conf": {"ctc_weight": 0.3}}, "loss", "ctc_greedy"),
    ({"decoder": "linear_decoder", "model_conf": {"ctc_weight": 0.3}}, "loss", "ctc_greedy"),
    ({"decoder": None, "model_conf": {"ctc_weight": 0.5}}, "loss", "ctc_greedy"),
    ({"decoder": None, "model_conf": {"ctc_weight": 1.0}}, "loss", "loss"),  # the loss is the CTC loss
    ({"decoder": "transformer", "model_conf": {"ctc_weight": 0.3, "interctc_weight": 0.5,
                                               "aux_ctc": {"6": "text_spk2"}}}, "loss", "ctc_greedy"),
    (HYBRID, "none", "none"),
])
def test_the_proxy_used(tmp_path, config, requested, used):
    run = run_for(tmp_path, config, fine_proxy=requested)
    assert run.fine_proxy == used


def test_a_fallback_is_logged_and_a_model_allowing_neither_is_an_error(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    run = run_for(tmp_path, {"decoder": "transducer", "model_conf": {"ctc_weight": 0.3}}, stages=(18,))
    with caplog.at_level(logging.INFO):
        check(run)
    assert "--comflp_fine_proxy loss: the loss proxy does not support a transducer decoder" in caplog.text
    assert "scored by CTC greedy decoding instead" in caplog.text
    run = run_for(tmp_path, {"decoder": "transducer", "model_conf": {"ctc_weight": 0.0}}, stages=(18,))
    with pytest.raises(StageError, match="no CTC branch .* does not support a transducer decoder; "
                                         "use --comflp_fine_proxy none"):
        check(run)
