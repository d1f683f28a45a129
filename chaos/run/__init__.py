"""One run: its options, the controller that signals workers, the exposure strategy, the gate, the session."""
