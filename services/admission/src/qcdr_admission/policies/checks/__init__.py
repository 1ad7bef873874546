"""One module per admission policy check; importing a module registers it
(:func:`qcdr_admission.policies.registry.load_checks` imports them all)."""
