"""What the status address serves over HTTP: the status page (`page`, drawn from `view`)."""
