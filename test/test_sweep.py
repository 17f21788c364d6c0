"""The sweep over pruning depths (comflp_espnet.sweep): its options, the depths the constraints
allow, the choice of a depth by --comflp_max_degradation, the table, and the plot."""

import json

import pytest

from comflp_espnet import sweep
from comflp_espnet.sweep import SweepError


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("text, expected", [("1:11", (1, 11)), ("3:3", (3, 3)), (" 2 : 5 ", (2, 5))])
def test_sweep_range_is_parsed(text, expected):
    assert sweep.parse_sweep_range(text, 12) == expected


@pytest.mark.parametrize("text, message", [
    ("1-11", "must be A:B"), ("a:b", "must be A:B"), ("3", "must be A:B"), ("", "must be A:B"),
    ("0:4", "need 1 <= A <= B"), ("5:2", "need 1 <= A <= B"),
    ("1:12", "the encoder has 12 layers, so at most 11 can be removed"),
])
def test_bad_sweep_range_names_the_option(text, message):
    with pytest.raises(SweepError, match=message) as info:
        sweep.parse_sweep_range(text, 12)
    assert "--comflp_sweep_range" in str(info.value)


@pytest.mark.parametrize("text, expected", [("", None), (None, None), ("1", 1.0), ("0", 0.0), ("2.5", 2.5)])
def test_max_degradation_is_parsed(text, expected):
    assert sweep.parse_max_degradation(text) == expected


@pytest.mark.parametrize("text", ["-1", "abc", "nan", "inf"])
def test_bad_max_degradation_names_the_option(text):
    with pytest.raises(SweepError, match="--comflp_max_degradation must be a number >= 0"):
        sweep.parse_max_degradation(text)


# ---------------------------------------------------------------------------- depths
def test_a_sweep_is_every_depth_from_1_to_L_minus_1():
    assert sweep.sweep_depths(12) == (list(range(1, 12)), [])
    assert sweep.sweep_depths(12, "2:4") == ([2, 3, 4], [])


def test_depths_the_constraints_rule_out_are_skipped_with_a_reason():
    depths, skipped = sweep.sweep_depths(6, protect=[1, 2], keep_last=True)
    assert depths == [1, 2, 3]  # layers 3, 4, 5 removable
    assert [k for k, _ in skipped] == [4, 5]
    assert "--comflp_protect 1,2" in skipped[0][1] and "3 removable layers" in skipped[0][1]


@pytest.mark.parametrize("allowed, max_run, expected", [
    (range(1, 13), None, 12), (range(1, 13), 1, 6), (range(1, 13), 2, 8), (range(1, 13), 3, 9),
    ([1, 2, 3, 5, 6, 7], 1, 4), ([2], 1, 1), ([], 3, 0),
])
def test_most_layers_removable_under_max_run(allowed, max_run, expected):
    assert sweep.max_removable(list(allowed), max_run) == expected


def test_max_run_limits_the_depths_of_a_sweep():
    depths, skipped = sweep.sweep_depths(6, max_run=1)
    assert depths == [1, 2, 3] and [k for k, _ in skipped] == [4, 5]
    assert "--comflp_max_run 1" in skipped[0][1]


def test_method_specific_depths():
    # angular removes one block: protecting layer 3 of 6 leaves blocks of 2 and 3 layers.
    depths, _ = sweep.sweep_depths(6, method="angular", protect=[3])
    assert depths == [1, 2, 3]
    # drop_last removes the last k layers: with keep_last none is possible.
    depths, skipped = sweep.sweep_depths(4, method="drop_last", keep_last=True)
    assert depths == [] and len(skipped) == 3


# ---------------------------------------------------------------------------- the choice
def depth(k, num_err, num_ref=200, tag=None):
    return {"tag": tag or f"dc_dp_prune{k}", "num_prune": k, "num_err": num_err, "num_ref": num_ref,
            "error": 100.0 * num_err / num_ref}


ORIGINAL = {"num_err": 20, "num_ref": 200, "error": 10.0}


def test_the_deepest_winner_within_the_tolerance_is_chosen():
    # Errors per depth: 10.5, 11.0, 12.0, 10.0 (k = 4 is back within), 15.0.  With 1 point:
    # k = 1, 2 and 4 qualify (k = 2 exactly at the limit); the deepest of them, k = 4, is chosen.
    depths = [depth(1, 21), depth(2, 22), depth(3, 24), depth(4, 20), depth(5, 30)]
    choice = sweep.choose_depth(depths, ORIGINAL, 1.0)
    assert choice["tag"] == "dc_dp_prune4" and choice["num_prune"] == 4
    assert "10.00% + 1 = 11.00%" in choice["reason"] and "k = 5 15.00%" in choice["reason"]
    # With 0.5 points only k = 1 (10.5, at the limit) and k = 4 qualify: still k = 4.
    assert sweep.choose_depth(depths, ORIGINAL, 0.5)["num_prune"] == 4
    # Without k = 4 the limit decides: 1 point -> k = 2 (exactly at the limit), 0.5 -> k = 1, 0 -> none.
    without4 = [d for d in depths if d["num_prune"] != 4]
    assert sweep.choose_depth(without4, ORIGINAL, 1.0)["num_prune"] == 2
    assert sweep.choose_depth(without4, ORIGINAL, 0.5)["num_prune"] == 1
    assert sweep.choose_depth(without4, ORIGINAL, 0.0)["tag"] is None


def test_equal_errors_go_to_the_deeper_depth():
    depths = [depth(2, 21), depth(3, 21), depth(1, 21)]
    assert sweep.choose_depth(depths, ORIGINAL, 0.5)["num_prune"] == 3


def test_the_limit_is_exact_in_error_counts():
    # 10.1% + 1.0 in floating point is 11.099999999999998; 111 errors of 1000 are 11.1%: within.
    original = {"num_err": 101, "num_ref": 1000, "error": 10.1}
    assert sweep.within({"num_err": 111, "num_ref": 1000, "error": 11.1}, original, 1.0)
    assert not sweep.within({"num_err": 112, "num_ref": 1000, "error": 11.2}, original, 1.0)


def test_none_qualifies_chooses_nothing_and_says_why():
    depths = [depth(1, 30), depth(2, 40)]
    choice = sweep.choose_depth(depths, ORIGINAL, 1.0)
    assert choice["tag"] is None
    assert "no depth is within 1 points" in choice["reason"] and "k = 1, has 15.00%" in choice["reason"]
    tags, why = sweep.final_tags([d["tag"] for d in depths], True, choice)
    assert tags == [] and "--comflp_max_degradation 1" in why and "nothing is chosen" in why


def test_which_searches_go_on_to_stages_19_to_21():
    tags = ["a_prune2", "a_prune4"]
    no_choice = sweep.choose_depth([depth(2, 20, tag="a_prune2")], ORIGINAL, None)
    assert sweep.final_tags(tags, False, no_choice) == (tags, "")        # a list: every search
    listed, why = sweep.final_tags(tags, True, no_choice)                 # a sweep: the user picks
    assert listed == [] and "--comflp_num_prune k" in why
    chosen = sweep.choose_depth([depth(2, 20, tag="a_prune2"), depth(4, 25, tag="a_prune4")], ORIGINAL, 1.0)
    assert sweep.final_tags(tags, True, chosen)[0] == ["a_prune2"]


# ---------------------------------------------------------------------------- the table
def example_document(max_degradation=1.0):
    timing = {"device": "cpu", "num_threads": 1}
    # The speed-up compares CPU times (every decode ran on the CPU and recorded them).
    original = dict(ORIGINAL, cer=10.0, wer=30.0, params=4_000_000,
                    timing=dict(timing, rtf=0.2, encoder_share=0.6, cpu_rtf=0.1, encoder_cpu_share=0.5),
                    test={"test": {"cer": 9.0, "wer": 28.0}})
    depths = [
        dict(depth(2, 21), winner="cand03", removed=[5, 9], cer=10.5, wer=31.0, params=3_500_000,
             timing=dict(timing, rtf=0.18, encoder_share=0.45, cpu_rtf=0.08, encoder_cpu_share=0.4),
             test={"test": {"pruned": {"cer": 9.5, "wer": 29.0}, "finetuned": {"cer": 9.1, "wer": 28.5}}}),
        dict(depth(4, 26), winner="cand01", removed=[3, 5, 9, 10], cer=13.0, wer=35.0, params=3_000_000,
             timing=dict(timing, rtf=0.15, encoder_share=0.35, cpu_rtf=0.05, encoder_cpu_share=0.3), test={}),
    ]
    return sweep.build_document(12, "cer", original, depths, max_degradation, True, [(11, "a reason")],
                                fine_set="dev", eval_sets=["test"])


def test_table_values():
    doc = example_document()
    rows = {r["num_prune"]: r for r in doc["depths"]}
    assert rows[2]["layers_kept"] == 10 and rows[4]["layers_kept"] == 8
    assert rows[2]["degradation"] == pytest.approx(0.5) and rows[4]["degradation"] == pytest.approx(3.0)
    assert rows[2]["speedup"] == pytest.approx(1.25) and rows[4]["speedup"] == pytest.approx(2.0)
    assert rows[2]["within"] is True and rows[4]["within"] is False
    assert doc["choice"]["num_prune"] == 2 and doc["final_tags"] == ["dc_dp_prune2"]
    assert rows[2]["chosen"] and not rows[4]["chosen"]
    table = sweep.table_markdown(doc)
    lines = table.splitlines()
    assert lines[0].startswith("|k (removed)|layers kept|removed layers|params (M)|fine CER|fine WER|Δ CER")
    assert "test CER / WER (pruned)|test CER / WER (fine-tuned)|within 1|chosen|" in lines[0]
    # Expected speed-up: 1 / (1 - 0.5 k / 12): k = 2 -> 1.09, k = 4 -> 1.2.
    assert rows[2]["expected_speedup"] == pytest.approx(1.091, abs=1e-3) and rows[4]["expected_speedup"] == 1.2
    assert doc["speed_basis"] == "cpu"
    assert lines[2] == "|0 (original)|12|-|4.00|10.00|30.00|0.00|0.2000|0.1000|50%|1.00x|-|9.0 / 28.0|-|-||"
    assert lines[3] == ("|2|10|5,9|3.50|10.50|31.00|+0.50|0.1800|0.0800|40%|1.25x|1.09x|9.5 / 29.0|9.1 / 28.5|yes|"
                        "**chosen**|")
    assert lines[4] == "|4|8|3,5,9,10|3.00|13.00|35.00|+3.00|0.1500|0.0500|30%|2.00x|1.20x|-|-|no||"
    md = sweep.sweep_markdown(doc)
    assert "**Chosen: k = 2** (dc_dp_prune2, 10 of 12 layers kept)" in md
    assert "- k = 11 skipped: a reason." in md
    assert "all on cpu with 1 thread(s) per job" in md and "of the CPU time" in md
    assert "![CER against layers kept](sweep.png)" in md
    json.dumps(doc)  # the document is plain JSON


def test_without_cpu_times_the_speed_up_is_of_the_wall_clock():
    doc = example_document()
    for item in [doc["original"]] + doc["depths"]:
        del item["timing"]["cpu_rtf"]
    again = sweep.build_document(12, "cer", doc["original"], doc["depths"], 1.0)
    assert again["speed_basis"] == "wall"
    assert again["depths"][0]["speedup"] == pytest.approx(0.2 / 0.18, abs=1e-3)
    assert again["depths"][1]["expected_speedup"] == pytest.approx(1 / (1 - 0.6 * 4 / 12), abs=1e-3)
    assert "of the wall clock" in again["notes"][0]


def test_timings_of_other_devices_or_missing_are_flagged():
    doc = example_document(None)
    doc["depths"][1]["timing"]["num_threads"] = 4
    notes = sweep.timing_notes(doc["original"], doc["depths"])
    assert "not comparable" in notes[0] and "4 thread(s): k = 4" in notes[0]
    doc["depths"][0]["timing"] = {}
    notes = sweep.timing_notes(doc["original"], doc["depths"])
    assert any("No timing recorded for k = 2" in n for n in notes)


def test_without_max_degradation_a_sweep_only_reports():
    doc = example_document(None)
    assert doc["choice"]["tag"] is None and doc["final_tags"] == []
    md = sweep.sweep_markdown(doc)
    assert "No depth chosen (no --comflp_max_degradation)" in md and "--comflp_num_prune <k>" in md
    assert "within" not in sweep.table_markdown(doc).splitlines()[0]


def test_plot_is_a_png(tmp_path):
    from comflp_espnet.sweep_plot import save_sweep_plot

    out = tmp_path / "sweep.png"
    save_sweep_plot(example_document(), out,
                    extra_curves=[{"label": "glp", "layers_kept": [11, 10], "error": [10.2, 10.8]}])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.png"]  # no temporary left


# ---------------------------------------------------------------------------- the run's depths
def tiny_run(tmp_path, **options):
    from comflp_espnet.stages import Options, Run
    from conftest import make_tiny_asr_exp

    exp = tmp_path / "exp" / "m"
    if not (exp / "config.yaml").is_file():
        make_tiny_asr_exp(exp, num_blocks=4, decoder_blocks=1)
    return Run(Options(comflp_dir=str(exp / "comflp"), asr_exp=str(exp), **options))


def test_a_run_sweeps_every_possible_depth_and_logs_the_skipped_ones(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, sweep=True, num_prune="2", protect="1,2")
    with caplog.at_level("INFO"):
        run.read_model(verbose=True)
    assert run.depths == [1, 2] and run.tags == ["dc_dp_prune1", "dc_dp_prune2"]
    assert "sweep: k = 3 skipped: --comflp_protect 1,2 leave(s) 2 removable layers" in caplog.text
    run = tiny_run(tmp_path, sweep_range="2:3")
    run.read_model()
    assert run.depths == [2, 3]


@pytest.mark.parametrize("options, message", [
    ({"sweep_range": "1:4"}, "the encoder has 4 layers, so at most 3 can be removed"),
    ({"sweep": True, "protect": "1,2,3,4"}, "no depth of the sweep (1:3) is possible"),
    ({"sweep": True, "search": "glp"}, "glp's steps give every depth on the way"),
    ({"sweep": True, "search": "none"}, "need a pruning search"),
])
def test_impossible_sweeps_are_errors(tmp_path, monkeypatch, options, message):
    from comflp_espnet.stages import StageError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_run(tmp_path, **options).read_model()


# ---------------------------------------------------------------------------- decode timings
def test_module_timer_counts_the_module_forward_time():
    import time

    import torch

    from comflp_espnet.decoding import ModuleTimer

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.05)
            return x + 1

    outer = torch.nn.Sequential(Slow())
    timer = ModuleTimer(outer[0])
    start = time.perf_counter()
    outer(torch.zeros(2))
    outer(torch.zeros(2))
    total = time.perf_counter() - start
    assert timer.calls == 2 and 0.1 <= timer.seconds <= total
    assert 0 <= timer.cpu_seconds < 0.1  # sleeping takes no CPU time
    timer.remove()
    outer(torch.zeros(2))
    assert timer.calls == 2


def test_merged_decode_info_sums_the_jobs():
    from comflp_espnet.decoding import merged_decode_info

    jobs = [{"name": "m", "device": "cpu", "num_threads": 1, "num_utts": 3, "num_skipped": 0, "decode_time": 1.5,
             "encoder_time": 0.5, "decode_cpu_time": 1.0, "encoder_cpu_time": 0.25, "audio_seconds": 10.0,
             "inference_options": {"beam_size": 2}},
            {"name": "m", "device": "cpu", "num_threads": 1, "num_utts": 2, "num_skipped": 1, "decode_time": 0.5,
             "encoder_time": 0.3, "decode_cpu_time": 0.6, "encoder_cpu_time": 0.15, "audio_seconds": 6.0,
             "inference_options": {"beam_size": 2}}]
    info = merged_decode_info(jobs)
    assert info["num_utts"] == 5 and info["num_skipped"] == 1 and info["jobs"] == 2
    assert info["decode_time"] == 2.0 and info["audio_seconds"] == 16.0
    assert info["rtf"] == pytest.approx(0.125) and info["encoder_share"] == pytest.approx(0.4)
    assert info["cpu_rtf"] == pytest.approx(0.1) and info["encoder_cpu_share"] == pytest.approx(0.25)
    assert info["device"] == "cpu" and info["num_threads"] == 1
    # A job decoded before encoder timings were kept: no encoder share, the RTF still.
    del jobs[1]["encoder_time"]
    info = merged_decode_info(jobs)
    assert info["encoder_time"] is None and info["encoder_share"] is None and info["rtf"] == pytest.approx(0.125)


# ---------------------------------------------------------------------------- the stage script's options
@pytest.fixture(scope="module")
def demo_recipe(tmp_path_factory):
    from test_faults import make_recipe

    return make_recipe(tmp_path_factory.mktemp("sweep_options"))


def stage_script(d, *args):
    from test_faults import run

    # Stage 15 alone on a fresh recipe: the checks run (and log the depths), then it stops
    # before any work because stage 14 has not run.
    return run(d, "--stage", "15", "--stop_stage", "15", *args, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--comflp_sweep_range", "5-2"], "--comflp_sweep_range must be A:B"),
    (["--comflp_sweep_range", "1:4"], "--comflp_sweep_range 1:4: the encoder has 4 layers"),
    (["--comflp_sweep", "yes"], 'expected "true" or "false": --comflp_sweep yes'),
    (["--comflp_max_degradation", "-1"], "--comflp_max_degradation must be a number >= 0"),
    (["--comflp_sweep", "true", "--comflp_search", "glp"], "glp's steps give every depth on the way"),
    (["--comflp_sweep_decode", "some"], "unknown --comflp_sweep_decode 'some'; choose one of: all bracket"),
    (["--comflp_sweep", "true", "--comflp_sweep_decode", "bracket"],
     "--comflp_sweep_decode bracket decodes only the depths around the deepest one within "
     "--comflp_max_degradation, chosen by the proxy, but no --comflp_max_degradation is given"),
])
def test_bad_sweep_options_stop_before_any_work(demo_recipe, args, message):
    r = stage_script(demo_recipe, *args)
    assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
    assert not (demo_recipe / "exp" / "m" / "comflp" / "states").exists()


@pytest.mark.parametrize("args, sweep_depths", [
    # The demo's options hold --comflp_num_prune 2; the later depth option wins.
    (["--comflp_sweep", "true"], "k = 1, 2, 3 of 4 layers"),
    (["--comflp_sweep", "true", "--comflp_protect", "1,2"], "k = 1, 2 of 4 layers"),  # k = 3 ruled out
    (["--comflp_sweep_range", "1:3", "--comflp_num_prune", "1"], None),
    (["--comflp_sweep", "true", "--comflp_keep", "3"], None),
])
def test_the_later_depth_option_wins(demo_recipe, args, sweep_depths):
    r = stage_script(demo_recipe, *args)
    assert "run stage 14 first" in r.stderr, r.stderr[-2000:]
    if sweep_depths is None:
        assert "sweep:" not in r.stderr
    else:
        assert f"sweep: {len(sweep_depths.split(','))} depth(s), {sweep_depths}" in r.stderr
    if "--comflp_protect" in args:
        assert "sweep: k = 3 skipped: --comflp_protect 1,2 leave(s) 2 removable layers" in r.stderr
