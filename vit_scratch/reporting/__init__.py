"""What a run writes beside the model: figures and the model card (matplotlib and huggingface_hub only here)."""
