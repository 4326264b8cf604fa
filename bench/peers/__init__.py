"""The peers of issue 12: what a LiteMaaS admin would run instead of this cache, answering the same question.

Every peer answers an analytics request (a date range and filters) with the admin analytics document the project
builds, so answers compare for equality with the truth (compute.py, computed at that moment from LiteLLM's table):

- nocache.py: no cache, LiteMaaS's way (one query per day, summed in the application) and one SQL pass;
- seedplan.py: the seed plan's design, exact-key cache-aside in Redis over a per-day PostgreSQL cache table;
- cashews_peer.py: cashews' `@cache` with a tag, around the one SQL pass;
- project.py: this project's library (CacheManager).

workloads.py makes the requests, runner.py runs a peer in worker processes and measures it.
"""
