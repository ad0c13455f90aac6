"""Training side of Tailings Mapper (torch).  The plugin imports only its option table and wording
(``fit_options``, ``fit_present``: no torch) until the user trains; the engine never imports it."""
