"""Operating a feature project in production: the pipeline run, freshness SLAs, change impact, verify.

``run``: dbt build → validate → materialize → statistics → freshness (→ verify), with a JSON report.
``sla``: every online view's freshness against its SLA (``feature-layer freshness``, /metrics).
``impact``: what a deploy changes, comparing two manifests (``feature-layer impact --state``).
``verify``: online values against the training-set SQL "as of now" (``feature-layer verify``).
"""
