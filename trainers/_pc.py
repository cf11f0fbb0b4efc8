"""Predictive coding trainer (issue 3): not yet implemented; make_trainer rejects algorithm="pc"."""
