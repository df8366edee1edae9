"""Adapters that let models and checkpoints of other frameworks run in suprem_auto (``nnunet``: nnU-Net v2)."""
