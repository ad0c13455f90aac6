"""Layout helpers for a narrow panel (the dock opens at 360 px): rows that stack their widgets,
labels that wrap, long paths that may break, and form rows with the label above the field."""
from __future__ import annotations

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

ZWSP = "\u200b"   # a zero-width space: where a long path may wrap


def breakable(text: str) -> str:
    """``text`` with a place to wrap after each path separator and underscore (a path is one word)."""
    for sep in ("/", "\\", "_"):
        text = text.replace(sep, sep + ZWSP)
    return text


def wrapping_label(text: str = "", style: str = "", rich: bool = False) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    if style:
        label.setStyleSheet(style)
    if rich:
        label.setTextFormat(Qt.TextFormat.RichText)
    return label


def stacked(*widgets) -> QVBoxLayout:
    """The widgets one under the other, each the panel's whole width (no two long buttons side by side)."""
    lay = QVBoxLayout()
    lay.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        lay.addWidget(w)
    return lay


def narrow_forms(root: QWidget) -> None:
    """Every form under ``root``: a label beside its field only when both fit, else above it."""
    for form in root.findChildren(QFormLayout):
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
