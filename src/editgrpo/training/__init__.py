"""Training: SFT and EditGRPO recipes on TRL; the only layer that imports the training engines."""
