"""The outside world, each behind one small module: the job store, S3, the queues, the notifier, the
secret, and the ZeroGPU client."""
