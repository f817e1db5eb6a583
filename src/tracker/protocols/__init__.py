"""Decoders, one per client protocol: a request in, fixes and the client's reply out."""
