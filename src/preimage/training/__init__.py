"""Training learned inverters: image sources, the LightningDataModule."""
