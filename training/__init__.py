"""Training side of Tailings Mapper (torch).  Never imported by the plugin or the engine."""
