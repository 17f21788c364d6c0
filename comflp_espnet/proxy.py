"""Score many layer-pruning candidates of one ESPnet ASR model by a cheap proxy.

A candidate is the loaded model with some encoder layers skipped. Its encoder
output is what the materialized pruned model (``surgery.prune_experiment``)
computes, without writing or loading that model: the input part of the encoder
(frontend, normalisation, pre-encoder, subsampling/positional embedding) runs
once per batch, then the candidates' kept layers run as a depth-first walk over
the prefix tree of their kept-layer sequences (``prefix_tree``), so that no
layer runs twice on the same input, and at each candidate's last layer the
encoder's closing steps are applied. Two proxies score the encoder outputs:

* ``ctc_greedy``: CTC argmax per frame, repeats collapsed, blanks (id 0)
  dropped -> token ids -> text through ESPnet's own token converter and
  tokenizer built as ``Speech2Text`` builds them (``TokenTexter``). Needs a
  CTC branch.
* ``loss``: the model's own teacher-forced training loss on the reference
  tokens, per utterance: ``ctc_weight * ctc + (1 - ctc_weight) * att`` where
  ``ctc`` is the CTC loss of the utterance (mixed with intermediate CTC losses
  as ``ESPnetASRModel.forward`` does when ``interctc_weight`` > 0) and ``att``
  the decoder's label-smoothed loss summed over its target tokens (eos
  included). With ``length_normalized_loss: false`` (ESPnet's default) the mean
  of the per-utterance losses of a batch is the model's forward loss on it.

What the encoder does after the layers, per supported class (eval mode; layer
drop and stochastic depth are training-only):

* TransformerEncoder, ConformerEncoder: ``after_norm`` when ``normalize_before``;
  intermediate CTC outputs normalised likewise;
* BranchformerEncoder: ``after_norm`` always; no intermediate CTC;
* EBranchformerEncoder: ``after_norm`` always; intermediate CTC outputs taken
  before it;
* then the model's post-encoder, if any. Only the hidden state of ``(x,
  pos_emb)`` tuples leaves the encoder; lengths come from the layer masks.

Intermediate CTC (``interctc_layer_idx``, ``interctc_use_conditioning``) is
handled exactly as in the pruned model that ``surgery`` writes: an original
intermediate layer keeps its role in a candidate unless it is removed or is
the candidate's last layer. Conditioning adds a projection of the CTC
posterior to the state passed on, so it is applied to a node's state before its
children run, never to the output of candidates ending there. Conformer's
``ctc_trim`` changes the frame count between layers and is refused.

Padding: the frontend STFT, subsampling and convolution modules see a batch's
padding, so a score computed in a padded batch can differ slightly from the
same utterance alone (decoding uses batch size 1). The tree output equals the
materialized pruned model's on the same batch.

Utterances too short for the encoder's subsampling (ESPnet's
``check_short_utt``, as decoding one at a time would raise) are flagged in
``BatchScores.too_short``: their hypothesis is empty, as comflp_decode writes
for them, and their loss is nan.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from comflp_espnet.prefix_tree import DROP, FORWARD, OUTPUT, PrefixTree

PROXIES = ("ctc_greedy", "loss")


class ProxyError(ValueError):
    """A model or request the proxy scorer cannot handle."""


@dataclass(frozen=True)
class _Family:
    final_norm: str  # "always" or "normalize_before"
    interctc: bool
    intermediate_norm: str  # "normalize_before" or "never"


def _families() -> Dict[type, _Family]:
    from espnet2.asr.encoder.branchformer_encoder import BranchformerEncoder
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

    return {
        TransformerEncoder: _Family("normalize_before", True, "normalize_before"),
        ConformerEncoder: _Family("normalize_before", True, "normalize_before"),
        BranchformerEncoder: _Family("always", False, "never"),
        EBranchformerEncoder: _Family("always", True, "never"),
    }


def encoder_num_layers(model) -> int:
    layers = getattr(getattr(model, "encoder", None), "encoders", None)
    if layers is None or not hasattr(layers, "__len__"):
        raise ProxyError(
            f"{type(getattr(model, 'encoder', None)).__name__} has no 'encoders' layer list"
        )
    return len(layers)


def has_ctc(model) -> bool:
    return getattr(model, "ctc", None) is not None and getattr(model, "ctc_weight", 0.0) != 0.0


def effective_proxy(model, proxy: str) -> str:
    """The proxy that will be used: each falls back to the other, with a log
    line, where it cannot be computed (``ctc_greedy`` without a CTC branch;
    ``loss`` for a model whose loss the scorer does not compute, see
    ``loss_unsupported``); a model that allows neither raises ProxyError."""
    if proxy not in PROXIES:
        raise ProxyError(f"unknown proxy {proxy!r}; choose one of {', '.join(PROXIES)}")
    if proxy == "ctc_greedy" and not has_ctc(model):
        logging.info(
            "The model has no CTC branch (ctc_weight 0): CTC greedy decoding is "
            "impossible; scoring candidates by the model's loss instead"
        )
        proxy = "loss"
    why_not_loss = loss_unsupported(model) if proxy == "loss" else None
    if why_not_loss and has_ctc(model):
        logging.info(
            f"The loss proxy does not support this model ({why_not_loss}); "
            "scoring candidates by CTC greedy decoding instead"
        )
        proxy = "ctc_greedy"
    elif why_not_loss:
        raise ProxyError(f"the loss proxy does not support this model: {why_not_loss}")
    return proxy


def loss_unsupported(model) -> Optional[str]:
    """Why the scorer cannot compute this model's training loss, or None."""
    if getattr(model, "use_transducer_decoder", False):
        return "a transducer decoder"
    if getattr(model, "use_linear_decoder", False):
        return "a classification (linear) decoder"
    if type(getattr(model, "decoder", None)).__name__ == "MLMDecoder":
        return "a masked-LM decoder (Mask-CTC)"
    if model.ctc_weight != 1.0 and getattr(model, "decoder", None) is None:
        return "no attention decoder"
    if getattr(model, "interctc_weight", 0.0) != 0.0 and getattr(model, "aux_ctc", None):
        return "auxiliary CTC targets (aux_ctc)"
    return None


@dataclass
class EmbeddedBatch:
    """The input of the first encoder layer for a padded batch."""

    xs: Any  # tensor (B, T, D) or (x, pos_emb) tuple, as the layers take it
    masks: torch.Tensor  # (B, 1, T) valid frames
    too_short: List[bool]  # per utterance: too short for the subsampling


class _StopAtFirstLayer(Exception):
    pass


@dataclass
class LeafOutput:
    """The encoder output of the candidates ending at one tree node."""

    candidates: Tuple[int, ...]
    node: int
    encoder_out: torch.Tensor
    encoder_out_lens: torch.Tensor
    intermediates: List[Tuple[int, torch.Tensor]]


class CandidateWalker:
    """Run a prefix tree of candidates through an ESPnet ASR model's encoder.

    ``model`` is an ``ESPnetASRModel`` (eval mode is set here). ``walk`` yields
    a ``LeafOutput`` at each tree node where candidates end: ``encoder_out`` and
    ``encoder_out_lens`` are what ``model.encode`` of the materialized pruned
    model returns for the batch, ``intermediates`` the ``(tree node, output)``
    of its intermediate CTC layers in order (the node id identifies an output
    shared by several candidates). ``layer_forwards`` counts the layers run.
    """

    def __init__(self, model, tree: PrefixTree):
        self.model = model
        self.encoder = getattr(model, "encoder", None)
        families = _families()
        family = families.get(type(self.encoder))
        if family is None:
            supported = ", ".join(sorted(c.__name__ for c in families))
            raise ProxyError(
                f"encoder {type(self.encoder).__name__} is not supported by the proxy "
                f"scorer; supported: {supported}"
            )
        if getattr(self.encoder, "ctc_trim", False):
            raise ProxyError(
                "ConformerEncoder with ctc_trim changes the frame count between layers "
                "and is not supported by the proxy scorer; use full decoding"
            )
        self.family = family
        self.layers = self.encoder.encoders
        self.num_layers = len(self.layers)
        bad = sorted({l for s in tree.sequences for l in s if l > self.num_layers})
        if bad:
            raise ProxyError(
                f"layer id(s) {bad} out of range: the encoder has {self.num_layers} "
                f"layers, numbered 1..{self.num_layers}"
            )
        self.tree = tree
        self.interctc_layers = (
            set(getattr(self.encoder, "interctc_layer_idx", None) or [])
            if family.interctc else set()
        )
        self.conditioning = bool(getattr(self.encoder, "interctc_use_conditioning", False))
        if self.interctc_layers and self.conditioning and getattr(model, "ctc", None) is None:
            raise ProxyError("intermediate CTC conditioning needs the model's CTC module")
        self.layer_forwards = 0
        model.eval()

    # input part ----------------------------------------------------------
    def embed(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> EmbeddedBatch:
        """Run the model's own ``encode`` up to the input of the first layer."""
        from espnet.nets.pytorch_backend.transformer.subsampling import (
            TooShortUttError,
            check_short_utt,
        )

        captured: Dict[str, Any] = {}

        def encoder_pre_hook(module, args, kwargs):
            captured["ilens"] = args[1] if len(args) > 1 else kwargs.get("ilens")

        def first_layer_pre_hook(module, args, kwargs):
            xs = args[0] if args else kwargs["x_input"]
            masks = args[1] if len(args) > 1 else kwargs["mask"]
            captured["input"] = (xs, masks)
            raise _StopAtFirstLayer

        handles = [
            self.encoder.register_forward_pre_hook(encoder_pre_hook, with_kwargs=True),
            self.layers[0].register_forward_pre_hook(first_layer_pre_hook, with_kwargs=True),
        ]
        try:
            self.model.encode(speech, speech_lengths)
        except _StopAtFirstLayer:
            pass
        except TooShortUttError:
            # Only raised when even the longest utterance is too short.
            return EmbeddedBatch(None, None, [True] * int(speech.size(0)))
        finally:
            for handle in handles:
                handle.remove()
        if "input" not in captured:
            raise ProxyError("the encoder did not reach its first layer")
        ilens = captured.get("ilens")
        embed = getattr(self.encoder, "embed", None)
        if ilens is None:
            short = [False] * int(speech.size(0))
        else:
            short = [bool(check_short_utt(embed, int(n))[0]) for n in ilens.tolist()]
        xs, masks = captured["input"]
        return EmbeddedBatch(xs, masks, short)

    # closing part ---------------------------------------------------------
    def _final(self, xs, masks):
        x = xs[0] if isinstance(xs, (tuple, list)) else xs
        if self.family.final_norm == "always" or self.encoder.normalize_before:
            x = self.encoder.after_norm(x)
        lens = masks.squeeze(1).sum(1)
        if getattr(self.model, "postencoder", None) is not None:
            x, lens = self.model.postencoder(x, lens)
        return x, lens

    def _intermediate(self, xs):
        x = xs[0] if isinstance(xs, (tuple, list)) else xs
        if self.family.intermediate_norm == "normalize_before" and self.encoder.normalize_before:
            return self.encoder.after_norm(x)
        return x

    def _condition(self, xs, out):
        projected = self.encoder.conditioning_layer(self.model.ctc.softmax(out))
        if isinstance(xs, (tuple, list)):
            return type(xs)([xs[0] + projected, *xs[1:]])
        return xs + projected

    # walk ----------------------------------------------------------------
    def walk(self, embedded: EmbeddedBatch) -> Iterator[LeafOutput]:
        slots: Dict[int, Tuple[Any, torch.Tensor]] = {0: (embedded.xs, embedded.masks)}
        nodes: Dict[int, int] = {0: 0}  # depth -> tree node held in that slot
        prepared = set()  # depths whose state is ready to feed children
        intermediates: Dict[int, Tuple[int, torch.Tensor]] = {}  # depth -> (node, output)
        for step in self.tree.plan():
            if step.op == FORWARD:
                parent = step.depth - 1
                if parent not in prepared:
                    # The parent's state is about to feed its first child: if its
                    # layer is an intermediate CTC layer, it is one for every
                    # candidate below it (none of them ends there).
                    if step.parent_layer in self.interctc_layers:
                        xs, masks = slots[parent]
                        out = self._intermediate(xs)
                        intermediates[parent] = (nodes[parent], out)
                        if self.conditioning:
                            slots[parent] = (self._condition(xs, out), masks)
                    prepared.add(parent)
                xs, masks = slots[parent]
                slots[step.depth] = self.layers[step.layer - 1](xs, masks)
                nodes[step.depth] = step.node
                self.layer_forwards += 1
                prepared.discard(step.depth)
                intermediates.pop(step.depth, None)
            elif step.op == OUTPUT:
                xs, masks = slots[step.depth]
                out, lens = self._final(xs, masks)
                inter = [intermediates[d] for d in range(1, step.depth) if d in intermediates]
                yield LeafOutput(step.candidates, step.node, out, lens, inter)
            elif step.op == DROP:
                # An intermediate output outlives its slot: the candidates below
                # the node still need it; the next state at that depth replaces it.
                del slots[step.depth]


@torch.no_grad()
def ctc_greedy_ids(model, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor) -> List[List[int]]:
    """CTC best path per utterance: argmax, repeats collapsed, blanks (0) dropped."""
    best = model.ctc.argmax(encoder_out)
    hyps = []
    for b, n in enumerate(encoder_out_lens.tolist()):
        path = torch.unique_consecutive(best[b, : int(n)])
        hyps.append([int(t) for t in path.tolist() if t != 0])
    return hyps


@torch.no_grad()
def utterance_losses(
    model,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    text: torch.Tensor,
    text_lengths: torch.Tensor,
    intermediates: Sequence[Tuple[int, torch.Tensor]] = (),
    intermediate_cache: Optional[Dict[Any, torch.Tensor]] = None,
) -> torch.Tensor:
    """Per-utterance training loss of the model on the reference tokens (B,).

    ``text`` is padded with -1 (ESPnet's collate). ``intermediates`` are the
    ``(key, output)`` of the intermediate CTC layers; with
    ``intermediate_cache`` (a dict kept for one batch) the CTC losses of an
    output shared by several candidates are computed once per key.
    """
    from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos

    text = text.clone()
    text[text == -1] = model.ignore_id
    text = text[:, : int(text_lengths.max())]
    batch = encoder_out.size(0)
    lens = encoder_out_lens.tolist()

    def ctc_per_utterance(hidden):
        ctc = model.ctc
        if ctc.ctc_type in ("builtin", "builtin2"):
            # Unreduced, ESPnet's CTC divides each utterance's loss by the
            # batch size (its reduced value is their sum).
            reduce = ctc.reduce
            ctc.reduce = False
            try:
                values = ctc(hidden, encoder_out_lens, text, text_lengths)
            finally:
                ctc.reduce = reduce
            return values.reshape(batch) * batch
        return torch.stack([
            ctc(
                hidden[b : b + 1, : int(lens[b])], encoder_out_lens[b : b + 1],
                text[b : b + 1], text_lengths[b : b + 1],
            ).reshape(())
            for b in range(batch)
        ])

    loss_ctc = None
    if model.ctc_weight != 0.0:
        loss_ctc = ctc_per_utterance(encoder_out)
        if model.interctc_weight != 0.0 and intermediates:
            total = 0.0
            for key, hidden in intermediates:
                if intermediate_cache is not None and key in intermediate_cache:
                    value = intermediate_cache[key]
                else:
                    value = ctc_per_utterance(hidden)
                    if intermediate_cache is not None:
                        intermediate_cache[key] = value
                total = total + value
            loss_ctc = (1 - model.interctc_weight) * loss_ctc + model.interctc_weight * (
                total / len(intermediates)
            )
    if model.ctc_weight == 1.0:
        return loss_ctc

    ys_pad, ys_lens = text, text_lengths
    lang = getattr(model, "lang_token_id", None)
    if lang is not None:
        ys_pad = torch.cat([lang.repeat(ys_pad.size(0), 1).to(ys_pad.device), ys_pad], dim=1)
        ys_lens = ys_lens + 1
    ys_in, ys_out = add_sos_eos(ys_pad, model.sos, model.eos, model.ignore_id)
    decoder_out, _ = model.decoder(encoder_out, encoder_out_lens, ys_in, ys_lens + 1)
    criterion = model.criterion_att
    loss_att = []
    for b in range(batch):
        row = criterion(decoder_out[b : b + 1], ys_out[b : b + 1])
        if criterion.normalize_length:  # per-token mean of this row -> its sum
            row = row * int((ys_out[b] != model.ignore_id).sum())
        loss_att.append(row.reshape(()))
    loss_att = torch.stack(loss_att)
    if model.ctc_weight == 0.0:
        return loss_att
    return model.ctc_weight * loss_ctc + (1 - model.ctc_weight) * loss_att


@dataclass
class BatchScores:
    """Proxy results of one batch for every candidate (candidate index first)."""

    too_short: List[bool]
    token_ids: Optional[List[List[List[int]]]] = None  # ctc_greedy: [cand][utt] ids
    loss: Optional[torch.Tensor] = None  # loss: (num candidates, B)
    num_tokens: Optional[List[int]] = None  # loss: reference tokens per utterance
    layer_forwards: int = 0


@dataclass
class ProxyScorer:
    """Score candidates (pruned layer-id sets of ``model``) batch by batch.

    ``proxy`` is the requested proxy; ``self.proxy`` the one used (see
    ``effective_proxy``).
    """

    model: Any
    pruned_sets: Sequence[Sequence[int]]
    proxy: str = "ctc_greedy"
    tree: PrefixTree = field(init=False)
    walker: CandidateWalker = field(init=False)

    def __post_init__(self):
        self.requested_proxy = self.proxy
        self.proxy = effective_proxy(self.model, self.proxy)
        num_layers = encoder_num_layers(self.model)
        try:
            self.tree = PrefixTree.from_pruned(self.pruned_sets, num_layers)
        except ValueError as e:
            raise ProxyError(str(e)) from None
        self.walker = CandidateWalker(self.model, self.tree)

    @property
    def layer_forwards(self) -> int:
        return self.walker.layer_forwards

    def score_batch(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: Optional[torch.Tensor] = None,
        text_lengths: Optional[torch.Tensor] = None,
    ) -> BatchScores:
        if self.proxy == "loss" and (text is None or text_lengths is None):
            raise ProxyError("the loss proxy needs the reference text of the batch")
        num = self.tree.num_candidates
        batch = int(speech.size(0))
        start = self.walker.layer_forwards
        with torch.inference_mode():
            embedded = self.walker.embed(speech, speech_lengths)
            scores = BatchScores(too_short=embedded.too_short)
            if self.proxy == "ctc_greedy":
                scores.token_ids = [[[] for _ in range(batch)] for _ in range(num)]
            else:
                scores.loss = torch.full((num, batch), float("nan"))
                scores.num_tokens = [int(n) for n in text_lengths.tolist()]
            if embedded.xs is None:  # every utterance too short
                return scores
            cache: Dict[Any, torch.Tensor] = {}
            for leaf in self.walker.walk(embedded):
                if self.proxy == "ctc_greedy":
                    hyps = ctc_greedy_ids(self.model, leaf.encoder_out, leaf.encoder_out_lens)
                    for b, short in enumerate(embedded.too_short):
                        if short:
                            hyps[b] = []
                    for c in leaf.candidates:
                        scores.token_ids[c] = [list(h) for h in hyps]
                else:
                    values = utterance_losses(
                        self.model, leaf.encoder_out, leaf.encoder_out_lens, text,
                        text_lengths, leaf.intermediates, cache,
                    ).float().cpu()
                    for c in leaf.candidates:
                        scores.loss[c] = values
            if self.proxy == "loss":
                for b, short in enumerate(embedded.too_short):
                    if short:
                        scores.loss[:, b] = float("nan")
        scores.layer_forwards = self.walker.layer_forwards - start
        return scores


class TokenTexter:
    """Token ids -> text, with the converter and tokenizer that ESPnet's
    ``Speech2Text`` builds from the training config (token list of the model;
    ``token_type``/``bpemodel`` of the training args)."""

    def __init__(self, token_list: Sequence[str], token_type: Optional[str], bpemodel: Optional[str]):
        from espnet2.text.build_tokenizer import build_tokenizer
        from espnet2.text.token_id_converter import TokenIDConverter

        if token_type is not None and "whisper" in token_type:
            raise ProxyError(
                f"token_type {token_type!r}: Whisper tokenizers are not supported by the "
                "proxy scorer"
            )
        if token_type is None:
            self.tokenizer = None
        elif token_type in ("bpe", "hugging_face"):
            self.tokenizer = (
                build_tokenizer(token_type=token_type, bpemodel=bpemodel)
                if bpemodel is not None else None
            )
        else:
            self.tokenizer = build_tokenizer(token_type=token_type)
        if token_type == "hugging_face":
            from espnet2.text.hugging_face_token_id_converter import (
                HuggingFaceTokenIDConverter,
            )

            self.converter = HuggingFaceTokenIDConverter(model_name_or_path=bpemodel)
        else:
            self.converter = TokenIDConverter(token_list=list(token_list))

    @classmethod
    def from_model(cls, model, train_args) -> "TokenTexter":
        return cls(
            model.token_list, getattr(train_args, "token_type", None),
            getattr(train_args, "bpemodel", None),
        )

    def tokens(self, token_ids: Sequence[int]) -> List[str]:
        return self.converter.ids2tokens(list(token_ids))

    def __call__(self, token_ids: Sequence[int]) -> str:
        """Text of a hypothesis, whitespace normalised as comflp_decode writes it."""
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.tokens2text(self.tokens(token_ids))
        return " ".join((text or "").split())
