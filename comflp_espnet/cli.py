"""Pieces shared by the command-line tools of ``comflp_espnet.bin``.

Imports neither espnet nor torch: the light tools (comflp_search,
comflp_merge_config, ...) must start without paying for them.
"""

import argparse
import contextlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type

import yaml

# ESPnet's log line format, so that plugin logs read like asr.sh's own.
LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")


class InputError(Exception):
    """Bad user input: reported as one message and a non-zero exit."""


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ESPnet-style parser with ``--log_level``.

    ``prog`` is fixed so that argparse's messages and ours name the tool the
    same way however it was started (``python -m``, a test, a script).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--log_level",
        type=lambda x: x.upper(),
        default="INFO",
        choices=LOG_LEVELS,
        help="The verbose level of logging",
    )
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def str2bool(value: str) -> bool:
    """argparse type for true/false options (as ESPnet's, without distutils)."""
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "y", "1"):
        return True
    if lowered in ("false", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def str_or_none(value: str) -> Optional[str]:
    """argparse type: ``none`` (any case) means no value, as in ESPnet's tools."""
    return None if value.strip().lower() == "none" else value


def str2triple(value: str) -> Tuple[str, str, str]:
    """argparse type of ``--data_path_and_name_and_type PATH,NAME,TYPE``."""
    parts = value.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected PATH,NAME,TYPE, got {value!r}")
    return parts[0].strip(), parts[1].strip(), parts[2].strip()


@contextlib.contextmanager
def exit_on_error(prog: str, *errors: Type[BaseException]) -> Iterator[None]:
    """Turn ``InputError`` and ``errors`` into ``prog: error: ...`` and exit status 1.

    A traceback would bury the one line that says which file or option to fix.
    """
    try:
        yield
    except (InputError,) + errors as e:
        sys.exit(f"{prog}: error: {e}")


def read_json(path: Optional[str], option: str, hint: str = "") -> Optional[Any]:
    """Parsed JSON of ``path`` (None for None); errors name ``option``.

    ``hint`` is appended to the missing-file message, e.g. which stage writes it.
    """
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {path}: expected a JSON file, got a directory")
    if not p.is_file():
        raise InputError(f"{option} {path}: no such file{f' ({hint})' if hint else ''}")
    try:
        with p.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{option} {path}: not valid JSON: {e}")


def read_yaml_mapping(path: str, option: str, what: str, example: str) -> Dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is ``{}``).

    ``what``/``example`` describe the expected entries in the error message,
    e.g. ``"inference options"`` and ``"beam_size: 10"``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{option} {path}: no such file")
    try:
        with p.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{option} {path}: does not parse as YAML: {e}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            f"{option} {path}: must be a YAML mapping of {what} "
            f"(e.g. '{example}'), got {type(data).__name__}"
        )
    return data


def max_run_type(value: str) -> Optional[int]:
    if str(value).strip().lower() in ("none", "0", ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, 0 or none, got {value!r}")
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, 0 or none, got {value!r}")
    return number


def layer_list(value: str) -> List[int]:
    items = [item for item in re.split(r"[,\s]+", str(value).strip()) if item]
    try:
        return [int(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer ids such as 1,12, got {value!r}")
