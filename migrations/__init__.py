"""The yoyo migration set: one folder per module (see minnoctl/modules.py)."""
