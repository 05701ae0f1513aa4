"""SSH provider: ranks on hosts reached with SSH (paramiko, imported lazily).


Modules: `targets` (host specs, hostfiles, Slurm node lists), `settings` (ssh config resolution),
`connection` (one transport per host, keepalive, reconnect), `failures` (one-line errors),
`provider` (the Provider subclass).
"""

def __getattr__(name: str):
    # on first use only: the CLI reads options.py of this package without loading the provider
    if name == "SshProvider":
        from dbgfwd.providers.ssh.provider import SshProvider

        return SshProvider
    raise AttributeError(name)


__all__ = ["SshProvider"]
