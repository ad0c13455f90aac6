"""Messages to the QGIS log panel (tab "Tailings Mapper")."""
from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

LOG_TAG = "Tailings Mapper"


def log(message: str, level=Qgis.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)
