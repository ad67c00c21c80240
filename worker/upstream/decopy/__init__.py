"""decopy.ai: the client, its answer parser, interruptible calls."""
