"""An app module that fails while being imported, as a typo in a user's module would."""

raise RuntimeError("boom while importing cli_broken_app")
