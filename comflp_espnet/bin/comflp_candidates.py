#!/usr/bin/env python3
"""Turn coarse-search proposals into pruned candidate experiments.

Reads the proposals JSON written by ``comflp_search`` and, for each proposal in
rank order, writes ``OUT/candNN`` (NN = rank, two digits) with
``comflp_espnet.surgery.prune_experiment``: ``config.yaml``, the pruned model
file (same basename as the original), ``prune.yaml`` (the surgery record) and
``candidate.yaml`` (rank, coarse score, removed layers, source files).

``OUT/models.scp`` lists ``<name> <config.yaml> <model file>`` per candidate,
ready for ``comflp_decode --models_scp``; with ``--include_original true`` the
unpruned model is listed first under the name ``original``.

Each candidate directory is built under a temporary name and renamed when
complete.  A rerun keeps a candidate whose ``candidate.yaml`` records the same
source model and removed layers, rebuilds any other, and removes ``candNN``
directories that no longer correspond to a proposal.
"""

import argparse
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from comflp_espnet.atomic import atomic_output_dir, atomic_output_file
from comflp_espnet.cli import (
    InputError,
    exit_on_error,
    new_parser,
    read_json,
    setup_logging,
    str2bool,
)
from comflp_espnet.surgery import PruneError, read_prune_record

ORIGINAL_NAME = "original"
CANDIDATE_RECORD = "candidate.yaml"


def read_proposals(path: str) -> List[Dict[str, Any]]:
    """Proposals of comflp_search's JSON file, validated, with ranks, in rank order."""
    data = read_json(path, "--proposals", hint="written by comflp_search, the coarse-search stage")
    proposals = data.get("proposals") if isinstance(data, dict) else None
    if not isinstance(proposals, list) or not proposals:
        raise InputError(
            f"--proposals {path}: expected a JSON object with a non-empty 'proposals' list"
        )
    for i, prop in enumerate(proposals):
        if not isinstance(prop, dict) or not isinstance(prop.get("pruned"), list):
            raise InputError(
                f"--proposals {path}: proposal {i} has no 'pruned' list of layer ids"
            )
        if not all(isinstance(x, int) and x >= 1 for x in prop["pruned"]):
            raise InputError(
                f"--proposals {path}: proposal {i} 'pruned' must hold 1-based layer ids, "
                f"got {prop['pruned']}"
            )
    ranks = [prop.get("rank", i + 1) for i, prop in enumerate(proposals)]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise InputError(f"--proposals {path}: ranks must be integers >= 1, got {ranks}")
    if len(set(ranks)) != len(ranks):
        raise InputError(f"--proposals {path}: duplicated ranks")
    return [
        dict(prop, rank=rank)
        for rank, prop in sorted(zip(ranks, proposals), key=lambda x: x[0])
    ]


def candidate_names(proposals: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``candNN`` -> proposal, in the order given (``read_proposals``'s output).

    NN is the rank, two digits or as many as the largest rank needs, so that
    the directories sort in rank order.
    """
    width = max(2, len(str(max(p["rank"] for p in proposals))))
    return {f"cand{p['rank']:0{width}d}": p for p in proposals}


def check_layers(proposals, asr_train_config, proposals_path):
    """Validate every proposal against the model before writing anything."""
    from comflp_espnet.model_io import read_train_config
    from comflp_espnet.surgery import config_num_layers, validate_layer_ids

    try:
        config = read_train_config(asr_train_config)
        num_layers = config_num_layers(config, "encoder")
        for prop in proposals:
            validate_layer_ids(prop["pruned"], num_layers, "encoder")
    except (ValueError, OSError) as e:
        raise InputError(
            f"--proposals {proposals_path} does not fit "
            f"--asr_train_config {asr_train_config}: {e}"
        )


def expected_record(prop, asr_train_config, asr_model_file) -> Dict[str, Any]:
    return {
        "rank": int(prop["rank"]),
        "pruned": sorted(int(x) for x in prop["pruned"]),
        "pruned_decoder": sorted(int(x) for x in prop.get("pruned_decoder", [])),
        "score": prop.get("score"),
        "runs": prop.get("runs"),
        "asr_train_config": str(asr_train_config),
        "asr_model_file": str(asr_model_file),
        # A model retrained at the same path must not reuse old candidates.
        "asr_model_stamp": file_stamp(asr_model_file),
    }


def file_stamp(path) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{int(st.st_mtime)}"


def is_complete(cand_dir: Path, record: Dict[str, Any], model_basename: str) -> bool:
    """A candidate is reusable when its records match what is requested."""
    files = [cand_dir / CANDIDATE_RECORD, cand_dir / "config.yaml", cand_dir / model_basename]
    if not all(f.is_file() for f in files):
        return False
    try:
        with (cand_dir / CANDIDATE_RECORD).open(encoding="utf-8") as f:
            old = yaml.safe_load(f)
        prune_record = read_prune_record(cand_dir)
    except (OSError, yaml.YAMLError, PruneError):
        return False  # damaged: rebuilt
    if not isinstance(old, dict) or prune_record is None:
        return False
    keys = ("pruned", "pruned_decoder", "asr_model_stamp")
    same_sources = all(
        isinstance(old.get(k), str) and Path(old[k]).resolve() == Path(record[k]).resolve()
        for k in ("asr_train_config", "asr_model_file")
    )
    return (
        same_sources
        and all(old.get(k) == record[k] for k in keys)
        and sorted(prune_record.get("pruned_encoder_layers", [])) == record["pruned"]
    )


def build_candidate(cand_dir: Path, record, asr_train_config, asr_model_file):
    """Pruned experiment plus candidate.yaml, renamed into place when complete."""
    from comflp_espnet.surgery import prune_experiment

    with atomic_output_dir(cand_dir) as tmp_dir:
        pruned = Path(
            prune_experiment(
                asr_train_config,
                asr_model_file,
                tmp_dir / "pruned",
                prune_encoder=record["pruned"],
                prune_decoder=record["pruned_decoder"],
                record={"rank": record["rank"], "score": record["score"], "runs": record["runs"]},
            )
        )
        for item in pruned.iterdir():
            os.replace(item, tmp_dir / item.name)
        pruned.rmdir()
        with (tmp_dir / CANDIDATE_RECORD).open("w", encoding="utf-8") as f:
            yaml.safe_dump(record, f, sort_keys=False)


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_candidates", "Write one pruned ESPnet experiment per CoMFLP proposal"
    )
    parser.add_argument("--proposals", required=True, help="proposals.json of comflp_search")
    parser.add_argument("--asr_train_config", required=True, help="config.yaml of the model")
    parser.add_argument("--asr_model_file", required=True, help="model file to prune")
    parser.add_argument("--output_dir", required=True, help="directory of the candidates")
    parser.add_argument(
        "--include_original", type=str2bool, default=False,
        help="List the unpruned model as 'original' first in models.scp",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    for opt in ("asr_train_config", "asr_model_file"):
        if not Path(getattr(args, opt)).is_file():
            parser.error(f"--{opt} {getattr(args, opt)}: no such file")
    with exit_on_error(parser.prog):
        proposals = read_proposals(args.proposals)
        check_layers(proposals, args.asr_train_config, args.proposals)

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_basename = Path(args.asr_model_file).name
    lines = []
    if args.include_original:
        lines.append(f"{ORIGINAL_NAME} {args.asr_train_config} {args.asr_model_file}")
    named = candidate_names(proposals)
    for name, prop in named.items():
        cand_dir = out_dir / name
        record = expected_record(prop, args.asr_train_config, args.asr_model_file)
        if is_complete(cand_dir, record, model_basename):
            logging.info(f"{name}: {cand_dir} is complete (layers {record['pruned']}); skipping")
        else:
            logging.info(f"{name}: pruning encoder layers {record['pruned']} -> {cand_dir}")
            try:
                build_candidate(cand_dir, record, args.asr_train_config, args.asr_model_file)
            except ValueError as e:  # surgery.PruneError and config errors
                sys.exit(f"{parser.prog}: error: {name} (layers {record['pruned']}): {e}")
        lines.append(f"{name} {cand_dir / 'config.yaml'} {cand_dir / model_basename}")

    # Candidates of an earlier, different search would otherwise be mistaken
    # for current ones by later stages.
    for stale in sorted(out_dir.iterdir()):
        if stale.is_dir() and re.fullmatch(r"cand\d+", stale.name) and stale.name not in named:
            logging.info(f"removing {stale}: not among the current proposals")
            shutil.rmtree(stale)

    with atomic_output_file(out_dir / "models.scp", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    logging.info(f"wrote {out_dir / 'models.scp'} ({len(lines)} model(s))")


if __name__ == "__main__":
    main()
