"""The core: capturing what explanation methods need from stock models, and releasing it."""
