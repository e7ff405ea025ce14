"""The servalsheets-backup command line."""
