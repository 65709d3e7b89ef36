"""Long-running loops: the chain watcher, the order expiry sweeper, and the like."""

#: the background workers, by the names ``depositd worker --only`` takes
ROLES = (
    "watchers",
    "sender",
    "order-expiry",
    "callbacks",
    "reconciler",
    "alerts",
    "retention",
)
