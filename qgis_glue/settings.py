"""The user's choices, kept in QgsSettings under ``tailings_mapper/``.

The engine's options are stored by their name (``inference.run.options.OPTIONS``) in their text form
(``""``: not set, the model's value or the option's default); a stored value the engine no
longer accepts (an older version's "0 = model default", say) reads as not set.  The panel's own
choices (model, output folder, extent mode...) have the defaults below.
"""
from __future__ import annotations

from typing import Optional

from qgis.core import QgsSettings

from ..inference.errors import OptionError
from ..inference.run.options import BY_NAME, OPTIONS, from_texts

PREFIX = "tailings_mapper/"

EXTENT_LAYER, EXTENT_CANVAS, EXTENT_SELECTION = "layer", "canvas", "selection"
PANEL_DEFAULTS = {
    "model": "",              # name of a shipped/user model or a path; "" = the default model
    "user_models": [],        # ONNX files loaded with "Load model…"
    "out_dir": "",            # "" = a folder next to the input raster
    "extent_mode": EXTENT_LAYER,
    "extent_layer": "",       # polygon layer id for EXTENT_SELECTION
    "panel_visible": False,
}


class Settings:
    """Typed access to the plugin's QgsSettings entries."""

    def __init__(self, settings: Optional[QgsSettings] = None):
        self.s = settings or QgsSettings()

    def get(self, key: str):
        """A panel choice (PANEL_DEFAULTS) or an engine option's stored text."""
        if key in BY_NAME:
            return self.option_text(key)
        default = PANEL_DEFAULTS[key]
        if isinstance(default, bool):
            return self.s.value(PREFIX + key, default, type=bool)
        if isinstance(default, list):
            v = self.s.value(PREFIX + key, [])
            if v in (None, ""):
                return []
            return [v] if isinstance(v, str) else list(v)
        v = self.s.value(PREFIX + key, default)
        return default if v is None else str(v)

    def get_float(self, key: str) -> Optional[float]:
        """A number the plugin measured and kept (e.g. seconds per tile on this machine), or None."""
        v = self.s.value(PREFIX + key, None)
        try:
            return float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def set(self, key: str, value) -> None:
        self.s.setValue(PREFIX + key, value)

    def option_text(self, name: str) -> str:
        """The stored text of option ``name`` ("" when unset or no longer valid)."""
        v = self.s.value(PREFIX + name, "")
        text = "" if v is None else (("true" if v else "false") if isinstance(v, bool) else str(v))
        try:
            BY_NAME[name].parse(text)
        except OptionError:
            return ""
        return text

    def set_option_text(self, name: str, text: str) -> None:
        self.set(name, text or "")

    def options(self, names=None, base=None):
        """``SegmentOptions`` from the stored texts of ``names`` (default: the panel's options)."""
        names = names or [o.name for o in OPTIONS if "panel" in o.fronts] + ["preset"]
        return from_texts({n: self.option_text(n) for n in names}, base)

    def reset(self) -> None:
        """The user's choices back to their defaults (measurements are kept)."""
        for k in list(PANEL_DEFAULTS) + [o.name for o in OPTIONS]:
            self.s.remove(PREFIX + k)
