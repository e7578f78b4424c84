"""The config-file watcher: scan mounted files (scan.py), record changes (watcher.py)."""
