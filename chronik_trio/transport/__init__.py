"""HTTP/2 transport between nodes (hypercorn server, h2 client). Built with the node runtime."""
