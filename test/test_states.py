"""Hidden-state collection, pooling, Kaldi archives and the dump/corr CLIs."""

import logging

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import yaml

from comflp_espnet.dumping import DumpError, run_dump
from comflp_espnet.model_io import load_asr_model
from comflp_espnet.state_archive import load_states, read_info
from comflp_espnet.states import EncoderStateCollector, frame_subset, masked_mean
from conftest import make_tiny_data_dir


def _reference_states(model, speech, lengths):
    """h_0..h_L of each utterance from ESPnet's own return_all_hs, no hooks."""
    with torch.no_grad():
        feats, feats_lens = model._extract_feats(speech, lengths)
        encoder = model.encoder
        mask = (torch.arange(feats.size(1))[None, :] < feats_lens[:, None])[:, None, :]
        h0, _ = encoder.embed(feats, mask)
        h0 = h0[0] if isinstance(h0, tuple) else h0
        _, olens, _ = encoder(feats, feats_lens)
        (_, all_hs), _, _ = encoder(feats, feats_lens, return_all_hs=True)
    states = []
    for b in range(speech.size(0)):
        n = int(olens[b])
        states.append([h0[b, :n]] + [h[b, :n] for h in all_hs])
    return states


@pytest.fixture(scope="module")
def transformer_model(tiny_exp_factory):
    config, model_file = tiny_exp_factory("transformer", num_blocks=3)
    model, train_args = load_asr_model(config, model_file)
    return model, train_args, config, model_file


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_hooked_states_match_espnet_all_hidden_states(encoder, tiny_exp_factory):
    config, model_file = tiny_exp_factory(encoder, num_blocks=3)
    model, _ = load_asr_model(config, model_file)
    speech = 0.1 * torch.randn(2, 6000, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6000, 6000])
    reference = _reference_states(model, speech, lengths)
    with EncoderStateCollector(model, pooling="mean") as collector:
        pooled, skipped = collector.collect(["a", "b"], speech, lengths)
    with EncoderStateCollector(model, pooling="frame") as collector:
        frames, _ = collector.collect(["a", "b"], speech, lengths)
    assert skipped == []
    for key, ref in zip(["a", "b"], reference):
        assert pooled[key].shape == (4, 16)
        expected = np.stack([h.mean(0).numpy() for h in ref])
        np.testing.assert_allclose(pooled[key], expected, atol=1e-5)
        expected_frames = np.concatenate([h.numpy() for h in ref])
        np.testing.assert_allclose(frames[key], expected_frames, atol=1e-5)
    # h_L is the last layer's output, not the normalised encoder output.
    with torch.no_grad():
        out, _ = model.encode(speech, lengths)
    assert not np.allclose(pooled["a"][-1], out[0].mean(0).numpy(), atol=1e-3)


def test_masked_mean_ignores_padding_values():
    rng = np.random.default_rng(0)
    hidden = torch.tensor(rng.standard_normal((2, 6, 3)), dtype=torch.float32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    hidden[1, 3:] = float("inf")
    hidden[1, 4] = float("nan")
    result = masked_mean(hidden, mask[:, None, :]).numpy()
    np.testing.assert_allclose(result[0], hidden[0].mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(result[1], hidden[1, :3].mean(0).numpy(), rtol=1e-6)


def test_padding_an_utterance_does_not_change_its_pooled_state(tiny_exp_factory):
    # Feature-input transformer without subsampling: ESPnet's forward is exactly
    # padding-invariant there, so any difference would come from the pooling.
    config, model_file = tiny_exp_factory(
        "transformer", num_blocks=2, feature_input=True,
        encoder_conf={"input_layer": "linear"},
    )
    model, _ = load_asr_model(config, model_file)
    feats = torch.randn(1, 9, 16, generator=torch.Generator().manual_seed(0))
    longer = torch.randn(1, 20, 16, generator=torch.Generator().manual_seed(1))
    padded = torch.zeros(2, 20, 16)
    padded[0, :9] = feats[0]
    padded[1] = longer[0]
    padded_with_noise = padded.clone()
    padded_with_noise[0, 9:] = 100.0
    with EncoderStateCollector(model) as collector:
        alone, _ = collector.collect(["u"], feats, torch.tensor([9]))
        batched, _ = collector.collect(["u", "v"], padded, torch.tensor([9, 20]))
        noisy, _ = collector.collect(["u", "v"], padded_with_noise, torch.tensor([9, 20]))
    np.testing.assert_allclose(batched["u"], alone["u"], atol=1e-5)
    np.testing.assert_allclose(noisy["u"], alone["u"], atol=1e-5)
    assert not np.allclose(batched["v"], alone["u"], atol=1e-2)


def test_frame_subset_is_seeded_per_key():
    a = frame_subset(50, 10, seed=3, key="utt1")
    assert len(a) == 10 and np.all(np.diff(a) > 0) and a.max() < 50
    np.testing.assert_array_equal(a, frame_subset(50, 10, seed=3, key="utt1"))
    assert not np.array_equal(a, frame_subset(50, 10, seed=4, key="utt1"))
    assert not np.array_equal(a, frame_subset(50, 10, seed=3, key="utt2"))
    np.testing.assert_array_equal(frame_subset(7, 10, seed=0, key="x"), np.arange(7))


def test_dumped_states_read_back_equal_in_memory(transformer_model, tmp_path):
    model, train_args, _, _ = transformer_model
    data = make_tiny_data_dir(tmp_path / "data", num_utts=5, seed=3)
    triple = [(str(data / "wav.scp"), "speech", "sound")]
    out = tmp_path / "states"
    info = run_dump(model, train_args, triple, str(out), batch_size=2)
    assert info["num_utts"] == 5 and info["num_states"] == 4 and info["dim"] == 16
    assert read_info(out)["pooling"] == "mean"

    # In memory, utterance by utterance; dumped with batch size 1 as well since
    # ESPnet's frontend and subsampling are not exactly padding-invariant.
    stored = dict(kaldiio.load_scp(str(out / "states.scp")))
    run_dump(model, train_args, triple, str(tmp_path / "single"), batch_size=1)
    single = dict(kaldiio.load_scp(str(tmp_path / "single" / "states.scp")))
    keys = sorted(single)
    with EncoderStateCollector(model) as collector:
        for key in keys:
            path = [line.split()[1] for line in open(data / "wav.scp") if line.startswith(key)][0]
            audio, _ = soundfile.read(path, dtype="float32")
            speech = torch.tensor(audio)[None]
            states, _ = collector.collect([key], speech, torch.tensor([audio.shape[0]]))
            np.testing.assert_array_equal(single[key], states[key])
            assert stored[key].shape == (4, 16)

    loaded = load_states([out / "states.scp"])
    assert len(loaded) == 4 and all(s.shape == (5, 16) for s in loaded)
    for n, key in enumerate(line.split()[0] for line in open(out / "states.scp")):
        for i in range(4):
            np.testing.assert_array_equal(loaded[i][n], stored[key][i])


def test_frame_pooling_archive_layout(transformer_model, tmp_path):
    model, train_args, _, _ = transformer_model
    data = make_tiny_data_dir(tmp_path / "data", num_utts=3, seed=5)
    triple = [(str(data / "wav.scp"), "speech", "sound")]
    run_dump(model, train_args, triple, str(tmp_path / "all"), pooling="frame", batch_size=1)
    run_dump(model, train_args, triple, str(tmp_path / "sub"), pooling="frame",
             frames_per_utt=4, seed=7, batch_size=1)
    full = dict(kaldiio.load_scp(str(tmp_path / "all" / "states.scp")))
    sub = dict(kaldiio.load_scp(str(tmp_path / "sub" / "states.scp")))
    for key, matrix in full.items():
        frames = matrix.shape[0] // 4
        assert matrix.shape[0] == 4 * frames
        index = frame_subset(frames, 4, 7, key)
        expected = np.concatenate([matrix[i * frames:(i + 1) * frames][index] for i in range(4)])
        np.testing.assert_array_equal(sub[key], expected)
    states = load_states(tmp_path / "sub" / "states.scp")
    assert len(states) == 4 and all(s.shape == (12, 16) for s in states)


@pytest.mark.parametrize("samples", [330, 8])  # 6 frames < the 7 conv2d needs; 8 samples: a 60-byte wav
def test_too_short_utterances_stop_unless_skipped(transformer_model, tmp_path, caplog, samples):
    model, train_args, _, _ = transformer_model
    data = make_tiny_data_dir(tmp_path / "data", num_utts=4, seed=1)
    short_wav = tmp_path / "data" / "wavs" / "spk1-utt001.wav"
    soundfile.write(short_wav, np.zeros(samples, dtype=np.float32) + 0.01, 16000)
    triple = [(str(data / "wav.scp"), "speech", "sound")]
    with pytest.raises(DumpError, match="spk1-utt001 .*too short.*--comflp_skip_bad_utts true"):
        run_dump(model, train_args, triple, str(tmp_path / "e"), batch_size=2)
    assert not (tmp_path / "e").exists()
    with caplog.at_level(logging.WARNING):
        info = run_dump(model, train_args, triple, str(tmp_path / "s"), batch_size=2, skip_bad_utts=True)
    assert info["num_skipped"] == 1 and info["skipped_keys"] == ["spk1-utt001"]
    assert "too short" in info["skipped_reasons"]["spk1-utt001"]
    assert info["num_utts"] == 3
    assert "spk1-utt001" not in dict(kaldiio.load_scp(str(tmp_path / "s" / "states.scp")))
    assert "spk1-utt001 (too short" in caplog.text


def test_unreadable_audio_is_named_unless_skipped(transformer_model, tmp_path):
    model, train_args, _, _ = transformer_model
    data = make_tiny_data_dir(tmp_path / "data", num_utts=3, seed=2)
    bad = tmp_path / "data" / "wavs" / "spk0-utt002.wav"
    bad.write_bytes(b"RIFF" + bytes(56))
    triple = [(str(data / "wav.scp"), "speech", "sound")]
    with pytest.raises(DumpError) as e:
        run_dump(model, train_args, triple, str(tmp_path / "e"), batch_size=2)
    assert f"spk0-utt002: {bad}" in str(e.value) and "--comflp_skip_bad_utts true" in str(e.value)
    info = run_dump(model, train_args, triple, str(tmp_path / "s"), batch_size=2, skip_bad_utts=True)
    assert info["skipped_keys"] == ["spk0-utt002"] and info["num_utts"] == 2


def _dump_cli(config, model_file, data, out, *extra):
    from comflp_espnet.bin import comflp_dump

    comflp_dump.main([
        "--asr_train_config", str(config), "--asr_model_file", str(model_file),
        "--data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
        "--output_dir", str(out), *extra,
    ])


@pytest.mark.parametrize("damage", ["text_mismatch", "empty", "missing_audio", "bad_key"])
def test_dump_cli_bad_data_exits_without_output(damage, transformer_model, tmp_path):
    _, _, config, model_file = transformer_model
    data = make_tiny_data_dir(tmp_path / "data", num_utts=3)
    extra = []
    if damage == "text_mismatch":
        lines = (data / "text").read_text().splitlines()
        (data / "text").write_text("\n".join(lines[1:]) + "\n")
    elif damage == "empty":
        (data / "wav.scp").write_text("")
    elif damage == "missing_audio":
        (data / "wavs" / "spk0-utt000.wav").unlink()
    else:
        (tmp_path / "keys").write_text("spk0-utt000\nnot-there\n")
        extra = ["--key_file", str(tmp_path / "keys")]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as excinfo:
        _dump_cli(config, model_file, data, out, *extra)
    assert excinfo.value.code not in (0, None)
    assert "wav.scp" in str(excinfo.value.code) or "key_file" in str(excinfo.value.code)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_dump_jobs_merge_and_corr_cli(transformer_model, tmp_path):
    from comflp_espnet.bin import comflp_corr, comflp_dump
    from comflp_espnet.datadir import write_key_files

    _, _, config, model_file = transformer_model
    data = make_tiny_data_dir(tmp_path / "data", num_utts=5, seed=2)
    keys = [line.split()[0] for line in open(data / "wav.scp")]
    write_key_files(keys, 2, tmp_path / "split")
    for job in (1, 2):
        _dump_cli(config, model_file, data, tmp_path / f"states/output.{job}",
                  "--key_file", str(tmp_path / f"split/keys.{job}.scp"), "--batch_size", "2")
    comflp_dump.main(["--merge", str(tmp_path / "states/output.1"),
                      str(tmp_path / "states/output.2"), "--output_dir", str(tmp_path / "states")])
    merged = read_info(tmp_path / "states")
    assert merged["num_utts"] == 5
    assert [k for k, _ in kaldiio.load_scp_sequential(str(tmp_path / "states/states.scp"))] == keys
    jobs = load_states([tmp_path / f"states/output.{j}/states.scp" for j in (1, 2)])
    both = load_states(tmp_path / "states/states.scp")
    for a, b in zip(jobs, both):
        np.testing.assert_array_equal(a, b)

    out = tmp_path / "corr" / "cka.npy"
    comflp_corr.main(["--states_scp", str(tmp_path / "states/states.scp"), "--measure", "cka",
                      "--output", str(out), "--heatmap", str(tmp_path / "corr" / "cka.png")])
    corr = np.load(out)
    assert corr.shape == (4, 4)
    np.testing.assert_allclose(corr, corr.T, atol=1e-8)
    assert (tmp_path / "corr" / "cka.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(SystemExit) as excinfo:
        comflp_corr.main(["--states_scp", str(tmp_path / "nope.scp"), "--output", str(out) + "2"])
    assert excinfo.value.code not in (0, None)
    assert not (tmp_path / "corr" / "cka.npy2").exists()
    with open(tmp_path / "states" / "states_info.yaml") as f:
        assert yaml.safe_load(f)["pooling"] == "mean"


def test_corr_cli_names_an_unreadable_scp(tmp_path):
    from comflp_espnet.bin import comflp_corr

    scp = tmp_path / "states.scp"
    scp.write_text("utt1 missing.ark:12\n")
    out = tmp_path / "corr.npy"
    with pytest.raises(SystemExit) as excinfo:
        comflp_corr.main(["--states_scp", str(scp), "--output", str(out)])
    assert f"{scp}: cannot read the states it lists" in str(excinfo.value.code)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_dump_cli_gpu_request_without_cuda_is_an_input_error(tmp_path):
    data = make_tiny_data_dir(tmp_path / "data", num_utts=2)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as excinfo:
        _dump_cli(tmp_path / "config.yaml", tmp_path / "model.pth", data, out, "--ngpu", "1")
    assert "--ngpu 1 but no CUDA device" in str(excinfo.value.code)
    assert not out.exists()
