"""Using trained models: generate.py (sampling with a KV cache, text in and out), evaluate.py
(loss, perplexity and bits per byte over a whole corpus), sampling_ablation.py (samplers
compared over trained models).
"""
