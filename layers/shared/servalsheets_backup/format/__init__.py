"""The backup format: envelope, keys, manifests, RDB validation, the token store file."""
