"""Proposals -> pruned candidate experiments, each with its freshness record.

For each proposal in rank order, ``OUT/candNN`` (NN = rank) holds a pruned
ESPnet experiment written by ``comflp_espnet.surgery.prune_experiment``:
``config.yaml``, the model file (same basename as the original) and
``prune.yaml``.  Its record (``OUT/.candNN.record.json``) says it was made
from the original config and model (their content digests) with the listed
layers removed, so a candidate is reused only when those are unchanged and its
files are intact; anything else is rebuilt.  The record's digest identifies
the candidate's content, whatever its rank.

``OUT/models.scp`` lists ``<name> <config.yaml> <model file>`` per candidate
(the unpruned model first, as ``original``, when asked), with its own record
naming the proposals and the candidates it lists.  Directories ``candNN`` that
are no longer proposed are removed.
"""

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from comflp_espnet import records
from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.rundir import ORIGINAL_NAME, Proposals, is_candidate_name, write_models_scp

# Bumped when the surgery's output for the same request changes.
SURGERY_CODE = "surgery-1"


class CandidateError(ValueError):
    """Proposals that cannot be turned into candidates."""


def check_layers(proposals: Proposals, asr_train_config) -> None:
    """Validate every proposal against the model before writing anything."""
    from comflp_espnet.model_io import read_train_config
    from comflp_espnet.surgery import config_num_layers, validate_layer_ids

    try:
        config = read_train_config(asr_train_config)
        num_layers = config_num_layers(config, "encoder")
        for prop in proposals.items:
            if prop["pruned"]:
                validate_layer_ids(prop["pruned"], num_layers, "encoder")
    except (ValueError, OSError) as e:
        raise CandidateError(
            f"--proposals {proposals.path} does not fit --asr_train_config {asr_train_config}: {e}")


def original_inputs(asr_train_config, asr_model_file) -> Dict[str, str]:
    """Content digests of the original experiment: the inputs of everything made from it."""
    return {"config": records.file_digest(asr_train_config), "model": records.file_digest(asr_model_file)}


def candidate_made_from(original: Dict[str, str], pruned: Sequence[int],
                        pruned_decoder: Sequence[int] = ()) -> Dict[str, Any]:
    return records.made_from(
        original, {"prune_encoder": sorted(int(x) for x in pruned),
                   "prune_decoder": sorted(int(x) for x in pruned_decoder), "code": SURGERY_CODE})


def ensure_candidate(cand_dir: Path, original: Dict[str, str], asr_train_config, asr_model_file,
                     pruned: Sequence[int], pruned_decoder: Sequence[int] = (),
                     learnable: Optional[Sequence[str]] = None) -> Tuple[records.Record, bool]:
    """The candidate at ``cand_dir``, rebuilt unless current; (record, reused)."""
    from comflp_espnet.surgery import prune_experiment

    expected = candidate_made_from(original, pruned, pruned_decoder)
    status = records.check(cand_dir, expected)
    if status.current:
        return status.record, True
    if status.state != records.MISSING or cand_dir.exists():
        logging.info(f"{cand_dir.name}: {status.describe()}; rebuilding it")
    records.remove_record(cand_dir)
    start = time.perf_counter()
    with atomic_output_dir(cand_dir) as tmp_dir:
        pruned_dir = Path(prune_experiment(
            asr_train_config, asr_model_file, tmp_dir / "pruned",
            prune_encoder=list(pruned), prune_decoder=list(pruned_decoder),
            learnable=learnable, allow_unpruned=True))
        for item in pruned_dir.iterdir():
            item.replace(tmp_dir / item.name)
        pruned_dir.rmdir()
    record = records.write_record(cand_dir, expected, seconds=time.perf_counter() - start)
    return record, False


def write_candidates(proposals: Proposals, asr_train_config, asr_model_file, out_dir,
                     include_original: bool = False, learnable: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Every proposal's candidate under ``out_dir`` and ``out_dir/models.scp``.  ``learnable``:
    the model's learnable parameter names (default: built from the config when needed).

    Returns {"models": [(name, config, model)], "records": {name: Record},
    "reused_seconds": seconds recorded by the candidates that were reused}.
    """
    from comflp_espnet.model_io import learnable_parameter_names

    check_layers(proposals, asr_train_config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    original = original_inputs(asr_train_config, asr_model_file)
    model_basename = Path(asr_model_file).name
    learnable = list(learnable) if learnable is not None else None
    models: List[Tuple[str, str, str]] = []
    if include_original:
        models.append((ORIGINAL_NAME, str(asr_train_config), str(asr_model_file)))
    built: Dict[str, records.Record] = {}
    reused_seconds = 0.0
    named = proposals.named()
    for name, prop in named.items():
        cand_dir = out_dir / name
        pruned = prop["pruned"]
        pruned_decoder = prop.get("pruned_decoder", [])
        if learnable is None and not records.check(
                cand_dir, candidate_made_from(original, pruned, pruned_decoder)).current:
            learnable = learnable_parameter_names(asr_train_config)
        record, reused = ensure_candidate(cand_dir, original, asr_train_config, asr_model_file,
                                          pruned, pruned_decoder, learnable)
        verb = "is current; kept" if reused else "written"
        logging.info(f"{name}: layers {sorted(pruned) or 'none'} removed: {cand_dir} {verb}")
        if reused:
            reused_seconds += record.seconds or 0.0
        built[name] = record
        models.append((name, str(cand_dir / "config.yaml"), str(cand_dir / model_basename)))

    # Candidates of an earlier, different search would otherwise be mistaken for current ones.
    for stale in sorted(out_dir.iterdir()):
        if stale.is_dir() and is_candidate_name(stale.name) and stale.name not in named:
            logging.info(f"removing {stale}: not among the current proposals")
            shutil.rmtree(stale)
            records.remove_record(stale)
    write_models_scp(out_dir / "models.scp", models)
    return {"models": models, "records": built, "reused_seconds": reused_seconds,
            "original": original}
