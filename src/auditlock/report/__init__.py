"""The auditor's report: verified trails rendered as one self-contained HTML file
(docs/review.md, "The report")."""

from auditlock.report.build import render_report, report_data

__all__ = ["render_report", "report_data"]
