"""editgrpo: EditGRPO reinforcement learning for clinically accurate chest X-ray reports.

Importing the package imports nothing heavy (no torch, transformers or trl); see ARCHITECTURE.md
for the layers and ``editgrpo.cli`` for the commands."""

__version__ = "0.1.0.dev0"
