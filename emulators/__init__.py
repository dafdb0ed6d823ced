"""Local stand-ins for Google Cloud services, run as real subprocesses on 127.0.0.1."""
