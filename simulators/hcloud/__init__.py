"""
hcloud-sim: a local simulator of the Hetzner Cloud API for development and tests.

Run `hcloud-sim --port 0` and point `hcloud.Client(token=..., api_endpoint=...)`
at the printed `http://127.0.0.1:PORT/v1`. Each simulated server is a process
group on its own loopback address that runs the server's user_data, so a
harnessd stand-in can serve `/healthz` there. README.md in this directory
documents the flags, the user_data contract and the admin API under `/_sim`.
"""
