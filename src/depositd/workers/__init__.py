"""Long-running loops: the chain watcher, the order expiry sweeper, and the like."""
