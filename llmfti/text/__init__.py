"""Model-independent text transformations: load, clean and chunk documents."""
