"""The engine's request side: one chat service for every dialect (fold, shape, images)."""
