"""The run directory (``--comflp_dir``): where every output lives, and the one
reader and one writer of each of its documents.

Layout (``<tag>`` is one search, ``<measure>_<search>_prune<k>`` by default)::

    <comflp_dir>/
      .lock                          run lock: pid, host, start time, command of the holder
      calib/                         calibration subset of --train_set (Kaldi data dir)   stage 14
      states/                        states.scp, states_info.yaml, logdir/ (jobs, arks)   stage 14
      corr/<measure>.{npy,png}       correlation matrix and heatmap, one per measure      stage 15
      fine/                          fine-search subset of --comflp_fine_set              stage 17 (16 for glp)
      parameters.json                the model's learnable parameters (names, per layer)  stage 17
      fine_evals/                    evaluations on fine/, shared by every search:        stages 16-17
        <proxy>_<h>/                 proxy scores (ctc_greedy_<h>, loss_<h>; <h>: digest
                                     of the proxy's options, in how.json): <key>/text or
                                     <key>/loss per pruned set, logdir/ (the jobs)
        decode_<h>/                  full decodes (<h>: digest of the decoding options,
                                     in how.json): hyp/<key>/{text,token,score,...}, logdir/
                                     (<key>: the pruned set, rundir.eval_key: rm02-03-07;
                                     original for the unpruned model)
      sweep/                         sweep.{json,md,png}: every depth's winner of a run   stage 18 (20)
                                     of several depths (comflp_espnet.sweep_stage)
      <tag>/
        proposals.json               coarse-search result                                 stage 16
        glp/stepNN/                  greedy steps (glp only): proposals.json, step.json,
                                     decode/, scores/ (--comflp_glp_metric decode) or
                                     proxy.json (ctc_greedy, loss)
        fine_search/                 fine_search.json (every candidate's proxy value,     stage 17
                                     the finalists and their decodes), models.scp
        candidates/candNN/           the finalists, one pruned ESPnet model each:         stage 17
                                     config.yaml, model, prune.yaml (NN: coarse rank)
        scores/                      scores.{md,json}, ranking.{md,json}, winner          stage 18
        winner -> candidates/candNN
        search_cost.{json,md}                                                             stage 18
        finetune/                    ESPnet experiment of the fine-tuned winner           stage 19
        test_decode/<inference_tag>/<set>/  models.scp, logdir/, hyp/, score/             stage 20
        RESULTS.md                                                                        stage 20
        <exp>_comflp_<tag>_<what>_<model>.zip                                             stage 21

Every output has a freshness record beside it (``comflp_espnet.records``:
``<parent>/.<name>.record.json``).  Temporary names (``.<name>.tmp*``,
``.<name>.old*``) are swept at the start of each run.

Pure module: no ESPnet, no torch.
"""

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from comflp_espnet.atomic import atomic_output_file

PathLike = Union[str, Path]

ORIGINAL_NAME = "original"
LOCK_NAME = ".lock"
TAG_PATTERN = r"[A-Za-z0-9_.+-]+"


class DocumentError(ValueError):
    """A run-directory document that is missing or malformed."""


def default_tag(measure: str, search: str, num_prune: int) -> str:
    return f"{measure}_{search}_prune{num_prune}"


def pruned_key(pruned: Iterable[int]) -> str:
    """A name for a set of removed layers, e.g. ``rm02-03-07`` (sorts like the layers);
    the key of per-pruned-set outputs that several searches can share."""
    return "rm" + "-".join(f"{int(x):02d}" for x in sorted(pruned))


UNPRUNED_KEY = "unpruned"


def eval_key(pruned: Iterable[int]) -> str:
    """The key of a pruned set's entries in ``fine_evals/``: ``rm02-03-07``; ``unpruned`` for a
    candidate that removes nothing (a copy of the model; the model itself is ``original``)."""
    pruned = list(pruned)
    return pruned_key(pruned) if pruned else UNPRUNED_KEY


def parse_list(text: str) -> List[str]:
    """Items of an option that takes a list: separated by spaces or commas, in order, each once."""
    items: List[str] = []
    for item in text.replace(",", " ").split():
        if item not in items:
            items.append(item)
    return items


class RunDir:
    """Paths of one ``--comflp_dir``."""

    def __init__(self, root: PathLike):
        self.root = Path(root)

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def calib(self) -> Path:
        return self.root / "calib"

    @property
    def states(self) -> Path:
        return self.root / "states"

    @property
    def states_scp(self) -> Path:
        return self.states / "states.scp"

    @property
    def states_info(self) -> Path:
        return self.states / "states_info.yaml"

    @property
    def states_logdir(self) -> Path:
        return self.states / "logdir"

    # The names of a job array's files, with JOB for the job number (as ${cmd} JOB=1:N substitutes it).
    states_keys_pattern = property(lambda self: self.states_logdir / "keys.JOB.scp")
    # Each dump job's share of the calibration scp: whole length-sorted batches (job_batches).
    states_data_pattern = property(lambda self: self.states_logdir / "wav.JOB.scp")
    states_job_pattern = property(lambda self: self.states_logdir / "output.JOB")
    states_log_pattern = property(lambda self: self.states_logdir / "dump.JOB.log")

    def states_job(self, n: int) -> Path:
        """Output directory of dump job ``n`` (its archive stays there; states.scp points to it)."""
        return job_path(self.states_job_pattern, n)

    @property
    def corr_dir(self) -> Path:
        return self.root / "corr"

    def corr(self, measure: str) -> Path:
        """The output (record name) of one measure's matrix: ``corr/<measure>``."""
        return self.corr_dir / measure

    def corr_file(self, measure: str) -> Path:
        return self.corr_dir / f"{measure}.npy"

    def heatmap(self, measure: str) -> Path:
        return self.corr_dir / f"{measure}.png"

    def corr_log(self, measures: str) -> Path:
        """Log of the process that computed the matrices of ``measures`` (joined by '+')."""
        return self.corr_dir / f"{measures}.log"

    @property
    def fine(self) -> Path:
        return self.root / "fine"

    @property
    def parameters(self) -> Path:
        return self.root / "parameters.json"

    @property
    def fine_evals(self) -> Path:
        return self.root / "fine_evals"

    def proxy_evals(self, proxy: str, how_digest: str) -> "ProxyEvalDir":
        return ProxyEvalDir(self.fine_evals / f"{proxy}_{how_digest[:8]}")

    def decode_evals(self, how_digest: str) -> "DecodeDir":
        return DecodeDir(self.fine_evals / f"decode_{how_digest[:8]}")

    def tag(self, name: str) -> "TagDir":
        return TagDir(self.root / name)


def job_path(pattern: Path, n: int) -> Path:
    """A job array's file of job ``n`` (``pattern`` holds JOB)."""
    return Path(str(pattern).replace("JOB", str(n)))


class DecodeDir:
    """A decoding of a models list on a data set (fine search, glp steps, test sets, the benchmark)::

        <root>/models.scp          the models decoded (name config model)
        <root>/hyp/<model>/        text, token, score, decode_time, num_utts, skipped (one record each)
        <root>/score/              scores when asked for (comflp_espnet.ranking)
        <root>/logdir/             keys.N.scp, models.scp (the ones decoded now), output.N/, decode.N.log
    """

    def __init__(self, root: PathLike):
        self.root = Path(root)

    models_scp = property(lambda self: self.root / "models.scp")
    how_json = property(lambda self: self.root / "how.json")
    hyp_root = property(lambda self: self.root / "hyp")
    score = property(lambda self: self.root / "score")
    logdir = property(lambda self: self.root / "logdir")
    job_models_scp = property(lambda self: self.logdir / "models.scp")
    reused_seconds = property(lambda self: self.logdir / "reused_seconds")
    keys_pattern = property(lambda self: self.logdir / "keys.JOB.scp")
    job_pattern = property(lambda self: self.logdir / "output.JOB")
    log_pattern = property(lambda self: self.logdir / "decode.JOB.log")

    def hyp(self, name: str) -> Path:
        return self.hyp_root / name

    def job(self, n: int) -> Path:
        return job_path(self.job_pattern, n)

    def keys(self, n: int) -> Path:
        return job_path(self.keys_pattern, n)


class ProxyEvalDir:
    """Proxy scores of pruned sets on the fine-search subset, one way of scoring (a proxy and its
    options, described in how.json)::

        <root>/how.json           the proxy and its options
        <root>/<key>/text|loss    one pruned set's proxy output (a freshness record each)
        <root>/logdir/            candidates.txt, wav.N.scp (text.N), output.N/, proxy.N.log
    """

    def __init__(self, root: PathLike):
        self.root = Path(root)

    how_json = property(lambda self: self.root / "how.json")
    logdir = property(lambda self: self.root / "logdir")
    candidates_file = property(lambda self: self.logdir / "candidates.txt")
    wav_pattern = property(lambda self: self.logdir / "wav.JOB.scp")
    text_pattern = property(lambda self: self.logdir / "text.JOB")
    job_pattern = property(lambda self: self.logdir / "output.JOB")
    log_pattern = property(lambda self: self.logdir / "proxy.JOB.log")

    def entry(self, key: str) -> Path:
        return self.root / key

    def job(self, n: int) -> Path:
        return job_path(self.job_pattern, n)


class TagDir:
    """Paths of one search, ``<comflp_dir>/<tag>``."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        self.name = self.root.name

    proposals = property(lambda self: self.root / "proposals.json")
    candidates = property(lambda self: self.root / "candidates")
    models_scp = property(lambda self: self.candidates / "models.scp")
    glp = property(lambda self: self.root / "glp")
    fine_search = property(lambda self: self.root / "fine_search")
    fine_search_json = property(lambda self: self.fine_search / "fine_search.json")
    fine_models_scp = property(lambda self: self.fine_search / "models.scp")
    scores = property(lambda self: self.root / "scores")
    ranking_json = property(lambda self: self.scores / "ranking.json")
    winner_link = property(lambda self: self.root / "winner")
    search_cost_json = property(lambda self: self.root / "search_cost.json")
    search_cost_md = property(lambda self: self.root / "search_cost.md")
    finetune = property(lambda self: self.root / "finetune")
    finetune_config = property(lambda self: self.finetune / "finetune_config.yaml")
    results = property(lambda self: self.root / "RESULTS.md")

    def candidate(self, name: str) -> Path:
        return self.candidates / name

    def glp_step(self, step: int) -> Path:
        return self.glp / f"step{step:02d}"

    def glp_step_proposals(self, step: int) -> Path:
        return self.glp_step(step) / "proposals.json"

    def glp_step_candidates(self, step: int) -> Path:
        return self.glp_step(step) / "candidates"

    def glp_step_decode(self, step: int) -> Path:
        return self.glp_step(step) / "decode"

    def glp_step_scores(self, step: int) -> Path:
        return self.glp_step(step) / "scores"

    def glp_step_proxy(self, step: int) -> Path:
        return self.glp_step(step) / "proxy.json"

    def test_decode_root(self, inference_tag: str) -> Path:
        return self.root / "test_decode" / inference_tag

    def test_models_scp(self, inference_tag: str) -> Path:
        return self.test_decode_root(inference_tag) / "models.scp"

    def test_decode(self, inference_tag: str, dset: str) -> Path:
        return self.test_decode_root(inference_tag) / dset

    def packed(self, exp_name: str, what: str, model_file: str) -> Path:
        stem = model_file.rsplit(".", 1)[0] if "." in model_file else model_file
        return self.root / f"{exp_name}_comflp_{self.name}_{what}_{stem}.zip"


# ---------------------------------------------------------------------------- JSON documents
def write_json(path: PathLike, data: Any) -> None:
    with atomic_output_file(path, encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def read_json(path: PathLike, what: str, hint: str = "") -> Any:
    path = Path(path)
    if not path.is_file():
        raise DocumentError(f"{path}: no such file{f' ({hint})' if hint else ''}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DocumentError(f"{path}: {what} is not valid JSON ({e})")


# ---- proposals.json (written by the coarse search and by glp's finish; read by
#      candidates, scoring, results, search cost)
def write_proposals(path: PathLike, data: Dict[str, Any]) -> None:
    write_json(path, data)


class Proposals:
    """A validated proposals JSON: ``data`` (the whole document) and ``items``
    (the proposals in rank order, each with ``rank`` and ``pruned``)."""

    def __init__(self, path: Path, data: Dict[str, Any], items: List[Dict[str, Any]]):
        self.path, self.data, self.items = path, data, items

    @property
    def num_layers(self) -> Optional[int]:
        return self.data.get("num_layers")

    @property
    def method(self) -> Optional[str]:
        return self.data.get("method")

    def named(self) -> Dict[str, Dict[str, Any]]:
        return candidate_names(self.items)


def read_proposals(path: PathLike, option: str = "--proposals") -> Proposals:
    path = Path(path)
    try:
        data = read_json(path, "proposals", hint="written by the coarse search, stage 16")
    except DocumentError as e:
        raise DocumentError(f"{option} {e}")
    proposals = data.get("proposals") if isinstance(data, dict) else None
    if not isinstance(proposals, list) or not proposals:
        raise DocumentError(f"{option} {path}: expected a JSON object with a non-empty 'proposals' list")
    for i, prop in enumerate(proposals):
        if not isinstance(prop, dict) or not isinstance(prop.get("pruned"), list):
            raise DocumentError(f"{option} {path}: proposal {i} has no 'pruned' list of layer ids")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in prop["pruned"]):
            raise DocumentError(
                f"{option} {path}: proposal {i} 'pruned' must hold 1-based layer ids, got {prop['pruned']}")
    ranks = [prop.get("rank", i + 1) for i, prop in enumerate(proposals)]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise DocumentError(f"{option} {path}: ranks must be integers >= 1, got {ranks}")
    if len(set(ranks)) != len(ranks):
        raise DocumentError(f"{option} {path}: duplicated ranks")
    items = [dict(prop, rank=rank) for rank, prop in sorted(zip(ranks, proposals), key=lambda x: x[0])]
    return Proposals(path, data, items)


def candidate_names(proposals: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``candNN`` -> proposal; NN is the rank, two digits or as many as the largest
    rank needs, so that the directories sort in rank order."""
    width = max(2, len(str(max(p["rank"] for p in proposals))))
    return {f"cand{p['rank']:0{width}d}": p for p in proposals}


def is_candidate_name(name: str) -> bool:
    return bool(re.fullmatch(r"cand\d+", name))


# ---- models.scp: "<name> <config.yaml> <model file>" per line
def write_models_scp(path: PathLike, models: Sequence[Tuple[str, str, str]]) -> None:
    with atomic_output_file(path, encoding="utf-8") as f:
        f.write("".join(f"{n} {c} {m}\n" for n, c, m in models))


def read_models_scp(path: PathLike, option: str = "--models_scp", check_files: bool = True
                    ) -> List[Tuple[str, str, str]]:
    p = Path(path)
    if not p.is_file():
        raise DocumentError(f"{option} {path}: no such file")
    models, seen = [], set()
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            raise DocumentError(f"{path}:{lineno}: expected '<name> <config.yaml> <model file>', "
                                f"got {len(fields)} field(s)")
        name, config, model = fields
        if name in seen:
            raise DocumentError(f"{path}:{lineno}: duplicated model name {name!r}")
        if "/" in name or name.startswith("."):
            raise DocumentError(f"{path}:{lineno}: model name {name!r} must be a plain directory "
                                "name (no '/', not starting with '.')")
        if check_files:
            for kind, file in (("config", config), ("model file", model)):
                if not Path(file).is_file():
                    raise DocumentError(f"{path}:{lineno}: {kind} {file} of {name!r} not found")
        seen.add(name)
        models.append((name, config, model))
    if not models:
        raise DocumentError(f"{option} {path}: no models listed")
    return models


# ---- scores/: scores.json, ranking.json, winner (written by the scoring of
#      comflp_espnet.ranking; read by glp, results, the benchmark)
def write_scores_json(path: PathLike, summary: Dict[str, Any]) -> None:
    write_json(path, summary)


def read_scores_json(path: PathLike, option: str = "--scores") -> Dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "scores.json"
    try:
        data = read_json(path, "scores")
    except DocumentError as e:
        raise DocumentError(f"{option} {e}")
    if not isinstance(data, dict) or data.get("metric") not in ("cer", "wer") \
            or not isinstance(data.get("models"), dict) or not data["models"]:
        raise DocumentError(f"{option} {path}: no 'metric' / 'models' (not a comflp_score output)")
    return data


def write_ranking(scores_dir: PathLike, ranking: Dict[str, Any], markdown: str) -> None:
    """ranking.json, ranking.md and winner of a scores directory (being written)."""
    scores_dir = Path(scores_dir)
    write_json(scores_dir / "ranking.json", ranking)
    (scores_dir / "ranking.md").write_text(markdown, encoding="utf-8")
    (scores_dir / "winner").write_text(ranking["winner"] + "\n", encoding="utf-8")


def read_ranking(path: PathLike, option: str = "--ranking") -> Dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "ranking.json"
    try:
        data = read_json(path, "ranking")
    except DocumentError as e:
        raise DocumentError(f"{option} {e}")
    if not (isinstance(data, dict) and isinstance(data.get("ranking"), list) and "winner" in data):
        raise DocumentError(f"{option} {path}: not a comflp_score ranking.json")
    return data


def read_winner(scores_dir: PathLike) -> Optional[str]:
    """The winning candidate's name, None when there is no winner file."""
    path = Path(scores_dir) / "winner"
    if not path.is_file():
        return None
    name = path.read_text(encoding="utf-8").strip()
    if not name or "/" in name or name.startswith("."):
        raise DocumentError(f"{path}: not a candidate name ({name!r}); rerun stage 18")
    return name


# ---- decode_time / num_utts of a model's hypotheses (one number per job, summed)
def read_hyp_number(hyp_dir: PathLike, name: str) -> Optional[float]:
    """Sum of the numbers in ``<hyp_dir>/<name>`` (``decode_time``, ``num_utts``), None when absent."""
    path = Path(hyp_dir) / name
    if not path.is_file():
        return None
    try:
        return sum(float(x) for x in path.read_text(encoding="utf-8").split())
    except ValueError:
        raise DocumentError(f"{path}: not a list of numbers; decode again")


# ---- search_cost.{json,md} (written by comflp_espnet.search_cost; read by the benchmark)
def write_search_cost(tag_dir: TagDir, record: Dict[str, Any], markdown: str) -> bool:
    """Both files, rewritten only when their content changes; True when they changed."""
    changed = _write_if_changed(tag_dir.search_cost_json, json.dumps(record, indent=2) + "\n")
    changed |= _write_if_changed(tag_dir.search_cost_md, markdown)
    return changed


def read_search_cost(tag_dir: TagDir) -> Optional[Dict[str, Any]]:
    if not tag_dir.search_cost_json.is_file():
        return None
    data = read_json(tag_dir.search_cost_json, "search cost")
    if not isinstance(data, dict):
        raise DocumentError(f"{tag_dir.search_cost_json}: not a search cost record")
    return data


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    with atomic_output_file(path, encoding="utf-8") as f:
        f.write(text)
    return True


# ---- glp steps: stepNN/proposals.json (the step's models) and stepNN/step.json
STEP_RECORD = "step.json"


def step_record_path(step_dir: PathLike) -> Path:
    return Path(step_dir) / STEP_RECORD


def write_step(step_dir: PathLike, record: Dict[str, Any]) -> None:
    write_json(step_record_path(step_dir), record)


def read_step(step_dir: PathLike) -> Optional[Dict[str, Any]]:
    path = step_record_path(step_dir)
    if not path.is_file():
        return None
    data = read_json(path, "greedy step record")
    if not isinstance(data, dict) or "chosen_layer" not in data:
        raise DocumentError(f"{path}: not a greedy step record; remove {Path(step_dir)} and rerun stage 16")
    return data


# ---- fine_search/fine_search.json (written by stage 17; read by stage 18, search cost, the benchmark)
def write_fine_search(tag_dir: TagDir, data: Dict[str, Any]) -> None:
    write_json(tag_dir.fine_search_json, data)


def read_fine_search(tag_dir: TagDir) -> Dict[str, Any]:
    data = read_json(tag_dir.fine_search_json, "fine search", hint="written by stage 17")
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list) \
            or not isinstance(data.get("finalists"), list):
        raise DocumentError(f"{tag_dir.fine_search_json}: not a fine search record; run stage 17 again")
    return data


# ---- parameters.json: the model's learnable parameters (written by stage 17 from the proxy jobs
#      or by building the model; read by the candidates' surgery and the ranking)
def write_parameters(run_dir: RunDir, data: Dict[str, Any]) -> None:
    write_json(run_dir.parameters, data)


def read_parameters(run_dir: RunDir) -> Optional[Dict[str, Any]]:
    if not run_dir.parameters.is_file():
        return None
    data = read_json(run_dir.parameters, "learnable parameters")
    if not isinstance(data, dict) or not isinstance(data.get("learnable"), list):
        raise DocumentError(f"{run_dir.parameters}: not a parameters record; remove it to make it again")
    return data


# ---- how.json of an evaluation directory (written once when it is made; read by people)
def write_how(path: PathLike, data: Dict[str, Any]) -> None:
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    _write_if_changed(path, text)
