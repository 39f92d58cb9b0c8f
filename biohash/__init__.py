"""biohash."""
