"""The eval gate: answer suites with a candidate and a baseline GGUF and compare them."""
