"""Messages to the QGIS log panel (tab "Tailings Mapper")."""
from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

LOG_TAG = "Tailings Mapper"


def log(message: str, level=Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def push(message_bar, text: str, level, keep: bool = False) -> None:
    """To the message bar (if any; errors, and ``keep``, stay until closed), and the log when it is gone."""
    if message_bar is None:
        return
    try:
        message_bar.pushMessage("Tailings Mapper", text, level,
                                0 if keep or level == Qgis.MessageLevel.Critical else 10)
    except RuntimeError as e:  # the message bar is gone (QGIS closing)
        log("%s (message bar unavailable: %s)" % (text, e), level)


def unexpected(e: BaseException):
    """``(message, traceback)`` of an error that is a bug: one line for the user, the rest for the log."""
    import traceback
    from ..inference.output.present import failure
    return failure(e), traceback.format_exc()
