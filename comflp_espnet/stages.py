"""The CoMFLP stages 14-21 of ``asr_comflp.sh``: what each output is made from,
whether it is current, and the work around the recipe's job arrays.

The stage script keeps the job arrays (``${cmd} JOB=1:N log command``) and
calls ``python -m comflp_espnet.bin.comflp_stage <command>`` around them; the
commands of that tool map onto the functions here:

    check            the option and data checks, before stage 14 does any work
    lock / unlock    the run lock of --comflp_dir (comflp_espnet.runlock); sweep temporary outputs
    check_run_dir    the checks that read the run directory, under the lock
    layout           the paths of one search (--only_tag), for the stages run per search (19-21)
    status  N        is stage N current (skip) or to be run (and why)
    begin   N / end N   the work before / after stage N's job array
    finalists        stage 17 between its proxy array and its decode array
    run     N        a stage without job array (16, 18)
    glp_step_begin / glp_step_end   one step of greedy layer pruning (stage 16)
    search_cost      search_cost.{json,md} from the records (stage 18)
    sweep            a run of several depths: sweep/ and the searches of stages 19-21
                     (comflp_espnet.sweep_stage)

One run handles every depth of ``--comflp_num_prune`` / ``--comflp_keep`` (a
list): one search directory (tag) per depth, sharing the states, one matrix per
measure, the fine-search subset and the evaluations of ``fine_evals/``
(``comflp_espnet.fine_search``); stages 16-18 work on all of them at once (one
proxy array and one decode array in stage 17), stages 19-21 one after another
(``--only_tag``).

Decodings (stages 16 with glp and 20) go through ``comflp_espnet.decode_dir``;
the fine search (stage 17) through ``comflp_espnet.fine_search``.

Freshness: every output has a record (``comflp_espnet.records``) of the
digests it was made from.  ``Run.status(name)`` computes the ``made_from``
expected now from the options and the records of the outputs it depends on,
so a change anywhere upstream (options, model, data, a damaged file) makes
everything downstream not current.  A stage is skipped only when its outputs
are current; outputs shared by all searches of a ``--comflp_dir`` (calib,
states, corr, fine) made with other options are an error up front (they would
change every other search's results), outputs of a search (``<tag>/``) are
redone.  A stage run alone whose inputs are not current stops and names the
stage that makes them.

Pure of ESPnet at import; the commands that prune models or read audio import
it when they need it.
"""

import dataclasses
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from comflp_espnet import records, rundir
from comflp_espnet.atomic import atomic_output_file, remove_temporaries
from comflp_espnet.cli import InputError
from comflp_espnet.datadir import input_spec
from comflp_espnet.records import Status
from comflp_espnet.rundir import ORIGINAL_NAME, RunDir, TagDir

# Code versions: bumped when the same inputs would give other outputs.
SUBSET_CODE = "subset-1"
STATES_CODE = "states-1"
MATRIX_CODE = "matrix-1"
SEARCH_CODE = "search-2"
SCORE_CODE = "score-1"
FINETUNE_CODE = "finetune-1"
PACK_CODE = "pack-1"

SUPPORTED_ENCODERS = ("transformer", "conformer", "branchformer", "e_branchformer")
MATRIX_METHODS = ("dp", "beam", "greedy", "exhaustive", "bi", "angular")
# Outputs shared by every search of a --comflp_dir, and the option names that shape them.
SHARED_OPTIONS = {
    "calib": "--train_set, --comflp_calib_nutt, --comflp_seed",
    "states": "--comflp_pooling, --comflp_dump_args, --comflp_seed",
    "corr": "--comflp_dc_batch_size",
    "fine": "--comflp_fine_set, --comflp_fine_nutt, --comflp_seed",
}
STAGE_OF = {"calib": 14, "states": 14, "corr": 15, "fine": 17, "proposals": 16, "fine_search": 17,
            "scores": 18, "finetune": 19}
FINE_PROXIES = ("ctc_greedy", "loss", "none")
GLP_METRICS = ("decode", "ctc_greedy", "loss")
SWEEP_DECODES = ("all", "bracket")


def output_kind(name: str) -> str:
    """``corr:<measure>`` -> ``corr`` (one output per measure)."""
    return name.split(":", 1)[0]


class StageError(InputError):
    """A stage cannot run as asked: one message naming the file and the fix."""


@dataclasses.dataclass
class Options:
    """The run's options, as asr_comflp.sh derived them."""

    comflp_dir: str
    asr_exp: str
    comflp_tag: str = ""
    inference_asr_model: str = "valid.acc.ave.pth"
    data_feats: str = "dump/raw"
    train_set: str = ""
    valid_set: str = ""
    fine_set: str = ""
    eval_sets: Sequence[str] = ()
    audio_format: str = "flac"
    token_type: str = "char"
    nlsyms_txt: str = "none"
    inference_config: str = ""
    inference_args: str = ""
    inference_tag: str = "inference"
    batch_size: int = 1
    nj: int = 1
    inference_nj: int = 1
    ngpu: int = 0
    gpu_inference: bool = False
    calib_nutt: int = 320
    seed: int = 0
    pooling: str = "mean"
    dump_args: str = ""
    measure: str = "dc"           # one measure or a list ("dc svcca cka")
    dc_batch_size: str = ""
    search: str = "dp"
    num_prune: str = ""           # one depth or a list ("3 6")
    keep: str = ""
    sweep: bool = False           # every depth 1..L-1 (comflp_espnet.sweep)
    sweep_range: str = ""         # the depths A..B of a sweep ("A:B")
    max_degradation: str = ""     # choose the smallest winner within this many points (empty: no choice)
    sweep_decode: str = "all"     # all: decode every depth's finalists; bracket: only around the limit
    topk: int = 10
    beam_size: int = 10
    aggregate: str = "mean"
    keep_first: bool = False
    keep_last: bool = False
    max_run: str = ""
    protect: str = ""
    fine_nutt: int = 500
    fine_proxy: str = "loss"
    fine_finalists: int = 3
    proxy_batch_size: int = 8
    glp_metric: str = "decode"
    finetune: bool = False
    finetune_config: str = ""
    finetune_args: str = ""
    skip_bad_utts: bool = False
    asr_stats_dir: str = ""
    feats_normalize: str = ""
    bpemodel: str = ""
    stages: Sequence[int] = ()
    only_tag: str = ""            # one search of the run (stages 19-21 run per search)


def shell_assignments(values: Dict[str, Any]) -> str:
    """``name='value'`` lines for the stage script's ``eval``."""
    import shlex

    lines = []
    for name, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{name}={shlex.quote('' if value is None else str(value))}")
    return "".join(line + "\n" for line in lines)


def data_dir_digest(data_dir: Path) -> str:
    """Content digest of a Kaldi data dir's own files (not the audio they list)."""
    files = [p for p in sorted(Path(data_dir).iterdir()) if p.is_file() and not p.name.startswith(".")]
    return records.files_digest(files, base=data_dir)


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def elapsed(start: Optional[float]) -> Optional[float]:
    return None if start is None else max(0.0, time.time() - float(start))


class Run:
    """One invocation's view of the run directory: options, layout, freshness."""

    def __init__(self, opts: Options):
        self.o = opts
        self.dir = RunDir(opts.comflp_dir)
        self.asr_train_config = Path(opts.asr_exp) / "config.yaml"
        self.asr_model_file = Path(opts.asr_exp) / opts.inference_asr_model
        self._status: Dict[str, Status] = {}
        self._config: Optional[Dict[str, Any]] = None
        self.num_layers: Optional[int] = None
        self.num_prune: Optional[int] = None
        self.tag: str = opts.comflp_tag
        # Every depth of the run and its search directory, in the order given.
        self.depths: List[int] = []
        self.tags: List[str] = []

    # ------------------------------------------------------------------ the model and the names
    def read_model(self, verbose: bool = False) -> None:
        """Model checks; fixes num_layers, num_prune and the tag."""
        from comflp_espnet.model_io import check_config_paths, read_train_config

        for f in (self.asr_train_config, self.asr_model_file):
            if not f.is_file():
                raise StageError(
                    f"no trained model: {f} does not exist.\n"
                    "  Train one with stages 1-13 (asr.sh; training is stage 11), or point --asr_exp "
                    f"(now {self.o.asr_exp})\n  and --inference_asr_model (now {self.o.inference_asr_model}) "
                    "to an existing experiment.")
        try:
            config = read_train_config(self.asr_train_config)
            check_config_paths(config, self.asr_train_config)
        except (FileNotFoundError, ValueError) as e:
            raise StageError(f"{e}\n  run the CoMFLP stages from the recipe directory where the model "
                             "was trained")
        self._config = config
        encoder = config.get("encoder")
        num_blocks = (config.get("encoder_conf") or {}).get("num_blocks")
        if not isinstance(num_blocks, int) or isinstance(num_blocks, bool):
            raise StageError(f"{self.asr_train_config}: no encoder_conf.num_blocks; CoMFLP prunes "
                             "transformer, conformer, branchformer and e_branchformer encoders")
        if encoder not in SUPPORTED_ENCODERS:
            raise StageError(f"{self.asr_train_config}: encoder '{encoder}' is not supported "
                             f"({', '.join(SUPPORTED_ENCODERS)})")
        L = self.num_layers = num_blocks
        self.depths = self.parse_depths(L, verbose)
        for layer in self.protect:
            if layer > L:
                raise StageError(f"--comflp_protect {self.o.protect}: layer {layer} does not exist "
                                 f"(the encoder has {L} layers)")
        self.check_measures()
        self.tags = [self.tag_name(k) for k in self.depths]
        if len(set(self.tags)) != len(self.tags):
            raise StageError(f"the depths {self.depths} give the same search directory twice")
        index = 0
        if self.o.only_tag:
            if self.o.only_tag not in self.tags:
                raise StageError(f"--only_tag {self.o.only_tag} is not a search of this run "
                                 f"({', '.join(self.tags)})")
            index = self.tags.index(self.o.only_tag)
        self.num_prune, self.tag = self.depths[index], self.tags[index]

    def parse_depths(self, L: int, verbose: bool) -> List[int]:
        """The depths (layers removed) of ``--comflp_num_prune`` or ``--comflp_keep``, a list."""
        if self.o.search == "none" and not (self.o.sweep or self.o.sweep_range):
            return [0]
        if self.o.sweep or self.o.sweep_range:
            from comflp_espnet.sweep_stage import depths_of_run

            return depths_of_run(self, L, verbose)
        option, values = None, []
        for name in ("keep", "num_prune"):
            text = getattr(self.o, name)
            if text:
                option = f"--comflp_{name}"
                try:
                    values = [int(x) for x in rundir.parse_list(str(text))]
                except ValueError:
                    raise StageError(f"{option} must list positive integers, got '{text}'")
                if not values or min(values) < 1:
                    raise StageError(f"{option} must list positive integers, got '{text}'")
                if max(values) >= L:
                    raise StageError(f"{option} {text}: every value must be smaller than the {L} encoder "
                                     f"layers of {self.asr_train_config}")
                return [L - v for v in values] if name == "keep" else values
        if verbose:
            logging.info(f"--comflp_num_prune not given: removing half of the {L} encoder layers ({L // 2})")
        return [L // 2]

    def tag_name(self, num_prune: int) -> str:
        """``<measures>_<search>_prune<k>``; a given --comflp_tag names the search of a single
        depth, and is the stem of the names of several (``<comflp_tag>_prune<k>``)."""
        if self.o.comflp_tag:
            if len(self.depths) == 1:
                return self.o.comflp_tag
            return f"{self.o.comflp_tag}_prune{num_prune}"
        return rundir.default_tag("+".join(self.measures), self.o.search, num_prune)

    @property
    def measures(self) -> List[str]:
        return rundir.parse_list(self.o.measure) or ["dc"]

    def check_measures(self) -> None:
        from comflp_espnet.measure_names import MEASURES

        for m in self.measures:
            if m not in MEASURES:
                raise StageError(f"unknown --comflp_measure '{m}'; choose from: {', '.join(MEASURES)}")
        if len(self.measures) > 1 and self.o.search not in ("dp", "beam", "greedy", "exhaustive"):
            raise StageError(f"--comflp_measure '{self.o.measure}' lists several measures, whose proposals are "
                             "joined: that needs a CoMFLP search (--comflp_search dp, beam, greedy or "
                             f"exhaustive), not {self.o.search}")

    def for_tag(self, tag: str) -> "Run":
        """This run's view of one of its searches."""
        other = Run(dataclasses.replace(self.o, only_tag=tag))
        other._config, other.num_layers, other.depths, other.tags = \
            self._config, self.num_layers, list(self.depths), list(self.tags)
        index = self.tags.index(tag)
        other.num_prune, other.tag = self.depths[index], tag
        return other

    def tag_runs(self) -> List["Run"]:
        """One view per search of the run (just the one of --only_tag when given)."""
        if self.o.only_tag:
            return [self]
        return [self.for_tag(tag) for tag in self.tags]

    # ------------------------------------------------------------------ the fine search's ways
    @property
    def train_config(self) -> Dict[str, Any]:
        if self._config is None:
            from comflp_espnet.model_io import read_train_config

            self._config = read_train_config(self.asr_train_config)
        return self._config

    @property
    def has_ctc(self) -> bool:
        """Whether the model has a CTC branch (ESPnet builds none with ctc_weight 0)."""
        return float((self.train_config.get("model_conf") or {}).get("ctc_weight", 0.5)) != 0.0

    @property
    def loss_unsupported(self) -> Optional[str]:
        """Why the loss proxy cannot score this model (read from its training config), or None; the
        proxy job checks the built model the same way (``proxy.loss_unsupported``)."""
        config = self.train_config
        conf = config.get("model_conf") or {}
        decoder = config.get("decoder")
        if decoder == "transducer":
            return "a transducer decoder"
        if decoder == "linear_decoder":
            return "a classification (linear) decoder"
        if decoder == "mlm" or config.get("model") == "maskctc":
            return "a masked-LM decoder (Mask-CTC)"
        if decoder in (None, "none") and float(conf.get("ctc_weight", 0.5)) != 1.0:
            return "no attention decoder"
        if float(conf.get("interctc_weight", 0.0)) != 0.0 and conf.get("aux_ctc"):
            return "auxiliary CTC targets (aux_ctc)"
        return None

    def proxy_for(self, requested: str) -> str:
        """The proxy used for ``requested``: each falls back to the other where it cannot be
        computed (ctc_greedy without a CTC branch, loss where ``loss_unsupported``)."""
        if requested == "ctc_greedy" and not self.has_ctc:
            return "loss"
        if requested == "loss" and self.has_ctc and self.loss_unsupported:
            return "ctc_greedy"
        return requested

    @property
    def fine_proxy(self) -> str:
        return self.proxy_for(self.o.fine_proxy)

    @property
    def protect(self) -> List[int]:
        return sorted({int(x) for x in self.o.protect.split(",") if x.strip()}) if self.o.protect else []

    @property
    def max_run(self) -> Optional[int]:
        return int(self.o.max_run) if self.o.max_run and int(self.o.max_run) > 0 else None

    @property
    def t(self) -> TagDir:
        return self.dir.tag(self.tag)

    @property
    def calib_source(self) -> Path:
        return Path(self.o.data_feats) / self.o.train_set

    @property
    def fine_source(self) -> Optional[Path]:
        for rel in (self.o.fine_set, f"org/{self.o.fine_set}"):
            if self.o.fine_set and (Path(self.o.data_feats) / rel).is_dir():
                return Path(self.o.data_feats) / rel
        return None

    def original(self) -> Dict[str, str]:
        from comflp_espnet.candidates import original_inputs

        return original_inputs(self.asr_train_config, self.asr_model_file)

    def layout(self) -> Dict[str, Any]:
        """Paths the stage script uses, from this module (one owner of the layout): the run's, and
        those of one search (the first, or --only_tag)."""
        t = self.t
        first = self.measures[0]
        return {
            "num_layers": self.num_layers, "num_prune": self.num_prune, "comflp_tag": self.tag,
            "comflp_tags": " ".join(self.tags), "num_prunes": " ".join(map(str, self.depths)),
            "run_measures": " ".join(self.measures),
            "tag_dir": t.root, "calib_dir": self.dir.calib, "states_dir": self.dir.states,
            "corr_dir": self.dir.corr_dir, "corr_file": self.dir.corr_file(first),
            "heatmap_file": self.dir.heatmap(first), "fine_dir": self.dir.fine,
            "fine_source": self.fine_source or "", "calib_source": self.calib_source,
            "states_scp": self.dir.states_scp, "proposals_file": t.proposals, "ranking_file": t.ranking_json,
            "glp_dir": t.glp, "fine_search_dir": t.fine_search, "scores_dir": t.scores,
            "winner_dir": t.winner_link, "finetune_dir": t.finetune, "finetune_config_file": t.finetune_config,
            "test_decode_dir": t.test_decode_root(self.o.inference_tag), "lock_file": self.dir.lock_file,
            "fine_proxy": self.fine_proxy, "glp_metric": self.proxy_for(self.o.glp_metric),
        }

    # ------------------------------------------------------------------ what each output is made from
    def inference_options(self) -> Dict[str, Any]:
        """The options part of every decoding's record (as comflp_decode computes it)."""
        import shlex

        from comflp_espnet import decoding

        conf, _, run_opts = decoding.inference_options(
            self.o.inference_config or None, shlex.split(self.o.inference_args),
            {"batch_size": self.o.batch_size, "ngpu": 1 if self.o.gpu_inference else 0})
        return decoding.options_made_from(conf, run_opts, self.o.skip_bad_utts)

    def path(self, name: str) -> Path:
        t = self.t
        if name.startswith("corr:"):
            return self.dir.corr(name.split(":", 1)[1])
        return {
            "calib": self.dir.calib, "states": self.dir.states, "fine": self.dir.fine,
            "proposals": t.proposals, "fine_search": t.fine_search, "scores": t.scores,
            "finetune": t.finetune,
        }[name]

    def upstream(self, name: str) -> List[str]:
        if name == "proposals":
            if self.o.search == "glp":
                return ["fine"]
            return [f"corr:{m}" for m in self.measures] if self.o.search in MATRIX_METHODS else []
        if output_kind(name) == "corr":
            return ["states"]
        return {"calib": [], "states": ["calib"], "fine": [], "fine_search": ["proposals", "fine"],
                "scores": ["fine_search", "fine"], "finetune": ["scores"]}[name]

    def options_of(self, name: str) -> Dict[str, Any]:
        o = self.o
        if name == "calib":
            return {"source": str(self.calib_source), "num_utts": o.calib_nutt, "seed": o.seed,
                    "code": SUBSET_CODE}
        if name == "fine":
            return {"source": str(self.fine_source or o.fine_set), "num_utts": o.fine_nutt, "seed": o.seed,
                    "code": SUBSET_CODE}
        if name == "states":
            return {"pooling": o.pooling, "dump_args": " ".join(o.dump_args.split()), "seed": o.seed,
                    "code": STATES_CODE}
        if output_kind(name) == "corr":
            measure = name.split(":", 1)[1]
            return {"measure": measure, "batch_size": o.dc_batch_size if measure == "dc" else "",
                    "code": MATRIX_CODE}
        if name == "proposals":
            options = {"method": o.search, "num_layers": self.num_layers, "num_prune": self.num_prune,
                       "keep_first": o.keep_first, "keep_last": o.keep_last, "max_run": self.max_run,
                       "protect": self.protect, "code": SEARCH_CODE}
            if o.search not in ("glp", "none", "drop_last", "bi"):
                options["topk"] = o.topk
            if o.search in MATRIX_METHODS:
                options["aggregate"] = o.aggregate
                options["measures"] = self.measures
            if o.search == "beam":
                options["beam_size"] = o.beam_size
            if o.search == "random":
                options["seed"] = o.seed
            if o.search == "glp":
                metric = self.proxy_for(o.glp_metric)
                options["metric"] = metric
                if metric == "decode":
                    options["inference"] = self.inference_options()
                else:
                    options["proxy"] = self.proxy_how(metric)
            return options
        if name == "fine_search":
            from comflp_espnet.fine_search import FINE_CODE

            proxy = self.fine_proxy
            return {"proxy": proxy, "proxy_how": self.proxy_how(proxy) if proxy != "none" else None,
                    "finalists": o.fine_finalists, "inference": self.inference_options(),
                    "include_original": self.include_original, "code": FINE_CODE}
        if name == "scores":
            return {"token_type": o.token_type, "nlsyms_txt": o.nlsyms_txt, "code": SCORE_CODE}
        if name == "finetune":
            return {"args": " ".join(o.finetune_args.split()), "model_file": o.inference_asr_model,
                    "code": FINETUNE_CODE}
        raise KeyError(name)

    def proxy_how(self, proxy: str) -> Dict[str, Any]:
        """The options that shape a proxy's scores (the identity of its fine_evals directory)."""
        from comflp_espnet.fine_search import proxy_how

        return proxy_how(proxy, self.o.proxy_batch_size, self.o.gpu_inference, self.o.skip_bad_utts)

    def inputs_of(self, name: str, up: Dict[str, records.Record]) -> Dict[str, Any]:
        if name in ("calib", "fine"):
            source = self.calib_source if name == "calib" else self.fine_source
            if source is None or not source.is_dir():
                raise _NotCurrent(Status(self.path(name), records.STALE,
                                         f"has no source: data dir {source or self.o.fine_set} not found"))
            return {"data": data_dir_digest(source)}
        if name == "states":
            return dict(self.original(), calib=up["calib"].digest)
        if name == "proposals" and self.o.search == "glp":
            return dict(self.original(), fine=up["fine"].digest)
        if name == "fine_search":
            from comflp_espnet.fine_search import proxy_inputs

            inputs = {k: rec.digest for k, rec in up.items()}
            inputs.update(proxy_inputs(self))
            return inputs
        if name == "finetune":
            return self.finetune_inputs()
        return {k: rec.digest for k, rec in up.items()}

    @property
    def include_original(self) -> bool:
        return self.o.search != "none"

    def expected(self, name: str) -> Dict[str, Any]:
        """The made_from expected now; raises _NotCurrent when an upstream output is not current."""
        up = {}
        for u in self.upstream(name):
            status = self.status(u)
            if not status.current:
                raise _NotCurrent(status, u)
            up[u] = status.record
        return records.made_from(self.inputs_of(name, up), self.options_of(name))

    def status(self, name: str) -> Status:
        if name not in self._status:
            try:
                expected = self.expected(name)
            except _NotCurrent as e:
                own = e.status.output == self.path(name)
                self._status[name] = Status(self.path(name), records.STALE,
                                            e.status.reason if own else e.describe(), None)
            else:
                status = records.check(self.path(name), expected)
                if status.current and name == "fine_search":
                    # The finalists and their decodes, chosen from the inputs, must still be as made.
                    from comflp_espnet.fine_search import finalists_status

                    status = finalists_status(self, status)
                self._status[name] = status
        return self._status[name]

    def forget(self, *names: str) -> None:
        for name in names or list(self._status):
            self._status.pop(name, None)

    def require(self, name: str, for_stage: int) -> records.Record:
        """The record of ``name``, which stage ``for_stage`` reads; when it is not current,
        an error naming the earliest stage whose output is not current."""
        status = self.status(name)
        if status.current:
            return status.record
        root = self.root_cause(name)
        cause = self.status(root)
        first, last = STAGE_OF[output_kind(root)], STAGE_OF[output_kind(name)]
        stages = f"stage {first}" if first == last else f"stages {first}-{last}"
        raise StageError(f"stage {for_stage} reads {status.output}, which is not current ({cause.describe()}): "
                         f"run {stages} first (--stage {first})")

    def root_cause(self, name: str) -> str:
        """The first output up the chain from ``name`` that is not current (its inputs are)."""
        for u in self.upstream(name):
            if not self.status(u).current:
                return self.root_cause(u)
        return name

    # ------------------------------------------------------------------ fine-tuning inputs
    def finetune_inputs(self) -> Dict[str, Any]:
        winner = self.winner()
        train, valid = self.finetune_data()
        for what, path in (("overlay", Path(self.o.finetune_config)), ("training data", train),
                           ("validation data", valid)):
            if not path.exists():
                raise _NotCurrent(Status(self.t.finetune, records.STALE, f"has no {what} ({path} not found)"))
        stats = [Path(self.o.asr_stats_dir) / "train" / "speech_shape",
                 Path(self.o.asr_stats_dir) / "train" / f"text_shape.{self.o.token_type}"]
        return {"winner": winner[1].digest, "overlay": records.file_digest(self.o.finetune_config),
                "train": data_dir_digest(train), "valid": data_dir_digest(valid),
                "stats": records.files_digest(stats)}

    def finetune_data(self) -> Tuple[Path, Path]:
        return Path(self.o.data_feats) / self.o.train_set, Path(self.o.data_feats) / self.o.valid_set

    def winner(self, for_stage: int = 19) -> Tuple[str, records.Record]:
        """(name, candidate record) of the winner chosen in stage 18 (which must be current)."""
        from comflp_espnet.candidates import candidate_made_from

        self.require("scores", for_stage)
        name = rundir.read_winner(self.t.scores)
        prop = rundir.read_proposals(self.t.proposals).named().get(name)
        if prop is None:
            raise StageError(f"{self.t.scores / 'winner'} names {name}, which is not a candidate of "
                             f"{self.t.proposals}: run stage 18 again")
        status = records.check(self.t.candidate(name), candidate_made_from(
            self.original(), prop["pruned"], prop.get("pruned_decoder", [])))
        if not status.current:
            raise StageError(f"the winner {status.describe()}: run stage 17 again (--stage 17)")
        return name, status.record


class _NotCurrent(Exception):
    def __init__(self, status: Status, name: str = ""):
        self.status, self.name = status, name

    def describe(self) -> str:
        return f"depends on {self.status.output}, which {self.status.reason or 'is ' + self.status.state}"


# ============================================================================ check and lock
def check(run: Run) -> Dict[str, Any]:
    """Every check of the options and inputs before stage 14 works (the run directory is not
    read: that waits for the lock, ``check_run_dir``).  Returns the layout."""
    o = run.o
    stages = set(o.stages)
    run.read_model(verbose=True)
    if o.max_degradation:
        from comflp_espnet.sweep_stage import max_degradation

        max_degradation(run)
    if o.fine_proxy not in FINE_PROXIES:
        raise StageError(f"unknown --comflp_fine_proxy '{o.fine_proxy}'; choose one of: {', '.join(FINE_PROXIES)}")
    if o.glp_metric not in GLP_METRICS:
        raise StageError(f"unknown --comflp_glp_metric '{o.glp_metric}'; choose one of: {', '.join(GLP_METRICS)}")
    if o.fine_finalists < 1:
        raise StageError("--comflp_fine_finalists must be at least 1")
    if o.sweep_decode not in SWEEP_DECODES:
        raise StageError(f"unknown --comflp_sweep_decode '{o.sweep_decode}'; choose one of: {', '.join(SWEEP_DECODES)}")
    if o.sweep_decode == "bracket":
        why = None
        if len(run.tags) < 2:
            logging.info("--comflp_sweep_decode bracket: this run searches one depth, which is decoded as usual")
        elif not o.max_degradation:
            why = "no --comflp_max_degradation is given, so there is no limit to bracket"
        elif o.fine_proxy == "none":
            why = "--comflp_fine_proxy none scores no depth by the proxy"
        elif o.search in ("glp", "none"):
            why = f"--comflp_search {o.search} has no candidates for the proxy to rank"
        if why:
            raise StageError(f"--comflp_sweep_decode bracket decodes only the depths around the deepest one within "
                             f"--comflp_max_degradation, chosen by the proxy, but {why}: use a sweep (or a list "
                             "of depths) with --comflp_max_degradation X, or --comflp_sweep_decode all")
    if o.proxy_batch_size < 1:
        raise StageError("--comflp_proxy_batch_size must be at least 1")
    for option, value in (("--comflp_fine_proxy", o.fine_proxy), ("--comflp_glp_metric", o.glp_metric)):
        if value not in ("ctc_greedy", "loss") or (option == "--comflp_glp_metric" and o.search != "glp"):
            continue
        if not run.has_ctc and (value == "ctc_greedy" or run.loss_unsupported):
            if run.loss_unsupported:
                raise StageError(f"{option} {value}: {run.asr_train_config} has no CTC branch (ctc_weight 0) and "
                                 f"the loss proxy does not support {run.loss_unsupported}; use {option} "
                                 f"{'none' if option == '--comflp_fine_proxy' else 'decode'}")
            logging.info(f"{option} ctc_greedy: {run.asr_train_config} has no CTC branch (ctc_weight 0), "
                         "so candidates are scored by the model's loss instead")
        elif value == "loss" and run.loss_unsupported:
            logging.info(f"{option} loss: the loss proxy does not support {run.loss_unsupported} "
                         f"({run.asr_train_config}), so candidates are scored by CTC greedy decoding instead")
    if 14 in stages:
        if not o.train_set:
            raise StageError("--train_set is required for stage 14")
        check_subset_source("--train_set/--comflp_calib_nutt", run.calib_source, o.calib_nutt,
                            "calibration set", o.audio_format)
    if 17 in stages or (16 in stages and o.search == "glp"):
        if not o.fine_set:
            raise StageError("--comflp_fine_set (or --valid_set) is required for stage 17 "
                             "(and for stage 16 with --comflp_search glp)")
        if run.fine_source is None:
            raise StageError(f"fine-search set '{o.fine_set}' not found in {o.data_feats}/ (nor "
                             f"{o.data_feats}/org/): run stages 3-4 or fix --comflp_fine_set")
        check_subset_source("--comflp_fine_set/--comflp_fine_nutt", run.fine_source, o.fine_nutt,
                            "fine-search set", o.audio_format)
    if 20 in stages:
        for dset in o.eval_sets:
            if not (Path(o.data_feats) / dset).is_dir():
                raise StageError(f"test set {Path(o.data_feats) / dset} not found: run stages 3-4 or fix --test_sets")
    return run.layout()


def check_run_dir(run: Run) -> None:
    """The checks that read the run directory (under the lock): the options of the outputs
    every search shares, and the outputs the first requested stage reads (of every search)."""
    stages = set(run.o.stages)
    check_shared_options(run, stages)
    final = None
    if stages and min(stages) >= 19:
        # Stages 19-21 run for the searches of comflp_espnet.sweep_stage.final_tags only.
        from comflp_espnet.sweep_stage import final_tags

        scored = fine_tags(run) or run.tags
        for tag_run in run.tag_runs():
            if tag_run.tag in scored:
                tag_run.require("scores", min(stages))
        final = final_tags(run, min(stages))
    # A bracketing sweep decodes and scores only some depths (known once stage 17 is done).
    fine = fine_tags(run) if stages and min(stages) == 18 else None
    for tag_run in run.tag_runs():
        if fine is not None and tag_run.tag not in fine:
            continue
        check_first_inputs(tag_run, stages if final is None or tag_run.tag in final else set())


def check_subset_source(option: str, source: Path, num_utts: int, what: str, audio_format: str) -> None:
    scp, _ = input_spec(source, audio_format)
    if not (source / scp).is_file():
        raise StageError(f"{source / scp} not found ({what} source). Run stages 3-4 (asr.sh) first, "
                         f"or check {option}")
    available = count_lines(source / scp)
    if num_utts > available:
        raise StageError(f"{what}: {source} has {available} utterances, fewer than the {num_utts} requested; "
                         f"lower the number (0 = all) or choose another set ({option})")


def needed_outputs(run: Run, stages) -> List[str]:
    """Outputs the requested stages read or make."""
    needed = set()
    chain = {14: ["calib", "states"], 15: [f"corr:{m}" for m in run.measures], 16: ["proposals"],
             17: ["fine", "fine_search"], 18: ["scores"], 19: ["finetune"], 20: ["scores"], 21: ["scores"]}

    def add(name):
        if name not in needed:
            needed.add(name)
            for u in run.upstream(name):
                add(u)

    for stage in stages:
        for name in chain.get(stage, []):
            add(name)
    return sorted(needed)


# The command-line options behind the options of the shared outputs' records.
OPTION_NAMES = {
    "calib": {"source": "--train_set", "num_utts": "--comflp_calib_nutt", "seed": "--comflp_seed"},
    "fine": {"source": "--comflp_fine_set", "num_utts": "--comflp_fine_nutt", "seed": "--comflp_seed"},
    "states": {"pooling": "--comflp_pooling", "dump_args": "--comflp_dump_args", "seed": "--comflp_seed"},
    "corr": {"batch_size": "--comflp_dc_batch_size"},
}


def check_shared_options(run: Run, stages) -> None:
    """A shared output made with other options is not redone behind the other searches' back."""
    for name in needed_outputs(run, stages):
        kind = output_kind(name)
        if kind not in SHARED_OPTIONS:
            continue
        try:
            record = records.read_record(run.path(name))
        except records.RecordError:
            continue  # damaged: the stage redoes it
        if record is None:
            continue
        old = record.made_from.get("options") or {}
        new = records.made_from({}, run.options_of(name))["options"]
        changed = [f"{OPTION_NAMES[kind].get(k, k)} {_shown(old.get(k))} (now {_shown(new.get(k))})"
                   for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if changed:
            raise StageError(
                f"{run.path(name)} was made with {', '.join(changed)}; it is shared by every search under "
                f"--comflp_dir {run.dir.root}, so another --comflp_tag does not help: use another --comflp_dir "
                f"for a separate experiment, or remove {run.path(name)} to make it again with these options "
                "(the searches made from it are then redone when they run)")


def _shown(value) -> str:
    return "''" if value in ("", None) else str(value)


def check_first_inputs(run: Run, stages) -> None:
    """The outputs of earlier stages that the first requested stage reads must be current."""
    if not stages:
        return
    first = min(stages)
    reads = {15: ["states"], 16: [f"corr:{m}" for m in run.measures] if run.o.search in MATRIX_METHODS else [],
             17: ["proposals"], 18: ["fine_search"], 19: ["scores"], 20: ["scores"],
             21: ["scores"]}.get(first, [])
    if first == 16 and run.o.search == "glp":
        reads = []
    for name in reads:
        run.require(name, first)
    if first >= 20 and run.o.finetune and 19 not in stages:
        run.require("finetune", first)


def acquire_lock(run_dir: RunDir, fd: int, pid: int, command: str, wait_seconds: float) -> List[Path]:
    """Take the run lock (or raise LockBusy naming its holder); sweep temporary outputs."""
    from comflp_espnet import runlock

    previous = runlock.acquire(fd, run_dir.lock_file, pid, command, wait_seconds)
    if previous:
        logging.info(f"the previous run on {run_dir.root} ended without finishing ({runlock.describe(previous)}); "
                     "its unfinished outputs are redone")
    removed = remove_temporaries(run_dir.root)
    if removed:
        logging.info(f"removed {len(removed)} temporary output(s) of an interrupted run, e.g. {removed[0]}")
    return removed


# ============================================================================ stage status
def fine_tags(run: Run) -> Optional[List[str]]:
    from comflp_espnet.fine_search import fine_tags as tags

    return tags(run)


def stage_outputs(run: Run, stage: int) -> List[str]:
    return {14: ["states"], 15: [f"corr:{m}" for m in run.measures], 16: ["proposals"], 17: ["fine_search"],
            18: ["scores"], 19: ["finetune"]}[stage]


def stage_status(run: Run, stage: int) -> Dict[str, Any]:
    """``stage_state`` current or run, and ``stage_note``: why it runs (the first search of the
    run whose output is not current)."""
    if stage == 21:
        status = pack_status(run)
        return {"stage_state": "current" if status.current else "run",
                "stage_note": "" if status.current else status.describe(), "packed_model": status.output}
    views = run.tag_runs() if stage >= 16 else [run]
    if stage in (17, 18):
        tags = fine_tags(run)
        if tags is None:
            return {"stage_state": "run", "stage_note": "the bracketing sweep has depths left to decode"}
        views = [run.for_tag(tag) for tag in tags]
    for view in views:
        for name in stage_outputs(view, stage):
            status = view.status(name)
            if not status.current:
                note = "" if status.state == records.MISSING and not status.output.exists() else status.describe()
                return {"stage_state": "run", "stage_note": note}
    if stage == 18:
        for view in views:
            refresh_winner_link(view)
        return {"stage_state": "current", "stage_note": "",
                "winner_name": " ".join(f"{v.tag}:{rundir.read_winner(v.t.scores)}" if len(views) > 1
                                        else str(rundir.read_winner(v.t.scores)) for v in views)}
    return {"stage_state": "current", "stage_note": ""}


# ============================================================================ stage 14
def make_subset(run: Run, name: str) -> records.Record:
    """The calibration or fine-search subset, unless current."""
    from comflp_espnet.datadir import make_subset as write_subset_dir

    status = run.status(name)
    if status.current:
        return status.record
    expected = records.made_from(run.inputs_of(name, {}), run.options_of(name))
    source = run.calib_source if name == "calib" else run.fine_source
    num_utts = run.o.calib_nutt if name == "calib" else run.o.fine_nutt
    out = run.path(name)
    start = time.perf_counter()
    records.remove_record(out)
    selected = write_subset_dir(source, out, num_utts=num_utts, seed=run.o.seed)
    record = records.write_record(out, expected, seconds=time.perf_counter() - start,
                                  info={"num_utts": len(selected)})
    logging.info(f"wrote the {'calibration' if name == 'calib' else 'fine-search'} subset {out}: "
                 f"{len(selected)} utterances of {source}")
    run.forget()
    return record


def begin_14(run: Run) -> Dict[str, Any]:
    make_subset(run, "calib")
    states = run.dir.states
    records.remove_record(states)
    for p in (run.dir.states_logdir, run.dir.states_scp, run.dir.states_info):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    run.dir.states_logdir.mkdir(parents=True, exist_ok=True)
    scp, kind = input_spec(run.dir.calib, run.o.audio_format)
    # Batches formed from the whole calibration set, whole batches per job: the states do not
    # depend on --nj (comflp_espnet.job_batches).
    from comflp_espnet.job_batches import write_job_lists

    jobs = batched_job_lists(run.dir.calib, scp, run.o.nj, dump_batch_size(run.o.dump_args))
    write_job_lists(run.dir.calib, [scp], jobs, [run.dir.states_data_pattern])
    return {"calib_scp": run.dir.calib / scp, "calib_type": kind, "states_nj": len(jobs),
            "states_logdir": run.dir.states_logdir, "states_data": run.dir.states_data_pattern,
            "states_output": run.dir.states_job_pattern, "states_log": run.dir.states_log_pattern}


def dump_batch_size(dump_args: str) -> int:
    """The --batch_size of --comflp_dump_args (comflp_dump's default otherwise)."""
    import shlex

    from comflp_espnet.dumping import DEFAULT_BATCH_SIZE

    words = shlex.split(dump_args or "")
    for i, word in enumerate(words):
        value = None
        if word == "--batch_size" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--batch_size="):
            value = word.split("=", 1)[1]
        if value is not None:
            try:
                size = int(value)
            except ValueError:
                size = 0
            if size < 1:
                raise StageError(f"--comflp_dump_args '{dump_args}': --batch_size must be a positive integer")
            return size
    return DEFAULT_BATCH_SIZE


def batched_job_lists(data_dir: Path, scp: str, nj: int, batch_size: int) -> List[List[str]]:
    """The utterances of a data dir for at most ``nj`` jobs: length-sorted batches of the whole
    set, whole batches per job."""
    from comflp_espnet.datadir import read_keys
    from comflp_espnet.job_batches import make_batches, read_lengths, split_batches

    keys = read_keys(data_dir / scp)
    lengths = read_lengths(data_dir, keys)
    return split_batches(make_batches(keys, batch_size, lengths), nj, lengths)


def end_14(run: Run, start: Optional[float], nj: int) -> None:
    from comflp_espnet.state_archive import merge_dumps, read_info

    jobs = [run.dir.states_job(n) for n in range(1, nj + 1)]
    merge_dumps(jobs, run.dir.states)
    info = read_info(run.dir.states) or {}
    files = [run.dir.states_scp, run.dir.states_info]
    files += [j / name for j in jobs for name in ("states.ark", "states.scp", "states_info.yaml")]
    run.forget()
    expected = run.expected("states")
    records.write_record(run.dir.states, expected, files=files, seconds=elapsed(start),
                         info={"num_utts": info.get("num_utts"), "skipped": info.get("skipped_keys") or []})
    if info.get("skipped_keys"):
        logging.warning(f"stage 14 skipped {len(info['skipped_keys'])} utterance(s) (--comflp_skip_bad_utts "
                        f"true): {', '.join(info['skipped_keys'][:10])}; listed in {run.dir.states_info}")


# ============================================================================ stage 15
def begin_15(run: Run) -> Dict[str, Any]:
    """The measures whose matrix is not current (computed by one comflp_corr process)."""
    run.require("states", 15)
    todo = [m for m in run.measures if not run.status(f"corr:{m}").current]
    for m in todo:
        records.remove_record(run.dir.corr(m))
    run.dir.corr_dir.mkdir(parents=True, exist_ok=True)
    return {"corr_measures": " ".join(todo), "corr_log": run.dir.corr_log("+".join(todo) or "corr")}


def end_15(run: Run, start: Optional[float]) -> None:
    todo = [m for m in run.measures if not run.status(f"corr:{m}").current]
    seconds = elapsed(start)
    for m in todo:
        # One process made them all: each is charged its share of the time.
        records.write_record(run.dir.corr(m), run.expected(f"corr:{m}"),
                             files=[run.dir.corr_file(m), run.dir.heatmap(m)],
                             seconds=None if seconds is None else seconds / len(todo))
        run.forget()


# ============================================================================ stage 16
def run_16(run: Run, start: Optional[float]) -> None:
    """Every search's proposals, unless current (no model is written: the fine search, stage
    17, materializes its finalists only)."""
    for view in run.tag_runs():
        t = view.t
        status = view.status("proposals")
        if status.current:
            logging.info(f"{t.proposals} is current; kept")
            continue
        if status.state != records.MISSING:
            logging.info(f"{status.describe()}; searching again")
        expected = view.expected("proposals")
        search_start = time.perf_counter()
        data = glp_finish(view) if view.o.search == "glp" else coarse_proposals(view)
        records.remove_record(t.proposals)
        rundir.write_proposals(t.proposals, data)
        seconds = data["glp"]["seconds"] if view.o.search == "glp" else time.perf_counter() - search_start
        records.write_record(t.proposals, expected, seconds=seconds)
        view.forget()


def coarse_proposals(run: Run) -> Dict[str, Any]:
    """The proposals of the search; with several measures the union of each one's top K."""
    from comflp_espnet.coarse import format_table, load_corr, proposals_document, propose, union_document

    o = run.o
    corrs: Dict[str, Any] = {}
    if o.search in MATRIX_METHODS:
        for m in run.measures:
            run.require(f"corr:{m}", 16)
            corrs[m] = load_corr(str(run.dir.corr_file(m)))
    per_measure = {}
    for m in (run.measures if corrs else [None]):
        try:
            per_measure[m] = propose(o.search, corrs.get(m), run.num_layers, run.num_prune, topk=o.topk,
                                     beam_size=o.beam_size, aggregate=o.aggregate, keep_first=o.keep_first,
                                     keep_last=o.keep_last, max_run=run.max_run, protect=run.protect, seed=o.seed)
        except ValueError as e:
            raise StageError(f"the coarse search failed: {e}")
        logging.info(f"{o.search} search{f' ({m})' if m else ''}: remove {run.num_prune} of {run.num_layers} "
                     f"layers, {len(per_measure[m])} proposal(s)\n{format_table(per_measure[m])}")
    constraints = {"keep_first": o.keep_first, "keep_last": o.keep_last, "max_run": run.max_run,
                   "protect": run.protect}
    options = {"beam_size": o.beam_size, "aggregate": o.aggregate, "seed": o.seed}
    if len(per_measure) > 1:
        data = union_document(per_measure, corrs, run.num_layers, run.num_prune, o.search, o.topk, constraints,
                              options, {m: str(run.dir.corr_file(m)) for m in run.measures})
        logging.info(f"union of the {', '.join(run.measures)} proposals: {len(data['proposals'])} distinct "
                     f"(of {sum(len(v) for v in per_measure.values())})")
        return data
    (measure, proposals), = per_measure.items()
    return proposals_document(proposals, run.num_layers, run.num_prune, o.search, o.topk, constraints=constraints,
                              options=options,
                              corr=str(run.dir.corr_file(measure)) if measure is not None else None)


# ---- greedy layer pruning (glp): its steps decode in stage 16
def step_made_from(run: Run, step: int) -> Dict[str, Any]:
    fine = run.require("fine", 16)
    previous = ""
    if step > 1:
        status = step_status(run, step - 1)
        if not status.current:
            raise _NotCurrent(status)
        previous = status.record.digest
    options = {k: v for k, v in run.options_of("proposals").items() if k != "code"}
    options["code"] = SEARCH_CODE
    return records.made_from(dict(run.original(), fine=fine.digest, previous=previous), options)


def step_status(run: Run, step: int) -> Status:
    key = f"glp_step{step}"
    if key not in run._status:
        try:
            run._status[key] = records.check(run.t.glp_step(step), step_made_from(run, step))
        except _NotCurrent as e:
            run._status[key] = Status(run.t.glp_step(step), records.STALE, e.describe())
    return run._status[key]


def glp_step_begin(run: Run, step: int) -> Dict[str, Any]:
    """A greedy step's models: with --comflp_glp_metric decode, one pruned model each to decode;
    with a proxy, the proxy array's inputs (no model is written)."""
    from comflp_espnet import fine_search, glp
    from comflp_espnet.candidates import write_candidates

    t = run.t
    step_dir = t.glp_step(step)
    if step == 1 and not run.status("fine").current:
        make_subset(run, "fine")
        run.forget()
    status = step_status(run, step)
    if status.current:
        shutil.rmtree(t.glp_step_candidates(step), ignore_errors=True)  # only needed until the step is scored
        return {"glp_step_state": "current", "glp_step_dir": step_dir}
    if status.state != records.MISSING:
        logging.info(f"greedy step {step}: {status.describe()}; doing it again")
    records.remove_record(step_dir)
    for stale in (rundir.step_record_path(step_dir), t.glp_step_proposals(step), t.glp_step_proxy(step)):
        if stale.exists():
            stale.unlink()
    removed = glp.removed_after(glp.completed_steps(t.glp, step - 1)) if step > 1 else []
    data = glp.step_proposals(step, removed, run.num_layers, run.num_prune, keep_first=run.o.keep_first,
                              keep_last=run.o.keep_last, protect=run.protect, max_run=run.max_run)
    rundir.write_json(t.glp_step_proposals(step), data)
    metric = run.proxy_for(run.o.glp_metric)
    values = {"glp_step_state": "run", "glp_step_dir": step_dir, "glp_metric": metric,
              "glp_num_models": len(data["proposals"])}
    if metric != "decode":
        pruned_sets = {rundir.eval_key(p["pruned"]): p["pruned"] for p in data["proposals"]}
        values.update(fine_search.prepare_proxy(run, metric, pruned_sets))
        return values
    learnable = fine_search.parameters(run)["learnable"]
    write_candidates(rundir.read_proposals(t.glp_step_proposals(step)), run.asr_train_config,
                     run.asr_model_file, t.glp_step_candidates(step), learnable=learnable)
    values.update({"glp_decode_dir": t.glp_step_decode(step), "glp_scores_dir": t.glp_step_scores(step),
                   "glp_models_scp": t.glp_step_candidates(step) / "models.scp"})
    return values


def glp_step_end(run: Run, step: int, start: Optional[float]) -> Dict[str, Any]:
    from comflp_espnet import fine_search, glp

    t = run.t
    step_dir = t.glp_step(step)
    props = rundir.read_json(t.glp_step_proposals(step), f"models of greedy step {step}")
    metric = run.proxy_for(run.o.glp_metric)
    files = [t.glp_step_proposals(step), rundir.step_record_path(step_dir)]
    if metric == "decode":
        record = glp.choose(step, props, rundir.read_scores_json(t.glp_step_scores(step)), elapsed(start),
                            str(t.glp_step_scores(step)))
    else:
        array_start = time.time()
        fine_search.merge_proxy(run, metric, start)
        reference = fine_search.read_reference(run) if metric == "ctc_greedy" else None
        values = {}
        for name, prop in rundir.candidate_names(props["proposals"]).items():
            status = fine_search.proxy_entry_status(run, metric, prop["pruned"])
            if not status.current:
                raise StageError(f"greedy step {step}: the proxy score of {name} {status.describe()}; "
                                 "run stage 16 again")
            values[name] = dict(fine_search.proxy_value(run, metric, prop["pruned"], reference),
                                seconds=status.record.seconds)
        rundir.write_json(t.glp_step_proxy(step), values)
        files.append(t.glp_step_proxy(step))
        # The step is charged what its evaluations cost (reused ones too) and its own work.
        seconds = math.fsum(v["seconds"] or 0.0 for v in values.values()) + (time.time() - array_start)
        record = glp.choose_by_proxy(step, props, values, fine_search.metric_name(run, metric), seconds)
    rundir.write_step(step_dir, record)
    shutil.rmtree(t.glp_step_candidates(step), ignore_errors=True)
    records.write_record(step_dir, step_made_from(run, step), files=files, seconds=record["seconds"])
    run.forget()
    shown = (f"{record['metric'].upper()} {record['error_rate']:.2f}%, {record['num_err']} errors"
             if record.get("num_err") is not None else f"{record['metric']} {record['value']:.4f}")
    logging.info(f"greedy step {step}: remove layer {record['chosen_layer']} ({shown}) -> removed {record['removed']}")
    return {}


def glp_finish(run: Run) -> Dict[str, Any]:
    from comflp_espnet import glp

    for step in range(1, run.num_prune + 1):
        status = step_status(run, step)
        if not status.current:
            raise StageError(f"greedy step {step}: {status.describe()}; run stage 16 again")
    steps = glp.completed_steps(run.t.glp, run.num_prune)
    data = glp.finish(steps, run.num_layers, run.num_prune, keep_first=run.o.keep_first,
                      keep_last=run.o.keep_last, protect=run.protect, max_run=run.max_run)
    logging.info(f"greedy search: removed layers {data['proposals'][0]['pruned']} in {len(steps)} steps, "
                 f"{data['glp']['num_decodes']} decodes and {data['glp']['num_proxy']} proxy evaluations of the "
                 "fine-search set")
    return data


# ============================================================================ stage 17
# The fine search: comflp_espnet.fine_search (proxy array, finalists, decode array).
def begin_17(run: Run) -> Dict[str, Any]:
    from comflp_espnet import fine_search

    return fine_search.begin_17(run)


def finalists_17(run: Run, start: Optional[float]) -> Dict[str, Any]:
    from comflp_espnet import fine_search

    return fine_search.finalists_17(run, start)


def next_17(run: Run, start: Optional[float]) -> Dict[str, Any]:
    from comflp_espnet import fine_search

    return fine_search.next_17(run, start)


def end_17(run: Run, start: Optional[float], stage_start: Optional[float] = None) -> None:
    from comflp_espnet import fine_search

    fine_search.end_17(run, start, stage_start)


# ============================================================================ stage 18
def run_18(run: Run, start: Optional[float]) -> None:
    """Every search: its finalists (and the unpruned model) scored by their real CER/WER, the
    ranking of all its candidates and the winner."""
    from comflp_espnet.ranking import score_fine_search

    tags = fine_tags(run)
    if tags is None:
        raise StageError("stage 18 scores the depths the bracketing sweep of stage 17 decoded, and it has not "
                         "finished: run stage 17 first (--stage 17)")
    for view in (run.for_tag(tag) for tag in tags):
        t = view.t
        if view.status("scores").current:
            refresh_winner_link(view)
            continue
        step_start = time.time()
        view.require("fine_search", 18)
        view.require("fine", 18)
        expected = view.expected("scores")
        records.remove_record(t.scores)
        doc = rundir.read_fine_search(t)
        summary = score_fine_search(
            str(view.dir.fine / "text"), doc, rundir.read_proposals(t.proposals), str(t.scores),
            token_type=view.o.token_type,
            nlsyms_txt=None if view.o.nlsyms_txt in ("", "none") else view.o.nlsyms_txt,
            candidates_dir=str(t.candidates))
        records.write_record(t.scores, expected, seconds=elapsed(step_start),
                             info={"winner": summary["ranking"]["winner"]})
        view.forget()
        refresh_winner_link(view)
        logging.info(f"{view.tag}: winner {summary['ranking']['winner']} (ranking: {t.scores / 'ranking.md'})")


def refresh_winner_link(run: Run) -> None:
    """``<tag>/winner -> candidates/<winner>``, rewritten when it points elsewhere."""
    name = rundir.read_winner(run.t.scores)
    if name is None:
        return
    link = run.t.winner_link
    target = f"candidates/{name}"
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.parent / f".{link.name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def write_search_cost(run: Run) -> Dict[str, Any]:
    """search_cost.{json,md} of every search, from the records of its outputs."""
    from comflp_espnet.search_cost import gather, markdown

    record = {}
    for view in (run.for_tag(tag) for tag in fine_tags(run) or []):
        record = gather(view.dir, view.t, view.measures, view.o.search)
        changed = rundir.write_search_cost(view.t, record, markdown(record))
        if record["not_recorded"]:
            logging.warning(f"{view.tag}: no wall-clock time recorded for {', '.join(record['not_recorded'])}: "
                            "search_seconds left empty")
        seconds_text = "-" if record["search_seconds"] is None else f"{record['search_seconds']:.1f}"
        logging.info(f"{view.tag}: {record['proxy_evaluations']} proxy evaluations, {record['search_decodes']} "
                     f"full decodes, search {seconds_text} s -> {view.t.search_cost_json}"
                     f"{'' if changed else ' (unchanged)'}")
    return record


# ============================================================================ stage 19
def begin_19(run: Run) -> Dict[str, Any]:
    from comflp_espnet.cli import read_yaml_mapping
    from comflp_espnet.config_merge import DEFAULT_DROP, merge
    from comflp_espnet.surgery import dump_yaml

    t = run.t
    train, valid = run.finetune_data()
    for d in (train, valid):
        if not d.is_dir():
            raise StageError(f"{d} not found: fine-tuning uses asr.sh's training data (stages 3-4)")
    for f in (Path(run.o.asr_stats_dir) / "train" / "speech_shape",
              Path(run.o.asr_stats_dir) / "train" / f"text_shape.{run.o.token_type}"):
        if not f.is_file():
            raise StageError(f"{f} not found: fine-tuning uses asr.sh's stats (stage 10); check --asr_stats_dir")
    name, _ = run.winner()
    status = run.status("finetune")
    resume = status.state == records.PENDING
    if resume:
        logging.info(f"{t.finetune}: resuming the unfinished fine-tuning of {name}")
    else:
        if t.finetune.exists():
            logging.info(f"{status.describe()}; fine-tuning again from the start")
            shutil.rmtree(t.finetune)
        records.write_pending(t.finetune, run.expected("finetune"))
    winner_dir = t.candidate(name)
    base = read_yaml_mapping(str(winner_dir / "config.yaml"), "winner config", "training options", "max_epoch: 10")
    overlay = read_yaml_mapping(run.o.finetune_config, "--comflp_finetune_config", "training options",
                                "max_epoch: 10")
    for key in DEFAULT_DROP:
        base.pop(key, None)
    with atomic_output_file(t.finetune_config, encoding="utf-8") as f:
        dump_yaml(merge(base, overlay), f)
    scp, kind = input_spec(train, run.o.audio_format)
    return {"finetune_winner": name, "finetune_winner_dir": winner_dir, "finetune_train_dir": train,
            "finetune_valid_dir": valid, "finetune_scp": scp, "finetune_type": kind}


def end_19(run: Run, start: Optional[float]) -> None:
    t = run.t
    model = t.finetune / run.o.inference_asr_model
    if not model.is_file():
        raise StageError(f"fine-tuning finished without {model}; check --inference_asr_model against "
                         f"best_model_criterion in {run.o.finetune_config}")
    name, _ = run.winner()
    shutil.copyfile(t.candidate(name) / "prune.yaml", t.finetune / "prune.yaml")
    record = records.read_record(t.finetune)
    seconds = elapsed(start)
    records.write_record(t.finetune, run.expected("finetune"),
                         files=[model, t.finetune / "config.yaml", t.finetune / "prune.yaml", t.finetune_config],
                         seconds=seconds, info={"winner": name, "resumed": bool(record and record.pending)})


# ============================================================================ stage 20: the models
def test_models(run: Run) -> List[Tuple[str, str, str]]:
    """original, pruned (the winner's own directory) and, when made, finetuned."""
    name, _ = run.winner(20)
    cand = run.t.candidate(name)
    models = [(ORIGINAL_NAME, str(run.asr_train_config), str(run.asr_model_file)),
              ("pruned", str(cand / "config.yaml"), str(cand / run.o.inference_asr_model))]
    status = run.status("finetune")
    if status.current:
        ft = run.t.finetune
        models.append(("finetuned", str(ft / "config.yaml"), str(ft / run.o.inference_asr_model)))
    elif run.o.finetune:
        raise StageError(f"stage 20 needs the fine-tuned model: {status.describe()}.\n  Run stage 19 first "
                         "(or pass --comflp_finetune false)")
    return models


def begin_20(run: Run) -> Dict[str, Any]:
    models = test_models(run)
    path = run.t.test_models_scp(run.o.inference_tag)
    rundir.write_models_scp(path, models)
    return {"test_models_scp": path, "test_finetuned": any(name == "finetuned" for name, _, _ in models)}


# ============================================================================ stage 21
def pack_final(run: Run) -> Tuple[str, Path, records.Record]:
    status = run.status("finetune")
    if status.current:
        return "finetuned", run.t.finetune, status.record
    name, record = run.winner(21)
    return "pruned", run.t.candidate(name), record


def pack_extra_files(run: Run) -> List[Path]:
    o = run.o
    files = []
    stats = Path(o.asr_stats_dir) / "train" / "feats_stats.npz"
    if o.feats_normalize == "global_mvn" and stats.is_file():
        files.append(stats)
    if o.token_type == "bpe" and o.bpemodel:
        files.append(Path(o.bpemodel))
    if o.nlsyms_txt not in ("", "none"):
        files.append(Path(o.nlsyms_txt))
    return files


def pack_made_from(run: Run) -> Tuple[Dict[str, Any], str, Path]:
    what, final_dir, record = pack_final(run)
    return (records.made_from({"model": record.digest, "extra": records.files_digest(pack_extra_files(run))},
                              {"what": what, "code": PACK_CODE}), what, final_dir)


def pack_status(run: Run) -> Status:
    made_from_value, what, _ = pack_made_from(run)
    zip_path = run.t.packed(Path(run.o.asr_exp).name, what, run.o.inference_asr_model)
    return records.check(zip_path, made_from_value)


def begin_21(run: Run) -> Dict[str, Any]:
    _, what, final_dir = pack_made_from(run)
    zip_path = run.t.packed(Path(run.o.asr_exp).name, what, run.o.inference_asr_model)
    records.remove_record(zip_path)
    options = [str(p) for p in pack_extra_files(run)]
    if run.t.results.is_file():
        options.append(str(run.t.results))
    if (final_dir / "images").is_dir():
        options.append(str(final_dir / "images"))
    return {"pack_what": what, "pack_final_dir": final_dir, "packed_model": zip_path,
            "pack_tmp": zip_path.parent / f".{zip_path.name}.tmp.zip", "pack_options": " ".join(options)}


def end_21(run: Run, start: Optional[float]) -> None:
    made_from_value, what, _ = pack_made_from(run)
    zip_path = run.t.packed(Path(run.o.asr_exp).name, what, run.o.inference_asr_model)
    records.write_record(zip_path, made_from_value, seconds=elapsed(start))
