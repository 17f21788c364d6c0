"""Shared fixtures: tiny ESPnet ASR experiments and Kaldi-style data directories.

Plain functions (importable as ``from conftest import ...`` in test modules):

* ``make_tiny_asr_exp(exp_dir, encoder="transformer", num_blocks=4,
  decoder_blocks=2, encoder_conf=None, decoder_conf=None, model_conf=None,
  seed=0, model_name="valid.acc.ave.pth") -> (config_path, model_path)``
  writes ``exp_dir/config.yaml`` the way ESPnet training writes it (every
  option of ``ASRTask``'s parser, token list inlined) and a randomly
  initialised model file. ``encoder`` is one of transformer, conformer,
  branchformer, e_branchformer; sizes are tiny (output_size 16, 2 heads) and
  ``encoder_conf`` / ``decoder_conf`` entries override the defaults (e.g.
  ``{"interctc_layer_idx": [1, 3]}``). Frontend: 16 kHz STFT (n_fft 128,
  hop 64) and 16 mel bins, no normalisation; ``feature_input=True`` builds
  the model without frontend (input: 16-dim feature sequences).
* ``make_tiny_data_dir(data_dir, num_utts=4, seconds=(0.3, 0.6), seed=0,
  keys=None) -> data_dir`` writes 16 kHz noise wavs under ``data_dir/wavs``
  and ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` (sorted). ``seconds``
  is a fixed duration or a (min, max) range drawn per utterance.

Fixtures:

* ``tiny_exp_factory`` (session): ``factory(encoder="transformer", **kwargs)``
  -> ``(config_path, model_path)``, cached per argument set.
* ``tiny_data_dir`` (session): a 4-utterance data directory.
"""

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pytest

# Let tests import the helpers below with "from conftest import ...".
sys.path.insert(0, str(Path(__file__).parent))

TINY_TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "D", "E", "<sos/eos>"]

_ENCODER_CONF = {
    "transformer": dict(output_size=16, attention_heads=2, linear_units=32),
    "conformer": dict(
        output_size=16,
        attention_heads=2,
        linear_units=32,
        cnn_module_kernel=3,
        macaron_style=True,
        rel_pos_type="latest",
        pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn",
    ),
    "branchformer": dict(
        output_size=16, attention_heads=2, cgmlp_linear_units=32, cgmlp_conv_kernel=3
    ),
    "e_branchformer": dict(
        output_size=16,
        attention_heads=2,
        cgmlp_linear_units=32,
        cgmlp_conv_kernel=3,
        linear_units=32,
        use_ffn=True,
        macaron_ffn=True,
        merge_conv_kernel=3,
    ),
}


def make_tiny_asr_exp(
    exp_dir: Union[str, Path],
    encoder: str = "transformer",
    num_blocks: int = 4,
    decoder_blocks: int = 2,
    encoder_conf: Optional[Dict[str, Any]] = None,
    decoder_conf: Optional[Dict[str, Any]] = None,
    model_conf: Optional[Dict[str, Any]] = None,
    seed: int = 0,
    model_name: str = "valid.acc.ave.pth",
    feature_input: bool = False,
) -> Tuple[Path, Path]:
    import torch
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    token_file = exp_dir / "tokens.txt"
    token_file.write_text("\n".join(TINY_TOKENS) + "\n", encoding="utf-8")
    args = ASRTask.get_parser().parse_args(
        ["--token_list", str(token_file), "--token_type", "char", "--output_dir", str(exp_dir)]
    )
    if feature_input:
        # No frontend: the model takes 16-dim feature sequences as "speech".
        args.frontend = None
        args.frontend_conf = {}
        args.input_size = 16
    else:
        args.frontend = "default"
        args.frontend_conf = dict(n_fft=128, hop_length=64, n_mels=16)
    args.normalize = None
    args.encoder = encoder
    args.encoder_conf = dict(_ENCODER_CONF[encoder], num_blocks=num_blocks)
    args.encoder_conf.update(encoder_conf or {})
    args.decoder = "transformer"
    args.decoder_conf = dict(
        attention_heads=2, linear_units=32, num_blocks=decoder_blocks, **(decoder_conf or {})
    )
    args.model_conf = {"ctc_weight": 0.3, **(model_conf or {})}
    torch.manual_seed(seed)
    model = ASRTask.build_model(args)  # also inlines the token list into args
    # Random weights everywhere (LayerNorm etc. too) so skipped layers matter.
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    config_path = exp_dir / "config.yaml"
    with config_path.open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    model_path = exp_dir / model_name
    torch.save(model.state_dict(), model_path)
    return config_path, model_path


def make_tiny_data_dir(
    data_dir: Union[str, Path],
    num_utts: int = 4,
    seconds: Union[float, Sequence[float]] = (0.3, 0.6),
    seed: int = 0,
    keys: Optional[Sequence[str]] = None,
) -> Path:
    import soundfile

    data_dir = Path(data_dir)
    wav_dir = data_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = list(keys) if keys is not None else [
        f"spk{i % 2}-utt{i:03d}" for i in range(num_utts)
    ]
    wav_scp, text, utt2spk = {}, {}, {}
    for key in keys:
        if isinstance(seconds, (int, float)):
            duration = float(seconds)
        else:
            duration = float(rng.uniform(seconds[0], seconds[1]))
        audio = (0.1 * rng.standard_normal(int(16000 * duration))).astype(np.float32)
        wav = wav_dir / f"{key}.wav"
        soundfile.write(wav, audio, 16000)
        wav_scp[key] = str(wav)
        text[key] = " ".join("".join(rng.choice(list("ABCDE"), 3)) for _ in range(2))
        utt2spk[key] = key.split("-")[0]
    for name, entries in (("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk)):
        (data_dir / name).write_text(
            "".join(f"{k} {entries[k]}\n" for k in sorted(entries)), encoding="utf-8"
        )
    spk2utt: Dict[str, list] = {}
    for key in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[key], []).append(key)
    (data_dir / "spk2utt").write_text(
        "".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())), encoding="utf-8"
    )
    return data_dir


@pytest.fixture(scope="session")
def tiny_exp_factory(tmp_path_factory):
    cache: Dict[str, Tuple[Path, Path]] = {}

    def factory(encoder: str = "transformer", **kwargs) -> Tuple[Path, Path]:
        key = json.dumps([encoder, kwargs], sort_keys=True, default=str)
        if key not in cache:
            exp_dir = tmp_path_factory.mktemp(f"exp_{encoder}")
            cache[key] = make_tiny_asr_exp(exp_dir, encoder=encoder, **kwargs)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return make_tiny_data_dir(tmp_path_factory.mktemp("data") / "calib", num_utts=4)
