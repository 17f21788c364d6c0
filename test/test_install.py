"""tools/install_into_espnet.sh on a stand-in ESPnet checkout (no pip: --no-pip)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "tools" / "install_into_espnet.sh"


@pytest.fixture
def espnet_root(tmp_path):
    root = tmp_path / "espnet"
    (root / "espnet2").mkdir(parents=True)
    template = root / "egs2" / "TEMPLATE" / "asr1"
    (template / "utils").mkdir(parents=True)
    (template / "asr.sh").write_text("#!/usr/bin/env bash\n")
    return root


def install(root, *args):
    return subprocess.run(
        ["bash", str(INSTALL), *args, str(root)], capture_output=True, text=True
    )


def test_copies_recipes_whose_links_resolve_in_the_checkout(espnet_root):
    proc = install(espnet_root, "--no-pip")
    assert proc.returncode == 0, proc.stderr
    recipe = espnet_root / "egs2" / "mini_an4" / "asr1_comflp"
    assert (recipe / "run.sh").is_file()
    # Relative links now point into the checkout's TEMPLATE/asr1.
    assert (recipe / "asr.sh").resolve() == (espnet_root / "egs2/TEMPLATE/asr1/asr.sh").resolve()
    assert (recipe / "asr_comflp.sh").resolve().parent == (
        espnet_root / "egs2" / "TEMPLATE" / "asr1_comflp"
    )
    # The plugin-wide defaults travel with the template as a real directory.
    conf = espnet_root / "egs2" / "TEMPLATE" / "asr1_comflp" / "conf"
    assert conf.is_dir() and not conf.is_symlink()
    assert (conf / "comflp" / "finetune.yaml").read_text() == (
        ROOT / "conf" / "comflp" / "finetune.yaml"
    ).read_text()


def test_refuses_to_overwrite_without_force(espnet_root):
    assert install(espnet_root, "--no-pip").returncode == 0
    proc = install(espnet_root, "--no-pip")
    assert proc.returncode != 0
    assert "--force" in proc.stderr


def test_force_replaces_recipe_files_and_keeps_experiments(espnet_root):
    assert install(espnet_root, "--no-pip").returncode == 0
    recipe = espnet_root / "egs2" / "mini_an4" / "asr1_comflp"
    model = recipe / "exp" / "asr_x" / "valid.acc.ave.pth"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    (recipe / "RESULTS.md").write_text("# results\n")
    (recipe / "run.sh").write_text("edited\n")

    proc = install(espnet_root, "--no-pip", "--force")
    assert proc.returncode == 0, proc.stderr
    assert model.read_bytes() == b"weights"
    assert (recipe / "RESULTS.md").read_text() == "# results\n"
    assert (recipe / "run.sh").read_text() == (ROOT / "egs2/mini_an4/asr1_comflp/run.sh").read_text()
    assert os.access(recipe / "run.sh", os.X_OK)


def test_rejects_a_directory_that_is_not_an_espnet_checkout(tmp_path):
    proc = install(tmp_path, "--no-pip")
    assert proc.returncode != 0
    assert "not an ESPnet checkout" in proc.stderr
    assert not (tmp_path / "egs2").exists()
