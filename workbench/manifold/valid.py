"""Activations of valid, unsteered text: what the manifold is estimated from.

Three sources:

- ``neutral``: the team's neutral sentences (``data/neutral/sentences.txt``), every token;
- ``answers``: the contrast pairs' answers, every answer token, both sides;
- ``greedy`` / ``sampled``: the model's own unsteered continuations of the pairs' prompts,
  every generated token.

Token rows are split at random into a fitting part and a held-out calibration part, by text
(all tokens of one text fall on the same side), so ε is calibrated on text the manifold has not
seen.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from workbench.atomic import file_sha256, replacing
from workbench.data.concepts import neutral_sentences
from workbench.data.encoding import encode_texts
from workbench.data.pairs import ContrastPair
from workbench.errors import ConfigError
from workbench.hooks.forward import run_batch_with_cache
from workbench.hooks.names import check_hook_names, stop_layer_for
from workbench.manifold.estimator import ActivationManifold
from workbench.models.loading import model_device, model_provenance
from workbench.progress import bar
from workbench.steering.generation import generate
from workbench.store import ActivationStore

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class TokenActivations:
    """Token-level activations per hook, with the source and text index of every row."""

    activations: dict[str, Tensor]  # hook -> [tokens, d]; empty when streamed to ``store``
    source: np.ndarray  # [tokens] str
    text_index: np.ndarray  # [tokens] int: which text (within its source) the token came from
    calibration: np.ndarray  # [tokens] bool: held out for calibrating ε
    store: ActivationStore | None = None  # where the rows are, when streamed to disk
    _scratch: tempfile.TemporaryDirectory | None = None  # a store's folder kept while in use

    def fitting(self, hook: str) -> Tensor:
        """The fitting rows at ``hook`` (read from the store when streamed: in memory then)."""
        return self._rows(hook, ~self.calibration)

    def held_out(self, hook: str) -> Tensor:
        return self._rows(hook, self.calibration)

    def fit_manifold(self, manifold: ActivationManifold, hook: str) -> ActivationManifold:
        """Fit ``manifold`` on the fitting rows, ε on the held-out ones; one shard at a time
        when the rows were streamed to a store (the same fit, to float rounding)."""
        if self.store is not None:
            return manifold.fit_stream(self.store, hook, held_out=self.calibration)
        return manifold.fit(self.fitting(hook), calibration=self.held_out(hook))

    def _rows(self, hook: str, keep: np.ndarray) -> Tensor:
        if self.store is not None:
            return torch.from_numpy(self.store.rows(hook, np.flatnonzero(keep))).float()
        return self.activations[hook][torch.from_numpy(keep)]


@torch.no_grad()
def token_activations(
    model: TransformerBridge,
    prompts: Sequence[str],
    answers: Sequence[str] | None,
    hooks: Sequence[str],
    batch_size: int = 16,
    progress: bool = False,
    labels: Sequence[tuple[str, str | None, str]] | None = None,
) -> tuple[dict[str, Tensor], np.ndarray]:
    """Activations at every answer token (or, with no answers, every prompt token but BOS).

    Returns per hook a [tokens, d] tensor and, per row, the index of its text. ``labels``
    (id, ``file:line``, field) per text name the culprit of an error, such as a text longer
    than the model's context.
    """
    hooks = check_hook_names(model, hooks)
    stop = stop_layer_for(hooks, model.cfg.n_layers)
    device = model_device(model)
    prepend_bos = model_provenance(model).prepend_bos
    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    owners = []
    starts = range(0, len(prompts), batch_size)
    for start in bar(starts, desc="valid activations", enabled=progress):
        batch = encode_texts(
            model.tokenizer,
            list(prompts[start : start + batch_size]),
            None if answers is None else list(answers[start : start + batch_size]),
            prepend_bos=prepend_bos,
            max_length=getattr(model.cfg, "n_ctx", None),
            labels=None if labels is None else list(labels[start : start + batch_size]),
        ).to(device)
        mask = batch.answer_mask if answers is not None else batch.prompt_mask
        cache = run_batch_with_cache(model, batch, hooks, stop)
        for hook in hooks:
            parts[hook].append(cache[hook][mask].float().cpu())
        rows = torch.arange(mask.shape[0], device=mask.device) + start
        owners.append(rows[:, None].expand_as(mask)[mask].cpu().numpy())
    return {h: torch.cat(p) for h, p in parts.items()}, np.concatenate(owners)


def _append_batches(
    store: ActivationStore,
    model: TransformerBridge,
    prompts: Sequence[str],
    answers: Sequence[str] | None,
    hooks: Sequence[str],
    batch_size: int,
    labels: Sequence[tuple[str, str | None, str]] | None,
    progress: bool = False,
) -> np.ndarray:
    """Each batch's token activations appended to ``store``; returns each row's text index."""
    owners = []
    steps = range(0, len(prompts), batch_size)
    for start in bar(steps, desc="valid activations", enabled=progress):
        stop = start + batch_size
        acts, owner = token_activations(
            model,
            prompts[start:stop],
            None if answers is None else answers[start:stop],
            hooks,
            batch_size,
            labels=None if labels is None else labels[start:stop],
        )
        store.append(acts)
        owners.append(owner + start)
    return np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)


def stream_token_activations(
    model: TransformerBridge,
    prompts: Sequence[str],
    answers: Sequence[str] | None,
    hooks: Sequence[str],
    folder: str | Path,
    *,
    memory_cap: int = 256 * 2**20,
    batch_size: int = 16,
    labels: Sequence[tuple[str, str | None, str]] | None = None,
    progress: bool = False,
) -> ActivationStore:
    """As :func:`token_activations`, but every batch's rows go to an
    :class:`~workbench.store.ActivationStore` in ``folder`` (shards written whenever the
    buffered rows would pass ``memory_cap`` bytes), so a capture of any length holds at most
    the cap (and one batch) in memory. Returns the closed store; its provenance names the
    model and hooks, and it records each row's text index (``text_index.npy``)."""
    store = ActivationStore.create(folder, hooks, memory_cap)
    owner = _append_batches(store, model, prompts, answers, hooks, batch_size, labels, progress)
    text_index = Path(folder) / "text_index.npy"
    with replacing(text_index) as temporary, open(temporary, "wb") as handle:
        np.save(handle, owner)
    provenance = {
        "model": model_provenance(model).to_dict(),
        "hooks": list(hooks),
        "text_index_sha256": file_sha256(text_index),
    }
    return store.close(provenance)


def collect_valid_activations(
    model: TransformerBridge,
    hooks: Sequence[str],
    pairs: Sequence[ContrastPair] = (),
    *,
    sources: Sequence[str] = ("neutral", "answers", "greedy", "sampled"),
    max_new_tokens: int = 24,
    calibration_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 16,
    store: str | Path | None = None,
    memory_cap: int | None = None,
    progress: bool = False,
) -> TokenActivations:
    """Token activations of valid text from the chosen sources, with a calibration split.

    With ``store`` (a new folder) or ``memory_cap`` (bytes; the store then lives in a temporary
    folder as long as the result), the rows are streamed to an
    :class:`~workbench.store.ActivationStore` under the cap (default 256 MiB) instead of being
    held in memory; :meth:`TokenActivations.fit_manifold` then fits on the stream."""
    known = ("neutral", "answers", "greedy", "sampled")
    unknown = [s for s in sources if s not in known]
    if unknown:
        raise ConfigError(f"unknown valid-text sources {unknown}; choose from {known}")
    if not 0.0 < calibration_fraction < 1.0:
        raise ConfigError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    pairs = list(pairs)
    held_out = [p.id for p in pairs if p.split == "test"]
    if held_out:
        raise ConfigError(
            f"valid activations are fitted on training text only, but {len(held_out)} test "
            f"pairs were given (first: {held_out[0]!r}); pass pairs.train"
        )
    if any(s != "neutral" for s in sources) and not pairs:
        raise ConfigError(f"sources {list(sources)} need contrast pairs (their prompts/answers)")
    scratch = tempfile.TemporaryDirectory() if store is None and memory_cap else None
    folder = Path(scratch.name) / "valid" if scratch is not None else store
    cap = memory_cap or 256 * 2**20
    sink = ActivationStore.create(folder, hooks, cap) if folder is not None else None

    def gather(prompts, answers, labels) -> tuple[dict[str, Tensor], np.ndarray]:
        if sink is None:
            return token_activations(
                model, prompts, answers, hooks, batch_size, labels=labels, progress=progress
            )
        return {}, _append_batches(
            sink, model, prompts, answers, hooks, batch_size, labels, progress
        )

    chunks = []
    for source in sources:
        if source == "neutral":
            texts = neutral_sentences()
            named: list[tuple[str, str | None, str]] = [
                (f"neutral sentence {i + 1}", None, "text") for i in range(len(texts))
            ]
            acts, owner = gather(texts, None, named)
        elif source == "answers":
            prompts = [p.prompt for p in pairs] * 2
            answers = [p.positive for p in pairs] + [p.negative for p in pairs]
            named = [(p.id, p.source, side) for side in ("positive", "negative") for p in pairs]
            acts, owner = gather(prompts, answers, named)
        else:
            first = {p.prompt: p for p in reversed(pairs)}  # each prompt's first pair
            prompts = sorted(first)
            named = [(first[q].id, first[q].source, "prompt") for q in prompts]
            continuations = generate(
                model,
                prompts,
                labels=named,
                max_new_tokens=max_new_tokens,
                do_sample=source == "sampled",
                seed=seed,
                stop_at_eos=True,
            )
            keep = [i for i, c in enumerate(continuations) if c.strip()]
            acts, owner = gather(
                [prompts[i] for i in keep],
                [continuations[i] for i in keep],
                [named[i] for i in keep],
            )
        chunks.append((source, acts, owner))
    rng = np.random.default_rng(seed)
    calibration = []
    for _, _, owner in chunks:
        n_texts = int(owner.max()) + 1 if len(owner) else 0
        held = rng.random(n_texts) < calibration_fraction
        calibration.append(held[owner])
    if sink is not None:
        sink.close({"model": model_provenance(model).to_dict(), "sources": list(sources)})
    return TokenActivations(
        activations={}
        if sink is not None
        else {h: torch.cat([acts[h] for _, acts, _ in chunks]) for h in hooks},
        source=np.concatenate([np.full(len(owner), source) for source, _, owner in chunks]),
        text_index=np.concatenate([owner for _, _, owner in chunks]),
        calibration=np.concatenate(calibration),
        store=sink,
        _scratch=scratch,
    )
