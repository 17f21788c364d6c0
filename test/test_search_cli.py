"""comflp_search command line: JSON output, baselines, bad input (non-zero exit, no output file)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from comflp_espnet.bin.comflp_search import main
from comflp_espnet.search import Proposal

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = Path(__file__).resolve().parents[2] / "shared/reference/comflp_published"


@pytest.fixture
def corr_file(tmp_path):
    rng = np.random.default_rng(0)
    index = np.arange(13)
    mat = np.exp(-np.abs(index[:, None] - index[None, :]) / 4.0) + 0.01 * rng.standard_normal((13, 13))
    path = tmp_path / "dc.npy"
    np.save(path, (mat + mat.T) / 2.0)
    return path


def test_writes_proposals_json(corr_file, tmp_path):
    output = tmp_path / "nested" / "proposals.json"
    main(["--corr", str(corr_file), "--num_prune", "4", "--topk", "5", "--method", "dp", "--keep_first", "true",
          "--max_run", "2", "--protect", "6,12", "--output", str(output)])
    data = json.loads(output.read_text())
    assert data["num_layers"] == 12 and data["num_prune"] == 4 and data["method"] == "dp" and data["topk"] == 5
    assert data["constraints"] == {"keep_first": True, "keep_last": False, "max_run": 2, "protect": [6, 12]}
    assert data["corr"] == str(corr_file)
    assert [item["rank"] for item in data["proposals"]] == [1, 2, 3, 4, 5]
    scores = [item["score"] for item in data["proposals"]]
    assert scores == sorted(scores, reverse=True)
    for item in data["proposals"]:
        assert set(item) == {"rank", "pruned", "kept", "runs", "score"}
        proposal = Proposal.from_dict(item)
        assert proposal.num_layers == 12 and [list(r) for r in proposal.runs] == item["runs"]
        assert not {1, 6, 12} & set(item["pruned"]) and all(b - a < 2 for a, b in item["runs"])
    assert [p.name for p in output.parent.iterdir()] == ["proposals.json"]  # no temporary file left


def test_published_matrix_through_the_cli(tmp_path):
    matrix = PUBLISHED / "dc_mat_mean_bs32_iter10.npy"
    if not matrix.is_file():
        pytest.skip(f"published CoMFLP reference data not found under {PUBLISHED}")
    expected = json.loads((PUBLISHED / "expected_k6_top10.json").read_text())["top10"]
    output = tmp_path / "out.json"
    main(["--corr", str(matrix), "--num_keep", "6", "--method", "beam", "--output", str(output)])
    proposals = json.loads(output.read_text())["proposals"]
    assert [p["runs"] for p in proposals] == [e["runs"] for e in expected]
    np.testing.assert_allclose([p["score"] for p in proposals], [e["score"] for e in expected], atol=1e-7)


@pytest.mark.parametrize("method, count", [("drop_last", 1), ("random", 3), ("bi", 1), ("angular", 3)])
def test_baseline_methods(corr_file, tmp_path, method, count):
    output = tmp_path / "out.json"
    main(["--corr", str(corr_file), "--num_prune", "3", "--topk", "3", "--method", method, "--output", str(output)])
    proposals = json.loads(output.read_text())["proposals"]
    assert len(proposals) == count and all(len(p["pruned"]) == 3 for p in proposals)
    if method == "drop_last":
        assert proposals[0]["pruned"] == [10, 11, 12] and proposals[0]["score"] is None
    if method == "angular":
        assert all(len(p["runs"]) == 1 for p in proposals)


def write(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("not_npy", "cannot read"),
        ("not_square", "square"),
        ("asymmetric", "not symmetric"),
        ("nan", "NaN"),
        ("too_many", "num_prune"),
        ("bad_keep", "num_keep"),
        ("exhaustive_limit", "exhaustive_limit"),
        ("protect_range", "protect"),
        ("protect_text", "protect"),
        ("bad_bool", "keep_first"),
        ("too_few_layers", "fewer than num_prune"),
    ],
)
def test_bad_input_exits_non_zero_without_output(corr_file, tmp_path, capsys, case, message):
    good = str(corr_file)
    rng = np.random.default_rng(1)
    args = {
        "missing": ["--corr", str(tmp_path / "absent.npy"), "--num_prune", "2"],
        "not_npy": ["--corr", str(tmp_path / "bad.npy"), "--num_prune", "2"],
        "not_square": ["--corr", write(tmp_path, "rect.npy", np.ones((4, 5))), "--num_prune", "2"],
        "asymmetric": ["--corr", write(tmp_path, "asym.npy", rng.random((6, 6))), "--num_prune", "2"],
        "nan": ["--corr", write(tmp_path, "nan.npy", np.full((6, 6), np.nan)), "--num_prune", "2"],
        "too_many": ["--corr", good, "--num_prune", "12"],
        "bad_keep": ["--corr", good, "--num_keep", "0"],
        "exhaustive_limit": ["--corr", good, "--num_prune", "6", "--method", "exhaustive",
                             "--exhaustive_limit", "100"],
        "protect_range": ["--corr", good, "--num_prune", "2", "--protect", "0,13"],
        "protect_text": ["--corr", good, "--num_prune", "2", "--protect", "first"],
        "bad_bool": ["--corr", good, "--num_prune", "2", "--keep_first", "maybe"],
        "too_few_layers": ["--corr", good, "--num_prune", "10", "--protect", "1,2,3"],
    }[case]
    (tmp_path / "bad.npy").write_text("not an array")
    output = tmp_path / "out" / "proposals.json"
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--output", str(output)])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not output.exists() and not output.parent.exists()


def test_runs_as_module_without_importing_espnet(corr_file, tmp_path):
    output = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, "-m", "comflp_espnet.bin.comflp_search", "--corr", str(corr_file), "--num_prune", "2",
         "--output", str(output)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rank" in done.stderr and len(json.loads(output.read_text())["proposals"]) == 10
    check = ("import sys, comflp_espnet.bin.comflp_search; "
             "sys.exit(any(m.split('.')[0] in ('espnet', 'espnet2', 'torch') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", check], cwd=REPO).returncode == 0
