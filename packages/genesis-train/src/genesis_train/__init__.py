"""genesis_train."""
