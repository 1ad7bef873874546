"""Policy actions: a targeted Tetragon policy through the policy pipeline."""
