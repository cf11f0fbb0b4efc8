"""Target propagation trainer (issue 4): not yet implemented; make_trainer rejects algorithm="tp"."""
