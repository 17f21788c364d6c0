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
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List

import yaml

from comflp_espnet.atomic import atomic_output_dir, atomic_output_file

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
ORIGINAL_NAME = "original"
CANDIDATE_RECORD = "candidate.yaml"


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def read_proposals(path: str) -> List[Dict[str, Any]]:
    """Proposals of the JSON file, sorted by rank; validated."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(
            f"comflp_candidates: error: --proposals {path}: no such file "
            "(it is written by comflp_search, the coarse-search stage)"
        )
    try:
        with p.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SystemExit(f"comflp_candidates: error: --proposals {path}: not valid JSON: {e}")
    proposals = data.get("proposals") if isinstance(data, dict) else None
    if not isinstance(proposals, list) or not proposals:
        raise SystemExit(
            f"comflp_candidates: error: --proposals {path}: expected a JSON object with a "
            "non-empty 'proposals' list"
        )
    for i, prop in enumerate(proposals):
        if not isinstance(prop, dict) or not isinstance(prop.get("pruned"), list):
            raise SystemExit(
                f"comflp_candidates: error: --proposals {path}: proposal {i} has no "
                "'pruned' list of layer ids"
            )
        if not all(isinstance(x, int) and x >= 1 for x in prop["pruned"]):
            raise SystemExit(
                f"comflp_candidates: error: --proposals {path}: proposal {i} 'pruned' "
                f"must hold 1-based layer ids, got {prop['pruned']}"
            )
    ranks = [prop.get("rank", i + 1) for i, prop in enumerate(proposals)]
    if len(set(ranks)) != len(ranks):
        raise SystemExit(f"comflp_candidates: error: --proposals {path}: duplicated ranks")
    return [
        dict(prop, rank=rank)
        for rank, prop in sorted(zip(ranks, proposals), key=lambda x: x[0])
    ]


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
        sys.exit(
            f"comflp_candidates: error: --proposals {proposals_path} does not fit "
            f"--asr_train_config {asr_train_config}: {e}"
        )


def candidate_name(rank: int, width: int) -> str:
    return f"cand{rank:0{width}d}"


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
    files = [
        cand_dir / CANDIDATE_RECORD, cand_dir / "prune.yaml",
        cand_dir / "config.yaml", cand_dir / model_basename,
    ]
    if not all(f.is_file() for f in files):
        return False
    try:
        with (cand_dir / CANDIDATE_RECORD).open(encoding="utf-8") as f:
            old = yaml.safe_load(f)
        with (cand_dir / "prune.yaml").open(encoding="utf-8") as f:
            prune_record = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(old, dict) or not isinstance(prune_record, dict):
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


def get_parser():
    parser = argparse.ArgumentParser(
        description="Write one pruned ESPnet experiment per CoMFLP proposal",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--log_level",
        type=lambda x: x.upper(),
        default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"),
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


def main(cmd=None):
    parser = get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    for opt in ("asr_train_config", "asr_model_file"):
        if not Path(getattr(args, opt)).is_file():
            parser.error(f"--{opt} {getattr(args, opt)}: no such file")
    proposals = read_proposals(args.proposals)
    check_layers(proposals, args.asr_train_config, args.proposals)

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_basename = Path(args.asr_model_file).name
    width = max(2, len(str(max(p["rank"] for p in proposals))))
    lines = []
    if args.include_original:
        lines.append(f"{ORIGINAL_NAME} {args.asr_train_config} {args.asr_model_file}")
    wanted = set()
    for prop in proposals:
        name = candidate_name(prop["rank"], width)
        wanted.add(name)
        cand_dir = out_dir / name
        record = expected_record(prop, args.asr_train_config, args.asr_model_file)
        if is_complete(cand_dir, record, model_basename):
            logging.info(f"{name}: {cand_dir} is complete (layers {record['pruned']}); skipping")
        else:
            logging.info(f"{name}: pruning encoder layers {record['pruned']} -> {cand_dir}")
            try:
                build_candidate(cand_dir, record, args.asr_train_config, args.asr_model_file)
            except ValueError as e:  # surgery.PruneError and config errors
                sys.exit(f"comflp_candidates: error: {name} (layers {record['pruned']}): {e}")
        lines.append(f"{name} {cand_dir / 'config.yaml'} {cand_dir / model_basename}")

    # Candidates of an earlier, different search would otherwise be mistaken
    # for current ones by later stages.
    for stale in sorted(out_dir.iterdir()):
        if stale.is_dir() and re.fullmatch(r"cand\d+", stale.name) and stale.name not in wanted:
            logging.info(f"removing {stale}: not among the current proposals")
            shutil.rmtree(stale)

    with atomic_output_file(out_dir / "models.scp", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    logging.info(f"wrote {out_dir / 'models.scp'} ({len(lines)} model(s))")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
