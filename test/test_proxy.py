"""Proxy scoring through the prefix tree equals the materialized pruned models."""

import logging

import pytest
import torch

from comflp_espnet.model_io import load_asr_model
from comflp_espnet.prefix_tree import PrefixTree
from comflp_espnet.proxy import (
    CandidateWalker,
    ProxyError,
    ProxyScorer,
    TokenTexter,
    ctc_greedy_ids,
)
from comflp_espnet.surgery import prune_experiment

ENCODERS = ("transformer", "conformer", "branchformer", "e_branchformer")
# Candidates of a 5-layer encoder: the original, single layers, runs, one
# that ends inside another's path (1,2,3 kept) and a duplicate.
CANDIDATES = [[], [1], [3], [5], [2, 4], [1, 2], [4, 5], [3, 4, 5], [2, 4]]
NUM_LAYERS = 5


def batch(seed=0, lengths=(8000, 6100, 4300)):
    g = torch.Generator().manual_seed(seed)
    speech = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        speech[b, :n] = 0.1 * torch.randn(n, generator=g)
    text_lens = torch.tensor([5, 3, 4][: len(lengths)])
    text = torch.full((len(lengths), int(text_lens.max())), -1, dtype=torch.long)
    for b, n in enumerate(text_lens.tolist()):
        text[b, :n] = torch.randint(3, 8, (n,), generator=g)
    return speech, torch.tensor(lengths), text, text_lens


def materialize(config, model_file, pruned, out_dir):
    """The candidate as ESPnet loads it: a pruned experiment (or the original)."""
    if not pruned:
        return load_asr_model(config, model_file)[0]
    d = prune_experiment(config, model_file, out_dir, prune_encoder=pruned)
    return load_asr_model(d / "config.yaml", d / model_file.name)[0]


def walk_outputs(model, candidates, speech, lengths):
    tree = PrefixTree.from_pruned(candidates, NUM_LAYERS)
    walker = CandidateWalker(model, tree)
    outputs = {}
    with torch.inference_mode():
        embedded = walker.embed(speech, lengths)
        for leaf in walker.walk(embedded):
            for c in leaf.candidates:
                outputs[c] = (leaf.encoder_out.clone(), leaf.encoder_out_lens.clone(), leaf.intermediates)
    return tree, walker, outputs


def count_layer_forwards(model):
    counts = [0]
    handles = [
        layer.register_forward_hook(lambda *a: counts.__setitem__(0, counts[0] + 1))
        for layer in model.encoder.encoders
    ]
    return counts, handles


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """Per encoder family: (config, model file, {candidate index: pruned model})."""
    from conftest import make_tiny_asr_exp

    result = {}
    for encoder in ENCODERS:
        top = tmp_path_factory.mktemp(f"proxy_{encoder}")
        config, model_file = make_tiny_asr_exp(top / "exp", encoder=encoder, num_blocks=NUM_LAYERS)
        pruned = {
            i: materialize(config, model_file, p, top / f"cand{i}")
            for i, p in enumerate(CANDIDATES)
        }
        result[encoder] = (config, model_file, pruned)
    return result


@pytest.mark.parametrize("encoder", ENCODERS)
def test_tree_outputs_equal_materialized_models(experiments, encoder):
    config, model_file, pruned = experiments[encoder]
    model, _ = load_asr_model(config, model_file)
    speech, lengths, _, _ = batch()
    counts, handles = count_layer_forwards(model)
    tree, walker, outputs = walk_outputs(model, CANDIDATES, speech, lengths)
    for h in handles:
        h.remove()
    # The number of layer forwards is the tree's prediction (hooks and walker agree).
    assert counts[0] == walker.layer_forwards == tree.num_edges
    assert tree.num_edges < tree.num_forwards_unshared
    assert set(outputs) == set(range(len(CANDIDATES)))
    with torch.inference_mode():
        reference = {i: m.encode(speech, lengths) for i, m in pruned.items()}
    for i in range(len(CANDIDATES)):
        out, lens = outputs[i][:2]
        ref_out, ref_lens = reference[i]
        assert torch.equal(lens, ref_lens)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    # Negative control: another candidate's model (a different layer) is far off.
    wrong = (out - reference[0][0]).abs().max().item()  # candidate 8 vs the original
    assert wrong > 1e-2
    single_wrong = (outputs[2][0] - reference[3][0]).abs().max().item()  # layer 3 vs 5 pruned
    assert single_wrong > 1e-2


@pytest.mark.parametrize("encoder", ENCODERS)
def test_ctc_greedy_and_loss_equal_materialized_models(experiments, encoder):
    config, model_file, pruned = experiments[encoder]
    model, _ = load_asr_model(config, model_file)
    speech, lengths, text, text_lens = batch(seed=1)
    greedy = ProxyScorer(model, CANDIDATES, "ctc_greedy").score_batch(speech, lengths)
    scorer = ProxyScorer(model, CANDIDATES, "loss")
    lossy = scorer.score_batch(speech, lengths, text, text_lens)
    assert lossy.layer_forwards == scorer.tree.num_edges
    assert lossy.num_tokens == text_lens.tolist()
    for i, m in pruned.items():
        with torch.inference_mode():
            enc, enc_lens = m.encode(speech, lengths)
            expected = ctc_greedy_ids(m, enc, enc_lens)
            # The same from the pruned model's own CTC argmax, collapsed by hand.
            best = m.ctc.argmax(enc)
            by_hand = []
            for b, n in enumerate(enc_lens.tolist()):
                seq, prev = [], None
                for t in best[b, :n].tolist():
                    if t != prev and t != 0:
                        seq.append(t)
                    prev = t
                by_hand.append(seq)
            m_loss = m(speech, lengths, text.clone(), text_lens)[0]
        assert greedy.token_ids[i] == expected == by_hand
        # Mean of the per-utterance losses = the model's forward loss on the batch.
        torch.testing.assert_close(lossy.loss[i].mean(), m_loss.float().reshape(()), atol=1e-4, rtol=1e-5)
    # Candidates differ, so the proxy can tell them apart.
    assert len({tuple(l.tolist()) for l in lossy.loss}) > len(CANDIDATES) // 2


@pytest.mark.parametrize("encoder", ("transformer", "conformer", "e_branchformer"))
def test_intermediate_ctc_with_conditioning(tmp_path, encoder):
    from conftest import make_tiny_asr_exp

    config, model_file = make_tiny_asr_exp(
        tmp_path / "exp", encoder=encoder, num_blocks=NUM_LAYERS,
        encoder_conf={"interctc_layer_idx": [2, 4], "interctc_use_conditioning": True},
        model_conf={"interctc_weight": 0.4},
    )
    model, _ = load_asr_model(config, model_file)
    # Layer 2 or 4 removed, becoming the last layer, or kept in the middle.
    candidates = [[], [2], [5], [3, 5], [1, 3], [2, 3, 4, 5]]
    speech, lengths, text, text_lens = batch(seed=2)
    tree, _, outputs = walk_outputs(model, candidates, speech, lengths)
    lossy = ProxyScorer(model, candidates, "loss").score_batch(speech, lengths, text, text_lens)
    for i, p in enumerate(candidates):
        m = materialize(config, model_file, p, tmp_path / f"cand{i}")
        with torch.inference_mode():
            enc, enc_lens = m.encode(speech, lengths)
            m_loss = m(speech, lengths, text.clone(), text_lens)[0]
        inter = []
        if isinstance(enc, tuple):
            enc, inter = enc
        torch.testing.assert_close(outputs[i][0], enc, atol=1e-5, rtol=0)
        assert len(outputs[i][2]) == len(inter)
        for (_, a), (_, b) in zip(outputs[i][2], inter):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(lossy.loss[i].mean(), m_loss.float().reshape(()), atol=1e-4, rtol=1e-5)


def test_a_loss_it_cannot_compute_falls_back_to_ctc_greedy(tmp_path, caplog):
    from conftest import make_tiny_asr_exp

    # Intermediate CTC on auxiliary targets (aux_ctc): the scorer has no such targets to score.
    config, model_file = make_tiny_asr_exp(
        tmp_path / "exp", num_blocks=NUM_LAYERS, encoder_conf={"interctc_layer_idx": [2]},
        model_conf={"interctc_weight": 0.4, "aux_ctc": {"2": "text_spk2"}},
    )
    model, _ = load_asr_model(config, model_file)
    with caplog.at_level(logging.INFO):
        scorer = ProxyScorer(model, [[], [3]], "loss")
    assert scorer.proxy == "ctc_greedy" and scorer.requested_proxy == "loss"
    assert "auxiliary CTC targets" in caplog.text and "CTC greedy decoding instead" in caplog.text
    speech, lengths, _, _ = batch()
    assert len(scorer.score_batch(speech, lengths).token_ids) == 2
    # Without a CTC branch either, there is no proxy to fall back to.
    model.ctc_weight = 0.0
    with pytest.raises(ProxyError, match="does not support this model: auxiliary CTC targets"):
        ProxyScorer(model, [[3]], "loss")


def test_ctc_weight_zero_falls_back_to_loss(tmp_path, caplog):
    from conftest import make_tiny_asr_exp

    import yaml
    from espnet2.tasks.asr import ASRTask

    config, model_file = make_tiny_asr_exp(tmp_path / "exp", num_blocks=3)
    # The same experiment trained without CTC: no ctc module, no ctc.* weights.
    conf = yaml.safe_load(config.read_text())
    conf["model_conf"]["ctc_weight"] = 0.0
    config.write_text(yaml.safe_dump(conf))
    no_ctc, _ = ASRTask.build_model_from_file(str(config), None, "cpu")
    state = torch.load(model_file)
    no_ctc.load_state_dict({k: v for k, v in state.items() if not k.startswith("ctc.")})
    torch.save(no_ctc.state_dict(), model_file)
    model, _ = load_asr_model(config, model_file)
    assert model.ctc is None
    with caplog.at_level(logging.INFO):
        scorer = ProxyScorer(model, [[], [2]], "ctc_greedy")
    assert scorer.proxy == "loss" and scorer.requested_proxy == "ctc_greedy"
    assert "no CTC branch" in caplog.text
    speech, lengths, text, text_lens = batch()
    with pytest.raises(ProxyError, match="needs the reference text"):
        scorer.score_batch(speech, lengths)
    scores = scorer.score_batch(speech, lengths, text, text_lens)
    assert torch.isfinite(scores.loss).all()


def test_too_short_utterances(experiments):
    config, model_file, _ = experiments["transformer"]
    model, _ = load_asr_model(config, model_file)
    # 300 samples = 5 STFT frames (hop 64): too short for conv2d subsampling (< 7).
    speech, lengths, text, text_lens = batch(lengths=(6000, 300, 5000))
    scores = ProxyScorer(model, CANDIDATES, "ctc_greedy").score_batch(speech, lengths)
    assert scores.too_short == [False, True, False]
    assert all(ids[1] == [] for ids in scores.token_ids)
    lossy = ProxyScorer(model, CANDIDATES, "loss").score_batch(speech, lengths, text, text_lens)
    assert torch.isnan(lossy.loss[:, 1]).all() and torch.isfinite(lossy.loss[:, 0]).all()
    # A batch made only of too-short utterances runs no layer.
    s, l, t, tl = batch(lengths=(300, 200))
    scorer = ProxyScorer(model, CANDIDATES, "ctc_greedy")
    scores = scorer.score_batch(s, l)
    assert scores.too_short == [True, True] and scores.layer_forwards == 0


def test_bad_candidates(experiments):
    config, model_file, _ = experiments["transformer"]
    model, _ = load_asr_model(config, model_file)
    with pytest.raises(ProxyError, match="out of range"):
        ProxyScorer(model, [[6]], "ctc_greedy")
    with pytest.raises(ProxyError, match="keep at least one"):
        ProxyScorer(model, [[1, 2, 3, 4, 5]], "ctc_greedy")
    with pytest.raises(ProxyError, match="unknown proxy"):
        ProxyScorer(model, [[1]], "wer")


def test_token_texter_matches_speech2text(experiments):
    from espnet2.bin.asr_inference import Speech2Text

    config, model_file, _ = experiments["transformer"]
    model, train_args = load_asr_model(config, model_file)
    texter = TokenTexter.from_model(model, train_args)
    s2t = Speech2Text(asr_train_config=config, asr_model_file=model_file, device="cpu")
    ids = [3, 4, 2, 5, 5, 1, 6]  # A B <space> C C <unk> D
    expected = s2t.tokenizer.tokens2text(s2t.converter.ids2tokens(ids))
    assert texter(ids) == " ".join(expected.split()) == "AB CC<unk>D"
