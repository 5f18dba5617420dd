# raw wire test: OP_MSG hello (what the Rust `mongodb` crate sends) and OP_QUERY isMaster (legacy handshake)
import socket, struct, bson, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else 27017
def recv_all(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b)); assert c; b += c
    return b
def reply(s):
    hdr = recv_all(s, 16); ln, rid, rto, op = struct.unpack("<iiii", hdr)
    return op, recv_all(s, ln - 16)
s = socket.create_connection(("127.0.0.1", port))
body = bson.encode({"hello": 1, "$db": "admin", "client": {"driver": {"name": "raw", "version": "0"}, "os": {"type": "Linux"}}})
msg = struct.pack("<I", 0) + b"\x00" + body
s.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)
op, data = reply(s); print("OP_MSG hello -> opcode", op, bson.decode(data[5:]))
q = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + bson.encode({"isMaster": 1, "helloOk": True})
s.sendall(struct.pack("<iiii", 16 + len(q), 2, 0, 2004) + q)
op, data = reply(s); print("OP_QUERY isMaster -> opcode", op, bson.decode(data[20:]).get("ismaster"), "helloOk:", bson.decode(data[20:]).get("helloOk"))
