"""Load an intervention saved by :meth:`Intervention.save`, whatever its form.

The saved config names the form (a key of :data:`~workbench.steering.forms.FORMS`); a config
with a ``projection`` entry is a :class:`~workbench.steering.projected.ProjectedIntervention`
around that form, whose subspace buffers come from the file; a ``wrapper`` entry names a wrapper
of :mod:`workbench.steering.state` (a clip or distance scaling), and the forms ``angular`` and
``ace`` are steers that act on the state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.artefacts import load_artefact, meta_field
from workbench.errors import ArtefactError, WorkbenchError
from workbench.models.loading import check_made_for
from workbench.steering.forms import FORMS, Intervention
from workbench.steering.projected import ManifoldProjection, ProjectedIntervention
from workbench.steering.state import STATE_FORMS, rebuild_wrapper

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

KNOWN_FORMS = {**FORMS, **STATE_FORMS}


def load_intervention(
    path: str | Path, model: TransformerBridge | None = None, *, other_model: bool = False
) -> tuple[Intervention, dict[str, Any]]:
    """Load an intervention saved by :meth:`Intervention.save`; returns it and its provenance.

    With ``model``, also checks that the artefact was made with that model (unless
    ``other_model``, a deliberate transfer) and that its layer and widths fit it. Parameters
    that are not finite are refused: no sweep or generation should run on them.
    """
    tensors, meta = load_artefact(path, kind="intervention")
    config = dict(meta_field(meta, "config", path))
    provenance = meta.get("provenance", {})
    try:
        intervention = _rebuild(config, path)
        intervention.load_state_dict(tensors)
    except (TypeError, KeyError, RuntimeError, ValueError) as error:
        if isinstance(error, WorkbenchError):
            raise
        reason = f"the config does not rebuild its intervention ({error})"
        raise ArtefactError(f"{path}: {reason}") from None
    bad = [name for name, value in intervention.state_dict().items() if not value.isfinite().all()]
    if bad:
        raise ArtefactError(f"{path}: parameters {bad} hold NaN or infinite values")
    if model is not None:
        if "model" in provenance:
            check_made_for(provenance["model"], model, path, allow=other_model)
        elif not other_model:
            raise ArtefactError(f"{path}: records no model; pass other_model=True to apply it")
        intervention.check_model(model)
    return intervention, provenance


def _rebuild(config: dict[str, Any], path: str | Path) -> Intervention:
    form = config.pop("form", None)
    if form not in KNOWN_FORMS:
        known = list(KNOWN_FORMS)
        raise ArtefactError(f"{path}: unknown intervention form {form!r}; known: {known}")
    projection = config.pop("projection", None)
    wrapper = config.pop("wrapper", None)
    config.pop("acts_on", None)  # said by the class; recorded so a reader of the file knows
    intervention = KNOWN_FORMS[form](**config)
    if projection is not None:  # a ProjectedIntervention: the buffers come from the file
        subspace = ManifoldProjection.empty(
            projection["n_components"], intervention.d_out, projection["scale"]
        )
        intervention = ProjectedIntervention(intervention, subspace, projection["strength"])
    if wrapper is not None:
        intervention = rebuild_wrapper(intervention, wrapper)
    return intervention
