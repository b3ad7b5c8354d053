"""tenfold: research methods as reusable PyTorch Lightning pieces.

- ``tenfold.modules``: LightningModules and the torch layers, losses and metrics they are built
  from (``tenfold.modules.nets``: the layers several families share);
- ``tenfold.datamodules``: LightningDataModules, dataset readers, procedural task generators and
  target energies;
- ``tenfold.callbacks``: Lightning callbacks, each working through a small documented protocol;
- ``tenfold.checkpoints``, ``tenfold.loggers``, ``tenfold.progress``: train-time pieces of the
  entry point ``train.py`` that Lightning lacks.

Everything lives under this one top-level name, so that installing the package adds no generic
top-level module (``modules``, ``callbacks``) that a user's own project would shadow.
"""
