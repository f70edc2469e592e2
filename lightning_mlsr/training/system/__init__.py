"""The LightningModule (:class:`~lightning_mlsr.training.system.module.SparseBiEncoder`)
and what it is made of beyond its injected heads and losses."""
