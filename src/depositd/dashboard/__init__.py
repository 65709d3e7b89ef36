"""The operators' dashboard and end users' order status pages: server-rendered HTML over the
same services as the API."""
