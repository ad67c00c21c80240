"""The worker's job machinery: the arq worker, the job runner, publishing, the upstream budget."""
