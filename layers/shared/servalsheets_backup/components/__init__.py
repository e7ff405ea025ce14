"""One module per component: configuration, token store, Redis per source mode."""
