"""Native SSM Session Manager port forwarding: the websocket is dbgfwd.net.websocket; AgentMessage codec (message),
reliable data channel (channel), smux streams (smux), and a session tying them to boto3 (session)."""
