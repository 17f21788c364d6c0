"""Error-rate scoring of ASR hypotheses with jiwer, reported like sclite.

Units
-----
``char`` (CER)
    Every character is one token, as ESPnet's asr.sh scores CER (it runs
    ``espnet2.bin.tokenize_text --token_type char`` before sclite): a space is
    kept as the token ``<space>``, so a missing or extra word boundary counts as
    one error.  Before splitting, whitespace is normalised (leading/trailing
    whitespace removed, runs of whitespace collapsed to one space), so a
    decoder that emits a double space is not charged an extra insertion.
    Texts without spaces (e.g. Mandarin) are therefore scored per character.
``word`` (WER)
    Tokens are the whitespace-separated words.

Non-linguistic symbols (asr.sh's ``nlsyms.txt``) can be removed from both sides
before scoring, as asr.sh does with ``--remove_non_linguistic_symbols true``.

Alignment counts (Corr, Sub, Del, Ins) come from jiwer's Levenshtein alignment
(unit costs).  sclite weighs substitutions slightly higher than insertions and
deletions, so on rare ties the split between Sub and Del+Ins can differ from
sclite's while the error total stays the minimum edit distance.

Percentages follow sclite: Corr/Sub/Del/Ins/Err are relative to the number of
reference tokens (#Wrd), S.Err to the number of sentences (#Snt).  A set with no
reference tokens uses a denominator of 1 so that insertions still show.

This module is pure: it does not import espnet.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import jiwer

SPACE_SYMBOL = "<space>"
UNITS = ("char", "word")
METRIC_OF_UNIT = {"char": "cer", "word": "wer"}
UNIT_OF_METRIC = {"cer": "char", "wer": "word"}
SUMMARY_COLUMNS = ("#Snt", "#Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err")
# ESPnet's RESULTS.md spells the count columns without '#'.
RESULTS_COLUMNS = ("Snt", "Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err")


def tokenize(
    text: str, unit: str, non_linguistic_symbols: Iterable[str] = ()
) -> List[str]:
    """Split ``text`` into scoring tokens of ``unit`` ("char" or "word")."""
    if unit not in UNITS:
        raise ValueError(f"unknown scoring unit {unit!r}; choose one of {UNITS}")
    nlsyms = [s for s in non_linguistic_symbols if s]
    if unit == "word":
        symbols = set(nlsyms)
        return [w for w in text.split() if w not in symbols]
    # Remove symbols first so that e.g. "<noise>" is not scored as 7 characters.
    for symbol in sorted(nlsyms, key=len, reverse=True):
        text = text.replace(symbol, " ")
    words = text.split()
    tokens: List[str] = []
    for i, word in enumerate(words):
        if i > 0:
            tokens.append(SPACE_SYMBOL)
        tokens.extend(word)
    return tokens


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
    """Alignment counts of one or more sentences."""

    num_snt: int = 0
    num_ref: int = 0
    corr: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    num_snt_err: int = 0

    @property
    def num_err(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def error_rate(self) -> float:
        """Error rate in percent (CER or WER depending on the unit)."""
        return 100.0 * self.num_err / max(self.num_ref, 1)

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        # Field by field: dataclasses.astuple deep-copies, and totals add thousands of counts.
        return ErrorCounts(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(ErrorCounts))
        )

    def percentages(self) -> Dict[str, float]:
        """sclite's percentage columns."""
        denom = max(self.num_ref, 1)
        return {
            "Corr": 100.0 * self.corr / denom,
            "Sub": 100.0 * self.sub / denom,
            "Del": 100.0 * self.dele / denom,
            "Ins": 100.0 * self.ins / denom,
            "Err": 100.0 * self.num_err / denom,
            "S.Err": 100.0 * self.num_snt_err / max(self.num_snt, 1),
        }

    def to_dict(self) -> Dict[str, Union[int, float]]:
        d: Dict[str, Union[int, float]] = {
            "num_snt": self.num_snt,
            "num_ref": self.num_ref,
            "corr": self.corr,
            "sub": self.sub,
            "del": self.dele,
            "ins": self.ins,
            "num_err": self.num_err,
            "num_snt_err": self.num_snt_err,
            "error_rate": self.error_rate,
        }
        return d

    def row(self) -> List[str]:
        """Cells of a summary row: counts, then percentages with 1 decimal."""
        pct = self.percentages()
        return [str(self.num_snt), str(self.num_ref)] + [
            f"{pct[c]:.1f}" for c in ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")
        ]


@dataclasses.dataclass(frozen=True)
class UttScore:
    """Scored utterance: tokens, alignment and counts."""

    key: str
    ref: Tuple[str, ...]
    hyp: Tuple[str, ...]
    # (op, ref_token, hyp_token); op in C/S/D/I; missing side is None.
    alignment: Tuple[Tuple[str, Optional[str], Optional[str]], ...]
    counts: ErrorCounts
    missing_hyp: bool = False


def align_many(
    refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]
) -> List[Tuple[Tuple[Tuple[str, Optional[str], Optional[str]], ...], ErrorCounts]]:
    """Align token sequences pairwise with jiwer; return (alignment, counts) each."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return []
    ref_lists = [list(r) for r in refs]
    hyp_lists = [list(h) for h in hyps]
    # Tokens are already split: hand them to jiwer unchanged.
    output = jiwer.process_words(
        ref_lists,
        hyp_lists,
        reference_transform=_identity,
        hypothesis_transform=_identity,
    )
    results = []
    for ref, hyp, chunks in zip(ref_lists, hyp_lists, output.alignments):
        ops: List[Tuple[str, Optional[str], Optional[str]]] = []
        for chunk in chunks:
            r = ref[chunk.ref_start_idx : chunk.ref_end_idx]
            h = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
            if chunk.type == "equal":
                ops.extend(("C", a, b) for a, b in zip(r, h))
            elif chunk.type == "substitute":
                ops.extend(("S", a, b) for a, b in zip(r, h))
            elif chunk.type == "delete":
                ops.extend(("D", a, None) for a in r)
            elif chunk.type == "insert":
                ops.extend(("I", None, b) for b in h)
            else:  # pragma: no cover - jiwer only emits the four types above
                raise RuntimeError(f"unexpected alignment type {chunk.type!r}")
        corr = sum(op == "C" for op, _, _ in ops)
        sub = sum(op == "S" for op, _, _ in ops)
        dele = sum(op == "D" for op, _, _ in ops)
        ins = sum(op == "I" for op, _, _ in ops)
        counts = ErrorCounts(
            num_snt=1,
            num_ref=len(ref),
            corr=corr,
            sub=sub,
            dele=dele,
            ins=ins,
            num_snt_err=int(sub + dele + ins > 0),
        )
        results.append((tuple(ops), counts))
    return results


def _identity(sentences):
    return sentences


def score_texts(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    unit: str,
    non_linguistic_symbols: Iterable[str] = (),
) -> List[UttScore]:
    """Score every reference utterance, in the order of ``refs``.

    An utterance without hypothesis is scored as an empty hypothesis (all its
    tokens become deletions) and flagged ``missing_hyp``, like sclite does for
    an utterance absent from the hypothesis file.  Hypotheses without reference
    are ignored (callers may warn about them).
    """
    nlsyms = list(non_linguistic_symbols)
    keys = list(refs)
    ref_tokens = [tokenize(refs[k], unit, nlsyms) for k in keys]
    hyp_tokens = [tokenize(hyps.get(k, ""), unit, nlsyms) for k in keys]
    aligned = align_many(ref_tokens, hyp_tokens)
    return [
        UttScore(
            key=k,
            ref=tuple(r),
            hyp=tuple(h),
            alignment=alignment,
            counts=counts,
            missing_hyp=k not in hyps,
        )
        for k, r, h, (alignment, counts) in zip(keys, ref_tokens, hyp_tokens, aligned)
    ]


def total(scores: Iterable[UttScore]) -> ErrorCounts:
    """Sum of the counts of ``scores``."""
    acc = ErrorCounts()
    for s in scores:
        acc = acc + s.counts
    return acc


def by_speaker(
    scores: Iterable[UttScore], utt2spk: Optional[Mapping[str, str]] = None
) -> Dict[str, ErrorCounts]:
    """Counts per speaker (sorted by speaker id); utterances without speaker
    are grouped under their own key, as with a Kaldi utt2spk of ``utt utt``."""
    acc: Dict[str, ErrorCounts] = {}
    for s in scores:
        spk = utt2spk.get(s.key, s.key) if utt2spk else s.key
        acc[spk] = acc.get(spk, ErrorCounts()) + s.counts
    return dict(sorted(acc.items()))


def markdown_table(
    rows: Sequence[Tuple[str, ErrorCounts]], first_column: str = "dataset",
    columns: Sequence[str] = RESULTS_COLUMNS,
) -> str:
    """Markdown table in the shape of ESPnet's RESULTS.md.

    ``|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|`` followed by one line per
    row; with ``columns=SUMMARY_COLUMNS`` and ``first_column="SPKR"`` it is the
    sclite speaker summary (``#Snt``/``#Wrd``).
    """
    header = [first_column] + list(columns)
    lines = [
        "|" + "|".join(header) + "|",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for label, counts in rows:
        lines.append("|" + "|".join([label] + counts.row()) + "|")
    return "\n".join(lines) + "\n"


def summary_table(
    scores: Sequence[UttScore], utt2spk: Optional[Mapping[str, str]] = None
) -> str:
    """sclite-like speaker summary ending with the ``Sum/Avg`` row.

    The ``Sum/Avg`` row keeps ESPnet's ``scripts/utils/show_asr_result.sh``
    working on our result.txt files (it greps ``Avg`` and turns the row into a
    RESULTS.md line).
    """
    rows = list(by_speaker(scores, utt2spk).items()) if utt2spk else []
    rows.append(("Sum/Avg", total(scores)))
    return markdown_table(rows, first_column="SPKR", columns=SUMMARY_COLUMNS)


def format_alignment(score: UttScore) -> str:
    """One utterance in sclite's ``pra`` style: id, Scores, REF, HYP, Eval.

    Errors are upper-cased as sclite prints them and gaps shown as ``***``.
    """
    c = score.counts
    ref_cells, hyp_cells, eval_cells = [], [], []
    for op, r, h in score.alignment:
        if op == "C":
            r_cell, h_cell, e_cell = r.lower(), h.lower(), ""
        elif op == "S":
            r_cell, h_cell, e_cell = r.upper(), h.upper(), "S"
        elif op == "D":
            r_cell, h_cell, e_cell = r.upper(), "*" * max(3, len(r)), "D"
        else:
            r_cell, h_cell, e_cell = "*" * max(3, len(h)), h.upper(), "I"
        width = max(len(r_cell), len(h_cell), len(e_cell))
        ref_cells.append(r_cell.ljust(width))
        hyp_cells.append(h_cell.ljust(width))
        eval_cells.append(e_cell.ljust(width))
    note = "  (no hypothesis)" if score.missing_hyp else ""
    return (
        f"id: ({score.key}){note}\n"
        f"Scores: (#C #S #D #I) {c.corr} {c.sub} {c.dele} {c.ins}\n"
        f"REF:  {' '.join(ref_cells).rstrip()}\n"
        f"HYP:  {' '.join(hyp_cells).rstrip()}\n"
        f"Eval: {' '.join(eval_cells).rstrip()}\n"
    )


def format_result(
    scores: Sequence[UttScore],
    unit: str,
    utt2spk: Optional[Mapping[str, str]] = None,
    title: str = "",
) -> str:
    """Full result.txt text: header, speaker summary, per-utterance alignments."""
    metric = METRIC_OF_UNIT[unit].upper()
    unit_note = (
        f"characters, spaces scored as {SPACE_SYMBOL}" if unit == "char" else "words"
    )
    parts = [
        f"# {title}\n" if title else "",
        f"{metric} ({unit_note}): {total(scores).error_rate:.2f}%\n\n",
        summary_table(scores, utt2spk),
        "\n",
    ]
    missing = [s.key for s in scores if s.missing_hyp]
    if missing:
        parts.append(
            f"{len(missing)} utterance(s) had no hypothesis and were scored as "
            f"empty: {' '.join(missing)}\n\n"
        )
    parts.extend(format_alignment(s) + "\n" for s in scores)
    return "".join(parts)


def read_kaldi_text(path: Union[str, Path]) -> Dict[str, str]:
    """Read a Kaldi ``text`` file (``utt transcript``); keys must be unique.

    A line with only a key is an empty transcript.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file")
    texts: Dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            key = parts[0]
            if key in texts:
                raise ValueError(f"{path}:{lineno}: duplicated utterance id {key!r}")
            texts[key] = parts[1] if len(parts) > 1 else ""
    return texts


def read_symbol_list(path: Union[str, Path, None]) -> List[str]:
    """One symbol per line (asr.sh's nlsyms.txt); a missing path gives none."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        logging.warning(f"{path}: non-linguistic symbol list not found; none removed")
        return []
    with path.open(encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]
