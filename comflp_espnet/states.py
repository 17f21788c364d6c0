"""Collect the per-layer hidden states h_0..h_L of an ESPnet ASR encoder.

Definitions (L = number of encoder layers, layer ids 1-based):

* ``h_0`` is the input of layer 1, i.e. the output of the input layer
  (subsampling / linear / positional encoding). When the encoder has no input
  layer (``input_layer: null`` with matching sizes) it is the normalised
  feature sequence the encoder receives.
* ``h_i`` (1 <= i <= L) is the output of layer i as the layer returns it.
  ``h_L`` is therefore taken *before* the encoder's final ``after_norm``, like
  every other ``h_i``; the encoder output that the CTC and decoder see is
  ``after_norm(h_L)``.
* For layers that pass ``(x, pos_emb)`` tuples (conformer, branchformer,
  e_branchformer with relative positions) only ``x`` is used.
* With intermediate CTC conditioning (``interctc_use_conditioning``) ESPnet
  adds a projection of the intermediate CTC posterior to ``x`` after some
  layers; ``h_i`` is the layer output before that addition.

The states are captured with forward hooks on ``encoder.encoders[0]`` (its
input) and on every ``encoder.encoders[i]`` (its output) while the model's own
``encode`` runs in eval mode under ``torch.no_grad``, so frontends,
normalisation and pre-encoders behave exactly as in decoding. Valid frames come
from the padding mask that ESPnet passes along with each layer output.

Pooling per utterance:

* ``mean``: masked mean over valid frames -> a float32 matrix of shape
  ``(L+1) x D`` (row i is h_i).
* ``frame``: the valid frames, optionally a seeded random subset of at most
  ``frames_per_utt`` frames (the same frames for every layer; the subset depends
  only on the seed and the utterance key) -> a float32 matrix of shape
  ``((L+1)*T) x D`` stacked layer-major: rows ``i*T .. (i+1)*T-1`` are h_i.

Note: ESPnet's frontend STFT, the convolution subsampling mask and the
depthwise convolutions of conformer / branchformer / e_branchformer layers see
the padding of a batch, so states of an utterance computed in a padded batch
can differ slightly from those computed alone (decoding uses batch size 1).
Use batch size 1 where exact per-utterance states matter.
"""

import logging
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

POOLINGS = ("mean", "frame")


def _tensor_of(x):
    """The hidden-state tensor of a layer input/output (drop pos_emb)."""
    if isinstance(x, (tuple, list)):
        return x[0]
    return x


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: hidden (B, T, D), mask (B, T) or (B, 1, T) -> (B, D).

    Padded frames are excluded by selection, so any value there (even inf or
    nan) has no effect. Utterances without a valid frame give nan.
    """
    if mask.dim() == 3:
        mask = mask[:, 0, :]
    mask = mask.bool()
    hidden = hidden.float()
    total = torch.where(mask[:, :, None], hidden, torch.zeros((), dtype=hidden.dtype,
                                                              device=hidden.device))
    counts = mask.sum(dim=1, keepdim=True).to(hidden.dtype)
    return total.sum(dim=1) / counts


def frame_subset(num_frames: int, frames_per_utt: Optional[int], seed: int, key: str) -> np.ndarray:
    """Sorted indices of the frames kept for one utterance.

    All frames when ``frames_per_utt`` is None/0 or not smaller than
    ``num_frames``; otherwise a random subset seeded by ``seed`` and the key,
    so the choice does not depend on batching or job splitting.
    """
    if not frames_per_utt or num_frames <= frames_per_utt:
        return np.arange(num_frames)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    return np.sort(rng.choice(num_frames, size=frames_per_utt, replace=False))


class EncoderStateCollector:
    """Hook an ESPnet ASR model's encoder and pool h_0..h_L per utterance.

    Use as a context manager (hooks are removed on exit)::

        with EncoderStateCollector(model, pooling="mean") as collector:
            states, skipped = collector.collect(keys, speech, speech_lengths)

    ``states`` maps each key to its pooled matrix (see the module docstring);
    ``skipped`` lists keys too short for the encoder's subsampling.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        pooling: str = "mean",
        frames_per_utt: Optional[int] = None,
        seed: int = 0,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        encoder = getattr(model, "encoder", None)
        layers = getattr(encoder, "encoders", None)
        if layers is None or not hasattr(layers, "__len__") or len(layers) == 0:
            raise ValueError(
                f"{type(encoder).__name__} has no 'encoders' layer list; states can be "
                "collected from transformer, conformer, branchformer and "
                "e_branchformer encoders"
            )
        self.model = model
        self.encoder = encoder
        self.layers = layers
        self.num_layers = len(layers)
        self.pooling = pooling
        self.frames_per_utt = frames_per_utt
        self.seed = seed
        self._handles = []
        self._captured: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = []
        self._input_lengths: Optional[torch.Tensor] = None

    # hooks --------------------------------------------------------------
    def _encoder_pre_hook(self, module, args, kwargs):
        ilens = args[1] if len(args) > 1 else kwargs.get("ilens")
        self._input_lengths = ilens

    def _first_layer_pre_hook(self, module, args):
        self._captured[0] = (_tensor_of(args[0]), args[1])

    def _make_layer_hook(self, index: int):
        def hook(module, args, output):
            self._captured[index] = (_tensor_of(output[0]), output[1])

        return hook

    def __enter__(self) -> "EncoderStateCollector":
        self._handles.append(
            self.encoder.register_forward_pre_hook(self._encoder_pre_hook, with_kwargs=True)
        )
        self._handles.append(self.layers[0].register_forward_pre_hook(self._first_layer_pre_hook))
        for i, layer in enumerate(self.layers, 1):
            self._handles.append(layer.register_forward_hook(self._make_layer_hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # collection ---------------------------------------------------------
    def _too_short(self, lengths: torch.Tensor) -> List[bool]:
        from espnet.nets.pytorch_backend.transformer.subsampling import check_short_utt

        embed = getattr(self.encoder, "embed", None)
        return [bool(check_short_utt(embed, int(n))[0]) for n in lengths.tolist()]

    @torch.no_grad()
    def collect(
        self, keys: Sequence[str], speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[Dict[str, np.ndarray], List[str]]:
        """Run ``model.encode`` on a batch and return (states per key, skipped keys)."""
        if not self._handles:
            raise RuntimeError("use EncoderStateCollector as a context manager")
        from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

        self.model.eval()
        self._captured = [None] * (self.num_layers + 1)
        self._input_lengths = None
        try:
            self.model.encode(speech, speech_lengths)
        except TooShortUttError:
            # Raised only when even the longest utterance of the batch is too short.
            return {}, list(keys)
        if any(c is None for c in self._captured):
            missing = [i for i, c in enumerate(self._captured) if c is None]
            raise RuntimeError(f"encoder layers did not run for states {missing}")

        short = (
            self._too_short(self._input_lengths)
            if self._input_lengths is not None
            else [False] * len(keys)
        )
        hidden = [c[0] for c in self._captured]
        masks = [c[1][:, 0, :] if c[1].dim() == 3 else c[1] for c in self._captured]
        dims = {h.size(-1) for h in hidden}
        if len(dims) != 1:
            raise RuntimeError(f"hidden states have different sizes {sorted(dims)}")

        states: Dict[str, np.ndarray] = {}
        skipped: List[str] = []
        valid_counts = masks[0].sum(dim=1).tolist()
        if self.pooling == "mean":
            pooled = torch.stack(
                [masked_mean(h, m) for h, m in zip(hidden, masks)], dim=1
            ).cpu().numpy()
            for b, key in enumerate(keys):
                if short[b] or valid_counts[b] == 0:
                    skipped.append(key)
                else:
                    states[key] = pooled[b]
            return states, skipped

        for b, key in enumerate(keys):
            if short[b] or valid_counts[b] == 0:
                skipped.append(key)
                continue
            per_layer = []
            for i, (h, m) in enumerate(zip(hidden, masks)):
                frames = h[b][m[b]].float()
                if frames.size(0) != valid_counts[b]:
                    raise RuntimeError(
                        f"{key}: h_{i} has {frames.size(0)} valid frames but h_0 has "
                        f"{valid_counts[b]} (the encoder changes the frame count between "
                        "layers, e.g. ctc_trim); use --pooling mean"
                    )
                per_layer.append(frames)
            index = frame_subset(int(valid_counts[b]), self.frames_per_utt, self.seed, key)
            index_t = torch.as_tensor(index, device=per_layer[0].device)
            states[key] = (
                torch.cat([f.index_select(0, index_t) for f in per_layer], dim=0)
                .cpu()
                .numpy()
            )
        return states, skipped


def split_frame_states(matrix: np.ndarray, num_states: int) -> List[np.ndarray]:
    """Split a frame-pooled utterance matrix into ``num_states`` (T x D) blocks."""
    if matrix.shape[0] % num_states:
        raise ValueError(
            f"frame-pooled matrix with {matrix.shape[0]} rows cannot hold "
            f"{num_states} states of equal length"
        )
    return np.split(matrix, num_states, axis=0)


def log_skipped(skipped: Sequence[str], limit: int = 10) -> None:
    if skipped:
        logging.warning(
            f"Skipped {len(skipped)} utterance(s) too short for the encoder's "
            f"subsampling: {list(skipped)[:limit]}"
        )
