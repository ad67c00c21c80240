"""arq workers: each runs chat jobs against the upstream and publishes the answer's pieces."""
