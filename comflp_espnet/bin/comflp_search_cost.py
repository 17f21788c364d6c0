#!/usr/bin/env python3
"""What a layer-pruning search cost: proxy evaluations and decodes of the fine-search set, and
wall-clock seconds.

    python -m comflp_espnet.bin.comflp_search_cost --comflp_dir exp/asr_x/comflp \
        --tag dc_dp_prune6 --measure dc --method dp

Gathers the seconds from the freshness records of the search's outputs into
``<tag>/search_cost.json`` and a one-row table ``<tag>/search_cost.md``
(rewritten only when their content changes); see ``comflp_espnet.search_cost``.
"""

import argparse
import logging
from typing import List, Optional

from comflp_espnet.cli import exit_on_error, new_parser, setup_logging
from comflp_espnet.rundir import RunDir, parse_list, write_search_cost
from comflp_espnet.search_cost import gather, markdown


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_search_cost", "Gather the decodes and wall-clock seconds of a layer-pruning search"
    )
    parser.add_argument("--comflp_dir", required=True, help="the run directory (--comflp_dir)")
    parser.add_argument("--tag", required=True, help="name of the search directory")
    parser.add_argument("--measure", default="dc",
                        help="correlation measure(s) of the search, e.g. 'dc' or 'dc svcca cka'")
    parser.add_argument("--method", required=True, help="search method (--comflp_search)")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    run_dir = RunDir(args.comflp_dir)
    tag_dir = run_dir.tag(args.tag)
    with exit_on_error("comflp_search_cost", ValueError):
        record = gather(run_dir, tag_dir, parse_list(args.measure), args.method)
        changed = write_search_cost(tag_dir, record, markdown(record))
    logging.info(f"{args.tag}: {record['proxy_evaluations']} proxy evaluations, {record['search_decodes']} "
                 f"decodes, search {record['search_seconds']} s"
                 f" -> {tag_dir.search_cost_json}{'' if changed else ' (unchanged)'}")


if __name__ == "__main__":
    main()
