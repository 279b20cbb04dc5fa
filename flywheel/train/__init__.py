"""LoRA training for the flywheel: a chat dataset → a PEFT adapter ``ggserve convert`` takes."""
