"""The panel's widgets for the engine's options, generated from ``inference.run.options.OPTIONS``.

Each option the panel shows (``"panel"`` in its fronts) gets a widget by its kind: a spin box for
numbers ("model default" below the smallest value when the model decides), a combo box for
choices and scales, a check box for on/off.  Values go in and out in the option's text form, the
same text QgsSettings stores and the engine parses.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                                 QSpinBox, QWidget)

from ..inference.run.options import Option, for_front


def _unset_value(o: Option) -> float:
    """The spin box value that stands for "not set" (shown as the option's unset label)."""
    if o.kind == "int":
        return math.floor((o.minimum - 1) / o.step) * o.step
    return o.minimum if o.exclusive else o.minimum - o.step


def make_widget(o: Option):
    if o.kind == "bool":
        w = QCheckBox(o.label)
    elif o.kind in ("choice", "scales"):
        w = QComboBox()
        if o.model_default or o.default is None:
            w.addItem(o.unset_label, "")
        labels = list(o.choice_labels) + [None] * len(o.choices)
        for c, label in zip(o.choices, labels):
            text = o.format(c)
            w.addItem(label or text, text)
    elif o.kind in ("int", "float"):
        w = QSpinBox() if o.kind == "int" else QDoubleSpinBox()
        if o.kind == "float":
            w.setDecimals(o.decimals)
        low = _unset_value(o) if o.model_default else o.minimum
        w.setRange(int(low) if o.kind == "int" else low, int(o.panel_max) if o.kind == "int" else o.panel_max)
        w.setSingleStep(int(o.step) if o.kind == "int" else o.step)
        if o.model_default:
            w.setSpecialValueText(o.unset_label)
        elif o.zero_label:
            w.setSpecialValueText(o.zero_label)
    elif o.kind == "text":
        w = QLineEdit()
        if o.default is None:
            w.setPlaceholderText("default: %s" % o.default_text)
    else:
        raise ValueError("the panel has no widget for options of kind %r (%s)" % (o.kind, o.name))
    w.setToolTip(o.describe())
    w.setObjectName("TailingsMapperOption_" + o.name)
    return w


class _ToggleLabel(QLabel):
    """A check box's text that wraps (a QCheckBox's own text never does) and toggles it when clicked."""

    def __init__(self, box: QCheckBox):
        super().__init__(box.text())
        self.box = box
        self.setWordWrap(True)
        self.setToolTip(box.toolTip())
        self.setBuddy(box)

    def mousePressEvent(self, event):  # noqa: N802 (Qt API)
        if self.box.isEnabled():
            self.box.toggle()


def checkable_row(box: QCheckBox) -> QWidget:
    """``box`` with its text in a label beside it that wraps in a narrow panel."""
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    label = _ToggleLabel(box)
    box.setAccessibleName(box.text())
    box.setText("")
    lay.addWidget(box)
    lay.addWidget(label, 1)
    return row


class OptionWidgets:
    """The widgets of ``options`` (default: the panel's advanced options), added to ``form`` (None:
    the caller places them)."""

    def __init__(self, form: Optional[QFormLayout], options: Optional[Sequence[Option]] = None):
        self.options = {o.name: o for o in (options if options is not None else for_front("panel", advanced=True))}
        self.widgets: Dict[str, object] = {}
        for name, o in self.options.items():
            w = make_widget(o)
            if form is None:
                pass
            elif o.kind == "bool":
                form.addRow(checkable_row(w))    # (the whole width: its text wraps)
            else:
                form.addRow(o.label, w)
            self.widgets[name] = w

    def widget(self, name: str):
        return self.widgets[name]

    def text(self, name: str) -> str:
        o, w = self.options[name], self.widgets[name]
        if o.kind == "bool":
            return o.format(w.isChecked())
        if isinstance(w, QLineEdit):
            return w.text().strip()
        if isinstance(w, QComboBox):
            return w.currentData() or ""
        if o.model_default and w.value() == w.minimum():
            return ""
        return o.format(w.value())

    def set_text(self, name: str, text: str) -> None:
        """Show ``text`` (a stored value); "" shows the option's default."""
        o, w = self.options[name], self.widgets[name]
        value = o.parse(text) if text else None
        if value is None and not o.model_default:
            value = o.default
        if o.kind == "bool":
            w.setChecked(bool(value))
        elif isinstance(w, QLineEdit):
            w.setText(o.format(value))
        elif isinstance(w, QComboBox):
            w.setCurrentIndex(max(0, w.findData(o.format(value))))
        else:
            w.setValue(w.minimum() if value is None else value)

    def texts(self) -> Dict[str, str]:
        return {name: self.text(name) for name in self.options}

    def on_change(self, callback: Callable) -> None:
        for w in self.widgets.values():
            if isinstance(w, QCheckBox):
                w.toggled.connect(callback)
            elif isinstance(w, QComboBox):
                w.currentIndexChanged.connect(callback)
            elif isinstance(w, QLineEdit):
                w.textChanged.connect(callback)
            else:
                w.valueChanged.connect(callback)
