"""servalsheets-backup-local: the drill and the test harness, never shipped in the Lambda layer."""
