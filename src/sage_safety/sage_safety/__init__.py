"""SAGE safety: limits, slew, e-stop and the watchdog between the decision and cmd_vel."""
