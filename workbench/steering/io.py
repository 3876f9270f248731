"""Load an intervention saved by :meth:`Intervention.save`, whatever its form.

The saved config names the form (a key of :data:`~workbench.steering.forms.FORMS`); a config
with a ``projection`` entry is a :class:`~workbench.steering.projected.ProjectedIntervention`
around that form, whose subspace buffers come from the file; a ``wrapper`` entry names a wrapper
of :mod:`workbench.steering.state` (a clip or distance scaling), and the forms ``angular`` and
``ace`` are steers that act on the state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.artefacts import load_artefact
from workbench.errors import ConfigError
from workbench.steering.forms import FORMS, Intervention
from workbench.steering.projected import ManifoldProjection, ProjectedIntervention
from workbench.steering.state import STATE_FORMS, rebuild_wrapper

KNOWN_FORMS = {**FORMS, **STATE_FORMS}


def load_intervention(path: str | Path) -> tuple[Intervention, dict[str, Any]]:
    """Load an intervention saved by :meth:`Intervention.save`; returns it and its provenance."""
    tensors, meta = load_artefact(path)
    config = dict(meta["config"])
    form = config.pop("form")
    if form not in KNOWN_FORMS:
        raise ConfigError(f"{path}: unknown intervention form {form!r}; known: {list(KNOWN_FORMS)}")
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
    intervention.load_state_dict(tensors)
    return intervention, meta.get("provenance", {})
