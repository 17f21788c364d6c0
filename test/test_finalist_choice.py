"""bench/finalist_choice.py: the pool read from three searches, and how each rule chooses its winner."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load():
    sys.path.insert(0, str(BENCH))
    try:
        import finalist_choice
    finally:
        sys.path.remove(str(BENCH))
    return finalist_choice


def ranking(entries, proxy=None):
    rows = [{"name": "original", "is_original": True, "eval_key": "orig", "num_err": 10, "cer": 1.0}]
    for i, (key, err, value) in enumerate(entries, 1):
        rows.append({"name": f"cand{i:02d}", "is_original": False, "eval_key": key, "coarse_rank": i,
                     "num_err": err, "cer": None if err is None else err / 10, "proxy": value})
    return {"ranking": rows}


# Coarse rank 1..12; real errors, CTC-greedy errors and losses chosen so that each rule differs.
KEYS = [f"rm{i:02d}" for i in range(1, 13)]
REAL = [50, 48, 47, 49, 46, 45, 44, 43, 42, 41, 40, 60]
CTC = [90, 91, 92, 80, 81, 82, 99, 98, 97, 96, 95, 70]
LOSS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.45, 1.0, 1.1, 1.2, 1.3, 1.4]


def pool():
    fc = load()
    return fc.pool_of({"decode_all": ranking(zip(KEYS, REAL, [None] * 12)),
                       "ctc_greedy": ranking(zip(KEYS, [None] * 12, CTC)),
                       "loss": ranking(zip(KEYS, [None] * 12, LOSS))})


def test_the_pool_joins_the_three_searches_by_layer_set():
    p = pool()
    assert sorted(p) == KEYS
    assert p["rm05"] == {"name": "cand05", "num_err": 46, "cer": 4.6, "coarse_rank": 5, "ctc_greedy": 81,
                         "loss": 0.9}


def test_each_rule_decodes_its_finalists_and_keeps_the_best_of_them():
    fc = load()
    p = pool()
    assert fc.finalists(p, "ctc_greedy", 3) == ["rm12", "rm04", "rm05"]
    assert fc.finalists(p, "loss", 3) == ["rm06", "rm07", "rm01"]
    assert fc.finalists(p, "coarse", 3) == ["rm01", "rm02", "rm03"]
    assert fc.winners(p, 3) == {"ctc_greedy": "rm05", "loss": "rm07", "coarse": "rm03", "coarse10": "rm10",
                                "pool": "rm11"}


def test_a_candidate_not_decoded_in_the_pool_search_is_an_error():
    fc = load()
    with pytest.raises(ValueError, match="rm02: not decoded"):
        fc.pool_of({"decode_all": ranking([("rm01", 5, None), ("rm02", None, None)]),
                    "ctc_greedy": ranking([("rm01", None, 1), ("rm02", None, 2)]),
                    "loss": ranking([("rm01", None, 1), ("rm02", None, 2)])})
