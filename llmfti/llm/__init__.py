"""Language-model parts shared by training and inference.

``llmfti.llm.tokenization`` is the one model-dependent transformation (tokenizer + chat template,
pinned by fingerprint). Importing this package loads nothing heavy.
"""
