"""The mini_an4 recipe, trained once per test session and shared by the recipe tests.

Test modules load this as a plugin (``pytest_plugins = ["mini_an4_recipe"]``), so
the session-scoped fixture ``mini_an4_run`` runs the whole recipe (stages 1-21,
packing on) once, in a temporary copy of egs2/mini_an4/asr1_comflp, however many
modules use it.  Tests that run more stages on the trained model take their own
copy (``copy_trained_recipe``) and leave the shared one as the first run made it.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2" / "mini_an4" / "asr1_comflp"
# What a run writes into the recipe directory.
OUTPUTS = ("data", "dump", "exp", "downloads", "RESULTS.md")

ASR_EXP = "exp/asr_train_asr_transformer_12_raw_en_char"
TAG = "dc_dp_prune4"
INFERENCE_TAG = "decode_asr_asr_model_valid.acc.ave"
MODEL = "valid.acc.ave.pth"


def find_tarball():
    candidates = [os.environ.get("MINI_AN4_TARBALL", "")]
    if os.environ.get("ESPNET_ROOT"):
        candidates.append(os.path.join(os.environ["ESPNET_ROOT"], "egs2/mini_an4/asr1/downloads.tar.gz"))
    candidates.append(str(ROOT.parent / "shared" / "data" / "mini_an4" / "downloads.tar.gz"))
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def run_recipe(recipe_dir, tarball, *extra):
    """``./run.sh`` in ``recipe_dir``; returns (CompletedProcess, seconds)."""
    env = dict(os.environ)
    # The recipe's path.sh activates this environment (the one running the tests).
    env.pop("VIRTUAL_ENV", None)
    env["COMFLP_VENV"] = sys.prefix
    start = time.time()
    r = subprocess.run(
        ["./run.sh", "--local_data_opts", f"--mini_an4_tarball {tarball}", *extra],
        cwd=recipe_dir, env=env, capture_output=True, text=True, timeout=1500,
    )
    return r, time.time() - start


def new_recipe_tree(top: Path) -> Path:
    """``top/egs2/mini_an4/asr1_comflp`` beside a link to the plugin's TEMPLATE."""
    (top / "egs2" / "TEMPLATE").mkdir(parents=True)
    (top / "egs2" / "TEMPLATE" / "asr1_comflp").symlink_to(ROOT / "egs2" / "TEMPLATE" / "asr1_comflp")
    d = top / "egs2" / "mini_an4" / "asr1_comflp"
    d.mkdir(parents=True)
    return d


def copy_trained_recipe(run, top: Path) -> Path:
    """A copy of the trained recipe dir under ``top`` without the CoMFLP outputs.

    Data, dumps and the trained experiment are copied (paths inside them are relative
    to the recipe dir, except wav.scp's, which keep pointing at the shared run's audio).
    """
    d = new_recipe_tree(top)
    src = run["dir"]
    shutil.rmtree(d)

    def ignore(folder, names):
        if Path(folder) == src:
            return [n for n in names if n == "downloads"]
        if Path(folder) == src / ASR_EXP:
            return [n for n in names if n == "comflp"]
        return []

    shutil.copytree(src, d, symlinks=True, ignore=ignore)
    return d


@pytest.fixture(scope="session")
def mini_an4_run(tmp_path_factory):
    """Stages 1-21 of mini_an4 (packing on), run once: {"dir", "result", "seconds", "tarball"}."""
    tarball = find_tarball()
    if tarball is None:
        pytest.skip("mini_an4 downloads.tar.gz not found (set MINI_AN4_TARBALL or ESPNET_ROOT)")
    d = new_recipe_tree(tmp_path_factory.mktemp("recipe"))
    for entry in RECIPE.iterdir():
        if entry.name in OUTPUTS:
            continue
        if entry.is_symlink():
            (d / entry.name).symlink_to(os.readlink(entry))
        elif entry.is_dir():
            shutil.copytree(entry, d / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, d / entry.name)
    # Stage 21 (packing) is optional in run.sh; the tests turn it on.
    result, seconds = run_recipe(d, tarball, "--comflp_pack", "true")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return {"dir": d, "result": result, "seconds": seconds, "tarball": tarball}
