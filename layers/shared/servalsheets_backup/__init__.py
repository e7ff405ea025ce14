"""ServalSheets backup and restore: the shared package every Lambda, the CLI and the drill run."""

__version__ = "0.1.0"
TOOL_NAME = "servalsheets-backup"
