"""Rewards: the composite clinical reward, the reward server and its client."""
