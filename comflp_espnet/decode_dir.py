"""Decoding a list of models on a data set, as the stages do it (stages 16 with glp, 17, 20, and
the benchmark), around the recipe's job array (scripts/decode_models.sh):

    decode_begin   which models' hypotheses are not current; their list and the key shares
    ${cmd} JOB=1:N comflp_decode ...   (one process per job decodes its share with every model)
    decode_end     join the jobs' outputs per model (with records), list the models, score them

The layout of a decoding directory: ``comflp_espnet.rundir.DecodeDir``.  A model's hypotheses are
current when made from the same model files, data files and decoding options
(``comflp_espnet.decoding.hyp_made_from``); the scores when made from the same hypotheses and
reference.
"""

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from comflp_espnet import records, rundir
from comflp_espnet.datadir import input_spec, write_job_keys

# Bumped when the scoring of the same hypotheses would give other scores.
SCORE_CODE = "score-1"


@dataclasses.dataclass
class DecodeJob:
    """A decoding of the models of ``models_scp`` on ``data_dir`` into ``output_dir``
    (a ``rundir.DecodeDir``: ``hyp/<name>/``, one record each); scored into ``score_dir``,
    or into the decoding's ``score/`` with ``score``."""

    models_scp: str
    data_dir: str
    output_dir: str
    nj: int = 1
    inference_config: str = ""
    inference_args: str = ""
    batch_size: int = 1
    ngpu: int = 0
    audio_format: str = "flac"
    skip_bad_utts: bool = False
    score: bool = False
    score_dir: str = ""
    token_type: str = "char"
    nlsyms_txt: str = "none"
    label_prefix: str = ""

    @property
    def out(self) -> rundir.DecodeDir:
        return rundir.DecodeDir(self.output_dir)

    @property
    def scores(self) -> Optional[Path]:
        if self.score_dir:
            return Path(self.score_dir)
        return self.out.score if self.score else None

    def triples(self) -> List[Tuple[str, str, str]]:
        scp, kind = input_spec(Path(self.data_dir), self.audio_format)
        return [(str(Path(self.data_dir) / scp), "speech", kind)]

    def options(self) -> Dict[str, Any]:
        import shlex

        from comflp_espnet import decoding

        conf, _, run_opts = decoding.inference_options(
            self.inference_config or None, shlex.split(self.inference_args),
            {"batch_size": self.batch_size, "ngpu": self.ngpu})
        return decoding.options_made_from(conf, run_opts, self.skip_bad_utts)

    def hyp_expected(self, config: str, model: str) -> Dict[str, Any]:
        from comflp_espnet import decoding

        return decoding.hyp_made_from(config, model, self.triples(), self.options())

    def score_expected(self, models: List[Tuple[str, str, str]]) -> Dict[str, Any]:
        inputs = {"ref": records.file_digest(Path(self.data_dir) / "text")}
        for name, _, _ in models:
            record = records.read_record(self.out.hyp(name))
            inputs[f"hyp:{name}"] = record.digest if record else ""
        return records.made_from(inputs, {"token_type": self.token_type, "nlsyms_txt": self.nlsyms_txt,
                                          "label_prefix": self.label_prefix, "code": SCORE_CODE})


def decode_begin(job: DecodeJob) -> Dict[str, Any]:
    """Which models need decoding; key shares for the jobs (``decode_state`` current when none
    does and the scores are current)."""
    out = job.out
    models = rundir.read_models_scp(job.models_scp)
    todo, reused = [], 0.0
    for name, config, model in models:
        status = records.check(out.hyp(name), job.hyp_expected(config, model))
        if status.current:
            reused += status.record.seconds or 0.0
        else:
            todo.append((name, config, model))
    score_current = True
    if job.scores:
        score_current = not todo and records.check(job.scores, job.score_expected(models)).current
    if not todo and score_current and job_models_listed(job, models):
        return {"decode_state": "current", "decode_count": 0, "decode_done": job.scores or out.hyp_root}
    out.logdir.mkdir(parents=True, exist_ok=True)
    rundir.write_models_scp(out.job_models_scp, todo)
    out.reused_seconds.write_text(f"{reused:.3f}\n")
    scp, kind = input_spec(Path(job.data_dir), job.audio_format)
    nj = write_job_keys(Path(job.data_dir) / scp, job.nj, out.keys_pattern) if todo else 0
    return {"decode_state": "run", "decode_count": len(todo), "decode_nj": nj,
            "decode_logdir": out.logdir, "decode_models_scp": out.job_models_scp,
            "decode_keys": out.keys_pattern, "decode_output": out.job_pattern, "decode_log": out.log_pattern,
            "decode_scp": Path(job.data_dir) / scp, "decode_type": kind}


def job_models_listed(job: DecodeJob, models) -> bool:
    try:
        return rundir.read_models_scp(job.out.models_scp, check_files=False) == list(models)
    except rundir.DocumentError:
        return False


def decode_end(job: DecodeJob, nj: int) -> Dict[str, Any]:
    """Join the jobs' outputs per model (with records), list the models, score them."""
    from comflp_espnet import decoding
    from comflp_espnet.ranking import score_hyp_dir

    out = job.out
    models = rundir.read_models_scp(job.models_scp)
    todo = rundir.read_models_scp(out.job_models_scp, check_files=False) \
        if out.job_models_scp.is_file() and nj else []
    jobs = [out.job(n) for n in range(1, nj + 1)]
    keys = [out.keys(n) for n in range(1, nj + 1)]
    skipped = {}
    for name, config, model in todo:
        record = decoding.merge_job_outputs(name, config, model, job.triples(), job.options(), jobs, keys,
                                            out.hyp(name))
        if record.info.get("num_skipped"):
            skipped[name] = record.info["num_skipped"]
    names = {m[0] for m in models}
    if out.hyp_root.is_dir():
        for d in sorted(out.hyp_root.iterdir()):
            if d.is_dir() and d.name not in names:
                shutil.rmtree(d)
                records.remove_record(d)
    rundir.write_models_scp(out.models_scp, models)
    if skipped:
        logging.warning("utterances skipped (--comflp_skip_bad_utts true): "
                        + ", ".join(f"{n}: {c}" for n, c in skipped.items())
                        + f"; listed in {out.hyp_root}/<model>/skipped")
    if job.scores:
        expected = job.score_expected(models)
        if not records.check(job.scores, expected).current:
            records.remove_record(job.scores)
            start = time.perf_counter()
            summary = score_hyp_dir(
                str(Path(job.data_dir) / "text"), str(out.hyp_root), str(job.scores), token_type=job.token_type,
                nlsyms_txt=None if job.nlsyms_txt in ("", "none") else job.nlsyms_txt,
                models=[m[0] for m in models], label_prefix=job.label_prefix)
            records.write_record(job.scores, expected, seconds=time.perf_counter() - start)
            logging.info("scores of the models on " + job.data_dir + ":\n" + summary["markdown"])
    return {}

