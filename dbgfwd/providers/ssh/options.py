"""The ssh provider's command-line options (read by the CLI without importing the provider)."""

from __future__ import annotations

from pathlib import Path

from dbgfwd.providers.option import ProviderOption

TITLE = "SSH hosts"
OPTIONS = (
    ProviderOption("hostfile", ("--hostfile",), "MPI hostfile: one `host slots=N` (or `host:N`) per line",
                   type=Path, metavar="FILE"),
    ProviderOption("nodelist", ("--nodelist",),
                   "Slurm node list like node[01-04,07] (default: $SLURM_JOB_NODELIST when no hosts given)",
                   metavar="LIST"),
    ProviderOption("ssh_config", ("--ssh-config",), "ssh config file (default ~/.ssh/config)",
                   type=Path, metavar="FILE"),
    ProviderOption("ssh_user", ("--ssh-user",), "login name for hosts that name none (like ssh -l)",
                   metavar="USER"),
    ProviderOption("identity", ("--identity",), "private key file to try first (like ssh -i); repeatable",
                   type=Path, multiple=True, metavar="FILE"),
    ProviderOption("insecure_accept_new_host_keys", ("--insecure-accept-new-host-keys",),
                   "accept host keys missing from known_hosts WITHOUT checking them (changed keys are "
                   "still refused)", type=bool, default=False),
    ProviderOption("ssh_backend", ("--ssh-backend",),
                   "paramiko (default: built in) or openssh: your own `ssh` and its config, for two-factor "
                   "logins, Kerberos, FIDO keys, ProxyCommand, Match exec, or a ControlMaster you opened",
                   metavar="BACKEND"),
    ProviderOption("ssh_timeout", ("--ssh-timeout",), "seconds to wait for an SSH connection (default 10)",
                   type=float, metavar="SECONDS", min=0.1),
)
