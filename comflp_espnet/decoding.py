"""Decoding several ASR models over one key share in one process, with ESPnet's Speech2Text.

Importing ESPnet's inference module costs seconds per process, so one job of
``${decode_cmd} JOB=1:nj`` decodes its key share with every model of a
models.scp (``<name> <asr config.yaml> <asr model file>``), one model at a
time.  Per model the job writes ``<out>/<name>/``::

    text          Kaldi text, 1-best hypothesis
    token         1-best tokens
    score         1-best beam-search score
    decode_time   seconds spent in Speech2Text calls (wall clock)
    num_utts      number of decoded utterances
    skipped       utterances skipped as unreadable or too short (with
                  --skip_bad_utts true), "<key> <reason>" per line
    decode_info.yaml  model, device, threads, timings (decode_time, encoder_time:
                  the seconds spent in the model's encoder, audio_seconds, rtf,
                  encoder_share; the same in CPU time of the process, decode_cpu_time,
                  encoder_cpu_time, cpu_rtf, encoder_cpu_share, which other processes
                  on a shared machine disturb less), inference options

and a freshness record (``comflp_espnet.records``) made from the model's
config and weights, the data, the key share and the inference options: a
rerun keeps a model whose record is current and redoes any other.

``merge_job_outputs`` joins the jobs' outputs of one model into one directory
(the recipe's ``hyp/<name>``), with its own record; its decode_info.yaml sums the
jobs' timings (``merged_decode_info``).

The inference config is a YAML mapping whose keys are Speech2Text options
(beam_size, ctc_weight, lm_weight, penalty, maxlenratio, nbest, ...) or
asr_inference's run options (batch_size, ngpu, seed, num_workers, dtype,
log_level); ``--<option> <value>`` pairs given on the command line (asr.sh's
``--inference_args``) override it.  Only the 1-best hypothesis is written.
"""

import inspect
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from comflp_espnet import records
from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.cli import InputError, read_yaml_mapping
from comflp_espnet.datadir import unreadable_audio
from comflp_espnet.gc_tuning import collector_paused
from comflp_espnet.rundir import read_models_scp

# Bumped when the decoding of the same inputs would give other outputs.
DECODE_CODE = "decode-1"
# Audio shorter than this cannot go through the frontend and subsampling of any ESPnet model.
MIN_SECONDS = 0.1
JOB_FILES = ("text", "token", "score", "decode_time", "num_utts", "skipped", "decode_info.yaml")
MERGED_FILES = ("text", "token", "score", "decode_time", "num_utts", "skipped")
DECODE_INFO = "decode_info.yaml"

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


def resolve_run_options(given: Mapping[str, Any], conf: Dict[str, Any], config_path):
    """Explicit command-line values (``given``, None when not given) win over the
    config, then the defaults."""
    defaults = {"batch_size": 1, "ngpu": 0, "seed": 0, "num_workers": 1, "dtype": "float32"}
    resolved = {}
    for key, default in defaults.items():
        value = given.get(key)
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


def sample_rate(train_args) -> Optional[float]:
    """Sampling rate from the frontend config (asr.sh writes e.g. fs: 16k)."""
    fs = (getattr(train_args, "frontend_conf", None) or {}).get("fs", 16000)
    try:
        if isinstance(fs, str) and fs.lower().endswith("k"):
            return float(fs[:-1]) * 1000
        return float(fs)
    except (TypeError, ValueError):
        return None




class ModuleTimer:
    """Wall-clock and process CPU seconds spent in a module's forward calls (forward pre-hook and
    hook), so that a decode can say which share of its time the encoder takes.  On a GPU the hooks
    synchronize the device first, so that the time of the module's kernels is counted in the module."""

    def __init__(self, module, synchronize=None):
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.calls = 0
        self._start = None
        self._cpu_start = 0.0
        self._synchronize = synchronize
        self._handles = [module.register_forward_pre_hook(self._before),
                         module.register_forward_hook(self._after)]

    def _before(self, module, args):
        if self._synchronize is not None:
            self._synchronize()
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def _after(self, module, args, output):
        if self._synchronize is not None:
            self._synchronize()
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.cpu_seconds += time.process_time() - self._cpu_start
            self.calls += 1
            self._start = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def encoder_timer(speech2text, device: str) -> Optional[ModuleTimer]:
    """A timer of the encoder of Speech2Text's model (None when it has no ``encoder`` module)."""
    import torch

    encoder = getattr(getattr(speech2text, "asr_model", None), "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        return None
    return ModuleTimer(encoder, torch.cuda.synchronize if device == "cuda" else None)


def merged_decode_info(infos: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """One model's decode_info from its jobs' (each decoded a share of the keys): times, audio
    and utterances summed, so that rtf is decode seconds per audio second over the whole set;
    the encoder's time only when every job recorded it."""
    def total(key):
        values = [info.get(key) for info in infos]
        if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
            return None
        if all(isinstance(v, int) for v in values):
            return sum(values)
        return round(sum(float(v) for v in values), 3)

    first = dict(infos[0]) if infos else {}
    devices = sorted({str(info.get("device")) for info in infos})
    threads = sorted({info.get("num_threads") for info in infos if info.get("num_threads") is not None})
    decode_time, encoder_time, audio = total("decode_time"), total("encoder_time"), total("audio_seconds")
    cpu_time, encoder_cpu = total("decode_cpu_time"), total("encoder_cpu_time")
    return {
        "name": first.get("name"),
        "asr_train_config": first.get("asr_train_config"),
        "asr_model_file": first.get("asr_model_file"),
        "device": devices[0] if len(devices) == 1 else ",".join(devices),
        "num_threads": threads[0] if len(threads) == 1 else (threads or None),
        "jobs": len(infos),
        "num_utts": total("num_utts"),
        "num_skipped": total("num_skipped"),
        "decode_time": decode_time,
        "encoder_time": encoder_time,
        "audio_seconds": audio,
        "rtf": round(decode_time / audio, 5) if decode_time is not None and audio else None,
        "encoder_share": round(encoder_time / decode_time, 4) if encoder_time is not None and decode_time
        else None,
        "decode_cpu_time": cpu_time,
        "encoder_cpu_time": encoder_cpu,
        "cpu_rtf": round(cpu_time / audio, 5) if cpu_time is not None and audio else None,
        "encoder_cpu_share": round(encoder_cpu / cpu_time, 4) if encoder_cpu is not None and cpu_time else None,
        "inference_options": first.get("inference_options"),
    }


def read_decode_info(hyp_dir) -> Optional[Dict[str, Any]]:
    """A model's decode_info.yaml (a job's or a merged one); None when absent or unreadable."""
    path = Path(hyp_dir) / DECODE_INFO
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


class TooShort(Exception):
    """An utterance too short for the model (when ESPnet's own error class is not found)."""

    def __init__(self, message, actual_size=0, limit=0):
        super().__init__(message)


def too_short_error(too_short, detail: str) -> Exception:
    """``too_short`` (ESPnet's TooShortUttError) for audio shorter than MIN_SECONDS."""
    return too_short(f"{detail}, less than {MIN_SECONDS} s of audio", 0, 0)


def inference_options(config_path: Optional[str], extra: Sequence[str],
                      given: Optional[Mapping[str, Any]] = None):
    """(options, command-line keys, run options): the config with the
    command-line ``--key value`` pairs over it, and the resolved run options."""
    conf = load_inference_config(config_path)
    cli_options = parse_extra_options(extra)
    conf.update(cli_options)
    return conf, list(cli_options), resolve_run_options(given or {}, conf, config_path)


def check_options(config_path: Optional[str], extra: Sequence[str]) -> Dict[str, Any]:
    """Check the decoding options against Speech2Text's (read from source: no ESPnet import)."""
    conf, cli_keys, _ = inference_options(config_path, extra)
    speech2text_kwargs(conf, speech2text_parameters_from_source(), config_path, cli_keys)
    return conf


def options_made_from(conf: Mapping[str, Any], run_opts: Mapping[str, Any],
                      skip_bad_utts: bool) -> Dict[str, Any]:
    """The options part of a decoding's record."""
    return {"inference": {k: v for k, v in conf.items() if k not in ("num_workers", "log_level", "ngpu")},
            "seed": run_opts["seed"], "dtype": run_opts["dtype"],
            "device": "cuda" if run_opts["ngpu"] > 0 else "cpu",
            "skip_bad_utts": bool(skip_bad_utts), "code": DECODE_CODE}


def model_digest(config, model) -> Dict[str, str]:
    return {"config": records.file_digest(config), "model": records.file_digest(model)}


def data_digest(data_triples: Sequence[Tuple[str, str, str]]) -> str:
    """The data files' names, types and contents (not the audio they point to)."""
    return records.value_digest([[name, kind, records.file_digest(path)] for path, name, kind in data_triples])


def hyp_made_from(config, model, data_triples, options) -> Dict[str, Any]:
    """What the merged hypotheses of one model on one data set are made from."""
    return records.made_from({"model": records.value_digest(model_digest(config, model)),
                              "data": data_digest(data_triples)}, options)


def job_made_from(config, model, data_triples, keys: Sequence[str], options) -> Dict[str, Any]:
    """What one job's output of one model is made from: the merged one's plus its keys."""
    value = hyp_made_from(config, model, data_triples, options)
    value["inputs"]["keys"] = records.value_digest(list(keys))
    return value


def share_keys(key_file: Optional[str], data_triples: Sequence[Tuple[str, str, str]]) -> List[str]:
    """Utterance ids of this share: the key file, else the first data file."""
    path = key_file if key_file is not None else data_triples[0][0]
    p = Path(path)
    if not p.is_file():
        what = "--key_file" if key_file is not None else "--data_path_and_name_and_type"
        raise InputError(f"{what} {path}: no such file")
    with p.open(encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def bad_audio(data_triples, keys: Sequence[str], skip_bad_utts: bool) -> Dict[str, str]:
    """Utterances of ``keys`` whose audio cannot be read: {} or an error, unless skipped."""
    bad: Dict[str, str] = {}
    for path, name, kind in data_triples:
        if name == "speech":
            bad.update(unreadable_audio(path, keys, kind))
    if bad and not skip_bad_utts:
        key = sorted(bad)[0]
        raise InputError(
            f"{len(bad)} utterance(s) cannot be read, e.g. {key}: {bad[key]}; fix or remove them "
            "from the data dir, or pass --comflp_skip_bad_utts true (--skip_bad_utts true) to skip them")
    return bad


def decode_model(name, config, model, out_root: Path, kwargs, run_opts, data_triples, key_file,
                 keys, made_from_value, bad: Mapping[str, str], skip_bad_utts: bool,
                 inference_module, task) -> Dict[str, Any]:
    """Decode the share with one model; write its directory atomically, then its record."""
    device = "cuda" if run_opts["ngpu"] > 0 else "cpu"
    import torch
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(run_opts["seed"])
    start = time.perf_counter()
    try:
        speech2text = inference_module.Speech2Text(
            asr_train_config=config, asr_model_file=model, device=device,
            dtype=run_opts["dtype"], **kwargs,
        )
    except Exception as e:  # a truncated file fails in torch.load (zip, pickle, EOF errors)
        detail = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"{name}: {model} (with {config}) cannot be loaded ({type(e).__name__}: "
                         f"{detail}); the file is damaged or does not fit its config: make it again") from e
    load_time = time.perf_counter() - start
    timer = encoder_timer(speech2text, device)
    key_share = key_file
    usable = [k for k in keys if k not in bad]
    if bad:
        key_share = str(out_root / f".{name}.keys")
        Path(key_share).write_text("".join(f"{k}\n" for k in usable), encoding="utf-8")
    loader = task.build_streaming_iterator(
        data_triples,
        dtype=run_opts["dtype"],
        batch_size=1,
        key_file=key_share,
        num_workers=run_opts["num_workers"],
        preprocess_fn=task.build_preprocess_fn(speech2text.asr_train_args, False),
        collate_fn=task.build_collate_fn(speech2text.asr_train_args, False),
        inference=True,
    )
    too_short = getattr(inference_module, "TooShortUttError", None) or TooShort
    fs = sample_rate(speech2text.asr_train_args)
    min_samples = int(MIN_SECONDS * fs) if fs else 0
    skipped = dict(bad)
    records.remove_record(out_root / name)
    with atomic_output_dir(out_root / name) as tmp_dir:
        decode_time = 0.0
        decode_cpu_time = 0.0
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
                c0 = time.process_time()
                try:
                    speech = batch.get("speech")
                    if speech is not None and speech.dim() == 1 and speech.shape[0] < min_samples:
                        raise too_short_error(too_short, f"{speech.shape[0]} samples")
                    results = speech2text(**batch)
                except too_short as e:
                    if not skip_bad_utts:
                        raise InputError(
                            f"{name}: utterance {key} is too short for the encoder ({e}); "
                            "fix or remove it from the data dir, or pass --comflp_skip_bad_utts true "
                            "(--skip_bad_utts true) to skip it") from e
                    skipped[key] = f"too short for the encoder ({e})"
                    continue
                finally:
                    decode_time += time.perf_counter() - t0
                    decode_cpu_time += time.process_time() - c0
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
        missing = sorted(set(usable) - set(decoded) - set(skipped))
        if missing:
            raise InputError(
                f"{name}: {len(missing)} utterance(s) of the share were not read from "
                f"the data, e.g. {missing[:3]}"
            )
        audio_seconds = num_samples / fs if fs else None
        encoder_time = encoder_cpu_time = None
        if timer is not None:
            encoder_time, encoder_cpu_time = timer.seconds, timer.cpu_seconds
            timer.remove()
        (tmp_dir / "decode_time").write_text(f"{decode_time:.3f}\n")
        (tmp_dir / "num_utts").write_text(f"{len(decoded)}\n")
        (tmp_dir / "skipped").write_text("".join(f"{k} {skipped[k]}\n" for k in sorted(skipped)),
                                         encoding="utf-8")
        info = {
            "name": name,
            "asr_train_config": str(config),
            "asr_model_file": str(model),
            "device": device,
            "num_threads": torch.get_num_threads(),
            "num_utts": len(decoded),
            "num_skipped": len(skipped),
            "decode_time": round(decode_time, 3),
            "load_time": round(load_time, 3),
            "encoder_time": None if encoder_time is None else round(encoder_time, 3),
            "audio_seconds": None if audio_seconds is None else round(audio_seconds, 3),
            "rtf": round(decode_time / audio_seconds, 5) if audio_seconds else None,
            "encoder_share": round(encoder_time / decode_time, 4) if encoder_time is not None and decode_time
            else None,
            "decode_cpu_time": round(decode_cpu_time, 3),
            "encoder_cpu_time": None if encoder_cpu_time is None else round(encoder_cpu_time, 3),
            "cpu_rtf": round(decode_cpu_time / audio_seconds, 5) if audio_seconds else None,
            "encoder_cpu_share": round(encoder_cpu_time / decode_cpu_time, 4)
            if encoder_cpu_time is not None and decode_cpu_time else None,
            "inference_options": kwargs,
        }
        with (tmp_dir / DECODE_INFO).open("w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
    if key_share != key_file:
        Path(key_share).unlink()
    records.write_record(out_root / name, made_from_value, seconds=load_time + decode_time,
                         info={"num_utts": len(decoded), "num_skipped": len(skipped)})
    if skipped:
        logging.warning(f"{name}: skipped {len(skipped)} utterance(s) (--skip_bad_utts true): "
                        + ", ".join(f"{k} ({skipped[k]})" for k in sorted(skipped)[:10]))
    logging.info(
        f"{name}: decoded {len(decoded)} utterance(s) in {decode_time:.2f} s "
        f"(model load {load_time:.2f} s) on {device}"
    )
    return info


def decode_share(models_scp: str, data_triples: Sequence[Tuple[str, str, str]], key_file: Optional[str],
                 output_dir: str, config_path: Optional[str], extra: Sequence[str],
                 given_run_opts: Mapping[str, Any], skip_bad_utts: bool = False) -> None:
    """One job: decode the key share with every model of ``models_scp`` (current outputs are kept)."""
    # Everything that can be checked without ESPnet is checked first.
    models = read_models_scp(models_scp)
    conf, cli_keys, run_opts = inference_options(config_path, extra, given_run_opts)
    for path, _, _ in data_triples:
        if not Path(path).exists():
            raise InputError(f"--data_path_and_name_and_type: {path} not found")
    keys = share_keys(key_file, data_triples)
    options = options_made_from(conf, run_opts, skip_bad_utts)
    out_root = Path(output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    todo = []
    for name, config, model in models:
        expected = job_made_from(config, model, data_triples, keys, options)
        status = records.check(out_root / name, expected)
        if status.current:
            logging.info(f"{name}: {out_root / name} is current; skipping")
        else:
            todo.append((name, config, model, expected))
    if not todo:
        return
    bad = bad_audio(data_triples, keys, skip_bad_utts)

    with collector_paused():
        import espnet2.bin.asr_inference as inference_module
        import torch
        from espnet2.tasks.asr import ASRTask

    kwargs = speech2text_kwargs(
        conf, inspect.signature(inference_module.Speech2Text.__init__).parameters,
        config_path, cli_keys,
    )
    if run_opts["ngpu"] > 0 and not torch.cuda.is_available():
        raise InputError("--ngpu 1 but no CUDA device is visible; use --ngpu 0")
    for name, config, model, expected in todo:
        logging.info(f"{name}: decoding {len(keys)} utterance(s) with {model}")
        decode_model(name, config, model, out_root, kwargs, run_opts, data_triples, key_file, keys,
                     expected, bad, skip_bad_utts, inference_module, ASRTask)


def merge_job_outputs(name: str, config, model, data_triples, options, job_dirs: Sequence[Path],
                      key_files: Sequence[Path], out: Path, seconds: Optional[float] = None) -> records.Record:
    """The jobs' outputs of model ``name`` joined into ``out`` (text/token/score
    sorted by key; decode_time and num_utts one line per job; decode_info.yaml with the jobs'
    timings summed), with its record (``seconds``: the time it took, default the longest job's
    time for this model)."""
    parts: Dict[str, List[str]] = {f: [] for f in MERGED_FILES}
    infos: List[Dict[str, Any]] = []
    job_seconds = 0.0
    skipped = 0
    for job_dir, key_file in zip(job_dirs, key_files):
        keys = share_keys(str(key_file), data_triples)
        expected = job_made_from(config, model, data_triples, keys, options)
        status = records.check(job_dir / name, expected)
        if not status.current:
            raise InputError(f"decoding of {name}: {status.describe()}; the job did not finish "
                             f"(see {job_dir.parent}/decode.*.log): run the stage again")
        job_seconds = max(job_seconds, status.record.seconds or 0.0)
        skipped += int(status.record.info.get("num_skipped", 0))
        for f in MERGED_FILES:
            parts[f].append((job_dir / name / f).read_text(encoding="utf-8"))
        infos.append(read_decode_info(job_dir / name) or {})
    records.remove_record(out)
    with atomic_output_dir(out) as tmp:
        for f in MERGED_FILES:
            text = "".join(parts[f])
            if f in ("text", "token", "score", "skipped"):
                text = "".join(sorted(text.splitlines(keepends=True), key=lambda line: line.split(maxsplit=1)[0]))
            (tmp / f).write_text(text, encoding="utf-8")
        with (tmp / DECODE_INFO).open("w", encoding="utf-8") as f:
            yaml.safe_dump(merged_decode_info(infos), f, sort_keys=False, allow_unicode=True)
    return records.write_record(out, hyp_made_from(config, model, data_triples, options),
                                seconds=job_seconds if seconds is None else seconds,
                                info={"num_skipped": skipped, "job_seconds": job_seconds})
