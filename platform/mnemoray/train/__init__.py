"""Training of memory models: SFT data preparation (no Ray) and the Ray Train + DeepSpeed driver."""
