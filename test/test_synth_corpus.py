"""Tests of the an4_synth corpus generator (egs2/an4_synth/asr1_comflp/local/synth_an4.py)."""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "egs2" / "an4_synth" / "asr1_comflp" / "local"
SCRIPT = LOCAL / "synth_an4.py"
DATA_SH = LOCAL / "data.sh"

_spec = importlib.util.spec_from_file_location("synth_an4", SCRIPT)
synth = importlib.util.module_from_spec(_spec)
sys.modules["synth_an4"] = synth  # worker processes find their function by module name
_spec.loader.exec_module(synth)

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None,
    reason="espeak-ng is not installed (apt-get install -y espeak-ng)",
)
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
NUMS = {"train": 12, "dev": 4, "test": 4}


def _write_noise_and_rir(root):
    """A noise and a room impulse response, made here so the tests need no download."""
    rng = np.random.default_rng(0)
    noise_dir, rir_dir = root / "noise", root / "rirs"
    noise_dir.mkdir(parents=True)
    rir_dir.mkdir(parents=True)
    soundfile.write(str(noise_dir / "hum.wav"), 0.1 * rng.standard_normal(8000), 16000, "PCM_16")
    t = np.arange(2000) / 16000
    rir = np.exp(-t / 0.05) * rng.standard_normal(t.size)
    rir[0] = 1.0
    soundfile.write(str(rir_dir / "room.wav"), 0.5 * rir / np.abs(rir).max(), 16000, "PCM_16")
    return noise_dir, rir_dir


def _generate(out, noise_dir, rir_dir, seed=3, nj=1, nums=NUMS, extra=()):
    synth.main(
        [
            "--output_dir", str(out / "data"),
            "--wav_dir", str(out / "wav"),
            "--num_train", str(nums["train"]),
            "--num_dev", str(nums["dev"]),
            "--num_test", str(nums["test"]),
            "--seed", str(seed),
            "--nj", str(nj),
            "--noise_dir", str(noise_dir),
            "--rir_dir", str(rir_dir),
            "--noise_prob", "0.7",
            "--rir_prob", "0.5",
            "--progress", "0",
            *extra,
        ]
    )
    return out / "data"


def _read_kv(path):
    pairs = []
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        pairs.append((key, value))
    return pairs


def _wav_digests(data_dir):
    """{utt: sha1 of the wav file bytes} of a data dir."""
    return {
        utt: hashlib.sha1(Path(path).read_bytes()).hexdigest()
        for utt, path in _read_kv(data_dir / "wav.scp")
    }


@pytest.fixture(scope="module")
def augmentation(tmp_path_factory):
    return _write_noise_and_rir(tmp_path_factory.mktemp("aug"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, augmentation):
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    return _generate(tmp_path_factory.mktemp("corpus"), *augmentation, nj=2)


# ---------------------------------------------------------------------------------------
# Prompt text (no synthesizer needed)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, words",
    [
        (0, "ZERO"),
        (13, "THIRTEEN"),
        (40, "FORTY"),
        (154, "ONE HUNDRED FIFTY FOUR"),
        (7002, "SEVEN THOUSAND TWO"),
        (25312, "TWENTY FIVE THOUSAND THREE HUNDRED TWELVE"),
    ],
)
def test_number_words(n, words):
    assert " ".join(synth.number_words(n)) == words


@pytest.mark.parametrize(
    "n, words",
    [(1, "FIRST"), (12, "TWELFTH"), (20, "TWENTIETH"), (21, "TWENTY FIRST"), (30, "THIRTIETH"),
     (23, "TWENTY THIRD"), (8, "EIGHTH")],
)
def test_ordinal_words(n, words):
    assert " ".join(synth.ordinal_words(n)) == words


def test_year_words():
    rng = np.random.default_rng(0)
    assert " ".join(synth.year_words(1905, rng)) == "NINETEEN OH FIVE"
    assert " ".join(synth.year_words(1962, rng)) == "NINETEEN SIXTY TWO"
    assert " ".join(synth.year_words(1900, rng)) == "NINETEEN HUNDRED"
    assert " ".join(synth.year_words(2004, rng)) == "TWO THOUSAND FOUR"


def test_prompts_are_upper_case_words_and_speakable():
    rng = np.random.default_rng(1)
    for _ in range(500):
        _, words = synth.random_prompt(rng)
        assert words and all(re.fullmatch(r"[A-Z]+", w) for w in words), words
        spoken = synth.spoken_text(words).split()
        # No digits or punctuation reach the synthesizer: it would read them its own way.
        assert not any(re.search(r"[0-9.,]", s) for s in spoken), spoken


def test_prompt_kinds_limits_the_kinds_drawn():
    args = synth.get_parser().parse_args(["--prompt_kinds", "digits, command"])
    assert args.prompt_kinds == ("digits", "command")
    rng = np.random.default_rng(2)
    kinds = {synth.random_prompt(rng, args.prompt_kinds)[0] for _ in range(200)}
    assert kinds == {"digits", "command"}
    # Without the option every kind is drawn, as the generator always drew them (same corpus).
    rng, reference = np.random.default_rng(3), np.random.default_rng(3)
    weights = np.array([w for _, _, w in synth.PROMPTS])
    drawn = set()
    for _ in range(400):
        kind, words = synth.random_prompt(rng)
        ref_kind, make, _ = synth.PROMPTS[int(reference.choice(len(synth.PROMPTS), p=weights / weights.sum()))]
        assert (kind, words) == (ref_kind, make(reference))
        drawn.add(kind)
    assert drawn == {k for k, _, _ in synth.PROMPTS}
    with pytest.raises(SystemExit):
        synth.get_parser().parse_args(["--prompt_kinds", "digits,names"])


def test_variant_families_group_versions_of_one_voice():
    variants = {
        "iven": ("other", "formant 0 52"),
        "iven3": ("other", "formant 0 52"),
        "m1": ("other", "formant 0 98"),
        "m2": ("other", "formant 0 100"),
        "Andy": ("other", "formant 0 80"),
        "AnxiousAndy": ("other", "formant 0 81"),
        "Diogo": ("other", "formant 0 111"),
        "Hugo": ("other", "formant 0 111"),
        "klatt": ("other", ""),
        "david": ("other", ""),
    }
    family = synth.variant_families(variants)
    assert family["iven3"] == family["iven"]
    assert family["AnxiousAndy"] == family["Andy"]
    assert family["Hugo"] == family["Diogo"]
    assert family["m1"] != family["m2"]
    # Default formants alone do not make two variants the same voice.
    assert family["klatt"] != family["david"]


def test_split_voices_keeps_variant_families_apart():
    variants = {f"m{i}": ("other", f"formant {i}") for i in range(1, 9)}
    variants.update({f"f{i}": ("female", f"formant 9{i}") for i in range(1, 6)})
    variants.update({"iven": ("other", "x"), "iven2": ("other", "x"), "iven3": ("other", "x")})
    accents = ["en-us", "en-gb"]
    split = synth.split_voices(accents, variants, ["mb-us1", "mb-us2"], 0, 0.2, 0.2)
    family = synth.variant_families(variants)
    seen = {}
    for name, speakers in split.items():
        assert speakers, name
        fams = {family.get(v.split("+")[-1], v) for _, v in speakers}
        seen[name] = fams
        genders = {variants[v.split("+")[-1]][0] for _, v in speakers if "+" in v}
        assert genders == {"female", "other"}, (name, genders)
    assert not seen["train"] & seen["test"]
    assert not seen["train"] & seen["dev"]
    assert not seen["dev"] & seen["test"]
    all_variants = {v.split("+")[-1] for s in split.values() for _, v in s}
    assert all_variants == set(variants) | {"mb-us1", "mb-us2"}
    # Every accent is used with every variant of a split.
    for speakers in split.values():
        names = [v for _, v in speakers if "+" in v]
        assert len(names) == len(accents) * len({n.split("+")[1] for n in names})
    assert split == synth.split_voices(accents, variants, ["mb-us1", "mb-us2"], 0, 0.2, 0.2)


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(SystemExit) as err:
        synth.main(["--output_dir", str(tmp_path / "d"), "--num_train", "0"])
    assert err.value.code != 0
    with pytest.raises(SystemExit):  # noise wanted but no source given
        synth.main(["--output_dir", str(tmp_path / "d"), "--num_train", "3"])
    with pytest.raises(SystemExit):
        synth.main(["--output_dir", str(tmp_path / "d"), "--snr_range", "30", "5",
                    "--noise_prob", "0", "--rir_prob", "0"])
    assert not (tmp_path / "d").exists()


def test_noise_tarball_members_are_read(tmp_path, augmentation):
    noise_dir, rir_dir = augmentation
    tar_path = tmp_path / "downloads.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(noise_dir / "hum.wav", arcname="downloads/noise/hum.wav")
        tar.add(rir_dir / "room.wav", arcname="downloads/rirs/room.wav")
        tar.add(rir_dir / "room.wav", arcname="downloads/an4/wav/other.wav")
    noises, rirs = synth.load_augmentation(noise_tarball=str(tar_path))
    assert list(noises) == ["hum.wav"] and list(rirs) == ["room.wav"]
    expected, _ = soundfile.read(str(noise_dir / "hum.wav"))
    np.testing.assert_allclose(noises["hum.wav"], expected)
    with pytest.raises(SystemExit, match="no such file"):
        synth.load_augmentation(noise_tarball=str(tmp_path / "missing.tar.gz"))


def test_missing_espeak_is_a_clear_error(tmp_path, augmentation):
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"))
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--output_dir", str(out), "--num_train", "2",
         "--noise_dir", str(augmentation[0]), "--rir_dir", str(augmentation[1])],
        env=env, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "espeak-ng" in proc.stderr and "apt-get install -y espeak-ng" in proc.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Generated corpus
# ---------------------------------------------------------------------------------------
@needs_espeak
def test_letter_a_is_said_as_a_letter_name():
    # In a run of letters, plain "A" would be read as the article (schwa "a#").
    out = subprocess.run(
        [ESPEAK, "-v", "en-us", "-q", "-x", synth.spoken_text(["M", "A", "R", "Y"])],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "a#" not in out and "eI" in out


@needs_espeak
def test_kaldi_dirs_are_valid(corpus):
    for split, n in NUMS.items():
        d = corpus / split
        tables = {f: _read_kv(d / f) for f in KALDI_FILES}
        keys = [k for k, _ in tables["wav.scp"]]
        assert len(keys) == n and len(set(keys)) == n
        for f in ("wav.scp", "text", "utt2spk"):
            assert [k for k, _ in tables[f]] == keys, f
            assert keys == sorted(keys), f  # byte order, as `LC_ALL=C sort`
        utt2spk = dict(tables["utt2spk"])
        # Utterance ids start with the speaker id, so sorting by utterance groups speakers.
        assert all(u.startswith(s + "-") for u, s in utt2spk.items())
        speakers_in_order = [s for _, s in tables["utt2spk"]]
        assert speakers_in_order == sorted(speakers_in_order)
        spk2utt = {s: u.split() for s, u in tables["spk2utt"]}
        assert [s for s, _ in tables["spk2utt"]] == sorted(spk2utt)
        assert sorted(u for us in spk2utt.values() for u in us) == keys
        assert all(utt2spk[u] == s for s, us in spk2utt.items() for u in us)
        assert all(re.fullmatch(r"[A-Za-z0-9_]+", s) for s in spk2utt)
    # No stray temporary directories are left next to the data dirs.
    assert sorted(p.name for p in corpus.iterdir()) == ["dev", "test", "train"]


@needs_espeak
def test_audio_matches_transcripts(corpus):
    manifest = {}
    for split in NUMS:
        for line in (corpus.parent / "wav" / split / "manifest.jsonl").read_text().splitlines():
            spec = json.loads(line)
            manifest[spec["utt_id"]] = spec
    for split in NUMS:
        text = dict(_read_kv(corpus / split / "text"))
        for utt, path in _read_kv(corpus / split / "wav.scp"):
            assert Path(path).is_absolute() and Path(path).is_file()
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            audio, _ = soundfile.read(path)
            assert 0.3 < audio.size / 16000 < 15
            assert 20 * np.log10(np.sqrt(np.mean(audio**2))) > -45  # not silent
            assert np.abs(audio).max() < 1.0  # not clipped
            words = text[utt]
            assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", words), words
            spec = manifest[utt]
            assert spec["text"] == words
            assert spec["spoken"] == synth.spoken_text(words.split())
    kinds = {spec["kind"] for spec in manifest.values()}
    assert len(kinds) >= 4, kinds
    assert any(s["noise"] for s in manifest.values()) and any(s["rir"] for s in manifest.values())


def test_augmentation_shares_follow_the_options():
    args = synth.get_parser().parse_args(["--noise_prob", "0.7", "--rir_prob", "0.4"])
    speakers = [("enus_m1", "en-us+m1"), ("engb_f2", "en-gb+f2")]
    specs = [
        synth.make_spec(args, "train", i, speakers, ["n.wav"], {"n.wav": 1000}, ["r.wav"], {})
        for i in range(1000)
    ]
    assert abs(np.mean([s["noise"] is not None for s in specs]) - 0.7) < 0.05
    assert abs(np.mean([s["rir"] is not None for s in specs]) - 0.4) < 0.05
    snrs = [s["snr_db"] for s in specs if s["noise"]]
    assert 5 <= min(snrs) and max(snrs) <= 30
    assert all(0 <= s["noise_offset"] < 1000 for s in specs if s["noise"])
    # Without noise or reverberation data the other fields stay the same.
    clean = [synth.make_spec(args, "train", i, speakers, [], {}, [], {}) for i in range(50)]
    for a, b in zip(clean, specs):
        assert a["noise"] is None and a["rir"] is None
        assert (a["text"], a["voice"], a["rate"], a["pitch"]) == (b["text"], b["voice"], b["rate"], b["pitch"])


@needs_espeak
def test_test_and_dev_voices_are_unseen_in_training(corpus):
    voice_split = json.loads((corpus.parent / "wav" / "voice_split.json").read_text())
    speakers = {s: set(voice_split["splits"][s]) for s in NUMS}
    variants = {s: {v.split("+")[-1] for v in voice_split["splits"][s].values()} for s in NUMS}
    for a, b in (("train", "test"), ("train", "dev"), ("dev", "test")):
        assert not speakers[a] & speakers[b]
        assert not variants[a] & variants[b]
    for split in NUMS:
        used = {s for _, s in _read_kv(corpus / split / "utt2spk")}
        assert used <= speakers[split]


@needs_espeak
def test_same_seed_gives_identical_corpus(corpus, tmp_path, augmentation):
    again = _generate(tmp_path, *augmentation, nj=1)  # other --nj, other directory
    for split in NUMS:
        assert (again / split / "text").read_bytes() == (corpus / split / "text").read_bytes()
        assert (again / split / "utt2spk").read_bytes() == (corpus / split / "utt2spk").read_bytes()
        assert _wav_digests(again / split) == _wav_digests(corpus / split)
    other = _generate(tmp_path / "other", *augmentation, seed=4,
                      nums={"train": 4, "dev": 0, "test": 0})
    assert (other / "train" / "text").read_text() != (corpus / "train" / "text").read_text()


@needs_espeak
def test_rerun_resumes_and_keeps_existing_audio(tmp_path, augmentation):
    nums = {"train": 4, "dev": 2, "test": 2}
    data = _generate(tmp_path, *augmentation, nums=nums)
    before = {
        utt: os.stat(path).st_ino
        for s in nums for utt, path in _read_kv(data / s / "wav.scp")
    }
    # A partial file of an interrupted run is cleaned away.
    wav_train = tmp_path / "wav" / "train"
    (wav_train / ".x-train-000009.0123456789.wav.99.tmp").write_bytes(b"partial")
    data = _generate(tmp_path, *augmentation, nums={"train": 6, "dev": 2, "test": 2})
    after = {
        utt: os.stat(path).st_ino
        for s in nums for utt, path in _read_kv(data / s / "wav.scp")
    }
    assert len(_read_kv(data / "train" / "wav.scp")) == 6
    assert all(after[u] == ino for u, ino in before.items())  # not rewritten
    assert not list(wav_train.glob(".*.tmp"))
    # Changing a generation option regenerates, and removes the outdated audio.
    old_paths = {p for s in nums for _, p in _read_kv(data / s / "wav.scp")}
    data = _generate(tmp_path, *augmentation, nums=nums, extra=["--rate_range", "150", "150"])
    paths = {p for s in nums for _, p in _read_kv(data / s / "wav.scp")}
    assert not paths & old_paths
    assert len(list((tmp_path / "wav").glob("*/*.wav"))) == sum(nums.values())


@needs_espeak
def test_data_sh_prepares_the_recipe_data(tmp_path, augmentation):
    noise_dir, rir_dir = augmentation
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["bash", str(DATA_SH), "--nj", "1", "--num_train", "3", "--num_dev", "1",
           "--num_test", "1", "--python", sys.executable, "--synth_opts", "--progress 0"]
    proc = subprocess.run(cmd + ["--noise_dir", str(noise_dir), "--rir_dir", str(rir_dir)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for split, n in (("train", 3), ("dev", 1), ("test", 1)):
        assert len((tmp_path / "data" / split / "text").read_text().splitlines()) == n
    assert list((tmp_path / "downloads" / "synth_an4" / "train").glob("*.wav"))
    proc = subprocess.run(cmd + ["--mini_an4_tarball", str(tmp_path / "nope.tar.gz")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "nope.tar.gz: no such file" in proc.stdout + proc.stderr
