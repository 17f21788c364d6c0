"""cmd_backend=slurm on a real one-node Slurm cluster started on this machine.

``tools/slurm_one_node.sh`` starts munged, slurmctld and slurmd on 127.0.0.1 under a
temporary directory (installing Debian's slurm packages first when they are missing
and we are root); the module's last test stops it and checks nothing is left.  The
tests run the plugin's adapter (``scripts/run_slurm.sh``) on small job arrays, then
the mini_an4 CoMFLP stages 14-20 through it, compared with the local backend's run.
Without root the module is skipped (slurmd and munged need it).
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("mini_an4_recipe")
from mini_an4_recipe import ASR_EXP, INFERENCE_TAG, TAG, copy_trained_recipe  # noqa: E402

pytest_plugins = ["mini_an4_recipe"]

ROOT = Path(__file__).resolve().parents[1]
ONE_NODE = ROOT / "tools" / "slurm_one_node.sh"
RUN_SLURM = ROOT / "egs2" / "TEMPLATE" / "asr1_comflp" / "scripts" / "run_slurm.sh"
PLUGIN_SLURM_CONF = ROOT / "conf" / "slurm.conf"

# What the two backends must agree on, relative to the search's <tag> directory (as README's
# stage table documents them).  Run-dependent fields (timings) are never compared.
SEARCH_OUTPUTS = {
    "winner": "scores/winner",
    "scores": "scores/scores.json",
    "ranking": "scores/ranking.json",
    "fine_hyps": "../fine_evals/*/hyp/*/text",
    "proxy_losses": "../fine_evals/loss_*/*/loss",
    "test_hyps": f"test_decode/{INFERENCE_TAG}/*/hyp/*/text",
    "test_hyps_org": f"test_decode/{INFERENCE_TAG}/org/*/hyp/*/text",
    "test_scores": f"test_decode/{INFERENCE_TAG}/*/score/scores.json",
    "test_scores_org": f"test_decode/{INFERENCE_TAG}/org/*/score/scores.json",
}
# Keys of the JSON outputs that depend on the run, not on the results.
RUN_DEPENDENT_KEYS = re.compile(r"seconds|time|elapsed|wall|rtf|speed", re.I)

JOB_LINE = re.compile(r"^# Running on \S+, Slurm job (\d+)(?:_(\d+) \(job id (\d+)\))?$", re.M)


def needs():
    """Why the cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root: slurmd and munged run as root/munge (run tools/slurm_one_node.sh as root)"
    tools = ("munged", "slurmctld", "slurmd", "sbatch")
    if not all(shutil.which(t) for t in tools) and not shutil.which("apt-get"):
        return "Slurm and munge are not installed and there is no apt-get to install them"
    return None


@pytest.fixture(scope="module")
def slurm():
    """A running one-node cluster: {"dir", "env", "jobcomp"}; stopped after the module."""
    reason = needs()
    if reason:
        pytest.skip(reason)
    # Not under pytest's own temporary directory: munged (the munge user) could not enter that.
    top = Path(tempfile.mkdtemp(prefix="comflp_slurm_"))
    r = subprocess.run([str(ONE_NODE), "--install", "start", str(top)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    conf = r.stdout.strip().splitlines()[-1].split("=", 1)[1]
    env = dict(os.environ, SLURM_CONF=conf)
    info = {"dir": top, "env": env, "jobcomp": top / "slurm" / "log" / "jobcomp.txt", "stopped": False}
    yield info
    if not info["stopped"]:
        subprocess.run([str(ONE_NODE), "stop", str(top)], capture_output=True, text=True, timeout=120)
    shutil.rmtree(top, ignore_errors=True)


def jobcomp_records(path):
    """Slurm's record of every finished job: a list of {field: value}."""
    if not path.exists():
        return []
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in path.read_text().splitlines() if line.strip()]


def wait_for_records(path, count, timeout=30):
    """The job records, once at least ``count`` are written (slurmctld writes them as jobs end)."""
    deadline = time.time() + timeout
    while True:
        records = jobcomp_records(path)
        if len(records) >= count or time.time() > deadline:
            return records
        time.sleep(0.5)


def slurm_ids_in_logs(paths):
    """{log: (array job id or job id, task id or None)} from the logs' "# Running on" lines."""
    found = {}
    for p in paths:
        m = JOB_LINE.search(Path(p).read_text(errors="replace"))
        if m:
            found[p] = (m.group(1), m.group(2))
    return found


def run_slurm(slurm, *args, cwd):
    return subprocess.run([str(RUN_SLURM), *map(str, args)], cwd=cwd, env=slurm["env"],
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ cmd.sh and the config (no cluster)
RECIPES = sorted(p.parent for p in (ROOT / "egs2").glob("*/asr1_comflp/run.sh"))
KALDI_CONF_LINE = re.compile(r"^(command \S.*|option [^=\s]+=\* \S.*\$0.*|option [^=\s]+=\S+( .*)?|default [^=\s]+=\S+)$")


def backend_commands(recipe_dir, backend):
    r = subprocess.run(["bash", "-c", '. ./cmd.sh && echo "$train_cmd|$cuda_cmd|$decode_cmd"'],
                       cwd=recipe_dir, env=dict(os.environ, COMFLP_CMD_BACKEND=backend),
                       capture_output=True, text=True, timeout=60)
    return r, set(r.stdout.strip().split("|")) if r.returncode == 0 else None


def test_cmd_sh_uses_slurm_pl_in_a_checkout_and_the_adapter_without_one(tmp_path):
    # Without a checkout (the recipes' utils/ link dangles): the plugin's adapter.
    r, cmds = backend_commands(ROOT / "egs2" / "mini_an4" / "asr1_comflp", "slurm")
    assert r.returncode == 0, r.stderr
    assert cmds == {str(RUN_SLURM)}
    # With Kaldi's job scripts in utils/ (an ESPnet checkout): slurm.pl, found on PATH as ESPnet does.
    recipe = tmp_path / "egs2" / "corpus" / "asr1_comflp"
    (recipe / "utils").mkdir(parents=True)
    (recipe / "cmd.sh").symlink_to(ROOT / "egs2" / "TEMPLATE" / "asr1_comflp" / "cmd.sh")
    for name in ("run.pl", "slurm.pl"):
        (recipe / "utils" / name).write_text("#!/usr/bin/env perl\n")
        (recipe / "utils" / name).chmod(0o755)
    r, cmds = backend_commands(recipe, "slurm")
    assert r.returncode == 0 and cmds == {"slurm.pl"}, r.stderr
    r, cmds = backend_commands(recipe, "local")
    assert cmds == {"run.pl"}
    # sge needs the checkout's queue.pl, which this one lacks.
    r, _ = backend_commands(recipe, "sge")
    assert r.returncode != 0 and "needs utils/queue.pl" in r.stderr


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_recipes_ship_a_slurm_conf_in_kaldi_format(recipe):
    conf = recipe / "conf" / "slurm.conf"
    assert conf.is_file(), f"{conf} does not resolve"
    lines = [re.sub(r"\s*#.*", "", line).strip() for line in conf.read_text().splitlines()]
    lines = [line for line in lines if line]
    assert all(KALDI_CONF_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("command sbatch ")
    assert "option gpu=* -p gpu --gres=gpu:$0 -c $0" in lines and "default gpu=0" in lines
    assert "option num_threads=* --cpus-per-task $0" in lines and "option mem=* --mem-per-cpu $0" in lines


# ------------------------------------------------------------------ the adapter
def test_job_array_runs_on_the_cluster_with_framed_logs(slurm, tmp_path, capsys):
    # Each task records when it ran; both must have run at the same time on the 2+ CPUs.
    # In a file: "JOB" in the command line (even in SLURM_JOB_PARTITION) is the job number.
    script = tmp_path / "task.sh"
    script.write_text('echo "task=$1"; echo "partition=$SLURM_JOB_PARTITION"; echo "omp=${OMP_NUM_THREADS-}"\n'
                      'echo "start=$(date +%s.%N)"; touch "$2/$1.started"\n'
                      'for i in $(seq 150); do [ -e "$2/$((3 - $1)).started" ] && break; sleep 0.1; done\n'
                      'sleep 0.5; echo "end=$(date +%s.%N)"\n')
    # path.sh of the directory is sourced in the job, as in a recipe.
    (tmp_path / "path.sh").write_text("export OMP_NUM_THREADS=1\n")
    r = run_slurm(slurm, "--config", PLUGIN_SLURM_CONF, "JOB=1:2", tmp_path / "log/a.JOB.log",
                  "bash", script, "JOB", tmp_path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ids = slurm_ids_in_logs([tmp_path / f"log/a.{n}.log" for n in (1, 2)])
    assert len(ids) == 2, "no Slurm job id in the logs"
    (array1, task1), (array2, task2) = ids.values()
    assert array1 == array2 and {task1, task2} == {"1", "2"}  # one array, two tasks
    spans = []
    for n in (1, 2):
        text = (tmp_path / f"log/a.{n}.log").read_text()
        lines = text.splitlines()
        # The local runner's frame: the command, start, host and job, then the footer.
        assert lines[0] == f"# bash {script} {n} {tmp_path}" and lines[1].startswith("# Started at ")
        assert lines[-1].startswith("# Ended (code 0) at ")
        values = dict(line.split("=", 1) for line in lines if not line.startswith("#") and "=" in line)
        assert values == {**values, "task": str(n), "partition": "cpu", "omp": "1"}
        spans.append((float(values["start"]), float(values["end"])))
    (s1, e1), (s2, e2) = spans
    assert s2 < e1 and s1 < e2, f"the two tasks did not overlap: {spans}"
    records = [x for x in wait_for_records(slurm["jobcomp"], 2) if x.get("ArrayJobId") == array1]
    assert sorted(x["ArrayTaskId"] for x in records) == ["1", "2"]
    assert {x["JobState"] for x in records} == {"COMPLETED"}
    with capsys.disabled():
        print(f"\nSlurm: JOB=1:2 ran as job array {array1}, tasks with job ids "
              f"{' '.join(sorted(x['JobId'] for x in records))}")


def test_options_are_mapped_through_the_config(slurm, tmp_path):
    r = run_slurm(slurm, "--config", PLUGIN_SLURM_CONF, "--num_threads", "2", "--mem", "100M",
                  "--name", "comflp_map", tmp_path / "m.log", "bash", "-c",
                  'echo "cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_CPU name=$SLURM_JOB_NAME"',
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cpus=2 mem=100 name=comflp_map" in (tmp_path / "m.log").read_text()
    # Account and partition come from the config's command line; an unknown account is refused.
    conf = tmp_path / "account.conf"
    conf.write_text(PLUGIN_SLURM_CONF.read_text().replace(
        "command sbatch --export=PATH", "command sbatch --export=PATH --account=no_such_account"))
    r = run_slurm(slurm, "--config", conf, tmp_path / "acct.log", "true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # This cluster does not enforce accounts, so it records the account it was given.
    (job,) = set(slurm_ids_in_logs([tmp_path / "acct.log"]).values())
    deadline = time.time() + 30
    while not [x for x in jobcomp_records(slurm["jobcomp"]) if x["JobId"] == job[0]] and time.time() < deadline:
        time.sleep(0.5)
    (record,) = [x for x in jobcomp_records(slurm["jobcomp"]) if x["JobId"] == job[0]]
    assert record["Account"] == "no_such_account" and record["Partition"] == "cpu"
    # --gpu N is --gres=gpu:N in the "gpu" partition; this cluster has neither, and says so.
    r = run_slurm(slurm, "--config", PLUGIN_SLURM_CONF, "--gpu", "1", tmp_path / "g.log", "true", cwd=tmp_path)
    assert r.returncode == 1
    assert "submitting" in r.stderr and "-p gpu --gres=gpu:1" in r.stderr
    # An option the config does not describe stops before anything is submitted.
    r = run_slurm(slurm, "--config", PLUGIN_SLURM_CONF, "--colour", "red", tmp_path / "c.log", "true", cwd=tmp_path)
    assert r.returncode == 1 and "option --colour red is not described in" in r.stderr
    assert not (tmp_path / "q" / "c.sbatch").exists()


def test_failing_task_is_named_with_its_log_and_exit_code(slurm, tmp_path):
    r = run_slurm(slurm, "--config", PLUGIN_SLURM_CONF, "JOB=1:3", tmp_path / "f.JOB.log",
                  "bash", "-c", "echo task $0; exit $(( $0 == 2 ? 3 : 0 ))", "JOB", cwd=tmp_path)
    assert r.returncode == 1
    (array, task), = set(slurm_ids_in_logs([tmp_path / "f.2.log"]).values())
    assert f"job 2 (Slurm job {array}_2) failed with code 3, log is in {tmp_path}/f.2.log" in r.stderr
    assert "1 / 3 failed" in r.stderr
    assert (tmp_path / "f.2.log").read_text().splitlines()[-1].startswith("# Ended (code 3)")
    # The scheduler saw the task's own exit code.
    records = [x for x in wait_for_records(slurm["jobcomp"], 3) if x.get("ArrayJobId") == array]
    states = {x["ArrayTaskId"]: (x["JobState"], x["ExitCode"]) for x in records}
    assert states == {"1": ("COMPLETED", "0:0"), "2": ("FAILED", "3:0"), "3": ("COMPLETED", "0:0")}


# ------------------------------------------------------------------ the recipe
def run_stages(recipe_dir, slurm, *extra):
    env = dict(slurm["env"], COMFLP_CMD_BACKEND="slurm", COMFLP_VENV=sys.prefix)
    env.pop("VIRTUAL_ENV", None)
    start = time.time()
    r = subprocess.run(["./run.sh", *extra], cwd=recipe_dir, env=env,
                       capture_output=True, text=True, timeout=1800)
    return r, time.time() - start


def outputs(tag_dir, key):
    pattern = SEARCH_OUTPUTS[key]
    root = tag_dir.parent if pattern.startswith("../") else tag_dir  # the run dir's shared evaluations
    return {str(p.relative_to(root)): p for p in sorted(root.glob(pattern.removeprefix("../")))}


def comparable(path):
    """A file's content without what depends on the run (timings)."""
    if path.suffix != ".json":
        return path.read_text()

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not RUN_DEPENDENT_KEYS.search(k)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(path.read_text()))


def differences(a, b, where=""):
    """Where a and b differ; floats (correlation scores) may differ in their last bits."""
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{where}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


@pytest.mark.recipe
def test_recipe_stages_14_to_20_through_slurm_match_the_local_run(slurm, mini_an4_run, tmp_path, capsys):
    local_dir = mini_an4_run["dir"]
    d = copy_trained_recipe(mini_an4_run, tmp_path)
    # Test sets decoded in two jobs (a job array of two tasks; the local run used one job: decoding is
    # per utterance).  --nj stays as in the local run: the pooled states depend on how the calibration
    # utterances are batched, hence on how they are split into jobs.
    r, seconds = run_stages(d, slurm, "--stage", "14", "--stop_stage", "20", "--inference_nj", "2")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]

    # Every job of the stages ran under Slurm: its log names the job, Slurm recorded it as completed.
    logs = [p for p in (d / ASR_EXP / "comflp").rglob("*.log") if p.parent.name != "q"]
    ids = slurm_ids_in_logs(logs)
    unscheduled = [str(p) for p in logs if p.read_text(errors="replace").startswith("# ") and p not in ids]
    assert not unscheduled, f"job logs without a Slurm job: {unscheduled}"
    arrays = {a for a, task in ids.values() if task is not None}
    assert any(sum(1 for a, t in ids.values() if a == arr) == 2 for arr in arrays), \
        "no job array of two tasks (--inference_nj 2)"
    records = wait_for_records(slurm["jobcomp"], len(ids))
    by_job = {(x.get("ArrayJobId") or x["JobId"], x.get("ArrayTaskId") or None): x for x in records}
    for log, key in ids.items():
        assert key in by_job, f"{log}: Slurm has no record of job {key}"
        assert by_job[key]["JobState"] == "COMPLETED", (log, by_job[key])
    stages = {int(n) for n in re.findall(r"\) Stage (\d+): ", r.stdout)}
    assert {14, 15, 16, 17, 18, 19, 20} <= stages

    # The results are those of the local backend's run.
    local_tag, slurm_tag = local_dir / ASR_EXP / "comflp" / TAG, d / ASR_EXP / "comflp" / TAG
    compared = 0
    for key in SEARCH_OUTPUTS:
        local, remote = outputs(local_tag, key), outputs(slurm_tag, key)
        assert local.keys() == remote.keys(), (key, sorted(local), sorted(remote))
        for name in local:
            diff = differences(comparable(remote[name]), comparable(local[name]))
            assert not diff, f"{name} differs from the local run's: {diff[:5]}"
            compared += 1
    assert compared >= 10 and outputs(slurm_tag, "winner") and outputs(slurm_tag, "proxy_losses"), \
        "nothing was compared"

    job_names = sorted({f"{a}_{t}" if t else a for a, t in ids.values()}, key=lambda s: [int(x) for x in s.split("_")])
    with capsys.disabled():
        print(f"\nSlurm: mini_an4 stages 14-20 took {seconds:.0f} s in {len(ids)} jobs: {' '.join(job_names)}")


@pytest.mark.recipe
def test_failing_job_fails_the_stage_and_names_its_log(slurm, mini_an4_run, tmp_path):
    d = copy_trained_recipe(mini_an4_run, tmp_path)
    # An option comflp_dump does not know passes the checks before stage 14 and fails in every job
    # (batches of 1 utterance, so that the 4 utterances make 2 jobs).
    r, _ = run_stages(d, slurm, "--stage", "14", "--stop_stage", "14", "--nj", "2",
                      "--comflp_dump_args", "--batch_size 1 --no_such_option 1")
    assert r.returncode != 0
    # Both dump jobs fail; the adapter names each with its log, which holds the job's error.
    named = dict(re.findall(r"job (\d+) \(Slurm job \d+_\d+\) failed with code \d+, log is in (\S+)", r.stderr))
    assert sorted(named) == ["1", "2"], r.stdout[-3000:] + r.stderr[-3000:]
    for n, log in named.items():
        text = (d / log).read_text()
        assert "unrecognized arguments: --no_such_option 1" in text
        assert text.splitlines()[-1].startswith("# Ended (code 2)")
        assert slurm_ids_in_logs([d / log])
    assert "Stage 15" not in r.stdout
    assert not (d / ASR_EXP / "comflp" / "states" / "states.scp").exists()


def test_cluster_stops_without_leftovers(slurm):
    top = slurm["dir"]
    r = subprocess.run([str(ONE_NODE), "stop", str(top)], capture_output=True, text=True, timeout=120)
    slurm["stopped"] = True
    assert r.returncode == 0, r.stderr
    # No process of the cluster is left: the daemons' command lines (munged's socket, the Slurm config)
    # and the job steps' working directory are under the cluster's directory.
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd") if cmdline.startswith("slurmstepd") else ""
        except OSError:
            continue
        if re.match(r"(\S*/)?(munged|slurmctld|slurmd|slurmstepd)\b", cmdline) and (str(top) in cmdline or str(top) in cwd):
            left.append(f"{proc.name}: {cmdline}")
    assert not left, left
    for pidfile, name in (("slurm/slurmctld.pid", "slurmctld"), ("slurm/slurmd.pid", "slurmd"),
                          ("munge/run/munged.pid", "munged")):
        f = top / pidfile
        if f.exists():
            cmdline = Path(f"/proc/{f.read_text().strip()}/cmdline")
            assert not (cmdline.exists() and name in cmdline.read_text()), f"{name} still runs"
    r = subprocess.run(["squeue"], env=slurm["env"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, "the controller still answers"
