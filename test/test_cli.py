"""Shared command-line helpers: messages name the option and file, exits are non-zero."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from comflp_espnet import cli

REPO = Path(__file__).resolve().parents[1]


def test_exit_on_error_reports_one_line_and_non_zero_status():
    with pytest.raises(SystemExit) as e:
        with cli.exit_on_error("tool", FileNotFoundError):
            raise FileNotFoundError("--x a.txt: no such file")
    assert e.value.code == "tool: error: --x a.txt: no such file"
    with pytest.raises(SystemExit, match="tool: error: bad"):
        with cli.exit_on_error("tool"):
            raise cli.InputError("bad")
    # Errors not listed are real failures and keep their traceback.
    with pytest.raises(KeyError):
        with cli.exit_on_error("tool", ValueError):
            raise KeyError("x")


def test_parser_accepts_log_level_in_any_case():
    parser = cli.new_parser("tool", "test")
    assert parser.parse_args(["--log_level", "debug"]).log_level == "DEBUG"
    assert parser.prog == "tool"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log_level", "loud"])


@pytest.mark.parametrize("value, expected", [("true", True), ("Yes", True), ("1", True),
                                             ("false", False), ("NO", False), ("0", False)])
def test_str2bool(value, expected):
    assert cli.str2bool(value) is expected


def test_str2bool_and_str2triple_reject_other_values():
    with pytest.raises(argparse.ArgumentTypeError, match="true or false"):
        cli.str2bool("maybe")
    assert cli.str2triple("a/wav.scp, speech ,sound") == ("a/wav.scp", "speech", "sound")
    with pytest.raises(argparse.ArgumentTypeError, match="PATH,NAME,TYPE"):
        cli.str2triple("a/wav.scp,speech")
    assert cli.str_or_none("None") is None and cli.str_or_none("x") == "x"


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), ("a: [1,\n", "does not parse as YAML"),
     ("- 1\n- 2\n", "must be a YAML mapping of things (e.g. 'k: 1'), got list")],
)
def test_read_yaml_mapping_errors_name_option_and_file(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(cli.InputError) as e:
        cli.read_yaml_mapping(str(path), "--opt", "things", "k: 1")
    assert str(e.value).startswith(f"--opt {path}: ") and message in str(e.value)


def test_read_yaml_mapping_empty_file_is_empty_mapping(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    assert cli.read_yaml_mapping(str(tmp_path / "c.yaml"), "--opt", "x", "k: 1") == {}


def test_read_json_errors(tmp_path):
    assert cli.read_json(None, "--opt") is None
    with pytest.raises(cli.InputError, match="no such file \\(run stage 3\\)"):
        cli.read_json(str(tmp_path / "none.json"), "--opt", hint="run stage 3")
    with pytest.raises(cli.InputError, match="got a directory"):
        cli.read_json(str(tmp_path), "--opt")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(cli.InputError, match="--opt .*bad.json: not valid JSON"):
        cli.read_json(str(tmp_path / "bad.json"), "--opt")


def test_importing_cli_pulls_in_neither_espnet_nor_torch():
    check = ("import sys, comflp_espnet.cli; "
             "sys.exit(any(m.split('.')[0] in ('espnet', 'espnet2', 'torch') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", check], cwd=REPO).returncode == 0
