"""LightningModules and the torch layers, losses and metrics they are built from."""
