"""Training data: preprocessed cases, patch sampling with foreground oversampling, background workers."""
