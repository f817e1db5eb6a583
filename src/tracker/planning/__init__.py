"""Pure planning: orders, depots and vehicles (validation, CSV, geocoder answers). No I/O."""
