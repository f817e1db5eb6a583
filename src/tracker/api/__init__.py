"""HTTP and WebSocket endpoints (Starlette): the only layer that knows about requests."""
