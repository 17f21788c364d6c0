"""Kaldi-style data directories: validation, seeded subsets, key splits, subset CLI."""

import pytest

from comflp_espnet.bin import comflp_subset
from comflp_espnet.datadir import (
    DataDirError,
    make_subset,
    read_kaldi_map,
    select_subset,
    split_keys,
    utterance_ids,
)


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _data_dir(path, num=10, with_extras=True):
    path.mkdir(parents=True)
    keys = [f"spk{i % 3}-u{i:02d}" for i in range(num)]
    _write(path / "wav.scp", [f"{k} /audio/{k}.wav" for k in keys])
    _write(path / "text", [f"{k} WORDS OF {k}" for k in keys])
    _write(path / "utt2spk", [f"{k} {k.split('-')[0]}" for k in keys])
    if with_extras:
        _write(path / "utt2num_samples", [f"{k} {1000 + i}" for i, k in enumerate(keys)])
        _write(path / "spk2gender", ["spk0 f", "spk1 m", "spk2 f"])
        (path / "feats_type").write_text("raw\n")
    return keys


def test_subset_is_deterministic_and_filters_every_file(tmp_path):
    keys = _data_dir(tmp_path / "src")
    first = make_subset(tmp_path / "src", tmp_path / "a", num_utts=4, seed=1)
    second = make_subset(tmp_path / "src", tmp_path / "b", num_utts=4, seed=1)
    other = make_subset(tmp_path / "src", tmp_path / "c", num_utts=4, seed=2)
    assert first == second and first != other
    assert len(first) == 4 and first == sorted(first) and set(first) <= set(keys)
    for name in ("wav.scp", "text", "utt2spk", "utt2num_samples"):
        entries = read_kaldi_map(tmp_path / "a" / name)
        assert list(entries) == first, name
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    spk2utt = read_kaldi_map(tmp_path / "a" / "spk2utt")
    assert sorted(u for v in spk2utt.values() for u in v.split()) == first
    assert set(read_kaldi_map(tmp_path / "a" / "spk2gender")) == set(spk2utt)
    assert (tmp_path / "a" / "feats_type").read_text() == "raw\n"
    assert utterance_ids(tmp_path / "a") == first


def test_subset_order_independent_of_file_order():
    keys = [f"u{i}" for i in range(20)]
    assert select_subset(keys, 5, 0) == select_subset(list(reversed(keys)), 5, 0)


def test_exclusion_and_all(tmp_path):
    keys = _data_dir(tmp_path / "src")
    held = make_subset(tmp_path / "src", tmp_path / "held", num_utts=3, seed=0)
    rest = make_subset(tmp_path / "src", tmp_path / "calib", num_utts=0, seed=0,
                       exclude_data_dirs=[tmp_path / "held"])
    assert sorted(held + rest) == sorted(keys) and not set(held) & set(rest)
    with pytest.raises(DataDirError, match="only 7 available"):
        make_subset(tmp_path / "src", tmp_path / "x", num_utts=8, seed=0,
                    exclude_data_dirs=[tmp_path / "held"])
    assert not (tmp_path / "x").exists()


def test_segments_filter_recordings(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "wav.scp", ["rec1 /a/rec1.wav", "rec2 /a/rec2.wav"])
    _write(src / "segments", ["rec1-s1 rec1 0.0 1.0", "rec1-s2 rec1 1.0 2.0",
                              "rec2-s1 rec2 0.0 1.0"])
    _write(src / "text", ["rec1-s1 A", "rec1-s2 B", "rec2-s1 C"])
    _write(src / "utt2spk", ["rec1-s1 rec1", "rec1-s2 rec1", "rec2-s1 rec2"])
    write = make_subset(src, tmp_path / "dst", num_utts=0, seed=0,
                        exclude_data_dirs=[])
    assert write == ["rec1-s1", "rec1-s2", "rec2-s1"]
    _write(src / "text", ["rec1-s1 A", "rec1-s2 B"])
    with pytest.raises(DataDirError, match="1 key\\(s\\) only in segments"):
        utterance_ids(src)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("text_missing_utt", "disagree"),
        ("empty_wav", "is empty"),
        ("no_wav", "wav.scp: no such file"),
        ("duplicate", "duplicated key"),
        ("utt2spk_mismatch", "utt2spk"),
    ],
)
def test_bad_data_dirs(tmp_path, damage, message):
    src = tmp_path / "src"
    keys = _data_dir(src, with_extras=False)
    if damage == "text_missing_utt":
        _write(src / "text", [f"{k} X" for k in keys[1:]])
    elif damage == "empty_wav":
        _write(src / "wav.scp", [])
    elif damage == "no_wav":
        (src / "wav.scp").unlink()
    elif damage == "duplicate":
        _write(src / "text", [f"{k} X" for k in keys] + [f"{keys[0]} Y"])
    else:
        _write(src / "utt2spk", [f"{k} s" for k in keys[:-1]])
    with pytest.raises(DataDirError, match=message):
        utterance_ids(src)
    with pytest.raises(SystemExit) as excinfo:
        comflp_subset.main(["--data_dir", str(src), "--num_utts", "2",
                            "--output_dir", str(tmp_path / "out")])
    assert excinfo.value.code not in (0, None)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_subset_cli_too_many_and_ok(tmp_path):
    _data_dir(tmp_path / "src", num=5)
    with pytest.raises(SystemExit) as excinfo:
        comflp_subset.main(["--data_dir", str(tmp_path / "src"), "--num_utts", "6",
                            "--output_dir", str(tmp_path / "out")])
    assert "only 5 available" in str(excinfo.value.code)
    assert not (tmp_path / "out").exists()
    comflp_subset.main(["--data_dir", str(tmp_path / "src"), "--num_utts", "5",
                        "--seed", "3", "--output_dir", str(tmp_path / "out")])
    assert len(read_kaldi_map(tmp_path / "out" / "wav.scp")) == 5


def test_split_keys():
    shares = split_keys([str(i) for i in range(7)], 3)
    assert [len(s) for s in shares] == [3, 2, 2]
    assert sum(shares, []) == [str(i) for i in range(7)]
    with pytest.raises(ValueError):
        split_keys(["a"], 2)
