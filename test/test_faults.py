"""Fault table: what a user gets when a run is killed, an output is tampered with or damaged, two
runs meet, or an option or input is wrong.

Every case runs the real stage script (asr_comflp.sh, stages 14-18) on a tiny ESPnet model (4-block
Transformer, random weights) and Kaldi data dirs of a few utterances, in a copy of one finished run.

| case | command | expected outcome |
|---|---|---|
| kill in stage 14 | `run.sh --stage 14 --stop_stage 15`, killed (process group, SIGKILL) while the dump jobs run; rerun | states and matrix equal to an uninterrupted run's; no temporary names left |
| kill while a finalist is written | `--stage 16 --stop_stage 18`, held at the rename of `candidates/cand01` and killed there; rerun | same proposals, candidate files and winner as uninterrupted; `.cand01.tmp*` removed |
| kill at the end of stage 17 | the state it leaves (finalists written, the fine search's record missing, a `.cand03.tmp*` dir); rerun 16-18 with `--comflp_topk 3` | stage 16 redone with the new option (3 candidates, all finalists), temporaries gone, `search_seconds` recorded |
| kill in stage 17 | `--stage 17 --stop_stage 18`, held at the rename of a candidate's hypotheses in decode job 1 and killed there; rerun | same hypotheses, scores and winner as uninterrupted |
| kill in stage 18 | the state it leaves (scores written without record, a `.scores.tmp*` dir with another winner); rerun | scores redone, same winner, temporaries gone |
| edited fine-search hypothesis | `fine_evals/decode_<h>/hyp/<key>/text` made perfect; `--stage 18` alone, then `--stage 17 --stop_stage 18` | stage 18 alone stops naming the file and stage 17; then the hypothesis is restored and the winner is the uninterrupted one |
| emptied fine-search hypothesis | the same file emptied; `--stage 17 --stop_stage 18` | stage 17 redoes it; same scores and winner |
| truncated candidate model | `candidates/cand01/<model>` cut to 1000 bytes; `--stage 18` alone, then `--stage 14 --stop_stage 18` | stage 18 alone stops naming the file and stage 17; then stage 17 rebuilds it byte for byte and its decode is not redone |
| truncated states archive | `states/logdir/output.1/states.ark` cut; `--stage 15` alone, then `--stage 14 --stop_stage 15` | stage 15 alone stops naming the archive and stage 14; then stage 14 redoes it, same matrix |
| two runs at once | a second `run.sh` while the first (held before writing its scores) holds `--comflp_dir` | the second stops at once naming the first (pid, command); with `--comflp_lock_wait` it waits and runs |
| wrong fine-search size or set | `--comflp_fine_nutt 2` / `--comflp_fine_set ev` after a run with all of dv; `--comflp_fine_nutt 10` for a fresh dir | stops before any work, names --comflp_fine_nutt / --comflp_fine_set and the shared `fine` dir and says a tag does not help / names the set size; nothing changed |
| truncated model file | the original `.pth` cut; `comflp_prune`, `comflp_dump`, `comflp_decode` on it, and `run.sh --stage 14` | one-line error naming the file (exit non-zero); no output |
| truncated model (recipe) | the original `.pth` replaced by a truncated copy; `--stage 14 --stop_stage 14` | stage 14 is redone (the model changed) and stops with a one-line error naming the file |
| 60-byte audio file | one calibration wav replaced by 8 samples; `--stage 14` | error naming the utterance and --comflp_skip_bad_utts; with `--comflp_skip_bad_utts true` it is skipped, counted and listed |
| config with a missing token list | `comflp_prune` run from another directory | error naming token_list; nothing written |
| --comflp_keep after run.sh's --comflp_num_prune | `--comflp_num_prune 2 --comflp_keep 3` | the later option wins (tag `..._prune1`) |
| parameter counts | the finished run's prune.yaml and ranking | learnable parameters only (the mel matrix buffer excluded) |

Marked ``recipe``: it runs the stage script many times (minutes).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from comflp_espnet import records
from comflp_espnet.atomic import is_temporary_name
from comflp_espnet.rundir import RunDir
from conftest import make_tiny_asr_exp, make_tiny_data_dir

pytestmark = pytest.mark.recipe

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "egs2" / "TEMPLATE" / "asr1_comflp"
MODEL = "valid.acc.ave.pth"
TAG = "dc_dp_prune2"
OPTIONS = ["--asr_exp", "exp/m", "--train_set", "tr", "--valid_set", "dv", "--test_sets", "ev",
           "--token_type", "char", "--use_lm", "false", "--ngpu", "0", "--nj", "1", "--inference_nj", "1",
           "--comflp_num_prune", "2", "--comflp_topk", "2", "--comflp_calib_nutt", "0", "--comflp_fine_nutt", "0",
           "--inference_config", "conf/decode.yaml", "--comflp_finetune", "false"]


# ------------------------------------------------------------------ the demo recipe and its runs
def make_recipe(top: Path) -> Path:
    (top / "egs2" / "TEMPLATE").mkdir(parents=True)
    (top / "egs2" / "TEMPLATE" / "asr1_comflp").symlink_to(TEMPLATE)
    d = top / "egs2" / "demo" / "asr1_comflp"
    d.mkdir(parents=True)
    for name in ("asr_comflp.sh", "path.sh"):
        (d / name).symlink_to(f"../../TEMPLATE/asr1_comflp/{name}")
    shutil.copy(ROOT / "egs2" / "mini_an4" / "asr1_comflp" / "cmd.sh", d / "cmd.sh")
    make_tiny_asr_exp(d / "exp" / "m", num_blocks=4, decoder_blocks=1)
    for name, n, seed in (("tr", 6, 0), ("dv", 3, 1), ("ev", 2, 2)):
        data = make_tiny_data_dir(d / "dump" / "raw" / name, num_utts=n, seconds=(0.4, 0.6), seed=seed,
                                  keys=[f"{name}{i}-u{i}" for i in range(n)])
        (data / "feats_type").write_text("raw\n")
        (data / "audio_format").write_text("wav\n")
    (d / "conf").mkdir()
    (d / "conf" / "decode.yaml").write_text("beam_size: 2\nctc_weight: 0.3\nmaxlenratio: -3\n")
    return d


def env():
    e = dict(os.environ)
    e.pop("VIRTUAL_ENV", None)
    e["COMFLP_VENV"] = sys.prefix
    return e


def run(d: Path, *args, timeout=900):
    """./asr_comflp.sh with the demo options and ARGS (later options win)."""
    return subprocess.run(["./asr_comflp.sh", *OPTIONS, *args], cwd=d, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def ok(r):
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    return r


def start(d: Path, log: Path, *args, hold: str = None):
    """The stage script in its own process group (so that a kill takes its jobs too).  With HOLD (a
    regular expression), the first rename to a matching path waits (test/fault_hold): the run is
    then at a known point, ``held(proc)`` says when, ``release(proc)`` lets it go on."""
    f = open(log, "w")
    e = env()
    if hold:
        e["PYTHONPATH"] = str(ROOT / "test" / "fault_hold") + os.pathsep + e.get("PYTHONPATH", "")
        e.update(COMFLP_FAULT_HOLD=hold, COMFLP_FAULT_FLAG=str(log) + ".held",
                 COMFLP_FAULT_RELEASE=str(log) + ".release")
    proc = subprocess.Popen(["./asr_comflp.sh", *OPTIONS, *args], cwd=d, env=e, stdout=f,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_file = f
    proc.held = lambda: Path(str(log) + ".held").is_file()
    proc.release = lambda: Path(str(log) + ".release").write_text("")
    return proc


def kill_when(proc, condition, timeout=600):
    """SIGKILL the run's process group as soon as ``condition()`` holds (as kill -9 of a user)."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the kill point: {open(proc.log_file.name).read()[-3000:]}"
        assert time.time() < deadline, "kill point not reached"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.log_file.close()


def copy(base: Path, dst: Path, without=()) -> Path:
    """A copy of the demo recipe (outputs included, symlinks kept), less the paths in ``without``."""
    shutil.copytree(base.parents[2], dst, symlinks=True)
    d = dst / "egs2" / "demo" / "asr1_comflp"
    for rel in without:
        p = d / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        records.remove_record(p)
    return d


def comflp(d: Path) -> RunDir:
    return RunDir(d / "exp" / "m" / "comflp")


def rel(path: Path) -> str:
    """A run-directory path as the recipe names it (relative to the recipe directory)."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("exp"):]))


def temporaries(d: Path):
    return [p for p in (d / "exp" / "m" / "comflp").rglob("*") if is_temporary_name(p.name)]


def outcome(d: Path):
    """What the search decided, for comparison with the uninterrupted run."""
    t = comflp(d).tag(TAG)
    scores = json.loads((t.scores / "scores.json").read_text())
    return {"winner": (t.scores / "winner").read_text().strip(),
            "ranking": [(r["name"], r["pruned"], r["cer"], r["wer"])
                        for r in json.loads((t.scores / "ranking.json").read_text())["ranking"]],
            "scores": {n: (m["cer"], m["wer"]) for n, m in scores["models"].items()},
            "hyps": {n: (fine_hyp(d, n) / "text").read_text() for n in ("original", "cand01", "cand02")}}


def fine_hyp(d: Path, name: str) -> Path:
    """The fine-search hypotheses of a candidate (or the original) in the shared evaluation cache."""
    doc = json.loads(comflp(d).tag(TAG).fine_search_json.read_text())
    entry = doc["original"] if name == "original" else next(c for c in doc["candidates"] if c["name"] == name)
    return d / entry["hyp"]


def file_bytes(*paths):
    return [Path(p).read_bytes() for p in paths]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The uninterrupted run: stages 14-18 on the demo recipe."""
    d = make_recipe(tmp_path_factory.mktemp("base"))
    ok(run(d, "--stage", "14", "--stop_stage", "18"))
    return {"dir": d, "outcome": outcome(d), "tmp": tmp_path_factory}


def fresh(base, name, without=()):
    return copy(base["dir"], base["tmp"].mktemp(name) / "recipe", without)


# ------------------------------------------------------------------ kills
def test_kill_in_stage_14(base):
    d = fresh(base, "kill14", without=["exp/m/comflp"])
    states = comflp(d).states
    proc = start(d, d / "first.log", "--stage", "14", "--stop_stage", "15")
    kill_when(proc, lambda: (states / "logdir" / "dump.1.log").is_file())  # the dump job has started
    assert records.read_record(states) is None
    r = ok(run(d, "--stage", "14", "--stop_stage", "15"))
    assert "Stage 14: Dump encoder states" in r.stdout and "ended without finishing" in r.stderr
    b = comflp(base["dir"])
    assert np.array_equal(np.load(comflp(d).corr_file("dc")), np.load(b.corr_file("dc")))
    assert file_bytes(states / "logdir/output.1/states.ark") == file_bytes(b.states / "logdir/output.1/states.ark")
    assert temporaries(d) == []


def test_kill_while_a_finalist_is_written(base):
    d = fresh(base, "kill_finalist", without=[f"exp/m/comflp/{TAG}"])
    t = comflp(d).tag(TAG)
    proc = start(d, d / "first.log", "--stage", "16", "--stop_stage", "18", hold=r"/candidates/cand01$")
    kill_when(proc, proc.held)
    assert [p.name for p in t.candidates.iterdir() if ".cand01.tmp" in p.name]  # what the kill leaves
    r = ok(run(d, "--stage", "16", "--stop_stage", "18"))
    assert "removed" in r.stderr and "temporary output" in r.stderr
    bt = comflp(base["dir"]).tag(TAG)
    assert t.proposals.read_text() == bt.proposals.read_text()
    for name in ("cand01", "cand02"):
        assert file_bytes(t.candidate(name) / MODEL, t.candidate(name) / "config.yaml") == \
            file_bytes(bt.candidate(name) / MODEL, bt.candidate(name) / "config.yaml")
    assert outcome(d) == base["outcome"]
    assert temporaries(d) == []


def test_kill_at_the_end_of_stage_17_and_other_settings(base):
    d = fresh(base, "kill17end")
    t = comflp(d).tag(TAG)
    records.record_path(t.fine_search).unlink()        # killed before its record was written
    shutil.copytree(t.candidate("cand02"), t.candidates / ".cand03.tmpk1ll3d")
    r = ok(run(d, "--stage", "16", "--stop_stage", "18", "--comflp_topk", "3"))
    assert "option topk: 2 -> 3" in r.stdout  # the other settings are noticed, not silently accepted
    assert [p.name for p in sorted(t.candidates.iterdir()) if p.is_dir()] == ["cand01", "cand02", "cand03"]
    assert temporaries(d) == []
    cost = json.loads(t.search_cost_json.read_text())
    assert cost["search_seconds"] is not None and cost["not_recorded"] == []
    assert cost["search_decodes"] == 3


def test_kill_in_stage_17(base):
    d = fresh(base, "kill17", without=["exp/m/comflp/fine_evals", f"exp/m/comflp/{TAG}/scores"])
    proc = start(d, d / "first.log", "--stage", "17", "--stop_stage", "18", "--inference_nj", "2",
                 hold=r"fine_evals/decode_[^/]+/logdir/output\.1/rm[0-9-]+$")
    kill_when(proc, proc.held)  # job 1 is about to keep a candidate's hypotheses
    r = ok(run(d, "--stage", "17", "--stop_stage", "18", "--inference_nj", "2"))
    assert "Stage 17: Fine search" in r.stdout
    assert outcome(d) == base["outcome"]
    assert temporaries(d) == []


def test_kill_in_stage_18(base):
    d = fresh(base, "kill18")
    t = comflp(d).tag(TAG)
    records.record_path(t.scores).unlink()
    shutil.copytree(t.scores, t.root / ".scores.tmpk1ll3d")
    (t.root / ".scores.tmpk1ll3d" / "winner").write_text("cand02\n")
    r = ok(run(d, "--stage", "18", "--stop_stage", "18"))
    assert "Stage 18: Score the finalists" in r.stdout
    assert outcome(d) == base["outcome"] and temporaries(d) == []


# ------------------------------------------------------------------ tampered and damaged outputs
def test_edited_fine_search_hypothesis_is_never_used(base):
    d = fresh(base, "edited_hyp")
    t = comflp(d).tag(TAG)
    loser = next(n for n in ("cand01", "cand02") if n != base["outcome"]["winner"])
    (fine_hyp(d, loser) / "text").write_text((comflp(d).fine / "text").read_text())  # a perfect hypothesis
    r = run(d, "--stage", "18", "--stop_stage", "18")
    assert r.returncode != 0
    assert f"{rel(fine_hyp(d, loser) / 'text')} changed or damaged" in r.stderr
    assert "run stage 17 first" in r.stderr
    r = ok(run(d, "--stage", "17", "--stop_stage", "18"))
    assert "Stage 17: Fine search" in r.stdout
    assert outcome(d) == base["outcome"]


def test_emptied_fine_search_hypothesis_is_redone(base):
    d = fresh(base, "emptied_hyp")
    (fine_hyp(d, "cand01") / "text").write_text("")
    ok(run(d, "--stage", "17", "--stop_stage", "18"))
    assert outcome(d) == base["outcome"]


def test_truncated_candidate_model_is_rebuilt(base):
    d = fresh(base, "truncated_cand")
    t = comflp(d).tag(TAG)
    model = t.candidate("cand01") / MODEL
    good = model.read_bytes()
    model.write_bytes(good[:1000])
    r = run(d, "--stage", "18", "--stop_stage", "18")
    assert r.returncode != 0 and f"{rel(model)} changed or damaged" in r.stderr and "run stage 17" in r.stderr
    hyp_before = (fine_hyp(d, "cand01") / "text").stat().st_mtime_ns
    r = ok(run(d, "--stage", "14", "--stop_stage", "18"))
    assert "Stage 17: Fine search" in r.stdout and "rebuilding it" in r.stderr
    assert model.read_bytes() == good
    assert "Decoding" not in r.stdout  # the rebuilt model is the same: its hypotheses are current
    assert (fine_hyp(d, "cand01") / "text").stat().st_mtime_ns == hyp_before
    assert outcome(d) == base["outcome"]


def test_truncated_states_archive_is_named_then_redone(base):
    d = fresh(base, "truncated_ark")
    run_dir = comflp(d)
    ark = run_dir.states / "logdir" / "output.1" / "states.ark"
    ark.write_bytes(ark.read_bytes()[:100])
    r = run(d, "--stage", "15", "--stop_stage", "15")
    assert r.returncode != 0 and f"{rel(ark)} changed or damaged" in r.stderr and "run stage 14 first" in r.stderr
    r = ok(run(d, "--stage", "14", "--stop_stage", "15"))
    assert "Stage 14: Dump encoder states" in r.stdout
    # States dumped again byte for byte as before (their record then has the same digest) leave the
    # matrix made from them current: stage 15 may redo it or keep it.
    assert "Stage 15: Correlation matrix" in r.stdout or "Stage 15: the correlation matrices (dc) in" in r.stdout
    # Either way the matrix is made from the states as they are now.
    assert records.read_record(run_dir.corr("dc")).made_from["inputs"]["states"] == records.read_record(run_dir.states).digest
    assert np.array_equal(np.load(run_dir.corr_file("dc")), np.load(comflp(base["dir"]).corr_file("dc")))


# ------------------------------------------------------------------ two runs at once
def test_second_run_names_the_first_and_can_wait(base):
    d = fresh(base, "two_runs", without=[f"exp/m/comflp/{TAG}/scores"])
    lock = comflp(d).lock_file
    first = start(d, d / "first.log", "--stage", "17", "--stop_stage", "18", hold=r"/scores$")
    deadline = time.time() + 300
    while not first.held():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    assert lock.read_text().strip()
    second = run(d, "--stage", "18", "--stop_stage", "18")
    assert second.returncode != 0
    assert f"pid {first.pid}" in second.stderr and "--stage 17 --stop_stage 18" in second.stderr
    assert "--comflp_lock_wait" in second.stderr
    waiting = subprocess.Popen(["./asr_comflp.sh", *OPTIONS, "--stage", "18", "--stop_stage", "18",
                                "--comflp_lock_wait", "600"], cwd=d, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert waiting.poll() is None  # it waits for the first run
    first.release()
    assert first.wait(timeout=600) == 0
    first.log_file.close()
    out, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, out[-3000:] + err[-3000:]
    waiting = subprocess.CompletedProcess(waiting.args, 0, out, err)
    assert "Stage 18: " in waiting.stdout
    assert outcome(d) == base["outcome"] and lock.read_text() == ""


# ------------------------------------------------------------------ wrong options and inputs
def test_wrong_fine_search_options_stop_before_any_work(base):
    d = fresh(base, "fine_options")
    run_dir = comflp(d)
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.root.rglob("*") if p.is_file()}
    r = run(d, "--stage", "14", "--stop_stage", "18", "--comflp_fine_nutt", "2")
    assert r.returncode != 0 and "Stage 14" not in r.stdout
    assert f"{rel(run_dir.fine)} was made with --comflp_fine_nutt 0 (now 2)" in r.stderr
    assert "another --comflp_tag does not help" in r.stderr and "--comflp_dir" in r.stderr
    r = run(d, "--stage", "16", "--stop_stage", "18", "--comflp_tag", "other", "--comflp_fine_set", "ev")
    assert r.returncode != 0 and "--comflp_fine_set dump/raw/dv (now dump/raw/ev)" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.root.rglob("*") if p.is_file() and p.name != ".lock"} == \
        {p: m for p, m in stamps.items() if p.name != ".lock"}
    d2 = fresh(base, "fine_size", without=["exp/m/comflp"])
    r = run(d2, "--stage", "14", "--stop_stage", "18", "--comflp_fine_nutt", "10")
    assert r.returncode != 0 and "dump/raw/dv has 3 utterances, fewer than the 10 requested" in r.stderr
    assert not (d2 / "exp" / "m" / "comflp").exists()


def test_truncated_model_file_is_a_one_line_error(base, tmp_path):
    from comflp_espnet.bin import comflp_decode, comflp_dump, comflp_prune

    d = base["dir"]
    broken = tmp_path / "broken.pth"
    broken.write_bytes((d / "exp" / "m" / MODEL).read_bytes()[:3000])
    config = d / "exp" / "m" / "config.yaml"
    cases = {
        "comflp_prune": lambda: comflp_prune.main(["--asr_train_config", str(config), "--asr_model_file",
                                                   str(broken), "--prune", "1", "--output_dir", str(tmp_path / "p")]),
        "comflp_dump": lambda: comflp_dump.main(["--asr_train_config", str(config), "--asr_model_file", str(broken),
                                                 "--data_path_and_name_and_type",
                                                 f"{d / 'dump/raw/dv/wav.scp'},speech,sound",
                                                 "--output_dir", str(tmp_path / "s")]),
    }
    scp = tmp_path / "models.scp"
    scp.write_text(f"m {config} {broken}\n")
    cases["comflp_decode"] = lambda: comflp_decode.main([
        "--models_scp", str(scp), "--data_path_and_name_and_type", f"{d / 'dump/raw/dv/wav.scp'},speech,sound",
        "--output_dir", str(tmp_path / "h"), "--config", str(d / "conf/decode.yaml"), "--num_workers", "0"])
    for tool, call in cases.items():
        with pytest.raises(SystemExit) as e:
            call()
        message = str(e.value.code)
        assert str(broken) in message and len(message.splitlines()) == 1, (tool, message)
        assert "damaged" in message, (tool, message)
    assert not any((tmp_path / x).exists() for x in ("p", "s")) and not (tmp_path / "h" / "m").exists()


def test_truncated_original_model_in_the_recipe(base):
    d = fresh(base, "truncated_original")
    model = d / "exp" / "m" / MODEL
    model.write_bytes(model.read_bytes()[:3000])
    r = run(d, "--stage", "14", "--stop_stage", "14")
    assert r.returncode != 0
    assert "Stage 14: Dump encoder states" in r.stdout and "input model changed" in r.stdout
    assert f"{MODEL} cannot be read as a PyTorch model file" in r.stdout + r.stderr
    assert "Traceback" not in (comflp(d).states / "logdir" / "dump.1.log").read_text()


def test_60_byte_audio_stops_unless_skipped(base):
    import soundfile

    d = fresh(base, "short_audio", without=["exp/m/comflp"])
    tiny = d / "tiny.wav"
    soundfile.write(tiny, np.zeros(8, dtype="float32"), 16000)
    assert tiny.stat().st_size == 60
    wav_scp = d / "dump" / "raw" / "tr" / "wav.scp"
    lines = wav_scp.read_text().splitlines()
    key = lines[2].split()[0]
    lines[2] = f"{key} {tiny}"
    wav_scp.write_text("\n".join(lines) + "\n")
    r = run(d, "--stage", "14", "--stop_stage", "14")
    assert r.returncode != 0
    log = (comflp(d).states / "logdir" / "dump.1.log").read_text()
    assert f"utterance(s) {key} of" in log and "--comflp_skip_bad_utts true" in log
    r = ok(run(d, "--stage", "14", "--stop_stage", "14", "--comflp_skip_bad_utts", "true"))
    assert f"skipped 1 utterance(s) (--comflp_skip_bad_utts true): {key}" in r.stderr
    info = yaml.safe_load((comflp(d).states / "states_info.yaml").read_text())
    assert info["skipped_keys"] == [key] and info["num_utts"] == 5
    assert records.read_record(comflp(d).states).info["skipped"] == [key]


def test_config_with_missing_token_list_is_refused(base, tmp_path):
    from comflp_espnet.bin import comflp_prune

    d = base["dir"]
    exp = tmp_path / "exp"
    exp.mkdir()
    config = yaml.safe_load((d / "exp" / "m" / "config.yaml").read_text())
    (tmp_path / "tokens.txt").write_text("\n".join(config["token_list"]) + "\n")
    config["token_list"] = "tokens.txt"  # relative, as asr.sh writes it: resolves only from tmp_path
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(d / "exp" / "m" / MODEL, exp / MODEL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        with pytest.raises(SystemExit) as e:
            comflp_prune.main(["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file",
                               str(exp / MODEL), "--prune", "1", "--output_dir", str(tmp_path / "out")])
    finally:
        os.chdir(cwd)
    assert "token_list: tokens.txt" in str(e.value.code) and "run from that directory" in str(e.value.code)
    assert not (tmp_path / "out").exists()


def test_keep_given_after_num_prune_wins(base):
    r = run(base["dir"], "--stage", "18", "--stop_stage", "18", "--comflp_num_prune", "2", "--comflp_keep", "3",
            "--comflp_tag", "")
    assert "not both" not in r.stderr and "dc_dp_prune1" in r.stderr


def test_parameter_counts_are_learnable_parameters(base):
    from comflp_espnet.model_io import load_asr_model, load_state_dict_file

    d = base["dir"]
    model, _ = load_asr_model(d / "exp" / "m" / "config.yaml", d / "exp" / "m" / MODEL)
    learnable = sum(p.numel() for p in model.parameters())
    every_tensor = sum(v.numel() for v in load_state_dict_file(d / "exp" / "m" / MODEL).values())
    assert every_tensor > learnable  # the frontend's mel matrix is a buffer
    t = comflp(d).tag(TAG)
    winner = base["outcome"]["winner"]
    prune = yaml.safe_load((t.candidate(winner) / "prune.yaml").read_text())
    assert prune["params_before"] == learnable
    pruned, _ = load_asr_model(t.candidate(winner) / "config.yaml", t.candidate(winner) / MODEL)
    assert prune["params_after"] == sum(p.numel() for p in pruned.parameters())
    row = json.loads((t.scores / "ranking.json").read_text())["ranking"][0]
    assert row["name"] == winner and row["params"] == prune["params_after"]
