"""Training the cascade: the loop, the losses, the data, the progressive schedule, checkpoints, export and packs."""
