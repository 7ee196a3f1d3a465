"""The steps of a job, one module each, in the order a job goes through them:

intake      an event names an object: resolve it, classify its key, record the job once per object
split       validate every line and cut the input into shards under the work prefix (or reject it)
submission  each shard to a batch at the API, within the in-flight limit, resumable at every checkpoint
polling     the schedule: hand waiting shards over, look at running batches, end those past a bound
collection  an ended batch's results into S3 (results.py sorts them line by line)
completion  every shard in: merged files, report.json, and the one `Batch Job Finished` announcement
"""
