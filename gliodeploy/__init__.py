"""gliodeploy: train, package and serve 3D CNNs for glioma follow-up on 18F-FDOPA PET.

The import of this package stays light (no torch): the client side uses
``gliodeploy.io``, ``gliodeploy.preprocessing`` and ``gliodeploy.client`` only.
"""

__version__ = "0.1.0"
