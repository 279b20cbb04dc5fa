"""``POST /tokenize`` and ``POST /detokenize`` in llama-server's shape."""
