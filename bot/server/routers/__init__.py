"""FastAPI routers, one per concern."""
