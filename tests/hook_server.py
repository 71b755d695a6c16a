#!/usr/bin/python3
"""A trigger handler for the tests: an HTTP server on 127.0.0.1:PORT that appends every
POST it gets to LOG as one JSON line {"trigger", "uuid", "lines"} and answers by RULES, a
JSON object trigger name -> answer:

  "true" / "false" / any text   answered as is
  "keyed"                       the payload's third line (the stream) when its first line
                                (the URL) contains "key=good", else "false" (PUSH_REWRITE)
  "rewrite:FROM:TO"             TO when the first line is FROM, else the first line
                                (PLAY_REWRITE)

Triggers without a rule get "true". Prints "ready" once it listens. Runs until killed.

  hook_server.py PORT LOG RULES_JSON [CERT.pem KEY.pem]

With CERT and KEY it serves HTTPS instead.
"""
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, LOG, RULES = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n).decode("utf-8", "replace")
        trigger = self.headers.get("X-Trigger", "")
        lines = body.split("\n")
        with open(LOG, "a") as f:
            f.write(json.dumps({"trigger": trigger, "uuid": self.headers.get("X-Trigger-UUID", ""),
                                "lines": lines}) + "\n")
        rule = RULES.get(trigger, "true")
        if rule == "keyed":
            answer = lines[2] if len(lines) > 2 and "key=good" in lines[0] else "false"
        elif rule.startswith("rewrite:"):
            _, frm, to = rule.split(":", 2)
            answer = to if lines[0] == frm else lines[0]
        else:
            answer = rule
        out = answer.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", PORT), Hook)
if len(sys.argv) > 5:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
