"""Kubernetes operator: kopf registrations and the CacheWarmPolicy / CacheInvalidation spec models."""
