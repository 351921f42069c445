"""The config sections: schemas, loading and checking (standard library only at import time)."""
