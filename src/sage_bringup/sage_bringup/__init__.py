"""SAGE bringup: launch files, the parameters YAML and the sage command."""
