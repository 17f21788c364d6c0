"""Remove whole encoder (and attention decoder) layers from an ESPnet ASR model.

The result is an ordinary ESPnet experiment: a ``config.yaml`` that differs
from the original only in the layer count and the per-layer options, and a
model file whose layer keys are renumbered. Stock ESPnet loads it with strict
key matching, decodes with it (``espnet2.bin.asr_inference``) and fine-tunes
from it (``espnet2.bin.asr_train --init_param``).

Layer ids are 1-based, as in the CoMFLP paper: layer ``i`` is
``encoder.encoders.<i-1>`` in the checkpoint, and ``h_i`` is its output.

Config changes for encoder pruning:

* ``encoder_conf.num_blocks`` becomes the number of kept layers;
* per-layer list options (``stochastic_depth_rate``, ``cgmlp_weight``,
  ``attn_branch_drop_rate``, ``layer_drop_rate`` when given as lists) keep
  the entries of the kept layers;
* layer-index options (``interctc_layer_idx``, ``gradient_checkpoint_layers``)
  point to the new position of the same layer. An intermediate CTC layer that
  is removed, or that becomes the last layer (ESPnet requires intermediate CTC
  layers to lie below the last), is dropped with a warning.

The same applies to ``decoder_conf`` for decoder pruning. Every other key of
the checkpoint (frontend, normalisation, pre-encoder, CTC, ...) is copied
unchanged, bit for bit.
"""

import copy
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.gc_tuning import collector_paused

PathLike = Union[str, Path]

SUPPORTED_ENCODERS = ("transformer", "conformer", "branchformer", "e_branchformer")
SUPPORTED_DECODERS = ("transformer",)

# Options holding one value per layer when given as a list.
PER_LAYER_LIST_OPTIONS = (
    "stochastic_depth_rate",
    "cgmlp_weight",
    "attn_branch_drop_rate",
    "layer_drop_rate",
)
# Options holding 1-based layer ids (0, where allowed, is the input layer).
INTERCTC_OPTION = "interctc_layer_idx"
CHECKPOINT_LAYERS_OPTION = "gradient_checkpoint_layers"

# num_blocks defaults of the supported modules in ESPnet, used when a config
# omits num_blocks; cross-checked against the checkpoint.
_DEFAULT_NUM_BLOCKS = {
    ("encoder", "transformer"): 6,
    ("encoder", "conformer"): 6,
    ("encoder", "branchformer"): 12,
    ("encoder", "e_branchformer"): 12,
    ("decoder", "transformer"): 6,
}

_LAYER_KEY = {
    "encoder": re.compile(r"^encoder\.encoders\.(\d+)\.(.*)$"),
    "decoder": re.compile(r"^decoder\.decoders\.(\d+)\.(.*)$"),
}
_LAYER_PREFIX = {"encoder": "encoder.encoders", "decoder": "decoder.decoders"}


PRUNE_RECORD = "prune.yaml"


class PruneError(ValueError):
    """A pruning request that cannot be carried out."""


def read_prune_record(experiment_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The ``prune.yaml`` of a pruned experiment directory; None when it has none."""
    path = Path(experiment_dir) / PRUNE_RECORD
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as f:
            record = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise PruneError(f"{path} does not parse as YAML ({e}); prune the model again")
    if not isinstance(record, dict):
        raise PruneError(f"{path}: not a prune record (a mapping); prune the model again")
    return record


class _NoAliasDumper(yaml.SafeDumper):
    """Write repeated objects in full instead of YAML anchors, as ESPnet does."""

    def ignore_aliases(self, data):
        return True


def dump_yaml(data: Any, stream) -> None:
    yaml.dump(
        data,
        stream,
        Dumper=_NoAliasDumper,
        indent=4,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


def validate_layer_ids(
    layer_ids: Iterable[int], num_layers: int, what: str = "encoder"
) -> Tuple[int, ...]:
    """Check 1-based layer ids to remove; returns them sorted.

    Raises PruneError for ids out of 1..num_layers, duplicated ids, or a
    request to remove every layer.
    """
    ids = []
    for layer in layer_ids:
        if isinstance(layer, bool) or int(layer) != layer:
            raise PruneError(f"{what} layer id {layer!r} is not an integer")
        ids.append(int(layer))
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise PruneError(f"{what} layer id(s) {duplicated} given more than once")
    bad = [i for i in ids if not 1 <= i <= num_layers]
    if bad:
        raise PruneError(
            f"{what} layer id(s) {bad} out of range: the {what} has {num_layers} "
            f"layers, numbered 1..{num_layers}"
        )
    if len(ids) >= num_layers:
        raise PruneError(
            f"cannot remove all {num_layers} {what} layers; keep at least one"
        )
    return tuple(sorted(ids))


def parse_layer_ids(text: Optional[str]) -> Tuple[int, ...]:
    """Parse ``"1,3,4"`` (or ``"1 3 4"``; empty for none) into a tuple of ints."""
    if text is None or not text.strip():
        return ()
    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    try:
        return tuple(int(t) for t in items)
    except ValueError:
        raise PruneError(f"layer ids must be integers separated by commas, got {text!r}")


def _module_name(config: Mapping[str, Any], part: str) -> Optional[str]:
    name = config.get(part)
    return name.lower() if isinstance(name, str) else name


def check_supported(config: Mapping[str, Any], part: str = "encoder") -> str:
    """Return the encoder/decoder type of a training config, or raise PruneError."""
    supported = SUPPORTED_ENCODERS if part == "encoder" else SUPPORTED_DECODERS
    name = _module_name(config, part)
    if name not in supported:
        raise PruneError(
            f"{part} '{name}' is not supported for layer pruning; supported "
            f"{part}s: {', '.join(supported)}"
        )
    return name


def config_num_layers(config: Mapping[str, Any], part: str = "encoder") -> int:
    """Layer count of the encoder/decoder described by a training config."""
    name = check_supported(config, part)
    conf = config.get(f"{part}_conf") or {}
    return int(conf.get("num_blocks", _DEFAULT_NUM_BLOCKS[(part, name)]))


def num_encoder_layers(train_args_or_model: Any) -> int:
    """Number of encoder layers of a model, a training config dict or Namespace."""
    encoder = getattr(train_args_or_model, "encoder", None)
    layers = getattr(encoder, "encoders", None)
    if layers is not None and hasattr(layers, "__len__"):
        return len(layers)
    if isinstance(train_args_or_model, Mapping):
        return config_num_layers(train_args_or_model, "encoder")
    return config_num_layers(vars(train_args_or_model), "encoder")


def checkpoint_num_layers(state_dict: Mapping[str, Any], part: str = "encoder") -> int:
    """Number of layers found among the checkpoint keys (0 if none)."""
    indices = set()
    for key in state_dict:
        match = _LAYER_KEY[part].match(key)
        if match:
            indices.add(int(match.group(1)))
    if indices and indices != set(range(len(indices))):
        raise PruneError(f"{part} layer keys are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def kept_layers(num_layers: int, removed: Sequence[int]) -> Tuple[int, ...]:
    removed_set = set(removed)
    return tuple(i for i in range(1, num_layers + 1) if i not in removed_set)


def _prune_module_conf(
    conf: Dict[str, Any],
    num_layers: int,
    removed: Sequence[int],
    part: str,
    notes: List[str],
    warnings: List[str],
) -> Dict[str, Any]:
    conf = copy.deepcopy(conf)
    kept = kept_layers(num_layers, removed)
    new_position = {old: new for new, old in enumerate(kept, 1)}
    conf["num_blocks"] = len(kept)
    notes.append(f"{part}_conf.num_blocks: {num_layers} -> {len(kept)}")

    for option in PER_LAYER_LIST_OPTIONS:
        value = conf.get(option)
        if isinstance(value, (list, tuple)):
            if len(value) != num_layers:
                raise PruneError(
                    f"{part}_conf.{option} has {len(value)} entries but the {part} "
                    f"has {num_layers} layers"
                )
            conf[option] = [value[i - 1] for i in kept]
            notes.append(f"{part}_conf.{option}: kept entries of layers {list(kept)}")

    interctc = conf.get(INTERCTC_OPTION)
    if interctc:
        remapped = []
        for layer in interctc:
            if layer not in new_position:
                warnings.append(
                    f"{part}_conf.{INTERCTC_OPTION}: layer {layer} is removed; "
                    "its intermediate CTC is dropped"
                )
            elif new_position[layer] >= len(kept):
                warnings.append(
                    f"{part}_conf.{INTERCTC_OPTION}: layer {layer} becomes the last "
                    f"layer ({new_position[layer]}); its intermediate CTC is dropped "
                    "(ESPnet requires intermediate CTC layers below the last)"
                )
            else:
                remapped.append(new_position[layer])
        conf[INTERCTC_OPTION] = remapped
        notes.append(f"{part}_conf.{INTERCTC_OPTION}: {list(interctc)} -> {remapped}")

    checkpointed = conf.get(CHECKPOINT_LAYERS_OPTION)
    if checkpointed:
        # 0 denotes the input layer where the module supports it; it is kept.
        remapped = [
            0 if layer == 0 else new_position[layer]
            for layer in checkpointed
            if layer == 0 or layer in new_position
        ]
        conf[CHECKPOINT_LAYERS_OPTION] = remapped
        notes.append(
            f"{part}_conf.{CHECKPOINT_LAYERS_OPTION}: {list(checkpointed)} -> {remapped}"
        )
    return conf


def prune_config(
    config: Mapping[str, Any],
    prune_encoder: Sequence[int] = (),
    prune_decoder: Sequence[int] = (),
    num_encoder_layers: Optional[int] = None,
    num_decoder_layers: Optional[int] = None,
) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """Return ``(new_config, notes, warnings)`` for removing the given layers.

    ``config`` is a training config dict (``config.yaml``); it is not modified.
    Layer counts default to the config's ``num_blocks`` (or ESPnet's default).
    Warnings are also logged.
    """
    new_config = copy.deepcopy(dict(config))
    notes: List[str] = []
    warnings: List[str] = []
    for part, prune, num_layers in (
        ("encoder", prune_encoder, num_encoder_layers),
        ("decoder", prune_decoder, num_decoder_layers),
    ):
        if not prune:
            continue
        check_supported(config, part)
        if num_layers is None:
            num_layers = config_num_layers(config, part)
        removed = validate_layer_ids(prune, num_layers, part)
        new_config[f"{part}_conf"] = _prune_module_conf(
            config.get(f"{part}_conf") or {}, num_layers, removed, part, notes, warnings
        )
    for message in warnings:
        logging.warning(message)
    return new_config, notes, warnings


def prune_state_dict(
    state_dict: Mapping[str, Any],
    prune_encoder: Sequence[int] = (),
    prune_decoder: Sequence[int] = (),
) -> "OrderedDict[str, Any]":
    """Drop the given layers' keys and renumber the remaining layers.

    Tensors are not copied or converted: every kept value is the original
    object, so the saved file holds the same bits.
    """
    new_index = {}
    for part, removed in (("encoder", prune_encoder), ("decoder", prune_decoder)):
        num_layers = checkpoint_num_layers(state_dict, part)
        if removed:
            if num_layers == 0:
                raise PruneError(f"the checkpoint has no {_LAYER_PREFIX[part]}.* keys")
            validate_layer_ids(removed, num_layers, part)
        kept = kept_layers(num_layers, removed)
        # 0-based old index -> 0-based new index
        new_index[part] = {old - 1: new for new, old in enumerate(kept)}

    pruned: "OrderedDict[str, Any]" = OrderedDict()
    for key, value in state_dict.items():
        for part, pattern in _LAYER_KEY.items():
            match = pattern.match(key)
            if match:
                old = int(match.group(1))
                if old not in new_index[part]:
                    break  # a removed layer
                key = f"{_LAYER_PREFIX[part]}.{new_index[part][old]}.{match.group(2)}"
                pruned[key] = value
                break
        else:
            pruned[key] = value
    return pruned


def count_parameters(state_dict: Mapping[str, Any], learnable: Iterable[str]) -> int:
    """Number of learnable values in a state dict: the tensors named in ``learnable``
    (the model's ``named_parameters``); buffers such as the frontend's mel matrix,
    normalisation and batch-norm statistics are left out."""
    names = set(learnable)
    total = 0
    for key, value in state_dict.items():
        if key not in names:
            continue
        numel = getattr(value, "numel", None)
        if numel is not None:
            total += int(numel())
    return total


def prune_experiment(
    asr_train_config: PathLike,
    asr_model_file: PathLike,
    output_dir: PathLike,
    prune_encoder: Sequence[int] = (),
    prune_decoder: Sequence[int] = (),
    record: Optional[Mapping[str, Any]] = None,
    learnable: Optional[Iterable[str]] = None,
    allow_unpruned: bool = False,
) -> Path:
    """Write a pruned copy of an ESPnet ASR experiment to ``output_dir``.

    ``output_dir`` receives ``config.yaml``, the model file (same basename as
    ``asr_model_file``) and ``prune.yaml`` describing what was removed from
    what, plus the entries of ``record``.  Parameter counts are of learnable
    parameters: ``learnable`` names them (default: the model's
    ``named_parameters``, built by ESPnet from the config).  With
    ``allow_unpruned`` an empty request writes an unchanged copy (the unpruned
    reference).  Written atomically: on error nothing is left at ``output_dir``.
    """
    with collector_paused():
        import torch

    from comflp_espnet.model_io import (
        check_config_paths,
        learnable_parameter_names,
        load_state_dict_file,
        read_train_config,
    )

    prune_encoder = tuple(prune_encoder)
    prune_decoder = tuple(prune_decoder)
    if not prune_encoder and not prune_decoder and not allow_unpruned:
        raise PruneError("nothing to prune: give encoder and/or decoder layer ids")
    config = read_train_config(asr_train_config)
    # The pruned config keeps the original's paths: they must resolve from here too.
    check_config_paths(config, asr_train_config)
    if prune_encoder:
        check_supported(config, "encoder")
    if prune_decoder:
        check_supported(config, "decoder")
    state_dict = load_state_dict_file(asr_model_file, "cpu")

    counts = {}
    for part, removed in (("encoder", prune_encoder), ("decoder", prune_decoder)):
        in_checkpoint = checkpoint_num_layers(state_dict, part)
        if removed or in_checkpoint:
            in_config = config_num_layers(config, part) if removed else in_checkpoint
            if removed and in_config != in_checkpoint:
                raise PruneError(
                    f"{asr_train_config} describes {in_config} {part} layers but "
                    f"{asr_model_file} holds {in_checkpoint}"
                )
        counts[part] = in_checkpoint

    new_config, notes, warnings = prune_config(
        config,
        prune_encoder,
        prune_decoder,
        num_encoder_layers=counts["encoder"],
        num_decoder_layers=counts["decoder"],
    )
    new_state_dict = prune_state_dict(state_dict, prune_encoder, prune_decoder)
    if learnable is None:
        learnable = learnable_parameter_names(asr_train_config)
    learnable = [k for k in learnable if k in state_dict]
    learnable_after = prune_state_dict(dict.fromkeys(learnable), prune_encoder, prune_decoder)

    info: Dict[str, Any] = {
        # As given (relative to the recipe directory in a recipe), so that a run directory that is
        # moved or copied makes the same candidate files again.
        "original_config": os.path.normpath(str(asr_train_config)),
        "original_model": os.path.normpath(str(asr_model_file)),
        "encoder": config.get("encoder"),
        "decoder": config.get("decoder"),
        "num_encoder_layers_before": counts["encoder"],
        "num_encoder_layers_after": counts["encoder"] - len(prune_encoder),
        "pruned_encoder_layers": sorted(prune_encoder),
        "kept_encoder_layers": list(kept_layers(counts["encoder"], prune_encoder)),
    }
    if counts["decoder"]:
        info.update(
            num_decoder_layers_before=counts["decoder"],
            num_decoder_layers_after=counts["decoder"] - len(prune_decoder),
            pruned_decoder_layers=sorted(prune_decoder),
            kept_decoder_layers=list(kept_layers(counts["decoder"], prune_decoder)),
        )
    info.update(
        params_before=count_parameters(state_dict, learnable),
        params_after=count_parameters(new_state_dict, learnable_after),
        config_changes=notes,
        warnings=warnings,
    )
    for key, value in (record or {}).items():
        info[key] = _plain(value)

    model_name = Path(asr_model_file).name
    with atomic_output_dir(output_dir) as tmp_dir:
        with (tmp_dir / "config.yaml").open("w", encoding="utf-8") as f:
            dump_yaml(new_config, f)
        torch.save(new_state_dict, tmp_dir / model_name)
        with (tmp_dir / PRUNE_RECORD).open("w", encoding="utf-8") as f:
            dump_yaml(info, f)
    logging.info(
        f"Pruned encoder layers {list(prune_encoder)} decoder layers "
        f"{list(prune_decoder)}: {info['params_before']} -> {info['params_after']} "
        f"parameters; wrote {output_dir}"
    )
    return Path(output_dir)


def _plain(value: Any) -> Any:
    """Convert numpy scalars / tuples to YAML-safe Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return value
