"""Batches formed from the whole data set, whole batches per job: the states of stage 14 (and the
proxy scores of stage 17) do not depend on the number of jobs."""

import kaldiio
import numpy as np
import pytest
import soundfile

from comflp_espnet.bin import comflp_dump
from comflp_espnet.job_batches import batch_groups, make_batches, read_lengths, split_batches, write_job_lists
from comflp_espnet.stages import batched_job_lists, dump_batch_size, StageError
from comflp_espnet.state_archive import merge_dumps
from conftest import make_tiny_data_dir


def test_batches_are_sorted_by_length_and_split_whole():
    lengths = {"a": 5, "b": 9, "c": 1, "d": 9, "e": 3, "f": 7, "g": 2}
    batches = make_batches(sorted(lengths), 2, lengths)
    assert batches == [["b", "d"], ["f", "a"], ["e", "g"], ["c"]]
    for nj in (1, 2, 3, 4, 9):
        jobs = split_batches(batches, nj, lengths)
        assert len(jobs) == min(nj, len(batches))
        # Every job is a run of whole batches, in order: concatenated, they are the global order.
        assert [k for job in jobs for k in job] == [k for b in batches for k in b]
        for job in jobs:
            assert job and len(job) % 2 == 0 or job[-1] == "c"
    # Balanced by audio: the long batches do not all go to one job.
    a, b = split_batches(batches, 2, lengths)
    assert (sum(lengths[k] for k in a), sum(lengths[k] for k in b)) == (18, 18)
    # Without lengths the scp order is kept.
    assert make_batches(["x", "y", "z"], 2) == [["x", "y"], ["z"]]
    with pytest.raises(ValueError):
        make_batches(["x"], 0)


def test_batch_groups_keep_positions_when_items_are_missing():
    items = [(0, "a"), (1, "b"), (3, "d"), (4, "e"), (5, "f")]  # position 2 skipped (unreadable)
    assert list(batch_groups(iter(items), 3)) == [["a", "b"], ["d", "e", "f"]]


def test_dump_batch_size_is_read_from_the_dump_args():
    assert dump_batch_size("") == 8
    assert dump_batch_size("--batch_size 3 --num_workers 0") == 3
    assert dump_batch_size("--batch_size=5") == 5
    with pytest.raises(StageError, match="--batch_size must be a positive integer"):
        dump_batch_size("--batch_size 0")


def write_num_samples(data):
    lines = []
    for line in (data / "wav.scp").read_text().splitlines():
        key, path = line.split(maxsplit=1)
        lines.append(f"{key} {soundfile.info(path).frames}\n")
    (data / "utt2num_samples").write_text("".join(lines))


def dump_jobs(config, model_file, data, jobs, work, batch_size):
    """Every job's list dumped by comflp_dump, merged as stage 14 merges them."""
    pattern = work / "wav.JOB.scp"
    write_job_lists(data, ["wav.scp"], jobs, [pattern])
    outs = []
    for n in range(1, len(jobs) + 1):
        out = work / f"output.{n}"
        comflp_dump.main(["--asr_train_config", str(config), "--asr_model_file", str(model_file),
                          "--data_path_and_name_and_type", f"{work}/wav.{n}.scp,speech,sound",
                          "--output_dir", str(out), "--batch_size", str(batch_size)])
        outs.append(out)
    merge_dumps(outs, work)
    return list(kaldiio.load_scp_sequential(str(work / "states.scp")))


def test_states_do_not_depend_on_the_number_of_jobs(tiny_exp_factory, tmp_path):
    config, model_file = tiny_exp_factory("transformer", num_blocks=3)
    data = make_tiny_data_dir(tmp_path / "calib", num_utts=7, seconds=(0.3, 1.2), seed=4)
    write_num_samples(data)
    lengths = read_lengths(data, [line.split()[0] for line in open(data / "wav.scp")])
    results = {}
    for nj in (1, 2, 3):
        jobs = batched_job_lists(data, "wav.scp", nj, 2)
        assert len(jobs) == nj
        results[nj] = dump_jobs(config, model_file, data, jobs, tmp_path / f"nj{nj}", 2)
    reference = results[1]
    # Longest first, as the batches were formed.
    assert [lengths[k] for k, _ in reference] == sorted(lengths.values(), reverse=True)
    for nj in (2, 3):
        assert [k for k, _ in results[nj]] == [k for k, _ in reference]
        for (_, a), (_, b) in zip(results[nj], reference):
            np.testing.assert_array_equal(a, b)
    # The control: cutting the same order into job shares that split a batch (as a plain split
    # of the list does) changes the padding some utterances see, and with it their states.
    order = [k for k, _ in reference]
    uneven = dump_jobs(config, model_file, data, [order[:3], order[3:]], tmp_path / "uneven", 2)
    assert any(not np.array_equal(a, b) for (_, a), (_, b) in zip(uneven, reference))
