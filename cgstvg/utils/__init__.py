"""Small shared helpers: atomic file output, params loading and file hashing."""
