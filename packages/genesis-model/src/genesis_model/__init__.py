"""genesis_model."""
