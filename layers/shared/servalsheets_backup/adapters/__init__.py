"""One adapter per external service; the domain code sees only these small interfaces."""
