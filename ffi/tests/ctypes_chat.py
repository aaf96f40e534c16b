"""Loads the p2pcore shared library the way Unity's P/Invoke does (plain C
functions, blittable structures declared on the caller's side) and has two
peers exchange messages by node ID through a server, all on loopback.

    python3 ffi/tests/ctypes_chat.py target/debug/libp2pcore_ffi.so

Run by ffi/tests/c_abi.rs; exits 0 on success.
"""

import ctypes as C
import sys
import time

lib = C.CDLL(sys.argv[1])

P2P_OK, P2P_DONE = 0, -1
P2P_ROLE_PEER, P2P_ROLE_SERVER = 0, 1
P2P_EVENT_PEER_ONLINE, P2P_EVENT_MESSAGE = 10, 16
P2P_SEND_RELIABLE, P2P_SEND_UNRELIABLE = 0, 1
P2P_PATH_NONE = 0


class NodeId(C.Structure):
    _fields_ = [("bytes", C.c_uint8 * 17)]


class Addr(C.Structure):
    _fields_ = [("family", C.c_uint16), ("port", C.c_uint16), ("scope_id", C.c_uint32), ("ip", C.c_uint8 * 16)]


class Config(C.Structure):
    _fields_ = [
        ("size", C.c_uint32),
        ("version", C.c_uint32),
        ("role", C.c_uint32),
        ("close_timeout_ms", C.c_uint32),
        ("gso", C.c_uint32),
        ("identity_len", C.c_uint32),
        ("name", C.c_char_p),
        ("data_dir", C.c_char_p),
        ("identity", C.c_void_p),
        ("seed", C.c_void_p),
        ("bind", C.c_char_p),
        ("bootstrap", C.c_char_p),
        ("advertise", C.c_char_p),
        ("secret", C.c_char_p),
        ("join_token", C.c_char_p),
        ("token_issuers", C.c_char_p),
        ("settings", C.c_void_p),
    ]


class Message(C.Structure):
    _fields_ = [
        ("data", C.POINTER(C.c_uint8)),
        ("len", C.c_uint32),
        ("channel", C.c_uint8),
        ("reliability", C.c_uint8),
        ("sender", NodeId),
    ]


class Event(C.Structure):
    _fields_ = [
        ("kind", C.c_uint32),
        ("code", C.c_uint32),
        ("first", C.c_uint64),
        ("last", C.c_uint64),
        ("count", C.c_uint32),
        ("channel", C.c_uint8),
        ("reliability", C.c_uint8),
        ("path", C.c_uint8),
        ("flags", C.c_uint8),
        ("id", NodeId),
        ("via", NodeId),
        ("reserved", C.c_uint8 * 2),
        ("addr", Addr),
        ("name", C.c_char * 68),
        ("text", C.c_char * 160),
        ("message", C.POINTER(Message)),
        ("kv", C.c_void_p),
    ]


class PathInfo(C.Structure):
    _fields_ = [
        ("rtt_us", C.c_uint64),
        ("kind", C.c_uint8),
        ("connected", C.c_uint8),
        ("via", NodeId),
        ("reserved", C.c_uint8 * 5),
    ]


class PeerInfo(C.Structure):
    _fields_ = [("path", PathInfo), ("id", NodeId), ("name", C.c_char * 68), ("reserved", C.c_uint8 * 3)]


node_p = C.c_void_p
lib.p2p_config_default.argtypes = [C.POINTER(Config)]
lib.p2p_config_set.argtypes = [C.POINTER(Config), C.c_char_p, C.c_char_p]
lib.p2p_config_clear.argtypes = [C.POINTER(Config)]
lib.p2p_node_create.argtypes = [C.POINTER(Config), C.POINTER(node_p)]
lib.p2p_node_service.argtypes = [node_p, C.c_uint32]
lib.p2p_poll_events.argtypes = [node_p, C.POINTER(Event), C.c_uint32]
lib.p2p_send.argtypes = [node_p, C.POINTER(NodeId), C.c_uint8, C.c_void_p, C.c_uint32, C.c_uint32]
lib.p2p_send.restype = C.c_int64
lib.p2p_message_release.argtypes = [C.POINTER(Message)]
lib.p2p_message_release.restype = None
lib.p2p_node_free.argtypes = [node_p]
lib.p2p_node_free.restype = None
lib.p2p_node_local_addr.argtypes = [node_p, C.POINTER(Addr)]
lib.p2p_node_get_id.argtypes = [node_p, C.POINTER(NodeId)]
lib.p2p_addr_format.argtypes = [C.POINTER(Addr), C.c_char_p, C.POINTER(C.c_uint32)]
lib.p2p_node_id_format.argtypes = [C.POINTER(NodeId), C.c_char_p, C.POINTER(C.c_uint32)]
lib.p2p_node_peers.argtypes = [node_p, C.POINTER(PeerInfo), C.POINTER(C.c_uint32)]
lib.p2p_last_error.argtypes = [C.c_char_p, C.c_uint32]
lib.p2p_last_error.restype = C.c_uint32
lib.p2p_result_str.restype = C.c_char_p
lib.p2p_version.restype = C.c_char_p

assert C.sizeof(Event) == (336 if C.sizeof(C.c_void_p) == 8 else 328), C.sizeof(Event)
assert C.sizeof(PeerInfo) == 120, C.sizeof(PeerInfo)


def check(r, what):
    if r < 0:
        buf = C.create_string_buffer(512)
        lib.p2p_last_error(buf, 512)
        sys.exit(f"{what}: {lib.p2p_result_str(r).decode()}: {buf.value.decode()}")
    return r


def create(role, name, bootstrap=None):
    cfg = Config()
    check(lib.p2p_config_default(C.byref(cfg)), "p2p_config_default")
    assert cfg.size == C.sizeof(Config), (cfg.size, C.sizeof(Config))
    cfg.role = role
    cfg.name = name.encode()
    cfg.bind = b"127.0.0.1:0"
    cfg.bootstrap = bootstrap
    check(lib.p2p_config_set(C.byref(cfg), b"peer.hole_punching", b"true"), "p2p_config_set")
    assert lib.p2p_config_set(C.byref(cfg), b"no.such.key", b"1") < 0
    node = node_p()
    check(lib.p2p_node_create(C.byref(cfg), C.byref(node)), "p2p_node_create")
    lib.p2p_config_clear(C.byref(cfg))
    return node


def text_of(node_id):
    buf = C.create_string_buffer(38)
    n = C.c_uint32(38)
    check(lib.p2p_node_id_format(C.byref(node_id), buf, C.byref(n)), "p2p_node_id_format")
    return buf.value.decode()


print("p2pcore", lib.p2p_version().decode())
server = create(P2P_ROLE_SERVER, "server")
addr = Addr()
lib.p2p_node_local_addr(server, C.byref(addr))
text = C.create_string_buffer(64)
n = C.c_uint32(64)
check(lib.p2p_addr_format(C.byref(addr), text, C.byref(n)), "p2p_addr_format")
peers = {name: create(P2P_ROLE_PEER, name, text.value) for name in ("ann", "ben")}
ids = {}
for name, node in peers.items():
    i = NodeId()
    lib.p2p_node_get_id(node, C.byref(i))
    ids[name] = text_of(i)

received = {"ann": [], "ben": []}
events = (Event * 16)()
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not all(len(v) == 3 for v in received.values()):
    lib.p2p_node_service(server, 0)
    while lib.p2p_poll_events(server, events, 16) > 0:
        pass
    for name, node in peers.items():
        check(lib.p2p_node_service(node, 5), "p2p_node_service")
        while (count := check(lib.p2p_poll_events(node, events, 16), "p2p_poll_events")) > 0:
            for e in events[:count]:
                if e.kind == P2P_EVENT_PEER_ONLINE:
                    for k in range(3):
                        data = f"{name} says {k}".encode()
                        seq = check(lib.p2p_send(node, C.byref(e.id), 7, data, len(data), P2P_SEND_RELIABLE), "send")
                        assert seq == k, (seq, k)
                elif e.kind == P2P_EVENT_MESSAGE:
                    m = e.message.contents
                    assert m.channel == 7 and text_of(m.sender) == text_of(e.id)
                    received[name].append(C.string_at(m.data, m.len).decode())
                    lib.p2p_message_release(e.message)

assert received == {"ann": ["ben says 0", "ben says 1", "ben says 2"], "ben": ["ann says 0", "ann says 1", "ann says 2"]}, received

# A query with too small an array says how many entries there are.
count = C.c_uint32(0)
assert lib.p2p_node_peers(peers["ann"], None, C.byref(count)) == -3 and count.value == 1, count.value
infos = (PeerInfo * count.value)()
check(lib.p2p_node_peers(peers["ann"], infos, C.byref(count)), "p2p_node_peers")
assert [i.name.decode() for i in infos] == ["ben"] and text_of(infos[0].id) == ids["ben"]
# Bad input is an error code with a message, not a crash.
assert lib.p2p_send(peers["ann"], None, 0, None, 0, 0) == -2
buf = C.create_string_buffer(256)
lib.p2p_last_error(buf, 256)
assert b"`to` is NULL" in buf.value, buf.value

for node in list(peers.values()) + [server]:
    lib.p2p_node_free(node)
print("ctypes: ann and ben exchanged", sum(len(v) for v in received.values()), "messages")
