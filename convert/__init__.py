"""ggserve model pipeline: LoRA merge → GGUF → quantize → evaluate → manifest."""
