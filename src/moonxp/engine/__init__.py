"""The engine: backends, execution policy, the tiled executor, training and grid evaluation."""
