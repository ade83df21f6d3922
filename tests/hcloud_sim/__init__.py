"""Tests of hcloud-sim, the local Hetzner Cloud API simulator."""
