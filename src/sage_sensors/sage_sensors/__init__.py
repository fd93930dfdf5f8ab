"""SAGE sensors: camera, microphone and IMU nodes with drivers, encoders and trust estimators."""
