"""The run directory's records, temporary names and lock (pure modules, milliseconds)."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from comflp_espnet import records, runlock
from comflp_espnet.atomic import atomic_output_dir, is_temporary_name, remove_temporaries
from comflp_espnet.rundir import DocumentError, RunDir, eval_key, parse_list, pruned_key, read_proposals, read_winner


def made(options=None, **inputs):
    return records.made_from(inputs, options or {})


def test_record_of_a_directory_is_current_until_anything_changes(tmp_path):
    out = tmp_path / "cand01"
    out.mkdir()
    (out / "config.yaml").write_text("a: 1\n")
    (out / "model.pth").write_bytes(b"\x00" * 1000)
    expected = made({"prune": [2, 3]}, model="abc")
    assert records.check(out, expected).state == records.MISSING
    record = records.write_record(out, expected, seconds=1.25, info={"num_utts": 3})
    assert sorted(record.files) == ["cand01/config.yaml", "cand01/model.pth"]
    status = records.check(out, expected)
    assert status.current and status.record.seconds == 1.25 and status.record.info == {"num_utts": 3}

    stale = records.check(out, made({"prune": [2, 4]}, model="abc"))
    assert stale.state == records.STALE and "option prune: [2, 3] -> [2, 4]" in stale.reason
    assert "input model changed" in records.check(out, made({"prune": [2, 3]}, model="xyz")).reason

    (out / "model.pth").write_bytes(b"\x00" * 999)  # truncated
    damaged = records.check(out, expected)
    assert damaged.state == records.DAMAGED and "cand01/model.pth changed or damaged" in damaged.reason
    (out / "model.pth").unlink()
    assert "lacks" in records.check(out, expected).reason


def test_same_content_gives_the_same_digest(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("same\n")
    ra = records.write_record(tmp_path / "a", made(model="m"))
    rb = records.write_record(tmp_path / "b", made(model="m"))
    assert ra.digest != rb.digest  # the file names differ ("a/x", "b/x")
    (tmp_path / "a" / "x").write_text("same\n")  # rewritten, same bytes
    assert records.write_record(tmp_path / "a", made(model="m")).digest == ra.digest


def test_an_output_without_record_or_with_a_broken_one_is_not_current(tmp_path):
    out = tmp_path / "proposals.json"
    out.write_text("{}")
    assert records.check(out, made()).reason == "exists but has no record (its maker did not finish)"
    records.record_path(out).write_text("{not json")
    assert records.check(out, made()).state == records.DAMAGED


def test_pending_record_means_resume_with_the_same_inputs(tmp_path):
    out = tmp_path / "finetune"
    records.write_pending(out, made(winner="w1"))
    assert records.check(out, made(winner="w1")).state == records.PENDING
    assert records.check(out, made(winner="w2")).state == records.STALE


def test_temporaries_of_a_killed_writer_are_recognised_and_removed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(tmp_path / "cand01") as tmp:
            (tmp / "x").write_text("half")
            raise KeyboardInterrupt  # cleaned up when the exception reaches the context
    assert list(tmp_path.iterdir()) == []
    # A kill -9 gives no chance to clean up: the next run does.
    (tmp_path / "cands" / ".cand02.tmpab_1x").mkdir(parents=True)
    (tmp_path / "cands" / ".models.scp.tmp").write_text("")
    (tmp_path / ".x.zip.tmp.zip").write_text("")
    (tmp_path / "cands" / ".cand02.record.json").write_text("{}")
    (tmp_path / "cands" / "cand01").mkdir()
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".cand02.tmpab_1x", ".models.scp.tmp", ".x.zip.tmp.zip"]
    assert sorted(p.name for p in (tmp_path / "cands").iterdir()) == [".cand02.record.json", "cand01"]
    assert not is_temporary_name(".lock") and not is_temporary_name(".dist_init_abc")


def test_layout_and_documents(tmp_path):
    run = RunDir(tmp_path / "comflp")
    t = run.tag("dc_dp_prune2")
    assert t.models_scp == tmp_path / "comflp/dc_dp_prune2/candidates/models.scp"
    assert run.states_job(2) == tmp_path / "comflp/states/logdir/output.2"
    assert t.fine_search_json == tmp_path / "comflp/dc_dp_prune2/fine_search/fine_search.json"
    dd = run.decode_evals("0123456789abcdef")
    assert dd.keys(3) == tmp_path / "comflp/fine_evals/decode_01234567/logdir/keys.3.scp"
    ev = run.proxy_evals("ctc_greedy", "fedcba9876543210")
    assert ev.entry(eval_key([7, 2, 3])) == tmp_path / "comflp/fine_evals/ctc_greedy_fedcba98/rm02-03-07"
    assert ev.job(2) == ev.root / "logdir/output.2"
    assert eval_key([]) == "unpruned"
    assert parse_list("6, 3 6 2") == ["6", "3", "2"]
    assert pruned_key([7, 2, 3]) == "rm02-03-07"
    t.root.mkdir(parents=True)
    t.proposals.write_text(json.dumps({"proposals": [{"rank": 2, "pruned": [1]}, {"rank": 1, "pruned": [3]}]}))
    assert list(read_proposals(t.proposals).named()) == ["cand01", "cand02"]
    t.scores.mkdir()
    (t.scores / "winner").write_text("../etc\n")
    with pytest.raises(DocumentError, match="not a candidate name"):
        read_winner(t.scores)


HOLD = textwrap.dedent("""
    import os, sys, time
    from comflp_espnet import runlock
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    runlock.acquire(fd, sys.argv[1], os.getpid(), "run.sh --stage 17 (holder)")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_lock_names_the_holder_and_is_taken_over_when_it_dies(tmp_path):
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), "30"], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert holder.stdout.readline().strip() == "locked"
    fd = os.open(lock, os.O_RDWR)
    try:
        with pytest.raises(runlock.LockBusy) as e:
            runlock.acquire(fd, lock, os.getpid(), "second")
        assert f"pid {holder.pid}" in str(e.value) and "run.sh --stage 17 (holder)" in str(e.value)
        start = time.monotonic()
        with pytest.raises(runlock.LockBusy, match="waited 0.5 s"):
            runlock.acquire(fd, lock, os.getpid(), "second", wait_seconds=0.5)
        assert time.monotonic() - start >= 0.5
        holder.kill()  # kill -9: the kernel frees the lock, the description stays
        holder.wait()
        previous = runlock.acquire(fd, lock, os.getpid(), "second")
        assert previous["pid"] == holder.pid
        assert runlock.read_holder(lock)["command"] == "second"
        runlock.release(fd)
        assert runlock.read_holder(lock) is None
    finally:
        os.close(fd)
        if holder.poll() is None:
            holder.kill()
