"""genesis_data."""
