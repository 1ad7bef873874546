"""Tetragon events: the view the ATT&CK rules match on, and the declarative rule set."""
