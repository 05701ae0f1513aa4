"""Native SSM Session Manager port forwarding: websocket (wsock), AgentMessage codec (message),
reliable data channel (channel), smux streams (smux), and a session tying them to boto3 (session)."""
