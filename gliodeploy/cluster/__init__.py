"""Beyond one machine: cross-validation sweeps on a cluster scheduler (Slurm) or locally, and the packed
Python environment that lets the stock Triton image run the server-side preprocessing model.

- :mod:`gliodeploy.cluster.profile`: the cluster profile (per-job resources, Slurm options, retries).
- :mod:`gliodeploy.cluster.sweep`: the sweep plan (experiments x folds), its job commands, finalisation
  (resubmission of unfinished folds, OOF assembly, evaluation) and progress read back from run folders.
- :mod:`gliodeploy.cluster.launchers`: ``local`` (subprocesses on this machine) and ``slurm`` (``sbatch``
  arrays with dependencies).
- :mod:`gliodeploy.cluster.packenv`: ``gliodeploy pack-env``.
"""
