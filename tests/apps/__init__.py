"""The seed documents' own application code, for tests/test_apps_outside_in.py (see documents.py)."""
