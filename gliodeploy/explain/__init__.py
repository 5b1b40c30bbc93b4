"""Grad-CAM explanations with medcam, written as NIfTI heatmaps in the patient's native space and PNG
overlays (``gliodeploy explain``)."""
