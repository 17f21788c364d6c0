"""The recipe's shell side: option parsing, the local job runner, key splitting,
and asr_comflp.sh's option routing and checks that stop bad runs before any work.

Every asr_comflp.sh run here stops before training or decoding, so the file
runs in seconds.
"""

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "egs2" / "TEMPLATE" / "asr1_comflp"
SCRIPTS = TEMPLATE / "scripts"
MINI_AN4 = ROOT / "egs2" / "mini_an4" / "asr1_comflp"


def bash(script, *args, cwd=None, env=None):
    return subprocess.run(
        ["bash", "-c", script, "test-script", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


# ------------------------------------------------------------------ parse_options.sh
PARSE_SCRIPT = textwrap.dedent(
    f"""
    nj=4
    use_gpu=false
    train_set=
    help_message="Usage: demo
      --nj       # jobs (default=$nj)"
    . {SCRIPTS}/parse_options.sh
    printf 'nj=%s\\nuse_gpu=%s\\ntrain_set=%s\\nrest=%s\\n' "$nj" "$use_gpu" "$train_set" "$*"
    """
)


def parsed(*args, cwd=None):
    r = bash(PARSE_SCRIPT, *args, cwd=cwd)
    values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return r, values


def test_parse_options_both_forms_and_dashes():
    r, v = parsed("--nj", "8", "--use-gpu", "true", "--train_set=a b", "pos1", "pos2")
    assert r.returncode == 0, r.stderr
    assert v == {"nj": "8", "use_gpu": "true", "train_set": "a b", "rest": "pos1 pos2"}


def test_parse_options_config_file_has_lower_priority(tmp_path):
    conf = tmp_path / "opts.conf"
    conf.write_text("nj=7\ntrain_set=from_config\n")
    r, v = parsed("--nj", "9", "--config", str(conf))
    assert r.returncode == 0, r.stderr
    assert v["nj"] == "9" and v["train_set"] == "from_config"
    r, v = parsed(f"--config={conf}")
    assert v["nj"] == "7"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no_such_option", "1"], "invalid option --no_such_option"),
        (["--use_gpu", "yes"], 'expected "true" or "false"'),
        (["--nj"], "option --nj needs a value"),
        (["--config", "/nonexistent/x.conf"], "cannot read config file"),
    ],
)
def test_parse_options_errors(args, message):
    r, _ = parsed(*args)
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stdout == ""  # the script did not go on


def test_parse_options_help_lists_defaults():
    r, _ = parsed("--help")
    assert r.returncode == 0
    assert "--nj       # jobs (default=4)" in r.stderr
    assert "nj=" not in r.stdout


# ------------------------------------------------------------------ run_local.sh
RUN_LOCAL = str(SCRIPTS / "run_local.sh")


def test_run_local_substitutes_job_and_frames_logs(tmp_path):
    r = subprocess.run(
        [RUN_LOCAL, "--gpu", "0", "--mem", "2G", "--name", "x", "JOB=1:3",
         str(tmp_path / "log.JOB.txt"), "bash", "-c", 'echo "job $1 of $0"', "a b", "JOB"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    for n in (1, 2, 3):
        log = (tmp_path / f"log.{n}.txt").read_text().splitlines()
        assert f"job {n} of a b" in log
        assert log[0].startswith("# ") and log[-1].startswith("# Ended (code 0)")


def test_run_local_reports_failed_jobs(tmp_path):
    r = subprocess.run(
        [RUN_LOCAL, "JOB=1:3", str(tmp_path / "fail.JOB.log"),
         "bash", "-c", "exit $(( $0 == 2 ? 3 : 0 ))", "JOB"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1
    assert f"job 2 failed, log is in {tmp_path}/fail.2.log" in r.stderr
    assert "1 / 3 failed" in r.stderr
    assert "# Ended (code 3)" in (tmp_path / "fail.2.log").read_text()


def test_run_local_single_job_and_bad_log_name(tmp_path):
    r = subprocess.run([RUN_LOCAL, str(tmp_path / "one.log"), "echo", "hello"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "hello" in (tmp_path / "one.log").read_text()
    r = subprocess.run([RUN_LOCAL, "JOB=1:2", str(tmp_path / "same.log"), "true"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "does not contain JOB" in r.stderr


def test_run_local_runs_jobs_in_parallel(tmp_path):
    # Job N waits for job 3-N to start: both finish only if they run at the same time.
    script = (
        'touch "$1/$0.started"; for i in $(seq 100); do '
        '[ -e "$1/$((3 - $0)).started" ] && exit 0; sleep 0.1; done; exit 1'
    )
    r = subprocess.run(
        [RUN_LOCAL, "--max-jobs-run", "2", "JOB=1:2", str(tmp_path / "p.JOB.log"),
         "bash", "-c", script, "JOB", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores to run 2 jobs at once")
def test_run_local_uses_every_core_whatever_omp_num_threads_says(tmp_path):
    # As path.sh sets it: one thread per job, which "nproc" alone would take as one core in all.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = (
        'echo "threads=$OMP_NUM_THREADS"; echo "start=$(date +%s.%N)"; touch "$1/$0.started"; '
        'for i in $(seq 100); do [ -e "$1/$((3 - $0)).started" ] && break; sleep 0.1; done; '
        'sleep 0.3; echo "end=$(date +%s.%N)"'
    )
    r = subprocess.run(
        [RUN_LOCAL, "JOB=1:2", str(tmp_path / "omp.JOB.log"), "bash", "-c", script, "JOB", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    spans = []
    for n in (1, 2):
        lines = (tmp_path / f"omp.{n}.log").read_text().splitlines()
        values = dict(line.split("=", 1) for line in lines if not line.startswith("#") and "=" in line)
        assert values["threads"] == "1"  # each job keeps the thread setting it was given
        spans.append((float(values["start"]), float(values["end"])))
        assert any(line.startswith("# Running on ") for line in lines)
    (start1, end1), (start2, end2) = spans
    assert start2 < end1 and start1 < end2, f"jobs ran one after the other: {spans}"


# ------------------------------------------------------------------ split_keys
@pytest.mark.parametrize("lines, parts", [(10, 3), (5, 5), (7, 1), (4, 2)])
def test_split_keys_contiguous_and_balanced(tmp_path, lines, parts):
    src = tmp_path / "wav.scp"
    src.write_text("".join(f"utt{i:02d} /a/{i}.wav\n" for i in range(lines)))
    outs = [str(tmp_path / f"keys.{n}.scp") for n in range(1, parts + 1)]
    r = bash(f'. {SCRIPTS}/common.sh; split_keys "$@"', str(src), *outs)
    assert r.returncode == 0, r.stderr
    chunks = [Path(o).read_text() for o in outs]
    assert "".join(chunks) == src.read_text()  # contiguous, in order, nothing lost
    sizes = [c.count("\n") for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_split_keys_refuses_more_parts_than_lines(tmp_path):
    src = tmp_path / "wav.scp"
    src.write_text("a x\n")
    r = bash(f'. {SCRIPTS}/common.sh; split_keys "$@"', str(src),
             str(tmp_path / "1"), str(tmp_path / "2"))
    assert r.returncode != 0 and "into 2 parts" in r.stderr


def test_split_into_jobs_and_cat_jobs_round_trip(tmp_path):
    src = tmp_path / "wav.scp"
    src.write_text("".join(f"utt{i} /a/{i}.wav\n" for i in range(7)))
    r = bash(f'. {SCRIPTS}/common.sh; split_into_jobs "$1" 3 "$2/keys.JOB.scp" && cat_jobs 3 "$2/keys.JOB.scp"',
             str(src), str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert sorted((tmp_path / f"keys.{n}.scp").read_text().count("\n") for n in (1, 2, 3)) == [2, 2, 3]
    assert r.stdout == src.read_text()


@pytest.mark.parametrize(
    "comflp_dir, expected",
    [
        ("exp/asr_m/comflp", "dc_dp_prune6"),
        ("exp/asr_m/comflp/", "dc_dp_prune6"),
        ("exp/asr_m/comflp_calib2000", "comflp_calib2000+dc_dp_prune6"),
        ("/scratch/my runs/comflp", "+scratch+my+runs+comflp+dc_dp_prune6"),
    ],
)
def test_results_sections_of_different_comflp_dirs_are_separate(comflp_dir, expected):
    r = bash(f'. {SCRIPTS}/common.sh; results_section_id "$@"', "exp/asr_m", comflp_dir, "dc_dp_prune6")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_training_fold_lengths_follow_the_shape_files():
    # espnet2's folded batch sampler pairs the n-th --fold_length with the n-th --train_shape_file.
    script = f"""
        . {SCRIPTS}/common.sh
        asr_stats_dir=exp/stats token_type=char feats_type=raw
        asr_speech_fold_length=800 asr_text_fold_length=150
        asr_train_data_args dump/raw/tr dump/raw/dv wav.scp sound
        printf '%s\\n' "${{train_data_args[@]}}"
    """
    r = bash(script)
    assert r.returncode == 0, r.stderr
    args = r.stdout.splitlines()
    shapes = [args[i + 1] for i, a in enumerate(args) if a == "--train_shape_file"]
    folds = [args[i + 1] for i, a in enumerate(args) if a == "--fold_length"]
    assert shapes == ["exp/stats/train/speech_shape", "exp/stats/train/text_shape.char"]
    assert folds == ["80000", "150"]  # raw audio is folded in samples


# ------------------------------------------------------------------ asr_comflp.sh
@pytest.fixture
def recipe(tmp_path):
    """A recipe dir laid out like egs2/<corpus>/asr1_comflp, without ESPnet's asr.sh."""
    egs2 = tmp_path / "egs2"
    (egs2 / "TEMPLATE").mkdir(parents=True)
    (egs2 / "TEMPLATE" / "asr1_comflp").symlink_to(TEMPLATE)
    rdir = egs2 / "demo" / "asr1_comflp"
    rdir.mkdir(parents=True)
    (rdir / "asr_comflp.sh").symlink_to("../../TEMPLATE/asr1_comflp/asr_comflp.sh")
    (rdir / "path.sh").symlink_to("../../TEMPLATE/asr1_comflp/path.sh")
    shutil.copy(MINI_AN4 / "cmd.sh", rdir / "cmd.sh")
    return rdir


BASE_OPTS = ["--train_set", "tr", "--valid_set", "dv", "--test_sets", "ev",
             "--token_type", "char", "--use_lm", "false", "--ngpu", "0"]


def comflp(recipe_dir, *args):
    return subprocess.run(
        ["./asr_comflp.sh", *args], cwd=recipe_dir, capture_output=True, text=True, timeout=120
    )


def fake_experiment(exp_dir, num_blocks=4, encoder="transformer"):
    exp_dir.mkdir(parents=True)
    (exp_dir / "config.yaml").write_text(
        f"encoder: {encoder}\nencoder_conf:\n    num_blocks: {num_blocks}\n"
    )
    (exp_dir / "valid.acc.ave.pth").write_bytes(b"")


def fake_data_dir(data_dir, num_utts):
    data_dir.mkdir(parents=True)
    (data_dir / "wav.scp").write_text("".join(f"u{i} /x/{i}.wav\n" for i in range(num_utts)))
    (data_dir / "text").write_text("".join(f"u{i} A\n" for i in range(num_utts)))
    (data_dir / "feats_type").write_text("raw\n")


def assert_nothing_made(recipe_dir):
    made = [p for p in recipe_dir.rglob("comflp") if p.is_dir()]
    assert made == []


def test_stage14_without_model_names_the_derived_path(recipe):
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--comflp_num_prune", "2",
               "--asr_config", "conf/foo.yaml", "--lang", "en", "--asr_args", "--max_epoch 3")
    assert r.returncode != 0
    # asr.sh's naming: <config>_<feats_type>_<lang>_<token_type><args>
    assert "exp/asr_foo_raw_en_char_max_epoch3/config.yaml does not exist" in r.stderr
    assert "--asr_exp" in r.stderr and "--inference_asr_model" in r.stderr
    assert_nothing_made(recipe)


def test_asr_exp_naming_with_bpe_and_speed_perturbation(recipe):
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--token_type", "bpe", "--nbpe", "50",
               "--speed_perturb_factors", "0.9 1.0 1.1", "--inference_asr_model", "3epoch.pth")
    assert r.returncode != 0
    assert "exp/asr_train_raw_bpe50_sp/config.yaml does not exist" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--comflp_measure", "pearson"], "unknown --comflp_measure 'pearson'"),
        (["--comflp_search", "annealing"], "unknown --comflp_search 'annealing'"),
        (["--comflp_protect", "1;2"], "--comflp_protect must list layer numbers"),
        (["--no_such_option", "1"], "unknown option --no_such_option"),
        (["--comflp_finetune", "maybe"], 'expected "true" or "false"'),
        (["--comflp_python_opts", "-Z"], "--comflp_python_opts '-Z' is not accepted by python3"),
    ],
)
def test_bad_options_stop_before_work(recipe, args, message):
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", *args)
    assert r.returncode != 0
    assert message in r.stderr
    assert_nothing_made(recipe)


def test_num_prune_must_leave_a_layer(recipe):
    fake_experiment(recipe / "exp" / "m", num_blocks=4)
    fake_data_dir(recipe / "dump" / "raw" / "tr", 8)
    for opts, msg in [
        (["--comflp_num_prune", "4"], "--comflp_num_prune 4: every value must be smaller than the 4 encoder layers"),
        (["--comflp_keep", "4"], "--comflp_keep 4: every value must be smaller than the 4 encoder layers"),
        (["--comflp_num_prune", "2", "--comflp_protect", "5"], "layer 5 does not exist"),
    ]:
        r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--asr_exp", "exp/m", *opts)
        assert r.returncode != 0
        assert msg in r.stderr
    assert_nothing_made(recipe)


def test_the_later_of_num_prune_and_keep_wins(recipe):
    # run.sh passes its --comflp_num_prune before "$@": a user's --comflp_keep must override it.
    fake_experiment(recipe / "exp" / "m", num_blocks=12)
    # Stage 18 alone stops at once, naming the search directory, hence the tag.
    common = [*BASE_OPTS, "--asr_exp", "exp/m", "--stage", "18", "--stop_stage", "18"]
    r = comflp(recipe, *common, "--comflp_num_prune", "4", "--comflp_keep", "8")
    assert "not both" not in r.stderr and "dc_dp_prune4" in r.stderr  # keep 8 of 12 = prune 4
    r = comflp(recipe, *common, "--comflp_num_prune", "4", "--comflp_keep", "9")
    assert "dc_dp_prune3" in r.stderr
    r = comflp(recipe, *common, "--comflp_keep", "9", "--comflp_num_prune", "5")
    assert "dc_dp_prune5" in r.stderr
    r = comflp(recipe, *common, "--comflp_keep", "12")
    assert r.returncode != 0 and "--comflp_keep 12: every value must be smaller than the 12 encoder layers" in r.stderr


def test_unsupported_encoder_is_rejected(recipe):
    fake_experiment(recipe / "exp" / "m", encoder="rnn")
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--asr_exp", "exp/m", "--comflp_num_prune", "1")
    assert r.returncode != 0 and "encoder 'rnn' is not supported" in r.stderr


def test_calibration_and_fine_sets_are_checked(recipe):
    fake_experiment(recipe / "exp" / "m", num_blocks=4)
    fake_data_dir(recipe / "dump" / "raw" / "tr", 3)
    common = [*BASE_OPTS, "--asr_exp", "exp/m", "--comflp_num_prune", "2"]
    r = comflp(recipe, *common, "--stage", "14", "--comflp_calib_nutt", "5")
    assert r.returncode != 0
    assert "dump/raw/tr has 3 utterances, fewer than the 5 requested" in r.stderr
    r = comflp(recipe, *common, "--stage", "14", "--train_set", "missing")
    assert r.returncode != 0 and "dump/raw/missing/wav.scp not found" in r.stderr
    r = comflp(recipe, *common, "--stage", "17", "--comflp_fine_set", "nope")
    assert r.returncode != 0 and "fine-search set 'nope' not found" in r.stderr
    fake_data_dir(recipe / "dump" / "raw" / "dv", 2)
    r = comflp(recipe, *common, "--stage", "17", "--comflp_fine_nutt", "10")
    assert r.returncode != 0 and "dump/raw/dv has 2 utterances, fewer than the 10" in r.stderr
    assert_nothing_made(recipe)


def test_glp_needs_the_fine_set_before_its_search(recipe):
    fake_experiment(recipe / "exp" / "m", num_blocks=4)
    common = [*BASE_OPTS, "--asr_exp", "exp/m", "--comflp_num_prune", "2", "--comflp_search", "glp"]
    # glp decodes in stage 16 (no correlation matrix needed), so the fine-search set is checked.
    r = comflp(recipe, *common, "--stage", "16", "--stop_stage", "16", "--comflp_fine_set", "nope")
    assert r.returncode != 0 and "fine-search set 'nope' not found" in r.stderr
    assert "unknown --comflp_search" not in r.stderr and "run stage 15" not in r.stderr
    assert_nothing_made(recipe)


def test_inference_config_must_parse(recipe):
    bad = recipe / "bad.yaml"
    bad.write_text("beam_size: [1,\n")
    r = comflp(recipe, *BASE_OPTS, "--stage", "17", "--inference_config", str(bad))
    assert r.returncode != 0
    assert f"--inference_config {bad} does not parse" in r.stderr
    (recipe / "list.yaml").write_text("- beam_size\n")
    r = comflp(recipe, *BASE_OPTS, "--stage", "20", "--inference_config", "list.yaml")
    assert r.returncode != 0 and "expected a mapping" in r.stderr


def test_misspelt_decoding_option_fails_before_stage_14_works(recipe):
    fake_experiment(recipe / "exp" / "m", num_blocks=4)
    (recipe / "decode.yaml").write_text("beam_size: 2\nctc_wieght: 0.3\n")
    common = [*BASE_OPTS, "--asr_exp", "exp/m", "--comflp_num_prune", "2", "--stage", "14"]
    r = comflp(recipe, *common, "--inference_config", "decode.yaml")
    assert r.returncode != 0
    assert "--config decode.yaml: unknown inference option 'ctc_wieght'" in r.stderr
    assert "ctc_weight" in r.stderr  # the accepted options are listed
    r = comflp(recipe, *common, "--inference_args", "--beam_sise 3")
    assert r.returncode != 0 and "command line: unknown inference option 'beam_sise'" in r.stderr
    assert_nothing_made(recipe)


def test_stage_whose_input_is_missing_names_the_stage(recipe):
    fake_experiment(recipe / "exp" / "m", num_blocks=4)
    r = comflp(recipe, *BASE_OPTS, "--stage", "15", "--stop_stage", "15",
               "--asr_exp", "exp/m", "--comflp_num_prune", "2")
    assert r.returncode != 0 and "run stage 14 first" in r.stderr
    r = comflp(recipe, *BASE_OPTS, "--stage", "18", "--stop_stage", "18",
               "--asr_exp", "exp/m", "--comflp_num_prune", "2")
    # Nothing was made: every stage that makes what stage 18 reads is named.
    assert r.returncode != 0 and "stage 18 reads exp/m/comflp/dc_dp_prune2/fine_search" in r.stderr
    assert "run stages 14-17 first (--stage 14)" in r.stderr


def test_help_lists_comflp_options_with_defaults(recipe):
    r = comflp(recipe, "--help")
    assert r.returncode == 0
    assert '--comflp_measure         # dc, svcca, cka, cosine or angular, or a list' in r.stderr
    assert 'top K) (default="dc")' in r.stderr
    assert '--comflp_fine_proxy      # Cheap proxy' in r.stderr and 'default="loss"' in r.stderr
    assert '--comflp_calib_nutt      # Calibration utterances, 0 = all (default="320")' in r.stderr


def test_options_are_routed_to_asr_sh(recipe):
    # A stand-in for ESPnet's asr.sh that records what it was given.
    (recipe / "asr.sh").write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        lm_config=
        nj=32
        help_message=x
        printf '%s\\n' "$@" > asr_sh_args.txt
        """))
    (recipe / "asr.sh").chmod(0o755)
    r = comflp(recipe, *BASE_OPTS, "--stage", "2", "--stop_stage", "13", "--nj=3",
               "--lm-config", "conf/lm.yaml", "--comflp_topk", "5")
    assert r.returncode == 0, r.stderr
    args = (recipe / "asr_sh_args.txt").read_text().splitlines()
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--stage"] == "2" and pairs["--stop_stage"] == "13"
    assert pairs["--nj"] == "3"                  # declared by both scripts: used and passed on
    assert pairs["--lm_config"] == "conf/lm.yaml"  # asr.sh's own option, passed on as --name value
    assert pairs["--test_sets"] == "ev"
    assert "--comflp_topk" not in pairs          # CoMFLP options stay in asr_comflp.sh
    # Stages after 13 only: an option of asr.sh is accepted, an unknown one is not.
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--lm_config", "x", "--comflp_measure", "bad")
    assert "unknown option" not in r.stderr and "unknown --comflp_measure" in r.stderr
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--lm_confi", "x")
    assert r.returncode != 0 and "unknown option --lm_confi" in r.stderr


def test_minimal_path_rejects_what_it_cannot_do(recipe):
    r = comflp(recipe, *BASE_OPTS, "--stage", "3", "--stop_stage", "3", "--use_lm", "true")
    assert r.returncode != 0 and "--use_lm true needs ESPnet's asr.sh" in r.stderr
    r = comflp(recipe, *BASE_OPTS, "--stage", "3", "--stop_stage", "3", "--token_type", "bpe")
    assert r.returncode != 0 and "--token_type bpe needs ESPnet's asr.sh" in r.stderr
    r = comflp(recipe, *BASE_OPTS, "--stage", "3", "--stop_stage", "3", "--lm_config", "a.yaml",
               "--use_k2", "true")
    assert r.returncode != 0 and "--use_k2 true needs ESPnet's asr.sh" in r.stderr
    r = comflp(recipe, *BASE_OPTS, "--stage", "3", "--stop_stage", "3", "--sot_asr", "true")
    assert r.returncode != 0 and "invalid option --sot_asr" in r.stderr


def test_mini_an4_data_prep_reports_missing_tarball(tmp_path):
    rdir = tmp_path / "egs2" / "mini_an4" / "asr1_comflp"
    rdir.mkdir(parents=True)
    (rdir / "local").symlink_to(MINI_AN4 / "local")
    r = subprocess.run(
        ["local/data.sh", "--mini_an4_tarball", str(tmp_path / "none.tar.gz")],
        cwd=rdir, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0 and "none.tar.gz: no such file" in r.stdout + r.stderr


def test_config_paths_are_checked_from_the_working_directory(recipe, tmp_path):
    # asr.sh writes token list and statistics paths relative to the directory it trained in.
    exp = recipe / "exp" / "m"
    fake_experiment(exp, num_blocks=4)
    with (exp / "config.yaml").open("a") as f:
        f.write("token_list: data/token_list/char/tokens.txt\n")
    fake_data_dir(recipe / "dump" / "raw" / "tr", 8)
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--asr_exp", "exp/m", "--comflp_num_prune", "2")
    assert r.returncode != 0
    assert "token_list: data/token_list/char/tokens.txt" in r.stderr
    assert "run the CoMFLP stages from the recipe directory where the model was trained" in r.stderr
    assert_nothing_made(recipe)


def test_a_python_without_the_plugin_is_reported(recipe, tmp_path):
    bare = tmp_path / "bare_python"
    bare.write_text('#!/bin/sh\nunset PYTHONPATH\nexec python3 -I "$@"\n')
    bare.chmod(0o755)
    r = comflp(recipe, *BASE_OPTS, "--stage", "14", "--comflp_num_prune", "2", "--python", str(bare))
    assert r.returncode != 0
    assert "cannot import comflp_espnet" in r.stderr
    assert "install_into_espnet.sh" in r.stderr
    assert_nothing_made(recipe)
