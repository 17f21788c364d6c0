"""comflp_decode: several models, one process, ESPnet's Speech2Text."""

from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_data_dir

from comflp_espnet import records
from comflp_espnet.bin import comflp_decode

ROOT = Path(__file__).resolve().parents[1]

DECODE_CONF = {"beam_size": 2, "ctc_weight": 0.3, "lm_weight": 0, "maxlenratio": -3}


def read_text(path: Path):
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = " ".join(value.split())
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_exp_factory):
    root = tmp_path_factory.mktemp("decode")
    exp_a = tiny_exp_factory(num_blocks=2, decoder_blocks=1, seed=0)
    exp_b = tiny_exp_factory(num_blocks=2, decoder_blocks=1, seed=1)
    data = make_tiny_data_dir(root / "data", num_utts=4, seconds=0.3)
    keys = sorted(read_text(data / "text"))
    models_scp = root / "models.scp"
    models_scp.write_text(f"ma {exp_a[0]} {exp_a[1]}\nmb {exp_b[0]} {exp_b[1]}\n")
    conf = root / "decode.yaml"
    conf.write_text(yaml.safe_dump(DECODE_CONF))
    share1 = root / "keys.1.scp"
    share1.write_text("".join(f"{k} x\n" for k in keys[:2]))
    share2 = root / "keys.2.scp"
    share2.write_text("".join(f"{k} x\n" for k in keys[2:]))
    return dict(root=root, data=data, keys=keys, models_scp=models_scp, conf=conf,
                share1=share1, share2=share2, exp_a=exp_a)


def decode(setup, out, key_file=None, config=None, models_scp=None, extra=()):
    cmd = [
        "--models_scp", str(models_scp or setup["models_scp"]),
        "--data_path_and_name_and_type", f"{setup['data'] / 'wav.scp'},speech,sound",
        "--output_dir", str(out),
        "--config", str(config or setup["conf"]),
        "--ngpu", "0", "--num_workers", "0", *extra,
    ]
    if key_file is not None:
        cmd += ["--key_file", str(key_file)]
    comflp_decode.main(cmd)


def test_decodes_all_models_on_the_key_share_and_rerun_skips(setup):
    out = setup["root"] / "out.1"
    decode(setup, out, key_file=setup["share1"], extra=["--batch_size", "1"])
    share = setup["keys"][:2]
    for name in ("ma", "mb"):
        d = out / name
        assert sorted(read_text(d / "text")) == share
        assert sorted(read_text(d / "token")) == share
        assert int((d / "num_utts").read_text()) == 2
        assert float((d / "decode_time").read_text()) >= 0.0
        info = yaml.safe_load((d / "decode_info.yaml").read_text())
        assert info["inference_options"]["beam_size"] == 2
        assert info["inference_options"]["maxlenratio"] == -3.0
    assert sorted(p.name for p in out.iterdir()) == [".ma.record.json", ".mb.record.json", "ma", "mb"]
    assert records.read_record(out / "ma").made_from["options"]["inference"]["beam_size"] == 2

    stamps = {n: (out / n / "text").stat().st_mtime_ns for n in ("ma", "mb")}
    decode(setup, out, key_file=setup["share1"])
    assert {n: (out / n / "text").stat().st_mtime_ns for n in ("ma", "mb")} == stamps

    # Same output dir, another share: outputs are redone, not reused.
    decode(setup, out, key_file=setup["share2"])
    assert sorted(read_text(out / "ma" / "text")) == setup["keys"][2:]
    # A changed output is redone even though its times look the same.
    good = (out / "mb" / "text").read_text()
    (out / "mb" / "text").write_text("tampered\n")
    decode(setup, out, key_file=setup["share2"])
    assert (out / "mb" / "text").read_text() == good


def test_unreadable_and_too_short_audio_stop_or_are_skipped(setup):
    import numpy as np
    import soundfile

    root = setup["root"] / "bad_audio"
    data = make_tiny_data_dir(root / "data", num_utts=3, seconds=0.3, seed=3)
    keys = sorted(read_text(data / "text"))
    wavs = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())
    soundfile.write(wavs[keys[0]], np.zeros(8, dtype="float32"), 16000)  # 60 bytes: 8 samples
    Path(wavs[keys[1]]).write_bytes(b"RIFF garbage")
    scp = root / "models.scp"
    scp.write_text(f"ma {setup['exp_a'][0]} {setup['exp_a'][1]}\n")
    cmd = ["--models_scp", str(scp), "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
           "--config", str(setup["conf"]), "--num_workers", "0"]
    with pytest.raises(SystemExit) as e:
        comflp_decode.main(cmd + ["--output_dir", str(root / "out1")])
    assert f"{keys[1]}: {wavs[keys[1]]}" in str(e.value) and "--comflp_skip_bad_utts true" in str(e.value)
    assert not (root / "out1" / "ma").exists()
    Path(wavs[keys[1]]).unlink()
    soundfile.write(wavs[keys[1]], np.zeros(4800, dtype="float32"), 16000)
    with pytest.raises(SystemExit, match=f"utterance {keys[0]} is too short"):
        comflp_decode.main(cmd + ["--output_dir", str(root / "out2")])
    Path(wavs[keys[1]]).write_bytes(b"RIFF garbage")
    comflp_decode.main(cmd + ["--output_dir", str(root / "out3"), "--skip_bad_utts", "true"])
    assert sorted(read_text(root / "out3" / "ma" / "text")) == [keys[2]]
    skipped = (root / "out3" / "ma" / "skipped").read_text()
    assert f"{keys[0]} too short" in skipped and f"{keys[1]} {wavs[keys[1]]}" in skipped
    assert records.read_record(root / "out3" / "ma").info["num_skipped"] == 2


def test_damaged_model_file_is_named(setup):
    root = setup["root"] / "damaged_model"
    root.mkdir()
    broken = root / "broken.pth"
    broken.write_bytes(setup["exp_a"][1].read_bytes()[:2000])
    scp = root / "models.scp"
    scp.write_text(f"mx {setup['exp_a'][0]} {broken}\n")
    with pytest.raises(SystemExit) as e:
        decode(setup, root / "out", models_scp=scp, key_file=setup["share1"])
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert f"{broken}" in message and "cannot be loaded" in message and "damaged" in message


def test_outputs_match_stock_asr_inference(setup):
    from espnet2.bin import asr_inference

    ours = setup["root"] / "ours"
    decode(setup, ours)
    stock = setup["root"] / "stock"
    config, model = setup["exp_a"]
    asr_inference.main([
        "--asr_train_config", str(config), "--asr_model_file", str(model),
        "--data_path_and_name_and_type", f"{setup['data'] / 'wav.scp'},speech,sound",
        "--output_dir", str(stock), "--config", str(setup["conf"]), "--num_workers", "0",
    ])
    assert read_text(ours / "ma" / "text") == read_text(stock / "1best_recog" / "text")
    assert read_text(ours / "ma" / "token") == read_text(stock / "1best_recog" / "token")
    # maxlenratio -3 from the config bounds every hypothesis (plus end symbol).
    assert all(len(t.split()) <= 4 for t in read_text(ours / "ma" / "token").values())


@pytest.mark.parametrize(
    "content, message",
    [
        ("beam_size: [1,\n", "does not parse as YAML"),
        ("- beam_size\n- 3\n", "must be a YAML mapping"),
        ("beam_sise: 3\n", "unknown inference option 'beam_sise'"),
        ("batch_size: 4\n", "only batch_size 1"),
        ("asr_model_file: x.pth\n", "set per model"),
    ],
)
def test_bad_inference_config_stops_before_decoding(setup, content, message):
    conf = setup["root"] / "bad.yaml"
    conf.write_text(content)
    out = setup["root"] / "bad_out"
    with pytest.raises(SystemExit) as e:
        decode(setup, out, config=conf)
    assert message in str(e.value)
    assert str(conf) in str(e.value)
    assert not out.exists() or not any(out.iterdir())


def test_check_options_reads_speech2text_without_importing_espnet(tmp_path):
    import inspect
    import subprocess
    import sys

    from espnet2.bin.asr_inference import Speech2Text

    from comflp_espnet.decoding import speech2text_parameters_from_source

    from_source = speech2text_parameters_from_source()
    imported = inspect.signature(Speech2Text.__init__).parameters
    assert list(from_source) == list(imported)
    assert from_source["ctc_weight"].annotation is float
    conf = tmp_path / "decode.yaml"
    conf.write_text("beam_size: 2\nctc_weight: 0.3\n")
    probe = (
        "import sys; from comflp_espnet.bin.comflp_decode import main; "
        f"main(['--check_options', 'true', '--config', {str(conf)!r}, '--penalty', '0.5']); "
        "print(sorted(m for m in ('torch', 'espnet2.bin.asr_inference') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("[]")
    conf.write_text("ctc_wieght: 0.3\n")
    r = subprocess.run([sys.executable, "-m", "comflp_espnet.bin.comflp_decode", "--check_options", "true",
                        "--config", str(conf)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "unknown inference option 'ctc_wieght'" in r.stderr


def test_bad_models_scp_is_reported(setup):
    scp = setup["root"] / "bad_models.scp"
    scp.write_text(f"ma {setup['exp_a'][0]} {setup['root'] / 'missing.pth'}\n")
    with pytest.raises(SystemExit, match="missing.pth of 'ma' not found"):
        decode(setup, setup["root"] / "bad_out2", models_scp=scp)
    scp.write_text(f"ma {setup['exp_a'][0]}\n")
    with pytest.raises(SystemExit, match="expected '<name> <config.yaml> <model file>'"):
        decode(setup, setup["root"] / "bad_out2", models_scp=scp)


def test_extra_command_line_options_override_the_config(setup):
    out = setup["root"] / "override"
    decode(setup, out, key_file=setup["share1"], extra=["--maxlenratio", "-1", "--beam_size=1"])
    info = yaml.safe_load((out / "ma" / "decode_info.yaml").read_text())
    assert info["inference_options"]["maxlenratio"] == -1.0
    assert info["inference_options"]["beam_size"] == 1
    # One token at most (plus the end symbol ESPnet keeps at the length limit).
    assert all(len(t.split()) <= 2 for t in read_text(out / "ma" / "token").values())
    with pytest.raises(SystemExit, match="command line: unknown inference option 'beam_sise'"):
        decode(setup, setup["root"] / "override2", extra=["--beam_sise", "3"])
