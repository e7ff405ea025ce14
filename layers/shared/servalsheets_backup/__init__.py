"""ServalSheets backup and restore: the runtime package every Lambda and the CLI run (the layer)."""

__version__ = "0.1.0"
TOOL_NAME = "servalsheets-backup"
