"""The explorer's live views: what the model does under the selected intervention.

For a prompt the user types: the steered continuation, each token's projection on the concept
direction (the DiffMean vector at the selection's layer), and the steered states on a 2-D map
(PCA, or UMAP) of valid states, the neutral sentences' tokens unsteered at the same hook.
Interventions are the folder's saved artefacts, checked against the model, loaded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from sklearn.decomposition import PCA

from workbench.data.concepts import neutral_sentences
from workbench.data.encoding import encode_texts
from workbench.errors import ConfigError
from workbench.explorer.data import Selection, StudyData
from workbench.hooks.forward import run_batch_with_cache
from workbench.hooks.sites import site_hooks
from workbench.models.loading import check_made_for, model_device, model_provenance
from workbench.steering.apply import steering
from workbench.steering.forms import Intervention, SteeringVector
from workbench.steering.generation import generate
from workbench.steering.io import load_intervention
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MapKind = Literal["pca", "umap"]
MAP_KINDS: tuple[MapKind, ...] = ("pca", "umap")


@dataclass(frozen=True)
class LiveView:
    """Everything the live views draw for one selection and prompt."""

    selection: Selection
    prompt: str
    continuation: str
    tokens: list[str]
    projections: np.ndarray  # per token of prompt + continuation, on the unit concept direction
    valid_map: np.ndarray  # [n, 2] the neutral sentences' states, unsteered
    steered_map: np.ndarray  # [tokens, 2] the prompt + continuation's states, steered
    map_kind: MapKind
    hook: str


class LiveModel:
    """The model behind a study folder, with the folder's interventions loaded on demand."""

    def __init__(self, model: TransformerBridge, data: StudyData, n_valid: int = 48) -> None:
        made_with = data.made.get("model")
        if made_with is None:
            raise ConfigError(f"{data.folder}: records no model")
        check_made_for(made_with, model, data.folder)
        self.model, self.data, self.n_valid = model, data, n_valid
        self._interventions: dict[Path, Intervention] = {}
        self._maps: dict[tuple[str, MapKind], tuple[object, np.ndarray]] = {}

    def intervention(self, selection: Selection) -> Intervention | None:
        """The saved intervention of the selection, or None where the folder has none."""
        path = self.data.intervention_path(selection)
        if path is None:
            return None
        if path not in self._interventions:
            self._interventions[path] = load_intervention(path, self.model)[0]
        return self._interventions[path]

    def direction(self, selection: Selection) -> torch.Tensor | None:
        """The concept direction at the selection's layer: the saved DiffMean vector there."""
        diffmean = Selection(selection.concept, "diff_of_means", "vector", selection.layer, 1.0)
        vector = self.intervention(diffmean)
        if not isinstance(vector, SteeringVector):
            return None
        return vector.raw_vector.detach().cpu()

    def view(
        self, selection: Selection, prompt: str, max_new_tokens: int = 24, kind: MapKind = "pca"
    ) -> LiveView:
        """Generate from ``prompt`` under the selection and measure the steered states."""
        intervention = self.intervention(selection)
        if intervention is None:
            raise ConfigError(
                f"{self.data.folder}: no saved {selection.method} {selection.form} intervention at "
                f"layer {selection.layer} (only its measured rows can be shown)"
            )
        direction = self.direction(selection)
        steer = [(intervention, float(selection.m))]
        continuation = generate(self.model, [prompt], steer, max_new_tokens=max_new_tokens)[0]
        hook = site_hooks(intervention.site, intervention.layer)[1]
        text = prompt + continuation
        if direction is None:  # no DiffMean there: project on the first principal axis instead
            direction = torch.as_tensor(self._map(hook, "pca")[0].components_[0])  # type: ignore[attr-defined]
        reducer, valid_map = self._map(hook, kind)
        tokens, states = self._states([text], hook, steer)  # one steered forward for both views
        unit = direction.double() / direction.double().norm()
        projections = (torch.as_tensor(states, dtype=torch.float64) @ unit).numpy()
        steered = reducer.transform(states)  # type: ignore[attr-defined]
        return LiveView(
            selection, prompt, continuation, tokens, projections, valid_map, steered, kind, hook
        )

    def _map(self, hook: str, kind: MapKind) -> tuple[object, np.ndarray]:
        """The 2-D map fitted to the neutral sentences' unsteered states at ``hook`` (once)."""
        if kind not in MAP_KINDS:
            raise ConfigError(f"unknown map {kind!r}; choose one of {MAP_KINDS}")
        if (hook, kind) not in self._maps:
            states = self._states(neutral_sentences()[: self.n_valid], hook, [])[1]
            if kind == "pca":
                reducer: object = PCA(n_components=2, random_state=0).fit(states)
            else:
                from umap import UMAP

                reducer = UMAP(n_components=2, random_state=0, n_jobs=1).fit(states)
            self._maps[hook, kind] = (reducer, reducer.transform(states))  # type: ignore[attr-defined]
        return self._maps[hook, kind]

    def _states(self, texts: list[str], hook: str, steer) -> tuple[list[str], np.ndarray]:
        """Every text token (the prompt mask: no BOS, no padding) and its state at ``hook``,
        steered by ``steer``, over all ``texts`` in order."""
        bos = model_provenance(self.model).prepend_bos
        batch = encode_texts(self.model.tokenizer, texts, prepend_bos=bos)
        batch = batch.to(model_device(self.model))
        layer = int(hook.split(".")[1])
        with torch.no_grad(), steering(self.model, steer, TokenRoles.from_batch(batch)):
            cache = run_batch_with_cache(self.model, batch, [hook], layer + 1)
        ids = batch.input_ids[batch.prompt_mask].tolist()
        tokens = [self.model.tokenizer.decode([i]) for i in ids]
        return tokens, cache[hook][batch.prompt_mask].float().cpu().numpy()
