"""Reads counters from a tandem server's Prometheus `/metrics` text, for the bench clients
that report engine figures beside their own timings (grammar.py, json_layout.py,
jump_forward.py)."""
import requests


def counters(url, names):
    """The value of each of `names` (unlabelled samples) on the server at `url`: 0.0 for a name
    the server has not recorded yet, or None when it has no `/metrics` (another server)."""
    try:
        r = requests.get(url + "/metrics", timeout=30)
    except requests.RequestException:
        return None
    if r.status_code != 200:
        return None
    found = {}
    for line in r.text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in names:
            found[parts[0]] = float(parts[1])
    return {n: found.get(n, 0.0) for n in names}
