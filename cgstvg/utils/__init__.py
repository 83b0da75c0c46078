"""Small shared helpers: atomic file output and params loading."""
