"""The batch provider's command-line options (read by the CLI without importing the provider)."""

from __future__ import annotations

from dbgfwd.providers.option import ProviderOption

TITLE = "AWS Batch (SSM)"
OPTIONS = (
    ProviderOption("profile", ("--profile",), "AWS profile (as the AWS CLI resolves it, SSO included)",
                   metavar="NAME", complete="aws_profiles"),
    ProviderOption("region", ("--region",), "AWS region (default: from the profile / AWS_REGION)",
                   metavar="REGION"),
    ProviderOption("queue", ("--queue",), "attach to the active jobs of this AWS Batch job queue",
                   metavar="QUEUE"),
    ProviderOption("job_name", ("--job-name",), "with --queue: only jobs whose name matches this "
                   "shell pattern (e.g. 'train-*')", metavar="PATTERN"),
    ProviderOption("ssm_backend", ("--ssm-backend",), "SSM client: native (default, built in) or plugin "
                   "(session-manager-plugin)", metavar="native|plugin"),
)
