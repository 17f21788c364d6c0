"""The quick recipe egs2/mini_an4_synth/asr1_comflp is complete, without running it: every link
resolves (in the plugin tree and once installed into an ESPnet checkout), the configs parse and
name only options their readers know, and run.sh gives asr_comflp.sh only options that it, or
the stages 1-13 script it forwards them to, declares.  Seconds; no training.
"""

import ast
import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from comflp_espnet import decoding

ROOT = Path(__file__).resolve().parents[1]
EGS2 = ROOT / "egs2"
RECIPE = EGS2 / "mini_an4_synth" / "asr1_comflp"
TEMPLATE = EGS2 / "TEMPLATE" / "asr1_comflp"
INSTALL = ROOT / "tools" / "install_into_espnet.sh"
# What ESPnet's egs2/TEMPLATE/asr1 holds that the recipes link to.
ESPNET_TEMPLATE_ENTRIES = ("asr.sh", "db.sh", "utils/", "steps/", "scripts/", "pyscripts/",
                           "conf/pbs.conf", "conf/queue.conf", "conf/slurm.conf")


def declared_options(script: Path):
    """Option names a recipe shell script declares, by the rule asr_comflp.sh applies to itself and
    to the script it forwards options to: the ``name=default`` lines between the ``# ---- options``
    markers, else every such line before ``help_message=``."""
    lines = script.read_text(encoding="utf-8").splitlines()
    if "# ---- options: begin" in lines:
        lines = lines[lines.index("# ---- options: begin"):lines.index("# ---- options: end")]
    else:
        lines = lines[:next(i for i, line in enumerate(lines) if line.startswith("help_message="))]
    return {m.group(1) for line in lines if (m := re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", line))}


def run_sh_arguments(tmp_path):
    """The arguments run.sh passes to asr_comflp.sh, captured by a stand-in beside a copy of it."""
    work = tmp_path / "recipe"
    work.mkdir()
    shutil.copy2(RECIPE / "run.sh", work / "run.sh")
    stub = work / "asr_comflp.sh"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@"\n')
    stub.chmod(0o755)
    proc = subprocess.run(["bash", str(work / "run.sh")], cwd=work, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    args = proc.stdout.decode().split("\0")[:-1]
    options = {}
    for i in range(0, len(args), 2):
        assert args[i].startswith("--") and "=" not in args[i], f"run.sh passes {args[i:i + 2]}"
        options[args[i][2:]] = args[i + 1]
    return options


def espnet_asr_train_options():
    """Option names of ESPnet's ASR training (espnet2.tasks.abs_task + espnet2.tasks.asr), read from
    their source: importing them takes many seconds.  ``--name`` strings of add_argument calls (an
    f-string's literal parts joined: f"--optim{suf}" is --optim) and each ClassChoices' name and
    name_conf."""
    names = set()
    for module in ("espnet2.tasks.abs_task", "espnet2.tasks.asr"):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            pytest.skip(f"{module} not installed")
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func == "add_argument":
                for arg in node.args:
                    text = None
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        text = arg.value
                    elif isinstance(arg, ast.JoinedStr):
                        text = "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
                    if text and text.startswith("--"):
                        names.add(text[2:].replace("-", "_"))
            elif func == "ClassChoices":
                name = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "name"), None)
                if isinstance(name, ast.Constant):
                    names.update({name.value, f"{name.value}_conf"})
    assert {"batch_bins", "max_epoch", "optim", "optim_conf", "encoder_conf", "specaug"} <= names
    return names


def test_recipe_has_its_files_and_links(tmp_path):
    for name in ("run.sh", "local/data.sh", "conf/data.conf", "conf/comflp/finetune.yaml",
                 "asr_comflp.sh", "path.sh", "cmd.sh"):
        assert (RECIPE / name).exists(), f"{RECIPE / name} missing"
    assert os.stat(RECIPE / "run.sh").st_mode & stat.S_IXUSR, "run.sh is not executable"
    espnet_side = []
    for path in sorted(RECIPE.rglob("*")):
        if not path.is_symlink():
            continue
        target = os.readlink(path)
        if "TEMPLATE/asr1/" in target:
            # ESPnet's own files: they resolve inside a checkout (checked below, installed).
            espnet_side.append(path.relative_to(RECIPE))
        else:
            assert path.exists(), f"{path} -> {target} does not resolve in the plugin tree"
    # The same ESPnet-side links as the CI recipe.
    mini_an4 = EGS2 / "mini_an4" / "asr1_comflp"
    for rel in espnet_side:
        assert os.readlink(RECIPE / rel) == os.readlink(mini_an4 / rel), rel


def test_links_resolve_once_installed_into_a_checkout(tmp_path):
    espnet = tmp_path / "espnet"
    (espnet / "espnet2").mkdir(parents=True)
    template = espnet / "egs2" / "TEMPLATE" / "asr1"
    for entry in ESPNET_TEMPLATE_ENTRIES:
        (template / entry).parent.mkdir(parents=True, exist_ok=True)
        if entry.endswith("/"):
            (template / entry).mkdir()
        else:
            (template / entry).write_text("")
    proc = subprocess.run(["bash", str(INSTALL), "--no-pip", str(espnet)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    installed = espnet / "egs2" / "mini_an4_synth" / "asr1_comflp"
    assert (installed / "run.sh").is_file()
    broken = [str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_symlink() and not p.exists()]
    assert broken == []
    # The corpus generator the data stage runs is the an4_synth recipe's, installed beside it.
    assert (installed / "local" / "data.sh").resolve() == (
        espnet / "egs2" / "an4_synth" / "asr1_comflp" / "local" / "data.sh").resolve()


def test_run_sh_passes_only_known_options(tmp_path):
    options = run_sh_arguments(tmp_path)
    known = declared_options(TEMPLATE / "asr_comflp.sh") | declared_options(TEMPLATE / "asr_minimal.sh")
    unknown = sorted(set(options) - known)
    assert unknown == [], f"run.sh passes options neither asr_comflp.sh nor asr_minimal.sh declares: {unknown}"
    for option in ("asr_config", "inference_config"):
        assert (RECIPE / options[option]).is_file(), f"--{option} {options[option]} missing"
    # The sets exist once data.sh ran: train, dev and test.
    assert {options["train_set"], options["valid_set"], *options["test_sets"].split()} <= {"train", "dev", "test"}
    # The demo's sweep: several depths of the 12 layers, the deepest within a tolerance chosen (so that
    # stages 19-20 run for one depth); proxy defaults left to asr_comflp.sh.
    depths = [int(k) for k in options["comflp_num_prune"].split()]
    assert len(depths) > 1 and all(0 < k < 12 for k in depths) and 6 in depths
    assert float(options["comflp_max_degradation"]) > 0
    assert not any(name.startswith(("comflp_fine_proxy", "comflp_fine_finalists")) for name in options)
    data_opts = shlex.split(options["local_data_opts"])
    assert data_opts[0] == "--config" and (RECIPE / data_opts[1]).is_file()


def test_data_conf_sets_options_of_the_corpus_generator():
    data_sh = RECIPE / "local" / "data.sh"
    declared = declared_options(data_sh.resolve())
    values = {}
    for line in (RECIPE / "conf" / "data.conf").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        assert name in declared, f"conf/data.conf sets {name!r}, not an option of local/data.sh"
        values[name] = shlex.split(value)[0] if value else ""
    # Offline: clean speech needs neither the noise tarball nor any download.
    assert values["augment"] == "false"
    spec = importlib.util.spec_from_file_location("synth_an4_conf", data_sh.resolve().parent / "synth_an4.py")
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    args = synth.get_parser().parse_args(shlex.split(values.get("synth_opts", "")))
    assert args.mbrola == "no"
    assert "name" not in args.prompt_kinds


def test_configs_parse_with_options_espnet_knows():
    train = yaml.safe_load((RECIPE / "conf" / "train_asr_transformer_12.yaml").read_text(encoding="utf-8"))
    finetune = yaml.safe_load((RECIPE / "conf" / "comflp" / "finetune.yaml").read_text(encoding="utf-8"))
    known = espnet_asr_train_options()
    for name, conf in (("train_asr_transformer_12.yaml", train), ("comflp/finetune.yaml", finetune)):
        assert isinstance(conf, dict), name
        assert sorted(set(conf) - known) == [], f"conf/{name}: keys ESPnet's asr_train does not know"
    assert train["encoder_conf"]["num_blocks"] == 12
    assert finetune["max_epoch"] < train["max_epoch"]
    # The decoding options, checked as asr_comflp.sh checks them before stage 14.
    conf = decoding.check_options(str(RECIPE / "conf" / "decode_asr.yaml"), [])
    assert conf["beam_size"] >= 1
