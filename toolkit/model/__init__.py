"""The GPT and its weights: config.py (ModelConfig, presets), gpt.py (the model, top to bottom),
checkpoint.py (the toolkit's checkpoint format), hf_gpt2.py and book.py (other code bases'
formats).
"""
