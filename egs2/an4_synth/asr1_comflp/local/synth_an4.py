#!/usr/bin/env python3
"""Synthesize an AN4-style census speech corpus offline with espeak-ng.

The prompts imitate CMU AN4: spelled words and names ("P I T T S B U R G H"), digit strings,
numbers said as words, dates, zip codes, phone numbers and short commands (YES, NO, START,
STOP, ENTER, RUBOUT, REPEAT, HELP, ...).  Transcripts are upper-case words only; a digit is
written as its word ("ONE TWO THREE") so that a character-level model has one target per
spoken form.  Every transcript word has exactly one spoken form, so the audio says what the
transcript says.

Speakers are espeak-ng voices: an English accent (en-us, en-gb, en-gb-scotland, en-029, ...)
combined with a voice variant (m1..m8, f1..f5, Alex, ...), plus MBROLA voices when the mbrola
binary and its voice data are installed.  Variants are grouped into families (iven/iven2/...,
klatt..klatt6, Andy/AnxiousAndy, variants with identical formants) and the families are divided between
train, dev and test, separately for female and other variants, so no timbre of the dev or test
speakers is heard in training; the accents are shared by all splits.  Rate, pitch, amplitude
and word gap vary per utterance; noise (at a random SNR) and room impulse responses come from
the mini_an4 tarball (downloads/noise/*.wav, downloads/rirs/*.wav) or from directories.

Output (Kaldi style, files sorted by key):
    <output_dir>/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt}
    <wav_dir>/<split>/<utt_id>.<spec hash>.wav      16 kHz, 16-bit PCM, mono
    <wav_dir>/<split>/manifest.jsonl                 generation parameters of every utterance
    <wav_dir>/voice_split.json                       speakers of each split
Speaker ids are "<accent>_<variant>" written with [A-Za-z0-9_] only (e.g. "enus_m3",
"engbscotland_Alex", "mb_us1") and utterance ids "<speaker>-<split>-<index>", so sorting
utt2spk by utterance also groups it by speaker.

The output depends only on the options and the seed (each utterance draws from its own
random stream), not on --nj.  A wav file whose name carries the hash of its generation
parameters is complete and current, so a second run skips it: an interrupted run resumes,
and a run with changed options regenerates only what changed.  Data directories are written
under a temporary name and renamed into place.

Example:
    python local/synth_an4.py --output_dir data --wav_dir downloads/synth_an4 \
        --noise_tarball downloads.tar.gz --num_train 3000 --num_dev 300 --num_test 300 --nj 4
"""

import argparse
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from fractions import Fraction
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import fftconvolve, resample_poly

# Bump when a change alters the audio or text produced for the same options.
GENERATOR_VERSION = 2
SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
DITHER_LEVEL = 10 ** (-80 / 20)  # RMS of the noise floor added to every utterance
ESPEAK_INSTALL_HINT = (
    "install it with `apt-get install -y espeak-ng` (Debian/Ubuntu) "
    "or pass its path with --espeak"
)

# Variants that are effects rather than speakers (robotic, heavy echo, whispered, unvoiced,
# speed-only); they would make the corpus less like read census speech.
EXCLUDED_VARIANTS = frozenset(
    {
        "Demonic",
        "Mr serious",
        "Tweaky",
        "UniRobot",
        "anikaRobot",
        "caleb",
        "croak",
        "fast",
        "whisper",
        "whisperf",
        "RicishayMax",
        "RicishayMax2",
        "RicishayMax3",
    }
    | {f"robosoft{i}" for i in ("", 2, 3, 4, 5, 6, 7, 8)}
)
# English MBROLA voices known to espeak-ng: espeak voice name -> mbrola database name.
MBROLA_ENGLISH = {"mb-us1": "us1", "mb-us2": "us2", "mb-us3": "us3", "mb-en1": "en1"}
MBROLA_DIRS = ("/usr/share/mbrola", "/usr/local/share/mbrola", "/usr/share/mbrola/voices")

LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
TEENS = (
    "TEN",
    "ELEVEN",
    "TWELVE",
    "THIRTEEN",
    "FOURTEEN",
    "FIFTEEN",
    "SIXTEEN",
    "SEVENTEEN",
    "EIGHTEEN",
    "NINETEEN",
)
TENS = ("", "", "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY", "NINETY")
ORDINAL_WORDS = {
    "ONE": "FIRST",
    "TWO": "SECOND",
    "THREE": "THIRD",
    "FIVE": "FIFTH",
    "EIGHT": "EIGHTH",
    "NINE": "NINTH",
    "TWELVE": "TWELFTH",
}
MONTHS = (
    "JANUARY",
    "FEBRUARY",
    "MARCH",
    "APRIL",
    "MAY",
    "JUNE",
    "JULY",
    "AUGUST",
    "SEPTEMBER",
    "OCTOBER",
    "NOVEMBER",
    "DECEMBER",
)
DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
COMMANDS = ("YES", "NO", "START", "STOP", "GO", "ENTER", "RUBOUT", "REPEAT", "HELP", "ERASE")
# Words to spell letter by letter: places, street words and surnames.
SPELLING_WORDS = (
    "PITTSBURGH ALLEGHENY OAKLAND SHADYSIDE SQUIRREL HILL FORBES FIFTH MURRAY NEVILLE CRAIG "
    "BELLEFIELD BOSTON CHICAGO DENVER DALLAS HOUSTON PHOENIX SEATTLE PORTLAND ATLANTA MIAMI "
    "DETROIT CLEVELAND TOLEDO BUFFALO ALBANY TRENTON NEWARK RICHMOND RALEIGH MEMPHIS TULSA "
    "OMAHA WICHITA AUSTIN RENO FRESNO SALEM OGDEN BOISE HELENA DOVER CAMDEN ERIE BUTLER "
    "GREENSBURG ALTOONA JOHNSTOWN SCRANTON LANCASTER READING YORK MAIN PARK LAKE HILL MILL "
    "RIVER CEDAR MAPLE WALNUT CHURCH SCHOOL MARKET BRIDGE STATION SMITH JONES BROWN MILLER "
    "WILSON MOORE TAYLOR THOMAS JACKSON WHITE HARRIS MARTIN THOMPSON GARCIA MARTINEZ "
    "ROBINSON CLARK LEWIS LEE WALKER HALL ALLEN YOUNG KING WRIGHT LOPEZ HILL SCOTT GREEN "
    "ADAMS BAKER NELSON CARTER MITCHELL PEREZ ROBERTS TURNER PHILLIPS CAMPBELL PARKER EVANS "
    "EDWARDS COLLINS STEWART MORRIS ROGERS REED COOK MORGAN BELL MURPHY BAILEY RIVERA COOPER "
    "RICHARDSON COX HOWARD WARD TORRES PETERSON GRAY RAMIREZ JAMES WATSON BROOKS KELLY "
    "SANDERS PRICE BENNETT WOOD BARNES ROSS HENDERSON COLEMAN JENKINS PERRY POWELL LONG "
    "PATTERSON HUGHES FLORES WASHINGTON BUTLER SIMMONS FOSTER GONZALES BRYANT ALEXANDER "
    "RUSSELL GRIFFIN DIAZ HAYES"
).split()
FIRST_NAMES = (
    "JOHN MARY JAMES ROBERT LINDA MICHAEL DAVID SUSAN RICHARD KAREN JOSEPH NANCY THOMAS "
    "BETTY CHARLES HELEN DANIEL SANDRA PAUL DONNA MARK CAROL GEORGE RUTH STEVEN SHARON "
    "EDWARD LAURA BRIAN SARAH KEVIN ANNA JASON EMMA PETER ALICE FRANK JANE HENRY ROSE "
    "WALTER GRACE ARTHUR JOAN ALBERT JEAN RAY ANN"
).split()
# Spoken forms that differ from the transcript word.  "A" in a run of letters would be read
# as the article (a schwa); phoneme input forces the letter name.  "RUBOUT" is one AN4 word
# that espeak-ng reads as "roo-bout"; "rub out" gives the intended pronunciation.
SPOKEN_FORM = {"A": "[['eI]]", "RUBOUT": "rub out"}


def spoken_text(words):
    """Text handed to espeak-ng for a transcript given as a list of upper-case words."""
    out = []
    for word in words:
        if word in SPOKEN_FORM:
            out.append(SPOKEN_FORM[word])
        elif len(word) == 1:
            out.append(word)  # single letters stay upper case: read as letter names
        else:
            out.append(word.lower())
    return " ".join(out)


# ----------------------------------------------------------------------------------------
# Prompt text
# ----------------------------------------------------------------------------------------
def number_words(n):
    """Cardinal number 0 <= n < 1_000_000 as upper-case words (no "AND")."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n == 0:
        return ["ZERO"]
    words = []
    thousands, rest = divmod(n, 1000)
    if thousands:
        words += number_words(thousands) + ["THOUSAND"]
    hundreds, rest = divmod(rest, 100)
    if hundreds:
        words += [DIGIT_WORDS[hundreds], "HUNDRED"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(TENS[tens])
        if ones:
            words.append(DIGIT_WORDS[ones])
    elif rest >= 10:
        words.append(TEENS[rest - 10])
    elif rest:
        words.append(DIGIT_WORDS[rest])
    return words


def ordinal_words(n):
    """Ordinal number 1 <= n < 100 as words, e.g. 21 -> TWENTY FIRST."""
    words = number_words(n)
    last = words[-1]
    if last in ORDINAL_WORDS:
        words[-1] = ORDINAL_WORDS[last]
    elif last.endswith("Y"):
        words[-1] = last[:-1] + "IETH"
    else:
        words[-1] = last + "TH"
    return words


def year_words(year, rng):
    """A year the way people say it: NINETEEN SIXTY TWO, NINETEEN OH FIVE, TWO THOUSAND TEN."""
    century, rest = divmod(year, 100)
    if century == 20 and (rest < 10 or rng.random() < 0.5):
        return number_words(year)
    words = number_words(century)
    if rest == 0:
        return words + ["HUNDRED"]
    if rest < 10:
        return words + ["OH", DIGIT_WORDS[rest]]
    return words + number_words(rest)


def digit_words(digits, rng, oh_prob=0.3):
    """Digit string as words; zero is said ZERO or OH."""
    return ["OH" if d == 0 and rng.random() < oh_prob else DIGIT_WORDS[d] for d in digits]


def random_digits(rng, n, first_nonzero=False):
    digits = [int(d) for d in rng.integers(0, 10, size=n)]
    if first_nonzero and digits and digits[0] == 0:
        digits[0] = int(rng.integers(1, 10))
    return digits


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def prompt_spelled(rng):
    return list(_pick(rng, SPELLING_WORDS))


def prompt_digits(rng):
    return digit_words(random_digits(rng, int(rng.integers(3, 10))), rng)


def prompt_number(rng):
    kind = rng.random()
    if kind < 0.4:
        return number_words(int(rng.integers(0, 100)))
    if kind < 0.7:
        return number_words(int(rng.integers(100, 100_000)))
    # Two-digit groups as in "ELEVEN TWENTY SEVEN FIFTY SEVEN".
    words = []
    for _ in range(int(rng.integers(2, 4))):
        words += number_words(int(rng.integers(10, 100)))
    return words


def prompt_date(rng):
    month = int(rng.integers(12))
    day = int(rng.integers(1, DAYS_IN_MONTH[month] + 1))
    year = int(rng.integers(1900, 2030))
    style = rng.random()
    if style < 0.5:
        words = [MONTHS[month]] + ordinal_words(day)
    else:
        words = ordinal_words(day) + ["OF", MONTHS[month]]
    if rng.random() < 0.7:
        words += year_words(year, rng)
    return words


def prompt_command(rng):
    kind = rng.random()
    if kind < 0.55:
        return [_pick(rng, COMMANDS)]
    if kind < 0.8:
        return ["ENTER"] + digit_words(random_digits(rng, int(rng.integers(1, 5))), rng)
    return ["RUBOUT"] + list(_pick(rng, SPELLING_WORDS)[: int(rng.integers(1, 5))])


def prompt_name(rng):
    kind = rng.random()
    first = _pick(rng, FIRST_NAMES)
    last = _pick(rng, SPELLING_WORDS)
    if kind < 0.4:
        return list(first)
    if kind < 0.7:
        return [first] + list(last)
    return [first, last]


def prompt_zip(rng):
    words = digit_words(random_digits(rng, 5), rng, oh_prob=0.2)
    return (["ZIP", "CODE"] if rng.random() < 0.3 else []) + words


def prompt_phone(rng):
    local = digit_words(random_digits(rng, 7, first_nonzero=True), rng)
    kind = rng.random()
    if kind < 0.4:
        return local
    area = digit_words(random_digits(rng, 3, first_nonzero=True), rng)
    return (["AREA", "CODE"] if kind < 0.7 else []) + area + local


PROMPTS = (
    ("spelled", prompt_spelled, 0.20),
    ("digits", prompt_digits, 0.14),
    ("number", prompt_number, 0.13),
    ("date", prompt_date, 0.13),
    ("command", prompt_command, 0.14),
    ("name", prompt_name, 0.12),
    ("zip", prompt_zip, 0.07),
    ("phone", prompt_phone, 0.07),
)


def random_prompt(rng, kinds=None):
    """(kind, transcript words) of one random census prompt; ``kinds`` limits the kinds drawn
    (their relative frequencies kept), None draws from all."""
    prompts = [p for p in PROMPTS if kinds is None or p[0] in kinds]
    weights = np.array([w for _, _, w in prompts])
    kind, make, _ = prompts[int(rng.choice(len(prompts), p=weights / weights.sum()))]
    return kind, make(rng)


# ----------------------------------------------------------------------------------------
# Voices
# ----------------------------------------------------------------------------------------
def find_espeak(espeak=None):
    """Absolute path of the espeak-ng binary, or SystemExit saying how to install it."""
    path = shutil.which(espeak or "espeak-ng")
    if path is None:
        where = f"'{espeak}'" if espeak else "espeak-ng was not found on PATH"
        raise SystemExit(f"synth_an4.py: {where}: {ESPEAK_INSTALL_HINT}")
    return path


def _espeak_query(espeak, option):
    """stdout of `espeak-ng <option>`, or SystemExit when the binary does not answer."""
    try:
        out = subprocess.run([espeak, option], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"synth_an4.py: {espeak} {option} failed ({err}); {ESPEAK_INSTALL_HINT}")
    if not out.stdout.strip():
        raise SystemExit(f"synth_an4.py: {espeak} {option} printed nothing; {ESPEAK_INSTALL_HINT}")
    return out.stdout


def espeak_info(espeak):
    """(version line, data directory) reported by `espeak-ng --version`."""
    line = _espeak_query(espeak, "--version").strip().splitlines()[0]
    m = re.search(r"Data at:\s*(\S+)", line)
    return line, Path(m.group(1)) if m else None


def english_accents(espeak):
    """Language names of espeak-ng's own English voices (not the MBROLA ones)."""
    accents = []
    for line in _espeak_query(espeak, "--voices=en").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and re.match(r"^(gmw/)?en([-_/]|$)", fields[4], re.IGNORECASE):
            if fields[1] not in accents:
                accents.append(fields[1])
    return sorted(accents)


def installed_variants(data_dir):
    """{variant name: (gender, timbre)} of espeak-ng's variant files.

    gender is "female" or "other"; timbre is the variant's formant settings as one string
    (empty when it keeps the default formants), used to find variants with the same timbre.
    """
    variants = {}
    vdir = data_dir / "voices" / "!v" if data_dir else None
    if vdir is None or not vdir.is_dir():
        return variants
    for f in sorted(vdir.iterdir()):
        if not f.is_file():
            continue
        gender, formants = "other", []
        try:
            for line in f.read_text(errors="replace").splitlines():
                line = line.split("//")[0].strip()
                if re.match(r"^gender\s+female", line, re.IGNORECASE):
                    gender = "female"
                elif re.match(r"^formant\s", line, re.IGNORECASE):
                    formants.append(" ".join(line.split()))
        except OSError:
            continue
        variants[f.name] = (gender, ";".join(formants))
    return variants


def installed_mbrola_voices():
    """English MBROLA voices usable by espeak-ng: needs the mbrola binary and voice data."""
    if shutil.which("mbrola") is None:
        return []
    found = []
    for voice, db in sorted(MBROLA_ENGLISH.items()):
        for d in MBROLA_DIRS:
            if (Path(d) / db / db).is_file() or (Path(d) / db).is_file():
                found.append(voice)
                break
    return found


def variant_families(variants):
    """{variant: family} grouping variants that are versions of one voice.

    Two variants share a family when their names differ only by a trailing number
    (iven/iven2, klatt/klatt3; but m1..m8 and f1..f5 are distinct voices), when one name ends
    with the other (AnxiousAndy/Andy), or when they set identical formants (Diogo/Hugo/...).
    The family is named after its alphabetically first member.
    """
    names = sorted(variants)
    parent = {n: n for n in names}

    def root(n):
        while parent[n] != n:
            n = parent[n]
        return n

    def join(a, b):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    def stem(n):
        return n if re.fullmatch(r"[mf]\d+", n) else (re.sub(r"\d+$", "", n) or n)

    by_key = {}
    for n in names:
        by_key.setdefault(("stem", stem(n).lower()), []).append(n)
        timbre = variants[n][1]
        if timbre:
            by_key.setdefault(("timbre", timbre), []).append(n)
    for group in by_key.values():
        for other in group[1:]:
            join(group[0], other)
    for a in names:
        for b in names:
            if a != b and len(b) >= 3 and a.lower().endswith(b.lower()):
                join(a, b)
    return {n: root(n) for n in names}


def id_part(text):
    return re.sub(r"[^A-Za-z0-9]", "", text)


def speaker_id(accent, variant):
    if accent.startswith("mb-"):
        return "mb_" + id_part(accent[3:])
    return f"{id_part(accent)}_{id_part(variant)}"


def split_voices(accents, variants, mbrola_voices, seed, dev_fraction, test_fraction):
    """{split: sorted list of (speaker id, espeak voice spec)} with disjoint variant families.

    The families are shuffled with the seed and cut by the fractions, separately for female
    and other variants so that every split hears both; each MBROLA voice is its own family.
    """
    family_of = variant_families(variants)
    groups = {}
    for name in sorted(variants):
        family = family_of[name]
        gender = variants[family][0]
        groups.setdefault(gender, {}).setdefault(family, []).append(name)
    for voice in mbrola_voices:
        groups.setdefault("mbrola", {})[voice] = [voice]
    rng = np.random.default_rng([seed, 1])
    families = {s: [] for s in SPLITS}
    for gender in sorted(groups):
        names = sorted(groups[gender])
        order = [names[i] for i in rng.permutation(len(names))]
        n = len(order)
        n_test = int(round(test_fraction * n))
        n_dev = int(round(dev_fraction * n))
        if n >= 3:
            n_test, n_dev = max(n_test, 1 if test_fraction > 0 else 0), max(
                n_dev, 1 if dev_fraction > 0 else 0
            )
        n_test = min(n_test, n)
        n_dev = min(n_dev, n - n_test)
        for family in order[:n_test]:
            families["test"].append((gender, family))
        for family in order[n_test : n_test + n_dev]:
            families["dev"].append((gender, family))
        for family in order[n_test + n_dev :]:
            families["train"].append((gender, family))
    result = {}
    for split in SPLITS:
        speakers = {}
        for gender, family in families[split]:
            for name in groups[gender][family]:
                if gender == "mbrola":
                    speakers[speaker_id(name, "")] = name
                else:
                    for accent in accents:
                        speakers[speaker_id(accent, name)] = f"{accent}+{name}"
        result[split] = sorted(speakers.items())
    return result


# ----------------------------------------------------------------------------------------
# Noise and room impulse responses
# ----------------------------------------------------------------------------------------
def _read_mono(data, origin):
    audio, rate = soundfile.read(data, dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g)
    if audio.size == 0 or not np.any(audio):
        raise SystemExit(f"synth_an4.py: {origin}: empty or silent audio")
    return audio


def load_augmentation(noise_tarball=None, noise_dir=None, rir_dir=None):
    """({name: noise}, {name: rir}) as float64 16 kHz arrays, sorted by name.

    From the tarball, the members under */noise/*.wav and */rirs/*.wav are read in memory;
    the directories, when given, replace the respective part of the tarball.
    """
    noises, rirs = {}, {}
    if noise_tarball is not None:
        if not Path(noise_tarball).is_file():
            raise SystemExit(f"synth_an4.py: --noise_tarball {noise_tarball}: no such file")
        with tarfile.open(noise_tarball) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if not member.isfile() or not member.name.endswith(".wav") or len(parts) < 2:
                    continue
                if parts[-2] in ("noise", "rirs"):
                    data = tar.extractfile(member).read()
                    target = noises if parts[-2] == "noise" else rirs
                    origin = f"{noise_tarball}:{member.name}"
                    target[parts[-1]] = _read_mono(io.BytesIO(data), origin)
        if not noises and not rirs:
            raise SystemExit(
                f"synth_an4.py: --noise_tarball {noise_tarball} has no noise/*.wav or rirs/*.wav"
            )
    for option, directory, target in (("--noise_dir", noise_dir, noises), ("--rir_dir", rir_dir, rirs)):
        if directory is None:
            continue
        files = sorted(Path(directory).glob("*.wav"))
        if not files:
            raise SystemExit(f"synth_an4.py: {option} {directory}: no *.wav files there")
        target.clear()
        for f in files:
            target[f.name] = _read_mono(str(f), str(f))
    return dict(sorted(noises.items())), dict(sorted(rirs.items()))


def _digest_arrays(arrays):
    h = hashlib.sha1()
    for name, audio in arrays.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(audio).tobytes())
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------------------
# Utterance specifications and rendering
# ----------------------------------------------------------------------------------------
def _uniform(rng, bounds):
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def make_spec(args, split, index, speakers, noise_names, noise_lengths, rir_names, context):
    """Everything needed to render one utterance; a pure function of the options and seed."""
    rng = np.random.default_rng([args.seed, SPLITS.index(split), index])
    spk, voice = speakers[int(rng.integers(len(speakers)))]
    kind, words = random_prompt(rng, args.prompt_kinds)
    spec = {
        "utt_id": f"{spk}-{split}-{index:06d}",
        "speaker": spk,
        "voice": voice,
        "kind": kind,
        "text": " ".join(words),
        "spoken": spoken_text(words),
        "rate": int(round(_uniform(rng, args.rate_range))),
        "pitch": int(round(_uniform(rng, args.pitch_range))),
        "amplitude": int(round(_uniform(rng, args.amplitude_range))),
        "word_gap": int(round(_uniform(rng, args.word_gap_range))),
        "lead_silence": round(_uniform(rng, args.silence_range), 3),
        "trail_silence": round(_uniform(rng, args.silence_range), 3),
        "level_db": round(_uniform(rng, args.level_range), 2),
        "rir": None,
        "noise": None,
    }
    # Draw the augmentation choices unconditionally so that the other fields of a spec do
    # not depend on whether noise or reverberation are available.
    use_rir = rng.random() < args.rir_prob
    rir_pick = int(rng.integers(1 << 30))
    use_noise = rng.random() < args.noise_prob
    noise_pick = int(rng.integers(1 << 30))
    noise_offset = float(rng.random())
    snr = round(_uniform(rng, args.snr_range), 2)
    if use_rir and rir_names:
        spec["rir"] = rir_names[rir_pick % len(rir_names)]
    if use_noise and noise_names:
        name = noise_names[noise_pick % len(noise_names)]
        spec["noise"] = name
        spec["noise_offset"] = int(noise_offset * noise_lengths[name])
        spec["snr_db"] = snr
    payload = json.dumps({"spec": spec, **context}, sort_keys=True)
    spec["hash"] = hashlib.sha1(payload.encode()).hexdigest()[:10]
    return spec


_WORKER = {}


def _init_worker(espeak, noises, rirs):
    _WORKER.update(espeak=espeak, noises=noises, rirs=rirs)


def parse_wav_bytes(data):
    """(int16 samples, sample rate) of the RIFF stream espeak-ng writes to stdout, whose
    chunk sizes are placeholders because the length is unknown when the header is written."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not produce a WAV stream")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if channels != 1 or bits != 16:
                raise RuntimeError(f"unexpected espeak-ng output: {channels} ch, {bits} bit")
        elif cid == b"data":
            if rate is None:
                raise RuntimeError("espeak-ng WAV stream has no fmt chunk")
            pcm = data[body : min(len(data), body + size)]
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2"), rate
        pos = body + size + (size & 1)
    raise RuntimeError("espeak-ng WAV stream has no data chunk")


def synthesize(espeak, spec):
    """Dry speech of a spec as float64 at 16 kHz."""
    cmd = [
        espeak,
        "-v",
        spec["voice"],
        "-s",
        str(spec["rate"]),
        "-p",
        str(spec["pitch"]),
        "-a",
        str(spec["amplitude"]),
        "-g",
        str(spec["word_gap"]),
        "-b",
        "1",
        "-z",
        "--stdout",
        spec["spoken"],
    ]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"espeak-ng failed for {spec['utt_id']} (voice {spec['voice']}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    pcm, rate = parse_wav_bytes(proc.stdout)
    audio = pcm.astype(np.float64) / 32768.0
    if rate != SAMPLE_RATE:
        ratio = Fraction(SAMPLE_RATE, rate)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator)
    if audio.size == 0 or np.max(np.abs(audio)) < 1e-4:
        raise RuntimeError(f"espeak-ng produced silence for {spec['utt_id']} ({spec['voice']})")
    return audio


def render(spec, espeak, noises, rirs):
    """Final int16 audio of a spec: speech, silence padding, reverberation, noise, level."""
    speech = synthesize(espeak, spec)
    lead = np.zeros(int(spec["lead_silence"] * SAMPLE_RATE))
    trail = np.zeros(int(spec["trail_silence"] * SAMPLE_RATE))
    speech_power = float(np.mean(speech**2))
    audio = np.concatenate([lead, speech, trail])
    if spec["rir"] is not None:
        rir = rirs[spec["rir"]]
        rir = rir / np.max(np.abs(rir))
        # Align on the direct path so reverberation does not shift the speech in time.
        delay = int(np.argmax(np.abs(rir)))
        wet = fftconvolve(audio, rir)[delay : delay + audio.size]
        audio = wet * np.sqrt(np.sum(audio**2) / max(np.sum(wet**2), 1e-20))
    if spec["noise"] is not None:
        noise = noises[spec["noise"]]
        reps = -(-(spec["noise_offset"] + audio.size) // noise.size)
        segment = np.tile(noise, reps)[spec["noise_offset"] : spec["noise_offset"] + audio.size]
        noise_power = max(float(np.mean(segment**2)), 1e-20)
        gain = np.sqrt(speech_power / (noise_power * 10 ** (spec["snr_db"] / 10)))
        audio = audio + gain * segment
    rms = np.sqrt(np.mean(audio**2))
    audio = audio * (10 ** (spec["level_db"] / 20) / max(rms, 1e-20))
    # A faint noise floor: espeak-ng pauses are digital zeros, which no microphone records.
    dither = np.random.default_rng(int(spec["hash"], 16)).standard_normal(audio.size)
    audio = audio + DITHER_LEVEL * dither
    peak = np.max(np.abs(audio))
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    return np.round(audio * 32767).astype(np.int16)


def render_to_file(job):
    """Worker: write one utterance (atomically) unless it is already there."""
    spec, path = job
    path = Path(path)
    if path.is_file():
        return spec["utt_id"], soundfile.info(str(path)).frames, True
    audio = render(spec, _WORKER["espeak"], _WORKER["noises"], _WORKER["rirs"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    soundfile.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return spec["utt_id"], int(audio.size), False


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------
class _SimpleProgress:
    """Stand-in for tqdm: a line every few percent on stderr."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.last = total, desc, 0, -1
        self.start = time.time()

    def update(self, n=1):
        self.n += n
        step = int(20 * self.n / max(self.total, 1))
        if step != self.last:
            self.last = step
            rate = self.n / max(time.time() - self.start, 1e-9)
            sys.stderr.write(f"{self.desc}: {self.n}/{self.total} ({rate:.1f} utt/s)\n")
            sys.stderr.flush()

    def close(self):
        pass


class _NoProgress:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(total, desc, enabled):
    """tqdm when it is installed, else a plain line every 5 %."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _SimpleProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="utt", mininterval=1.0, file=sys.stderr)


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def replace_dir(tmp, final):
    """Rename the finished tmp directory onto final, removing what was there."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def write_data_dir(final, specs, wav_paths):
    """Kaldi-style data dir: wav.scp, text, utt2spk, spk2utt (sorted), written atomically."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp.{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    specs = sorted(specs, key=lambda s: s["utt_id"])
    _write_lines(tmp / "wav.scp", [f"{s['utt_id']} {wav_paths[s['utt_id']]}" for s in specs])
    _write_lines(tmp / "text", [f"{s['utt_id']} {s['text']}" for s in specs])
    _write_lines(tmp / "utt2spk", [f"{s['utt_id']} {s['speaker']}" for s in specs])
    spk2utt = {}
    for s in specs:
        spk2utt.setdefault(s["speaker"], []).append(s["utt_id"])
    _write_lines(tmp / "spk2utt", [f"{k} {' '.join(v)}" for k, v in sorted(spk2utt.items())])
    replace_dir(tmp, final)


def _atomic_write_text(path, text):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def prompt_kinds_arg(text):
    """--prompt_kinds value: a tuple of known prompt kinds."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    known = [k for k, _, _ in PROMPTS]
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown prompt kind(s) '{','.join(unknown) or text}'; choose from {','.join(known)}"
        )
    return tuple(kinds)


def get_parser():
    parser = argparse.ArgumentParser(
        description="Synthesize an AN4-style census speech corpus (train/dev/test Kaldi "
        "data dirs) with espeak-ng, with noise and reverberation",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output_dir", default="data", help="Where the train/dev/test data dirs go")
    parser.add_argument(
        "--wav_dir",
        default=None,
        help="Where the audio goes (default: <output_dir>/synth_an4_wav)",
    )
    parser.add_argument("--num_train", type=int, default=3000, help="Training utterances")
    parser.add_argument("--num_dev", type=int, default=300, help="Development utterances")
    parser.add_argument("--num_test", type=int, default=300, help="Test utterances")
    parser.add_argument("--seed", type=int, default=0, help="Seed of prompts, voices and audio")
    parser.add_argument("--nj", type=int, default=1, help="Parallel generation processes")
    parser.add_argument("--espeak", default=None, help="espeak-ng binary (default: from PATH)")
    aug = parser.add_argument_group("noise and reverberation")
    aug.add_argument(
        "--noise_tarball",
        default=None,
        help="mini_an4 downloads.tar.gz; its downloads/noise/*.wav and downloads/rirs/*.wav are used",
    )
    aug.add_argument("--noise_dir", default=None, help="Directory of noise *.wav (replaces the tarball's)")
    aug.add_argument("--rir_dir", default=None, help="Directory of room impulse response *.wav")
    aug.add_argument("--noise_prob", type=float, default=0.8, help="Share of utterances with noise")
    aug.add_argument("--rir_prob", type=float, default=0.5, help="Share of reverberated utterances")
    aug.add_argument(
        "--snr_range", type=float, nargs=2, default=(5.0, 30.0), metavar=("MIN", "MAX"), help="SNR in dB"
    )
    parser.add_argument(
        "--prompt_kinds",
        type=prompt_kinds_arg,
        default=None,
        help="Comma-separated prompt kinds to draw, their relative frequencies kept "
        f"(default: all of {','.join(k for k, _, _ in PROMPTS)})",
    )
    voice = parser.add_argument_group("voices")
    voice.add_argument(
        "--accents",
        default=None,
        help="Comma-separated espeak-ng English voices (default: all installed, e.g. en-us,en-gb,...)",
    )
    voice.add_argument(
        "--variants",
        default=None,
        help="Comma-separated espeak-ng variants (default: the installed ones except "
        "robotic/whispered/effect variants)",
    )
    voice.add_argument(
        "--mbrola",
        choices=("auto", "yes", "no"),
        default="auto",
        help="Use English MBROLA voices: auto = when mbrola and its voices are installed",
    )
    voice.add_argument(
        "--dev_voice_fraction", type=float, default=0.15, help="Share of variant families for dev"
    )
    voice.add_argument(
        "--test_voice_fraction", type=float, default=0.15, help="Share of variant families for test"
    )
    voice.add_argument(
        "--rate_range", type=float, nargs=2, default=(120, 220), metavar=("MIN", "MAX"),
        help="Speaking rate, words per minute (espeak-ng -s)",
    )
    voice.add_argument(
        "--pitch_range", type=float, nargs=2, default=(25, 75), metavar=("MIN", "MAX"),
        help="Pitch adjustment 0-99 (espeak-ng -p)",
    )
    voice.add_argument(
        "--amplitude_range", type=float, nargs=2, default=(60, 150), metavar=("MIN", "MAX"),
        help="Amplitude 0-200 (espeak-ng -a)",
    )
    voice.add_argument(
        "--word_gap_range", type=float, nargs=2, default=(0, 3), metavar=("MIN", "MAX"),
        help="Pause between words in units of 10 ms (espeak-ng -g)",
    )
    voice.add_argument(
        "--silence_range", type=float, nargs=2, default=(0.05, 0.4), metavar=("MIN", "MAX"),
        help="Silence before and after the speech, seconds",
    )
    voice.add_argument(
        "--level_range", type=float, nargs=2, default=(-32.0, -18.0), metavar=("MIN", "MAX"),
        help="Output RMS level, dB full scale",
    )
    parser.add_argument(
        "--progress", type=int, choices=(0, 1), default=1, help="Show a progress bar on stderr"
    )
    return parser


def check_args(parser, args):
    for name in ("num_train", "num_dev", "num_test"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.num_train == 0:
        parser.error("--num_train must be > 0")
    if args.nj < 1:
        parser.error("--nj must be >= 1")
    for name in ("noise_prob", "rir_prob", "dev_voice_fraction", "test_voice_fraction"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name} must be within [0, 1]")
    if args.dev_voice_fraction + args.test_voice_fraction >= 1.0:
        parser.error("--dev_voice_fraction + --test_voice_fraction must be < 1")
    for name in (
        "snr_range",
        "rate_range",
        "pitch_range",
        "amplitude_range",
        "word_gap_range",
        "silence_range",
        "level_range",
    ):
        lo, hi = getattr(args, name)
        if lo > hi:
            parser.error(f"--{name}: MIN must not exceed MAX (got {lo} {hi})")
    for option in ("noise_dir", "rir_dir"):
        d = getattr(args, option)
        if d is not None and not Path(d).is_dir():
            parser.error(f"--{option} {d}: no such directory")
    if (args.noise_prob > 0 or args.rir_prob > 0) and not (
        args.noise_tarball or args.noise_dir or args.rir_dir
    ):
        parser.error(
            "noise/reverberation need --noise_tarball (mini_an4 downloads.tar.gz) or "
            "--noise_dir/--rir_dir; pass --noise_prob 0 --rir_prob 0 for clean speech"
        )


def resolve_voices(args, espeak):
    version, data_dir = espeak_info(espeak)
    accents = english_accents(espeak)
    if args.accents:
        wanted = [a.strip() for a in args.accents.split(",") if a.strip()]
        unknown = [a for a in wanted if a not in accents]
        if unknown:
            raise SystemExit(
                f"synth_an4.py: --accents: {','.join(unknown)} not among the installed English "
                f"voices ({','.join(accents)})"
            )
        accents = wanted
    if not accents:
        raise SystemExit(f"synth_an4.py: espeak-ng ({espeak}) lists no English voices")
    installed = installed_variants(data_dir)
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in installed]
        if unknown:
            raise SystemExit(
                f"synth_an4.py: --variants: {','.join(unknown)} not found in {data_dir}/voices/!v"
            )
        variants = {v: installed[v] for v in wanted}
    else:
        variants = {
            v: info for v, info in installed.items() if v not in EXCLUDED_VARIANTS and " " not in v
        }
    if not variants:
        raise SystemExit(f"synth_an4.py: no espeak-ng voice variants found under {data_dir}")
    mbrola = installed_mbrola_voices() if args.mbrola != "no" else []
    if args.mbrola == "yes" and not mbrola:
        raise SystemExit(
            "synth_an4.py: --mbrola yes: no English MBROLA voice found; install them with "
            "`apt-get install -y mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1`"
        )
    return version, accents, variants, mbrola


def main(cmd=None):
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    parser = get_parser()
    args = parser.parse_args(cmd)
    check_args(parser, args)
    espeak = find_espeak(args.espeak)
    version, accents, variants, mbrola = resolve_voices(args, espeak)
    noises, rirs = load_augmentation(args.noise_tarball, args.noise_dir, args.rir_dir)
    if args.noise_prob > 0 and not noises:
        raise SystemExit("synth_an4.py: --noise_prob > 0 but no noise *.wav was found")
    if args.rir_prob > 0 and not rirs:
        raise SystemExit("synth_an4.py: --rir_prob > 0 but no room impulse response *.wav was found")

    output_dir = Path(args.output_dir)
    wav_dir = Path(args.wav_dir) if args.wav_dir else output_dir / "synth_an4_wav"
    voices = split_voices(
        accents, variants, mbrola, args.seed, args.dev_voice_fraction, args.test_voice_fraction
    )
    counts = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    for split in SPLITS:
        if counts[split] > 0 and not voices[split]:
            raise SystemExit(
                f"synth_an4.py: no voices left for {split}; use more --variants or change "
                "--dev_voice_fraction/--test_voice_fraction"
            )
    logging.info(
        f"{version}; {len(accents)} accents x {len(variants)} variants"
        + (f" + {len(mbrola)} MBROLA voices" if mbrola else " (no MBROLA voices installed)")
    )
    family_of = variant_families(variants)
    for split in SPLITS:
        fams = sorted({family_of.get(v.split("+")[-1], v) for _, v in voices[split]})
        logging.info(f"{split}: {len(voices[split])} speakers; variant families: {' '.join(fams)}")

    # What else determines the audio: the synthesizer and the augmentation data.
    context = {
        "generator_version": GENERATOR_VERSION,
        "espeak": version,
        "noise_data": _digest_arrays(noises),
        "rir_data": _digest_arrays(rirs),
        "sample_rate": SAMPLE_RATE,
    }
    noise_names, rir_names = list(noises), list(rirs)
    noise_lengths = {k: v.size for k, v in noises.items()}
    specs = {
        split: [
            make_spec(args, split, i, voices[split], noise_names, noise_lengths, rir_names, context)
            for i in range(counts[split])
        ]
        for split in SPLITS
    }

    jobs, wav_paths = [], {}
    for split in SPLITS:
        split_dir = (wav_dir / split).resolve()
        split_dir.mkdir(parents=True, exist_ok=True)
        for spec in specs[split]:
            path = split_dir / f"{spec['utt_id']}.{spec['hash']}.wav"
            wav_paths[spec["utt_id"]] = path
            jobs.append((spec, str(path)))
    # Leftovers of an interrupted run: partial files never got their final name.
    for split in SPLITS:
        for f in (wav_dir / split).glob(".*.wav.*.tmp"):
            f.unlink()
    todo = [job for job in jobs if not Path(job[1]).is_file()]
    logging.info(
        f"{len(jobs)} utterances; {len(jobs) - len(todo)} already generated, {len(todo)} to generate"
    )

    start = time.time()
    bar = progress_bar(len(todo), "synth_an4", bool(args.progress))
    try:
        if args.nj == 1 or len(todo) <= 1:
            _init_worker(espeak, noises, rirs)
            for job in todo:
                render_to_file(job)
                bar.update()
        else:
            with multiprocessing.get_context("fork").Pool(
                args.nj, initializer=_init_worker, initargs=(espeak, noises, rirs)
            ) as pool:
                for _ in pool.imap_unordered(render_to_file, todo, chunksize=4):
                    bar.update()
    except RuntimeError as err:  # espeak-ng failed; what was written is kept for a rerun
        raise SystemExit(f"synth_an4.py: {err}")
    finally:
        bar.close()
    elapsed = time.time() - start
    if todo:
        logging.info(
            f"generated {len(todo)} utterances in {elapsed:.1f} s "
            f"({len(todo) / max(elapsed, 1e-9):.1f} utt/s with --nj {args.nj})"
        )

    # Remove audio of earlier runs that the current options no longer produce.
    for split in SPLITS:
        keep = {p.name for p in wav_paths.values() if p.parent.name == split}
        ours = re.compile(r"[A-Za-z0-9_]+-\w+-\d+\.[0-9a-f]{10}\.wav")
        for f in (wav_dir / split).glob("*.wav"):
            if f.name not in keep and ours.fullmatch(f.name):
                f.unlink()
        ordered = sorted(specs[split], key=lambda s: s["utt_id"])
        _atomic_write_text(
            wav_dir / split / "manifest.jsonl",
            "".join(json.dumps(s, sort_keys=True) + "\n" for s in ordered),
        )
    _atomic_write_text(
        wav_dir / "voice_split.json",
        json.dumps(
            {
                "espeak": version,
                "accents": accents,
                "mbrola": mbrola,
                "splits": {s: dict(voices[s]) for s in SPLITS},
            },
            indent=1,
            sort_keys=True,
        )
        + "\n",
    )
    for split in SPLITS:
        if counts[split] == 0:
            continue
        write_data_dir(output_dir / split, specs[split], wav_paths)
        logging.info(f"wrote {output_dir / split} ({counts[split]} utterances)")


if __name__ == "__main__":
    main()
