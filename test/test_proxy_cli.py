"""comflp_proxy: one job scoring candidates on a Kaldi data dir, outputs and errors."""

import pytest
import torch
import yaml

from comflp_espnet import proxy_job
from comflp_espnet.bin import comflp_proxy
from comflp_espnet.model_io import load_asr_model
from comflp_espnet.proxy import TokenTexter, ctc_greedy_ids
from comflp_espnet.surgery import prune_experiment

CANDIDATES = {"orig": [], "cand01": [2], "cand02": [1, 3], "cand03": [4], "cand04": [2, 3]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import make_tiny_asr_exp, make_tiny_data_dir

    top = tmp_path_factory.mktemp("proxy_cli")
    config, model_file = make_tiny_asr_exp(top / "exp", num_blocks=4)
    data = make_tiny_data_dir(top / "data", num_utts=5, seconds=(0.2, 0.7))
    cand_file = top / "candidates.txt"
    cand_file.write_text(
        "# name pruned layers\n"
        + "".join(f"{n} {','.join(map(str, l))}\n" for n, l in CANDIDATES.items())
    )
    keys = top / "keys.1.scp"
    keys.write_text("".join(l.split()[0] + "\n" for l in (data / "wav.scp").read_text().splitlines()[:4]))
    return {"top": top, "config": config, "model": model_file, "data": data,
            "candidates": cand_file, "keys": keys}


def args(s, out, proxy="ctc_greedy", batch_size=1, text=False, **extra):
    cmd = [
        "--asr_train_config", str(s["config"]), "--asr_model_file", str(s["model"]),
        "--candidates", str(extra.pop("candidates", s["candidates"])),
        "--data_path_and_name_and_type", f"{s['data']}/wav.scp,speech,sound",
        "--key_file", str(s["keys"]), "--output_dir", str(out),
        "--proxy", proxy, "--batch_size", str(batch_size),
    ]
    if text:
        cmd += ["--data_path_and_name_and_type", f"{s['data']}/text,text,text"]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def read_utterances(s, with_text=False):
    """(key, speech, lengths, text, text_lengths) one at a time, as ESPnet reads them."""
    from espnet2.tasks.asr import ASRTask

    _, train_args = load_asr_model(s["config"], s["model"])
    triples = [(f"{s['data']}/wav.scp", "speech", "sound")]
    if with_text:
        triples.append((f"{s['data']}/text", "text", "text"))
    loader = ASRTask.build_streaming_iterator(
        triples, dtype="float32", batch_size=1, key_file=str(s["keys"]), num_workers=0,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=ASRTask.build_collate_fn(train_args, False), inference=not with_text,
    )
    for keys, batch in loader:
        yield keys[0], batch


def pruned_models(s):
    models = {}
    for name, layers in CANDIDATES.items():
        if layers:
            d = prune_experiment(s["config"], s["model"], s["top"] / "pruned" / name, layers)
            models[name] = load_asr_model(d / "config.yaml", d / s["model"].name)[0]
        else:
            models[name] = load_asr_model(s["config"], s["model"])[0]
    return models


def test_ctc_greedy_outputs_equal_pruned_models(setup, tmp_path):
    s = setup
    out = tmp_path / "out"
    comflp_proxy.main(args(s, out, batch_size=1))
    info = yaml.safe_load((out / "proxy_info.yaml").read_text())
    assert info["proxy"] == "ctc_greedy" and info["num_utts"] == 4
    assert info["candidates"] == CANDIDATES
    lf = info["layer_forwards"]
    assert lf["done"] == lf["predicted"] == lf["per_batch"] * 4 < lf["without_sharing"]
    model, train_args = load_asr_model(s["config"], s["model"])
    texter = TokenTexter.from_model(model, train_args)
    models = pruned_models(s)
    keys = s["keys"].read_text().split()
    for name, m in models.items():
        lines = (out / name / "text").read_text().splitlines()
        assert [l.split(maxsplit=1)[0] for l in lines] == keys
        written = {l.split(maxsplit=1)[0]: (l.split(maxsplit=1) + [""])[1] for l in lines}
        for key, batch in read_utterances(s):
            with torch.inference_mode():
                enc, lens = m.encode(batch["speech"], batch["speech_lengths"])
                expected = texter(ctc_greedy_ids(m, enc, lens)[0])
            assert written[key] == expected, (name, key)
    # Candidates do not all read the same (random weights, pruning matters).
    assert len({(out / n / "text").read_text() for n in CANDIDATES}) > 1


def test_loss_outputs_equal_pruned_models(setup, tmp_path):
    s = setup
    out = tmp_path / "out"
    comflp_proxy.main(args(s, out, proxy="loss", text=True, batch_size=1))
    info = yaml.safe_load((out / "proxy_info.yaml").read_text())
    assert info["proxy"] == "loss"
    models = pruned_models(s)
    for name, m in models.items():
        rows = {l.split()[0]: l.split()[1:] for l in (out / name / "loss").read_text().splitlines()}
        assert len(rows) == 4
        for key, batch in read_utterances(s, with_text=True):
            with torch.inference_mode():
                expected = m(batch["speech"], batch["speech_lengths"], batch["text"],
                             batch["text_lengths"])[0]
            assert float(rows[key][0]) == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
            assert int(rows[key][1]) == int(batch["text_lengths"][0])
    # Set level from two job files (as JOB=1:2 would write them).
    lines = (out / "orig" / "loss").read_text().splitlines(keepends=True)
    (tmp_path / "a").write_text("".join(lines[:2]))
    (tmp_path / "b").write_text("".join(lines[2:]))
    agg = proxy_job.aggregate_loss([tmp_path / "a", tmp_path / "b"])
    losses = [float(l.split()[1]) for l in lines]
    tokens = sum(int(l.split()[2]) for l in lines)
    assert agg["num_utts"] == 4 and agg["num_tokens"] == tokens
    assert agg["per_token"] == pytest.approx(sum(losses) / tokens)
    assert agg["per_utt"] == pytest.approx(sum(losses) / 4)
    (tmp_path / "c").write_text(lines[0])
    with pytest.raises(proxy_job.InputError, match="already in"):
        proxy_job.aggregate_loss([tmp_path / "a", tmp_path / "c"])
    (tmp_path / "d").write_text("utt 1.0\n")
    with pytest.raises(proxy_job.InputError, match=r"d:1: expected"):
        proxy_job.aggregate_loss([tmp_path / "d"])


def test_batched_run_and_rerun(setup, tmp_path, caplog):
    s = setup
    out = tmp_path / "out"
    comflp_proxy.main(args(s, out, batch_size=3))
    info = yaml.safe_load((out / "proxy_info.yaml").read_text())
    assert info["batches"] == 2
    assert info["layer_forwards"]["done"] == info["layer_forwards"]["predicted"]
    stamp = (out / "proxy_info.yaml").stat().st_mtime_ns
    import logging

    with caplog.at_level(logging.INFO):
        comflp_proxy.main(args(s, out, batch_size=3))
    assert "is current" in caplog.text
    assert (out / "proxy_info.yaml").stat().st_mtime_ns == stamp


def error_of(cmd):
    with pytest.raises(SystemExit) as e:
        comflp_proxy.main(cmd)
    message = str(e.value.code)
    assert message.startswith("comflp_proxy: error: ")
    assert "\n" not in message, message
    return message


def test_errors(setup, tmp_path):
    s = setup
    out = tmp_path / "out"
    assert "no such file" in error_of(args(s, out, candidates=tmp_path / "none.txt"))
    dup = tmp_path / "dup.txt"
    dup.write_text("a 1\nb 2\na 3\n")
    assert f"{dup}:3: duplicated candidate name 'a'" in error_of(args(s, out, candidates=dup))
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1\nb x,2\n")
    assert f"{bad}:2:" in error_of(args(s, out, candidates=bad))
    far = tmp_path / "far.txt"
    far.write_text("a 1\nb 2,5\n")
    message = error_of(args(s, out, candidates=far))
    assert f"{far}:2: b: layer id(s) [5] out of range" in message and "4 layers" in message
    assert "needs the reference text" in error_of(args(s, out, proxy="loss"))
    keys = tmp_path / "keys.scp"
    keys.write_text("nosuchutt\n")
    assert "lacks 1 utterance" in error_of(args(s, out) + ["--key_file", str(keys)])
    truncated = tmp_path / "model.pth"
    data = s["model"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    cmd = args(s, out)
    cmd[cmd.index(str(s["model"]))] = str(truncated)
    message = error_of(cmd)
    assert str(truncated) in message
    assert not out.exists() and not list(tmp_path.glob(".out*"))
