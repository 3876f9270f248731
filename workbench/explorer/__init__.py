"""The live explorer: a JupyterLab widget over a study or comparison folder (controls for
concept, method, form, layer and m; linked views of the measured scores, the steered text, the
per-token projections and the steered states on a map of valid states)."""

from workbench.explorer.data import Selection, StudyData
from workbench.explorer.live import LiveModel, LiveView
from workbench.explorer.widget import Explorer

__all__ = ["Explorer", "LiveModel", "LiveView", "Selection", "StudyData"]
