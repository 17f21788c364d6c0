import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comflp_espnet import scoring


def counts_of(ref, hyp, unit):
    return scoring.score_texts({"u": ref}, {"u": hyp}, unit)[0].counts


def test_char_tokens_keep_word_boundaries_as_space_symbol():
    assert scoring.tokenize("AB C", "char") == ["A", "B", "<space>", "C"]
    # Whitespace is normalised: no extra tokens for double or edge spaces.
    assert scoring.tokenize("  AB   C ", "char") == ["A", "B", "<space>", "C"]
    assert scoring.tokenize("你好世界", "char") == ["你", "好", "世", "界"]


def test_word_tokens_split_on_whitespace():
    assert scoring.tokenize(" HELLO  big\tWORLD ", "word") == ["HELLO", "big", "WORLD"]


def test_non_linguistic_symbols_are_removed_on_both_units():
    nlsyms = ["<noise>"]
    assert scoring.tokenize("A <noise> B", "word", nlsyms) == ["A", "B"]
    assert scoring.tokenize("A<noise>B", "char", nlsyms) == ["A", "<space>", "B"]
    assert scoring.tokenize("AB <noise>", "char", nlsyms) == ["A", "B"]


def test_unknown_unit_is_rejected():
    with pytest.raises(ValueError, match="unit"):
        scoring.tokenize("A", "phone")


def test_word_counts_of_hand_made_example():
    c = counts_of("A B C D", "A X C", "word")
    assert (c.num_ref, c.corr, c.sub, c.dele, c.ins) == (4, 2, 1, 1, 0)
    assert c.num_err == 2
    assert c.error_rate == pytest.approx(50.0)
    assert c.num_snt_err == 1


def test_char_counts_of_hand_made_example():
    # ref A B C (3 tokens); hyp has an inserted X and a deleted C.
    c = counts_of("ABC", "AXB", "char")
    assert (c.num_ref, c.corr, c.sub, c.dele, c.ins) == (3, 2, 0, 1, 1)


def test_char_and_word_error_rates_differ_for_the_same_pair():
    ref, hyp = "HELLO WORLD", "HELLO WORD"
    wer = counts_of(ref, hyp, "word")
    cer = counts_of(ref, hyp, "char")
    assert wer.error_rate == pytest.approx(50.0)
    # 11 tokens (10 letters + <space>), one deleted letter.
    assert (cer.num_ref, cer.dele, cer.num_err) == (11, 1, 1)
    assert cer.error_rate == pytest.approx(100 / 11)


def test_missing_word_boundary_costs_one_char_error():
    c = counts_of("AB CD", "ABCD", "char")
    assert (c.dele, c.num_err) == (1, 1)


def test_empty_reference_counts_insertions():
    c = counts_of("", "A B", "word")
    assert (c.num_ref, c.ins) == (0, 2)
    assert c.percentages()["Ins"] == pytest.approx(200.0)


def test_missing_hypothesis_scores_all_tokens_as_deletions():
    scores = scoring.score_texts({"a": "X Y", "b": "Z"}, {"b": "Z"}, "word")
    assert scores[0].missing_hyp and not scores[1].missing_hyp
    assert (scores[0].counts.dele, scores[0].counts.corr) == (2, 0)
    assert scoring.total(scores).error_rate == pytest.approx(200 / 3)


def test_summary_column_arithmetic_matches_sclite_definitions():
    refs = {"s1-a": "A B C D", "s1-b": "E F", "s2-c": "G H"}
    hyps = {"s1-a": "A B C D", "s1-b": "E X Y", "s2-c": "H"}
    scores = scoring.score_texts(refs, hyps, "word")
    t = scoring.total(scores)
    # s1-b: E=E, F->X sub, Y inserted; s2-c: G deleted, H correct.
    assert (t.num_snt, t.num_ref, t.corr, t.sub, t.dele, t.ins) == (3, 8, 6, 1, 1, 1)
    assert t.num_snt_err == 2
    pct = t.percentages()
    assert pct["Corr"] + pct["Sub"] + pct["Del"] == pytest.approx(100.0)
    assert pct["Err"] == pytest.approx(pct["Sub"] + pct["Del"] + pct["Ins"])
    assert t.row() == ["3", "8", "75.0", "12.5", "12.5", "12.5", "37.5", "66.7"]

    utt2spk = {k: k.split("-")[0] for k in refs}
    per_spk = scoring.by_speaker(scores, utt2spk)
    assert list(per_spk) == ["s1", "s2"]
    assert per_spk["s1"] + per_spk["s2"] == t
    assert per_spk["s2"].row() == ["1", "2", "50.0", "0.0", "50.0", "0.0", "50.0", "100.0"]


def test_markdown_tables_have_espnet_results_shape():
    scores = scoring.score_texts({"s-a": "A B"}, {"s-a": "A C"}, "word")
    table = scoring.markdown_table([("decode/test", scoring.total(scores))])
    lines = table.splitlines()
    assert lines[0] == "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|"
    assert lines[2] == "|decode/test|1|2|50.0|50.0|0.0|0.0|50.0|100.0|"

    summary = scoring.summary_table(scores, {"s-a": "s"}).splitlines()
    assert summary[0] == "|SPKR|#Snt|#Wrd|Corr|Sub|Del|Ins|Err|S.Err|"
    assert summary[2].startswith("|s|1|2|")
    assert summary[3] == "|Sum/Avg|1|2|50.0|50.0|0.0|0.0|50.0|100.0|"


def test_result_text_sum_row_survives_show_asr_result_pipeline():
    # ESPnet's show_asr_result.sh: grep Avg, drop "Sum/Avg", squeeze "|" and spaces.
    scores = scoring.score_texts({"u": "A B C"}, {"u": "A B"}, "word")
    text = scoring.format_result(scores, "word")
    avg = [line for line in text.splitlines() if "Avg" in line]
    assert len(avg) == 1
    row = "|dset" + avg[0].replace("Sum/Avg", "")
    cells = [c for c in row.replace("|", " ").split()]
    assert cells == ["dset", "1", "3", "66.7", "0.0", "33.3", "0.0", "33.3", "100.0"]


def test_alignment_text_marks_errors():
    score = scoring.score_texts({"u": "A B C"}, {"u": "A X C D"}, "word")[0]
    text = scoring.format_alignment(score)
    assert "Scores: (#C #S #D #I) 2 1 0 1" in text
    ref_line = next(line for line in text.splitlines() if line.startswith("REF:"))
    hyp_line = next(line for line in text.splitlines() if line.startswith("HYP:"))
    assert ref_line.split()[1:] == ["a", "B", "c", "***"]
    assert hyp_line.split()[1:] == ["a", "X", "c", "D"]


@settings(max_examples=60, deadline=None)
@given(
    ref=st.text(alphabet="AB C", max_size=12).map(lambda s: " ".join(s.split())),
    hyp=st.text(alphabet="AB C", max_size=12).map(lambda s: " ".join(s.split())),
)
def test_char_error_count_equals_jiwer_character_edit_distance(ref, hyp):
    c = counts_of(ref, hyp, "char")
    assert c.num_ref == len(ref)
    if ref:
        # With single spaces, <space> tokens are exactly jiwer's space characters.
        assert c.num_err == round(jiwer.cer(ref, hyp) * len(ref))
    assert c.corr + c.sub + c.dele == c.num_ref


def test_read_kaldi_text(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 HELLO  WORLD\nu2\n\nu3 X\n")
    assert scoring.read_kaldi_text(path) == {"u1": "HELLO  WORLD", "u2": "", "u3": "X"}
    path.write_text("u1 A\nu1 B\n")
    with pytest.raises(ValueError, match="duplicated utterance id 'u1'"):
        scoring.read_kaldi_text(path)
    with pytest.raises(FileNotFoundError, match="nope"):
        scoring.read_kaldi_text(tmp_path / "nope")
