"""SAGE memory: SNARC salience, the sidecar fast-weight memory, the experience store and the memory node."""
