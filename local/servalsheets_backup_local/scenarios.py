"""The drill's scenarios by name (apart from drill.py, so the CLI can list them without moto)."""

DRILL_SCENARIOS = (
    "full-restore",
    "oauth-only",
    "wrong-token-key",
    "corrupted-backup",
    "rollback",
    "elasticache-serverless",
    "rdb-stream",
    "cluster",
    "region-loss",
)
