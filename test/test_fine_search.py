"""The fine search: a cheap proxy ranks every candidate, only the finalists are decoded, the winner
is the best finalist by its real CER/WER; several measures' proposals are joined; the ranking
table.  Unit tests on hand-made documents (milliseconds); the stage script's runs are in
test_fine_search_recipe.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from comflp_espnet.coarse import union_document
from comflp_espnet.fine_search import choose_finalists
from comflp_espnet.ranking import ranking_markdown, score_fine_search
from comflp_espnet.rundir import read_proposals
from comflp_espnet.search import Proposal, proposal_score


def corr_matrix(seed, n=7):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.0, (n, n))
    c = (a + a.T) / 2
    np.fill_diagonal(c, 1.0)
    return c


def test_union_of_measures_is_deduplicated_with_ranks_and_scores_per_measure():
    corrs = {"dc": corr_matrix(0), "svcca": corr_matrix(1), "cka": corr_matrix(2)}
    per = {
        "dc": [Proposal((1, 2), 6), Proposal((2, 3), 6), Proposal((4, 5), 6)],
        "svcca": [Proposal((2, 3), 6), Proposal((5, 6), 6)],
        "cka": [Proposal((5, 6), 6), Proposal((1, 2), 6), Proposal((1, 6), 6)],
    }
    data = union_document(per, corrs, 6, 2, "dp", 3, {"keep_first": False}, {"aggregate": "mean"},
                          {m: f"corr/{m}.npy" for m in corrs})
    props = data["proposals"]
    # Order: best rank over the measures, ties by the order of the measures.
    assert [p["pruned"] for p in props] == [[1, 2], [2, 3], [5, 6], [4, 5], [1, 6]]
    assert [p["rank"] for p in props] == [1, 2, 3, 4, 5]
    assert data["measures"] == ["dc", "svcca", "cka"]
    first = props[0]
    assert first["proposed_by"] == ["dc", "cka"]
    assert first["measures"]["dc"]["rank"] == 1 and first["measures"]["cka"]["rank"] == 2
    assert first["measures"]["svcca"]["rank"] is None
    for p in props:
        for m, corr in corrs.items():
            assert p["measures"][m]["score"] == pytest.approx(proposal_score(corr, p["pruned"]))
        assert p["score"] == p["measures"]["dc"]["score"]
        assert p["kept"] == [x for x in range(1, 7) if x not in p["pruned"]]
    assert props[2]["proposed_by"] == ["svcca", "cka"] and props[2]["measures"]["svcca"]["rank"] == 2


def items(values, ranks=None):
    return [{"name": f"cand{i:02d}", "rank": (ranks or {}).get(i, i),
             "proxy": None if v is None else {"value": v}} for i, v in enumerate(values, 1)]


def test_finalists_are_the_best_by_proxy_ties_by_coarse_rank():
    assert choose_finalists(items([30.0, 10.0, 20.0, 10.0, 5.0]), 3) == ["cand05", "cand02", "cand04"]
    # An error count decides before the rate (same reference), then the coarse rank.
    counted = [{"name": "a", "rank": 2, "proxy": {"value": 1.0, "num_err": 4}},
               {"name": "b", "rank": 1, "proxy": {"value": 1.0, "num_err": 4}},
               {"name": "c", "rank": 3, "proxy": {"value": 0.5, "num_err": 2}}]
    assert choose_finalists(counted, 2) == ["c", "b"]
    # No proxy (--comflp_fine_proxy none, or no more candidates than finalists): all are finalists.
    assert choose_finalists(items([None, None, None]), 1) == ["cand01", "cand02", "cand03"]


def write_hyp(path: Path, texts):
    path.mkdir(parents=True, exist_ok=True)
    (path / "text").write_text("".join(f"{k} {v}\n" for k, v in texts.items()))
    (path / "decode_time").write_text("1.5\n1.0\n")
    (path / "num_utts").write_text("2\n1\n")


def test_winner_is_the_best_finalist_by_real_cer_not_by_proxy(tmp_path):
    ref = {"u1": "ABC", "u2": "ABBA", "u3": "CAB"}
    (tmp_path / "text").write_text("".join(f"{k} {v}\n" for k, v in ref.items()))
    proposals = {"num_layers": 4, "num_prune": 2, "method": "dp", "proposals": [
        {"rank": r, "pruned": p, "score": s} for r, p, s in
        ((1, [1, 2], 0.9), (2, [2, 3], 0.8), (3, [3, 4], 0.7), (4, [1, 4], 0.6))]}
    (tmp_path / "proposals.json").write_text(json.dumps(proposals))
    # Proxy order: cand03 (best), cand01, cand04, cand02; finalists: the 3 best.
    proxy = {"cand01": 20.0, "cand02": 40.0, "cand03": 10.0, "cand04": 30.0}
    decoded = {"cand03": {"u1": "ABX", "u2": "ABBA", "u3": "XXB"},   # 3 errors: the proxy's best
               "cand01": {"u1": "ABC", "u2": "ABBA", "u3": "CAB"},   # 0 errors: the real best
               "cand04": {"u1": "ABC", "u2": "ABB", "u3": "CAB"},    # 1 error
               "original": {"u1": "ABC", "u2": "ABBA", "u3": "CAB"}}
    for name, texts in decoded.items():
        write_hyp(tmp_path / "hyp" / name, texts)
    order = sorted(proxy, key=proxy.get)
    doc = {"proxy": "ctc_greedy", "metric": "cer", "finalists": order[:3],
           "original": {"hyp": str(tmp_path / "hyp" / "original")},
           "candidates": [{"name": f"cand{r:02d}", "rank": r, "pruned": p["pruned"], "key": "k",
                           "params": 1000 - 10 * r, "proxy": {"value": proxy[f"cand{r:02d}"]},
                           "proxy_rank": order.index(f"cand{r:02d}") + 1,
                           "finalist": f"cand{r:02d}" in order[:3],
                           "hyp": str(tmp_path / "hyp" / f"cand{r:02d}") if f"cand{r:02d}" in order[:3] else None}
                          for r, p in enumerate(proposals["proposals"], 1)]}
    summary = score_fine_search(str(tmp_path / "text"), doc, read_proposals(tmp_path / "proposals.json"),
                                str(tmp_path / "scores"), token_type="char")
    ranking = summary["ranking"]
    assert ranking["winner"] == "cand01"  # not cand03, the proxy's best
    assert (tmp_path / "scores" / "winner").read_text().strip() == "cand01"
    rows = ranking["ranking"]
    assert [r["name"] for r in rows] == ["cand01", "cand04", "cand03", "cand02"]
    assert [r["finalist"] for r in rows] == [True, True, True, False]
    assert rows[0]["cer"] == 0.0 and rows[2]["num_err"] == 3
    assert rows[3]["cer"] is None and rows[3]["proxy"] == 40.0 and rows[3]["proxy_rank"] == 4
    assert rows[3]["params"] == 980 and rows[0]["decode_time"] == 2.5
    # Only the finalists and the unpruned model were scored.
    assert sorted(json.loads((tmp_path / "scores" / "scores.json").read_text())["models"]) == \
        ["cand01", "cand03", "cand04", "original"]
    md = (tmp_path / "scores" / "ranking.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("|fine rank"))
    assert header == ("|fine rank|model|removed layers|coarse rank|coarse score|proxy CER|proxy rank|finalist|"
                      "CER|WER|params (M)|decode time (s)|")
    assert "|1|cand01|1,2|1|0.9000|20.0|2|yes|0.0|0.0|" in md
    assert "|4|cand02|2,3|2|0.8000|40.0|4|no|-|-|" in md
    assert "the 3 best decoded (finalists)" in md and "Winner: **cand01**" in md


def test_ranking_table_of_several_measures_shows_each_rank_and_score():
    row = {"name": "cand01", "is_original": False, "finalist": True, "fine_rank": 1, "coarse_rank": 1,
           "coarse_score": 0.9, "pruned": [2, 3], "proxy": 12.5, "proxy_rank": 1, "cer": 10.0, "wer": 20.0,
           "params": 2.5e6, "decode_time": 3.0,
           "measures": {"dc": {"rank": 1, "score": 0.9}, "svcca": {"rank": None, "score": 0.8}}}
    md = ranking_markdown({"metric": "cer", "winner": "cand01", "ranking": [row], "original": None,
                           "proxy": "ctc_greedy", "proxy_metric": "cer", "num_finalists": 3,
                           "measures": ["dc", "svcca"]})
    assert "|fine rank|model|removed layers|coarse rank|dc rank|svcca rank|dc score|svcca score|proxy CER|" in md
    assert "|1|cand01|2,3|1|1|-|0.9000|0.8000|12.5|1|yes|10.0|20.0|2.50|3.0|" in md
