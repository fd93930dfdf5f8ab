"""SAGE memory: SNARC salience, the sidecar fast-weight memory and the experience store."""
