"""Where events enter the sidecar: Forward, HTTP, mounted config files, the access proxy.

Every source turns what it receives into raw records and hands them to the intake
(`auditlock.sidecar.intake.Intake`), which normalizes, filters, redacts and spools
them; a source acknowledges its sender only after the intake says they are durable.
"""
