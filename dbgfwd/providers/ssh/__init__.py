"""SSH provider: ranks on hosts reached with SSH (paramiko, imported lazily).

Modules: `targets` (host specs, hostfiles, Slurm node lists), `settings` (ssh config resolution),
`connection` (one transport per host, keepalive, reconnect), `failures` (one-line errors),
`provider` (the Provider subclass).
"""

from dbgfwd.providers.ssh.provider import SshProvider

__all__ = ["SshProvider"]
