"""Evaluation of trained runs: metrics with bootstrap CIs, the TBR clinical baseline, calibration and
the HTML report (``gliodeploy evaluate``)."""
