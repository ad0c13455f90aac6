"""Stand-in for QGIS's ``processing`` module: records what the plugin asks of it."""
calls = []


def execAlgorithmDialog(algOrName, parameters=None):  # noqa: N802 (QGIS API)
    if not isinstance(algOrName, str):
        raise TypeError("execAlgorithmDialog(): an algorithm id expected, got %r" % (algOrName,))
    calls.append(("execAlgorithmDialog", algOrName, dict(parameters or {})))
    return {}


def run(algOrName, parameters, onFinish=None, feedback=None, context=None, is_child_algorithm=False):  # noqa: N803
    calls.append(("run", algOrName, dict(parameters)))
    return {}
