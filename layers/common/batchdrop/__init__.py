"""batchdrop: drop a JSONL file of chat-completion requests in S3, get ZeroGPU Batch API results back."""

__version__ = "0.1.0"
