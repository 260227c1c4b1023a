"""Data bundled with the package (see each folder's SOURCE.md for origin and licence)."""
