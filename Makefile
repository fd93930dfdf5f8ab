# SAGE's two commands. Both set up whatever is missing first (scripts/setup.sh).
.PHONY: setup run test test-fast bench

setup:
	bash scripts/setup.sh

# Run SAGE's main job on the embedded default (the built-in world). Ctrl-C stops.
run: setup
	bash -c 'source scripts/env.sh && sage init && sage run $(ARGS)'

# The whole test suite (CI runs exactly this).
test: setup
	bash -c 'source scripts/env.sh && python -m pytest -q $(ARGS)'

# The ROS-free tier while you work: libraries, training steps, parsers (about a minute).
test-fast: setup
	bash -c 'source scripts/env.sh && python -m pytest -q -m "not ros and not slow" $(ARGS)'
