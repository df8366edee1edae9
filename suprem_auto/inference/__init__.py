"""inference stage of the suprem_auto pipeline."""
