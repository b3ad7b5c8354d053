"""LightningDataModules and what makes their data, one subpackage per family."""
