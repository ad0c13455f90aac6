"""Qt widgets of the plugin: the dock panel, settings, the dependency dialog."""
