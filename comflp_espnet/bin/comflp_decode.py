#!/usr/bin/env python3
"""Decode one share of utterances with several ASR models in one process.

Importing ESPnet's inference module costs seconds per process, so one job of
``${decode_cmd} JOB=1:nj`` decodes its key share with every model listed in
``--models_scp`` (lines ``<name> <asr config.yaml> <asr model file>``), loading
one model at a time through ``espnet2.bin.asr_inference.Speech2Text``.

Outputs, per model name (each directory is written under a temporary name and
renamed when complete)::

    OUT/<name>/text         Kaldi text, 1-best hypothesis: "utt words..."
    OUT/<name>/token        1-best tokens
    OUT/<name>/score        1-best beam-search score
    OUT/<name>/decode_time  seconds spent in Speech2Text calls (wall clock)
    OUT/<name>/num_utts     number of decoded utterances
    OUT/<name>/decode_info.yaml  model, config, device, timings, key digest

A rerun skips a model whose directory is complete and was made from the same
model file, inference options and key share; anything else is decoded again.
Merging JOB outputs: ``cat OUT.*/<name>/text | sort``; ``decode_time`` and
``num_utts`` of several jobs may be concatenated (comflp_score sums the lines).

The inference config (``--config``, e.g. conf/decode_asr.yaml as given to
asr.sh's ``--inference_config``) is a YAML mapping whose keys are Speech2Text
options (beam_size, ctc_weight, lm_weight, penalty, maxlenratio, nbest, ...) or
asr_inference's run options (batch_size, ngpu, seed, num_workers, dtype,
log_level).  Command-line options given explicitly override the config; any
other ``--<option> <value>`` on the command line (asr.sh's ``--inference_args``,
e.g. ``--beam_size 5``) is an inference option too and overrides the config.
Only the 1-best hypothesis is written, whatever ``nbest`` is.
"""

import argparse
import hashlib
import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.cli import (
    InputError,
    exit_on_error,
    new_parser,
    read_yaml_mapping,
    setup_logging,
    str2bool,
    str2triple,
    str_or_none,
)

# asr_inference options that are not Speech2Text arguments but may appear in an
# inference config; handled here.
RUN_OPTIONS = ("batch_size", "ngpu", "seed", "num_workers", "log_level")
# Speech2Text arguments that come from models.scp / --ngpu, never from a config.
MODEL_ARGUMENTS = ("asr_train_config", "asr_model_file", "device")
# Output layouts this tool does not write (several speakers per utterance).
UNSUPPORTED_OPTIONS = {
    "enh_s2t_task": "joint enhancement+ASR models",
    "multi_asr": "multi-speaker ASR models",
    "word_lm_train_config": "word LMs (not supported by asr_inference either)",
    "word_lm_file": "word LMs (not supported by asr_inference either)",
    "model_tag": "downloading models (list local files in models.scp)",
}
REQUIRED_FILES = ("text", "token", "score", "decode_time", "num_utts", "decode_info.yaml")


def read_models_scp(path: str) -> List[Tuple[str, str, str]]:
    """Read ``<name> <config> <model>`` lines; check names and files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--models_scp {path}: no such file")
    models = []
    seen = set()
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 3:
                raise InputError(
                    f"{path}:{lineno}: expected '<name> <config.yaml> <model file>', "
                    f"got {len(fields)} field(s)"
                )
            name, config, model = fields
            if name in seen:
                raise InputError(f"{path}:{lineno}: duplicated model name {name!r}")
            if "/" in name or name.startswith("."):
                raise InputError(
                    f"{path}:{lineno}: model name {name!r} must be a plain directory "
                    "name (no '/', not starting with '.')"
                )
            for kind, file in (("config", config), ("model file", model)):
                if not Path(file).is_file():
                    raise InputError(f"{path}:{lineno}: {kind} {file} of {name!r} not found")
            seen.add(name)
            models.append((name, config, model))
    if not models:
        raise InputError(f"--models_scp {path}: no models listed")
    return models


def load_inference_config(path: Optional[str]) -> Dict[str, Any]:
    """Parse the inference YAML; must be a mapping (an empty file is {})."""
    if path is None:
        return {}
    return read_yaml_mapping(path, "--config", "inference options", "beam_size: 10")


def speech2text_parameters_from_source() -> Dict[str, inspect.Parameter]:
    """Speech2Text's constructor parameters, read from the source of ESPnet's
    asr_inference without importing it (the import takes seconds), so that a
    recipe can check its inference options before the first stage runs."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("espnet2.bin.asr_inference")
    if spec is None or not spec.origin:
        raise InputError("espnet2.bin.asr_inference not found: is espnet installed in this environment?")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Speech2Text":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    a = item.args
                    params = {}
                    for arg in a.posonlyargs + a.args + a.kwonlyargs:
                        annotation = inspect.Parameter.empty
                        if isinstance(arg.annotation, ast.Name) and arg.annotation.id == "float":
                            annotation = float
                        params[arg.arg] = inspect.Parameter(
                            arg.arg, inspect.Parameter.KEYWORD_ONLY, annotation=annotation
                        )
                    return params
    raise InputError(f"{spec.origin}: class Speech2Text with an __init__ not found")


def speech2text_kwargs(
    conf: Dict[str, Any], params: Mapping[str, inspect.Parameter], config_path: Optional[str],
    cli_keys: Sequence[str] = (),
) -> Dict[str, Any]:
    """Map inference-config entries onto Speech2Text keyword arguments, given the
    constructor's ``params`` (``inspect.signature(Speech2Text.__init__).parameters``).

    Unknown keys are an error (a misspelt option would otherwise be silently
    ignored); ints given for float options are converted as argparse would.
    """
    accepted = sorted(
        {k for k in params if k not in ("self",) + MODEL_ARGUMENTS} | set(RUN_OPTIONS)
    )
    kwargs = {}
    for key, value in conf.items():
        origin = "command line" if key in cli_keys else f"--config {config_path}"
        if key in UNSUPPORTED_OPTIONS and value not in (None, False):
            raise InputError(
                f"{origin}: option {key!r} is not supported by "
                f"comflp_decode ({UNSUPPORTED_OPTIONS[key]}); remove it"
            )
        if key in UNSUPPORTED_OPTIONS or key in RUN_OPTIONS:
            continue
        if key in MODEL_ARGUMENTS:
            raise InputError(
                f"{origin}: option {key!r} is set per model by "
                "--models_scp / --ngpu; remove it from the inference config"
            )
        if key not in params:
            raise InputError(
                f"{origin}: unknown inference option {key!r}; "
                f"accepted options: {', '.join(accepted)}"
            )
        annotation = params[key].annotation
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[key] = value
    return kwargs


def parse_extra_options(tokens: Sequence[str]) -> Dict[str, Any]:
    """``--key value`` / ``--key=value`` pairs left over by the parser (asr.sh's
    ``--inference_args``, e.g. ``--beam_size 5``); values are read as YAML
    scalars so that ``5`` is an int and ``true`` a bool."""
    options: Dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise InputError(f"unexpected command-line argument {token!r}")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            key, value = token[2:], tokens[i + 1]
            i += 2
        else:
            raise InputError(f"command-line option {token} needs a value")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key] = value
    return options


def resolve_run_options(args: argparse.Namespace, conf: Dict[str, Any], config_path):
    """Explicit command-line values win over the config, then the defaults."""
    defaults = {"batch_size": 1, "ngpu": 0, "seed": 0, "num_workers": 1, "dtype": "float32"}
    resolved = {}
    for key, default in defaults.items():
        value = getattr(args, key)
        if value is None:
            value = conf.get(key, default)
        resolved[key] = value
    if resolved["batch_size"] != 1:
        raise InputError(
            f"batch_size {resolved['batch_size']} (from --batch_size or --config "
            f"{config_path}): only batch_size 1 is supported, as in asr_inference"
        )
    if resolved["ngpu"] > 1:
        raise InputError("--ngpu: only single-GPU decoding is supported (use 0 or 1)")
    return resolved


def share_keys(key_file: Optional[str], data_triples: Sequence[Tuple[str, str, str]]):
    """Utterance ids of this share: the key file, else the first data file."""
    path = key_file if key_file is not None else data_triples[0][0]
    p = Path(path)
    if not p.is_file():
        what = "--key_file" if key_file is not None else "--data_path_and_name_and_type"
        raise InputError(f"{what} {path}: no such file")
    with p.open(encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def output_is_current(out_dir: Path, fingerprint: Dict[str, Any]) -> bool:
    if not all((out_dir / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        with (out_dir / "decode_info.yaml").open(encoding="utf-8") as f:
            info = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(info, dict) and info.get("fingerprint") == fingerprint


def model_fingerprint(config, model, kwargs, run_opts, keys, data_triples):
    st = os.stat(model)
    return {
        "asr_train_config": digest(Path(config).read_text(encoding="utf-8")),
        "asr_model_file": f"{os.path.abspath(model)}:{st.st_size}:{int(st.st_mtime)}",
        "inference_options": digest(kwargs),
        "run_options": digest({k: run_opts[k] for k in ("seed", "dtype")}),
        "keys": digest(keys),
        "data": digest([list(t) for t in data_triples]),
    }


def sample_rate(train_args) -> Optional[float]:
    """Sampling rate from the frontend config (asr.sh writes e.g. fs: 16k)."""
    fs = (getattr(train_args, "frontend_conf", None) or {}).get("fs", 16000)
    try:
        if isinstance(fs, str) and fs.lower().endswith("k"):
            return float(fs[:-1]) * 1000
        return float(fs)
    except (TypeError, ValueError):
        return None


def decode_model(
    name, config, model, out_root: Path, kwargs, run_opts, data_triples, key_file,
    keys, fingerprint, inference_module, task,
):
    """Decode the share with one model; write its directory atomically."""
    device = "cuda" if run_opts["ngpu"] > 0 else "cpu"
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(run_opts["seed"])
    start = time.perf_counter()
    speech2text = inference_module.Speech2Text(
        asr_train_config=config, asr_model_file=model, device=device,
        dtype=run_opts["dtype"], **kwargs,
    )
    load_time = time.perf_counter() - start
    loader = task.build_streaming_iterator(
        data_triples,
        dtype=run_opts["dtype"],
        batch_size=1,
        key_file=key_file,
        num_workers=run_opts["num_workers"],
        preprocess_fn=task.build_preprocess_fn(speech2text.asr_train_args, False),
        collate_fn=task.build_collate_fn(speech2text.asr_train_args, False),
        inference=True,
    )
    too_short = getattr(inference_module, "TooShortUttError", ())
    with atomic_output_dir(out_root / name) as tmp_dir:
        decode_time = 0.0
        num_samples = 0
        decoded = []
        with (tmp_dir / "text").open("w", encoding="utf-8") as f_text, (
            tmp_dir / "token"
        ).open("w", encoding="utf-8") as f_token, (tmp_dir / "score").open(
            "w", encoding="utf-8"
        ) as f_score:
            for utt_keys, batch in loader:
                key = utt_keys[0]
                batch = {k: v[0] for k, v in batch.items() if not k.endswith("_lengths")}
                if "speech" in batch:
                    num_samples += int(batch["speech"].shape[0])
                t0 = time.perf_counter()
                try:
                    results = speech2text(**batch)
                except too_short as e:
                    logging.warning(f"{name}: utterance {key} too short to decode: {e}")
                    results = []
                decode_time += time.perf_counter() - t0
                if isinstance(results, tuple):  # (nbest, intermediate CTC outputs)
                    results = results[0]
                if results:
                    text, token, _token_int, hyp = results[0]
                    text = " ".join((text or "").split())
                    f_text.write(f"{key} {text}".rstrip() + "\n")
                    f_token.write(f"{key} {' '.join(token)}".rstrip() + "\n")
                    f_score.write(f"{key} {float(hyp.score)}\n")
                else:
                    f_text.write(f"{key}\n")
                    f_token.write(f"{key}\n")
                    f_score.write(f"{key} nan\n")
                decoded.append(key)
        missing = sorted(set(keys) - set(decoded))
        if missing:
            raise InputError(
                f"{name}: {len(missing)} utterance(s) of the share were not read from "
                f"the data, e.g. {missing[:3]}"
            )
        fs = sample_rate(speech2text.asr_train_args)
        audio_seconds = num_samples / fs if fs else None
        (tmp_dir / "decode_time").write_text(f"{decode_time:.3f}\n")
        (tmp_dir / "num_utts").write_text(f"{len(decoded)}\n")
        info = {
            "name": name,
            "asr_train_config": str(config),
            "asr_model_file": str(model),
            "device": device,
            "num_utts": len(decoded),
            "decode_time": round(decode_time, 3),
            "load_time": round(load_time, 3),
            "audio_seconds": None if audio_seconds is None else round(audio_seconds, 3),
            "rtf": (
                round(decode_time / audio_seconds, 5) if audio_seconds else None
            ),
            "inference_options": kwargs,
            "fingerprint": fingerprint,
        }
        with (tmp_dir / "decode_info.yaml").open("w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
    logging.info(
        f"{name}: decoded {len(decoded)} utterance(s) in {decode_time:.2f} s "
        f"(model load {load_time:.2f} s) on {device}"
    )
    return info


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_decode", "Decode a key share with several ESPnet ASR models in one process"
    )
    parser.add_argument(
        "--models_scp", default=None,
        help="Lines '<name> <asr config.yaml> <asr model file>' (required unless --check_options)",
    )
    parser.add_argument(
        "--data_path_and_name_and_type", type=str2triple, default=None,
        action="append", help="e.g. dump/raw/test/wav.scp,speech,sound",
    )
    parser.add_argument("--key_file", type=str_or_none, default=None)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument(
        "--check_options", type=str2bool, default=False,
        help="Only check the inference options (--config and the extra --<option> <value>) "
        "against Speech2Text's, without importing ESPnet or decoding; exit 2 if one is wrong",
    )
    parser.add_argument(
        "--config", type=str_or_none, default=None,
        help="Inference config YAML (beam_size, ctc_weight, ...), as asr_inference's",
    )
    parser.add_argument(
        "--ngpu", type=int, default=None, help="0: CPU, 1: cuda (default: config, else 0)"
    )
    parser.add_argument("--batch_size", type=int, default=None, help="Only 1 is supported")
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default 0)")
    parser.add_argument(
        "--num_workers", type=int, default=None, help="DataLoader workers (default 1)"
    )
    parser.add_argument(
        "--dtype", default=None, choices=["float16", "float32", "float64"],
        help="Data type (default float32)",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args, extra = parser.parse_known_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog):
        if args.check_options:
            check_options(args, extra)
            return
        for option in ("models_scp", "data_path_and_name_and_type", "output_dir"):
            if getattr(args, option) is None:
                parser.error(f"--{option} is required")
        decode_all(args, extra)


def inference_options(args: argparse.Namespace, extra: Sequence[str]):
    """The config with the command-line options over it, the command-line keys, the run options."""
    conf = load_inference_config(args.config)
    # Decoding options on the command line override the config file.
    cli_options = parse_extra_options(extra)
    conf.update(cli_options)
    return conf, list(cli_options), resolve_run_options(args, conf, args.config)


def check_options(args: argparse.Namespace, extra: Sequence[str]) -> None:
    conf, cli_keys, _ = inference_options(args, extra)
    speech2text_kwargs(conf, speech2text_parameters_from_source(), args.config, cli_keys)
    logging.info(f"inference options OK: {', '.join(sorted(conf)) or '(none)'}")


def decode_all(args: argparse.Namespace, extra: Sequence[str]) -> None:
    # Everything that can be checked without ESPnet is checked first.
    models = read_models_scp(args.models_scp)
    conf, cli_keys, run_opts = inference_options(args, extra)
    for path, _, _ in args.data_path_and_name_and_type:
        if not Path(path).exists():
            raise InputError(f"--data_path_and_name_and_type: {path} not found")
    keys = share_keys(args.key_file, args.data_path_and_name_and_type)

    import espnet2.bin.asr_inference as inference_module
    import torch
    from espnet2.tasks.asr import ASRTask

    kwargs = speech2text_kwargs(
        conf, inspect.signature(inference_module.Speech2Text.__init__).parameters,
        args.config, cli_keys,
    )
    if run_opts["ngpu"] > 0 and not torch.cuda.is_available():
        raise InputError("--ngpu 1 but no CUDA device is visible; use --ngpu 0")

    out_root = Path(args.output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    for name, config, model in models:
        fingerprint = model_fingerprint(
            config, model, kwargs, run_opts, keys, args.data_path_and_name_and_type
        )
        if output_is_current(out_root / name, fingerprint):
            logging.info(f"{name}: {out_root / name} is complete; skipping")
            continue
        logging.info(f"{name}: decoding {len(keys)} utterance(s) with {model}")
        decode_model(
            name, config, model, out_root, kwargs, run_opts,
            args.data_path_and_name_and_type, args.key_file, keys, fingerprint,
            inference_module, ASRTask,
        )


if __name__ == "__main__":
    main()
