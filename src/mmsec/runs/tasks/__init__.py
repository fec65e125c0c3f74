"""Task plugins of the runner (one module per task); importing this package registers them."""
