"""A cache tier across nodes: every node's misses go to the node that owns
the key, so the fleet fetches each object from the origin once.

Three gatehouse masters (two workers each) run the pattern of
docs/deployment.md: "upstream cache_peers { hash $cache_key consistent; }"
over the three nodes; a request from a client is sent to the key's owner
with an X-Gatehouse-Tier field, and a request carrying that field is
served by the node itself, from its cache, filled from the origin (the
field stops any loop). Each owner names itself in X-Tier-Owner.
"""

import http.client
import threading

import pytest

from gh_server import MAIN_CONF, Server, require_binary
from origins import Origin, response

KEYS = 1000

NODE_HTTP = """
proxy_cache_path {cache} keys_zone=tier:4m;
proxy_cache_key $scheme$host$request_uri;
upstream cache_peers {{
    hash $cache_key consistent;
{peers}
}}
upstream origin {{ server {origin}; }}
# A peer's request: this node owns the key; a client's: its owner does.
map $http_x_gatehouse_tier $tier_pass  {{ default cache_peers; "1" origin; }}
map $http_x_gatehouse_tier $tier_cache {{ default off;         "1" tier; }}
map $http_x_gatehouse_tier $tier_mark  {{ default "1";         "1" ""; }}
map $http_x_gatehouse_tier $tier_owner {{ default "";          "1" {port}; }}
server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
        proxy_pass http://$tier_pass;
        proxy_cache $tier_cache;
        proxy_set_header Host $host;
        proxy_set_header X-Gatehouse-Tier $tier_mark;
        proxy_next_upstream error timeout;
        proxy_connect_timeout 2s;
        add_header X-Tier-Owner $tier_owner;
    }}
}}
"""


def counting_origin():
    counts = {}
    lock = threading.Lock()

    def handler(conn, req):
        with lock:
            counts[req.target] = counts.get(req.target, 0) + 1
        assert req.header("X-Gatehouse-Tier") is None
        body = f"{req.target}\n".encode()
        conn.sendall(response(200, body, [("Cache-Control", "max-age=600")]))
        return True

    o = Origin(handler)
    o.counts = counts
    return o


@pytest.fixture
def tier(tmp_path):
    require_binary()
    made = []

    def make(origin, n=3):
        nodes = [Server(tmp_path / f"node{i}", "") for i in range(n)]
        peers = "\n".join(f"    server 127.0.0.1:{s.port};" for s in nodes)
        for s in nodes:
            http_block = NODE_HTTP.format(cache=s.prefix / "cache", peers=peers, origin=origin.addr, port=s.port)
            s.conf.write_text(MAIN_CONF.format(http=http_block).replace("worker_processes 1;", "worker_processes 2;"))
            made.append(s)
        for s in nodes:
            s.start()
        return nodes

    yield make
    for s in made:
        s.stop()


def fetch_all(node, keys):
    """GET /k<i> for each key over one keep-alive connection: {key: owner}."""
    owners = {}
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    for k in keys:
        conn.request("GET", f"/k{k}")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (node.port, k, r.status, body)
        assert body == f"/k{k}\n".encode()
        owners[k] = int(r.getheader("X-Tier-Owner"))
    conn.close()
    return owners


def test_each_key_fetched_once_and_a_leaving_node_moves_only_its_keys(tier):
    origin = counting_origin()
    try:
        nodes = tier(origin)
        ports = [n.port for n in nodes]
        keys = range(KEYS)
        seen = [fetch_all(n, keys) for n in nodes]
        # Every node sends a key to the same owner, and the origin saw
        # each key once for the whole fleet.
        assert seen[0] == seen[1] == seen[2]
        owner = seen[0]
        assert sorted(origin.counts) == sorted(f"/k{k}" for k in keys)
        assert set(origin.counts.values()) == {1}
        share = {p: sum(1 for o in owner.values() if o == p) for p in ports}
        assert all(share[p] > KEYS // 10 for p in ports), share

        # Node 2 leaves: through the two others, its keys (and only
        # they) go to new owners, each fetched from the origin once;
        # every other key is still served from its owner's cache.
        gone = nodes[2]
        gone.stop()
        before = dict(origin.counts)
        after = [fetch_all(n, keys) for n in nodes[:2]]
        assert after[0] == after[1]
        moved = {k for k in keys if owner[k] == gone.port}
        assert {k for k in keys if after[0][k] != owner[k]} == moved
        assert all(after[0][k] in ports[:2] for k in moved)
        refetched = {k for k in keys if origin.counts[f"/k{k}"] != before[f"/k{k}"]}
        assert refetched == moved
        assert all(origin.counts[f"/k{k}"] == 2 for k in moved)
    finally:
        origin.stop()
