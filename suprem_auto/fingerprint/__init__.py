"""fingerprint stage of the suprem_auto pipeline."""
