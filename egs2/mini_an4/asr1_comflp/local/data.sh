#!/usr/bin/env bash
# Prepares the mini_an4 corpus (7 utterances of CMU AN4, 16 kHz) as Kaldi-style data dirs:
#   data/train_nodev (4 utterances), data/train_dev (1), data/test (2)
# each with wav.scp (16-bit PCM wav files under downloads/wav/), text (upper-case AN4
# transcripts), utt2spk, spk2utt and utt2num_samples (which lets asr.sh use --feats_type raw_copy).  Utterance ids are "<speaker>-<recording>", e.g. fash-an251-b.
#
# The tarball is looked up in this order:
#   --mini_an4_tarball PATH
#   $ESPNET_ROOT/egs2/mini_an4/asr1/downloads.tar.gz
#   ../asr1/downloads.tar.gz                 (ESPnet's own mini_an4 recipe next to this one)
#   <plugin root>/../shared/data/mini_an4/downloads.tar.gz
# Already prepared data is left as it is (remove data/ or downloads/ to redo it).
set -euo pipefail

log() {
    local caller_file=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${caller_file}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

mini_an4_tarball=
python=python3

help_message="Usage: $0 [--mini_an4_tarball downloads.tar.gz] [--python python3]

Options:
    --mini_an4_tarball  # mini_an4 downloads.tar.gz (default: searched, see the header of $0)
    --python            # Python with soundfile installed (default=\"${python}\")"

log "$0 $*"
recipe_dir=$PWD
plugin_root=$(cd "$(dirname "$(readlink -f "$0")")/../../../.." && pwd)
. "${plugin_root}/egs2/TEMPLATE/asr1_comflp/scripts/parse_options.sh"
. "${plugin_root}/egs2/TEMPLATE/asr1_comflp/scripts/common.sh"

if [ $# -ne 0 ]; then
    log "${help_message}"
    log "Error: no positional arguments are expected"
    exit 2
fi

sets="train_nodev train_dev test"
complete=true
for dset in ${sets}; do
    for f in wav.scp text utt2spk spk2utt; do
        [ -s "data/${dset}/${f}" ] || complete=false
    done
done
if "${complete}"; then
    log "data/{train_nodev,train_dev,test} are already prepared; skipping"
    exit 0
fi

if [ ! -f downloads/an4/etc/an4_train.transcription ]; then
    tarball=$(find_mini_an4_tarball "${mini_an4_tarball}" "${recipe_dir}" "${plugin_root}") || exit 1
    log "Unpacking ${tarball} into downloads/"
    tar -xzf "${tarball}"
    if [ ! -f downloads/an4/etc/an4_train.transcription ]; then
        log "Error: ${tarball} does not contain downloads/an4/etc/an4_train.transcription"
        exit 1
    fi
fi

log "Converting the AN4 NIST SPHERE files to wav and writing data/{train_nodev,train_dev,test}"
"${python}" - <<'PYEOF'
import os
import re
from pathlib import Path

import soundfile

root = Path("downloads/an4")
wav_dir = Path("downloads/wav").resolve()
wav_dir.mkdir(parents=True, exist_ok=True)


def read_split(name, audio_subdir):
    """(utt_id, speaker, sph path, transcript) for one AN4 transcription file."""
    items = []
    for line in (root / "etc" / f"an4_{name}.transcription").read_text().splitlines():
        m = re.match(r"^(.*)\((\S+)\)\s*$", line.strip())
        if not m:
            continue
        words = [w for w in m.group(1).split() if w not in ("<s>", "</s>")]
        rec = m.group(2)  # e.g. an251-fash-b: <prompt>-<speaker>-<mic>
        prompt, speaker, mic = rec.split("-")
        sph = root / "wav" / audio_subdir / speaker / f"{rec}.sph"
        items.append((f"{speaker}-{prompt}-{mic}", speaker, sph, " ".join(words).upper()))
    return sorted(items)


def write_dir(name, items):
    tmp = Path("data") / f".{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    spk2utt = {}
    with open(tmp / "wav.scp", "w") as wav, open(tmp / "text", "w") as text, \
            open(tmp / "utt2spk", "w") as u2s, open(tmp / "utt2num_samples", "w") as u2n:
        for utt, spk, sph, words in items:
            out = wav_dir / f"{utt}.wav"
            if not out.exists():
                audio, rate = soundfile.read(str(sph), dtype="int16")
                if rate != 16000:
                    raise SystemExit(f"{sph}: expected 16 kHz audio, got {rate} Hz")
                soundfile.write(str(out) + ".tmp.wav", audio, rate, subtype="PCM_16")
                os.replace(str(out) + ".tmp.wav", out)
            wav.write(f"{utt} {out}\n")
            u2n.write(f"{utt} {soundfile.info(str(out)).frames}\n")
            text.write(f"{utt} {words}\n")
            u2s.write(f"{utt} {spk}\n")
            spk2utt.setdefault(spk, []).append(utt)
    with open(tmp / "spk2utt", "w") as s2u:
        for spk in sorted(spk2utt):
            s2u.write(f"{spk} {' '.join(spk2utt[spk])}\n")
    final = Path("data") / name
    if final.exists():
        for f in final.iterdir():
            f.unlink()
        final.rmdir()
    os.replace(tmp, final)


train = read_split("train", "an4_clstk")
test = read_split("test", "an4test_clstk")
# The first training utterance is held out for validation, as in ESPnet's mini_an4 recipe.
write_dir("train_dev", train[:1])
write_dir("train_nodev", train[1:])
write_dir("test", test)
PYEOF

for dset in ${sets}; do
    log "data/${dset}: $(wc -l < "data/${dset}/wav.scp") utterances"
done
log "Successfully finished. [elapsed=${SECONDS}s]"
