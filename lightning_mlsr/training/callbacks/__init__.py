"""What the Trainer is given beside the module: callbacks, the atomic checkpoint plugin and
the W&B logger."""
