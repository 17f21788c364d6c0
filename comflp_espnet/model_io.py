"""Load a trained ESPnet ASR model from its experiment files.

The model is built by ESPnet itself (``ASRTask.build_model_from_file``) from
the ``config.yaml`` written at training time, then its weights are loaded with
strict key matching so that a checkpoint that does not fit the config is an
error instead of a silently half-initialised model.

Paths inside ``config.yaml`` (``token_list`` when it is a file, ``bpemodel``,
``normalize_conf.stats_file``) are kept exactly as asr.sh wrote them: relative
to the recipe directory, which is the working directory when the recipe runs.
"""

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import yaml

from comflp_espnet.gc_tuning import collector_paused

PathLike = Union[str, Path]


def read_train_config(asr_train_config: PathLike) -> Dict[str, Any]:
    """Read an ESPnet training ``config.yaml`` into a dict."""
    path = Path(asr_train_config)
    if not path.is_file():
        raise FileNotFoundError(f"--asr_train_config: {path}: no such file")
    with path.open(encoding="utf-8") as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"--asr_train_config: {path} is not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"--asr_train_config: {path} does not hold a mapping of options")
    return config


def config_file_paths(config: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(option name, path) of the files a training config refers to."""
    paths = []
    if isinstance(config.get("token_list"), str):
        paths.append(("token_list", config["token_list"]))
    if isinstance(config.get("bpemodel"), str) and config.get("token_type") == "bpe":
        paths.append(("bpemodel", config["bpemodel"]))
    normalize_conf = config.get("normalize_conf") or {}
    if config.get("normalize") == "global_mvn" and isinstance(
        normalize_conf.get("stats_file"), str
    ):
        paths.append(("normalize_conf.stats_file", normalize_conf["stats_file"]))
    return paths


def check_config_paths(config: Dict[str, Any], asr_train_config: PathLike) -> None:
    """Raise FileNotFoundError naming every file the config needs but lacks.

    Relative paths are looked up from the working directory, as ESPnet does.
    When such a path exists relative to an ancestor of the config file (the
    recipe directory), the message says to run from there.
    """
    problems = []
    cwd = Path.cwd()
    for option, value in config_file_paths(config):
        path = Path(value)
        if path.exists():
            continue
        message = f"{option}: {value} (in {asr_train_config})"
        if not path.is_absolute():
            message += f" does not exist relative to the working directory {cwd}"
            for ancestor in Path(asr_train_config).resolve().parents:
                if (ancestor / path).exists():
                    message += (
                        f"; it exists relative to {ancestor}: run from that "
                        "directory (the recipe directory where asr.sh ran)"
                    )
                    break
        else:
            message += " does not exist"
        problems.append(message)
    if problems:
        raise FileNotFoundError(
            "The training config refers to missing files:\n  " + "\n  ".join(problems)
        )


def load_state_dict_file(asr_model_file: PathLike, device: str = "cpu") -> Dict[str, Any]:
    """Read a model file saved by ESPnet training (a plain state dict)."""
    with collector_paused():
        import torch

    path = Path(asr_model_file)
    if not path.is_file():
        raise FileNotFoundError(f"--asr_model_file: {path}: no such file")
    # ESPnet loads its own checkpoints with weights_only=False; do the same so
    # that any file stock ESPnet accepts is accepted here.
    try:
        state_dict = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated or not a torch file: zipfile, pickle, EOF, runtime errors
        raise ValueError(
            f"--asr_model_file: {path} cannot be read as a PyTorch model file "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); "
            "it is damaged or incomplete: copy or train it again"
        ) from e
    if isinstance(state_dict, dict) and "module" in state_dict and isinstance(
        state_dict["module"], dict
    ):
        state_dict = state_dict["module"]  # DeepSpeed checkpoint
    if not isinstance(state_dict, dict):
        raise ValueError(f"--asr_model_file: {path} does not hold a state dict")
    return state_dict


def load_asr_model(
    asr_train_config: PathLike,
    asr_model_file: PathLike,
    device: str = "cpu",
    strict: bool = True,
) -> Tuple[Any, argparse.Namespace]:
    """Build an ESPnet ASR model from its config and load its weights.

    Returns ``(model, train_args)`` with the model in eval mode on ``device``.
    Errors name the missing file or the checkpoint keys that do not match.
    """
    config = read_train_config(asr_train_config)
    if not Path(asr_model_file).is_file():
        raise FileNotFoundError(f"--asr_model_file: {asr_model_file}: no such file")
    check_config_paths(config, asr_train_config)

    with collector_paused():
        from espnet2.tasks.asr import ASRTask

    # Weights are loaded below with strict key matching; ESPnet's own loader
    # tolerates missing keys, which would hide a broken checkpoint.
    model, train_args = ASRTask.build_model_from_file(
        str(asr_train_config), None, device
    )
    state_dict = load_state_dict_file(asr_model_file, device)
    result = model.load_state_dict(state_dict, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise RuntimeError(
            f"{asr_model_file} does not match {asr_train_config}: "
            f"{len(result.missing_keys)} missing key(s) {result.missing_keys[:5]}, "
            f"{len(result.unexpected_keys)} unexpected key(s) {result.unexpected_keys[:5]}"
        )
    if result.missing_keys or result.unexpected_keys:
        logging.warning(
            f"Non-strict load of {asr_model_file}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    logging.info(
        f"Loaded {type(model).__name__} from {asr_model_file} "
        f"(encoder: {train_args.encoder}) on {device} (cwd {os.getcwd()})"
    )
    return model, train_args


def learnable_parameter_names(asr_train_config: PathLike) -> List[str]:
    """Names of the model's learnable parameters (``named_parameters``), as ESPnet
    builds the model from its config: buffers such as the frontend's mel matrix
    and normalisation statistics are not among them."""
    check_config_paths(read_train_config(asr_train_config), asr_train_config)
    with collector_paused():
        from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(str(asr_train_config), None, "cpu")
    return [name for name, _ in model.named_parameters()]
