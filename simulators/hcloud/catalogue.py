"""
The fixed catalogue of images, server types and locations that the simulator accepts.

The entries are a small subset of what Hetzner offers; their sizes and
coordinates are plausible values for a dev tool, not a copy of the live
catalogue. A create request may name an entry or give its numeric id.
"""

from __future__ import annotations

from typing import Any

#: The creation date reported for every catalogue image.
IMAGE_CREATED = "2024-01-01T00:00:00+00:00"

LOCATIONS: dict[str, dict[str, Any]] = {
    "fsn1": {"id": 1, "description": "Falkenstein DC Park 1", "country": "DE",
             "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
             "network_zone": "eu-central"},
    "nbg1": {"id": 2, "description": "Nuremberg DC Park 1", "country": "DE",
             "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665,
             "network_zone": "eu-central"},
    "hel1": {"id": 3, "description": "Helsinki DC Park 1", "country": "FI",
             "city": "Helsinki", "latitude": 60.169855, "longitude": 24.938379,
             "network_zone": "eu-central"},
    "ash": {"id": 4, "description": "Ashburn, VA", "country": "US",
            "city": "Ashburn, VA", "latitude": 39.045821, "longitude": -77.487073,
            "network_zone": "us-east"},
}

SERVER_TYPES: dict[str, dict[str, Any]] = {
    "cx22": {"id": 104, "description": "CX22", "cores": 2, "memory": 4.0, "disk": 40,
             "cpu_type": "shared", "architecture": "x86"},
    "cx32": {"id": 105, "description": "CX32", "cores": 4, "memory": 8.0, "disk": 80,
             "cpu_type": "shared", "architecture": "x86"},
    "cpx11": {"id": 22, "description": "CPX 11", "cores": 2, "memory": 2.0, "disk": 40,
              "cpu_type": "shared", "architecture": "x86"},
    "cax11": {"id": 45, "description": "CAX11", "cores": 2, "memory": 4.0, "disk": 40,
              "cpu_type": "shared", "architecture": "arm"},
    "ccx13": {"id": 96, "description": "CCX13 Dedicated CPU", "cores": 2, "memory": 8.0,
              "disk": 80, "cpu_type": "dedicated", "architecture": "x86"},
}

IMAGES: dict[str, dict[str, Any]] = {
    "debian-12": {"id": 114690387, "description": "Debian 12", "os_flavor": "debian",
                  "os_version": "12"},
    "ubuntu-22.04": {"id": 67794396, "description": "Ubuntu 22.04", "os_flavor": "ubuntu",
                     "os_version": "22.04"},
    "ubuntu-24.04": {"id": 161547269, "description": "Ubuntu 24.04", "os_flavor": "ubuntu",
                     "os_version": "24.04"},
    "rocky-9": {"id": 76766499, "description": "Rocky Linux 9", "os_flavor": "rocky",
                "os_version": "9"},
}

#: The location a server gets when the create request names none.
DEFAULT_LOCATION = "fsn1"


def find_entry(table: dict[str, dict[str, Any]], reference: object) -> str | None:
    """Return the name of the entry that `reference` (a name or a numeric id) points to."""
    if isinstance(reference, str) and reference in table:
        return reference

    if isinstance(reference, int) and not isinstance(reference, bool):
        for name, entry in table.items():
            if entry["id"] == reference:
                return name

    return None


def location_json(name: str) -> dict[str, Any]:
    """Return the API object of a location."""
    return {"name": name, **LOCATIONS[name]}


def server_type_json(name: str) -> dict[str, Any]:
    """Return the API object of a server type, without the optional `locations` list."""
    entry = SERVER_TYPES[name]
    return {
        "name": name,
        **entry,
        "deprecated": False,
        "deprecation": None,
        "prices": [],
        "storage_type": "local",
        "category": "shared" if entry["cpu_type"] == "shared" else "dedicated",
    }


def image_json(name: str, architecture: str) -> dict[str, Any]:
    """Return the API object of a system image built for `architecture`."""
    entry = IMAGES[name]
    return {
        "name": name,
        **entry,
        "type": "system",
        "status": "available",
        "image_size": None,
        "disk_size": 5,
        "created": IMAGE_CREATED,
        "created_from": None,
        "bound_to": None,
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deleted": None,
        "labels": {},
        "architecture": architecture,
    }
